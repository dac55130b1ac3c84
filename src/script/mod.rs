//! Lua scripting's VM room: a Lua 5.1 state configured the way Valkey 8 configures it, and the
//! conversions between Lua values and RESP.
//!
//! What is here: the sandbox (Valkey's allowed globals only, `os` reduced to `os.clock`, no
//! file or bytecode loading, globals and library tables read-only after [`seal`]), Valkey's
//! bundled libraries re-implemented in Rust (`cjson`, `cmsgpack`, `struct`, `bit`), its
//! `lrand48` `math.random`, the `redis`/`server` table minus the calls that run commands, its
//! error handler and error texts, and [`reply_to_lua`] / [`lua_to_reply`].
//!
//! The function engine ([`seal_for_functions`], [`load_library`], [`call_function`]): the
//! sandbox a library's code loads in and `server.register_function`; see `library`.
//!
//! What is not: executing commands, script caching, EVAL/FCALL/FUNCTION themselves, timeouts
//! (an mlua hook returning an error is reported as `ERR <message>` at the script's line). This
//! room touches no keyspace and no connection.
//!
//! How a host uses it (EVAL):
//! 1. [`new_vm`]; add `call` / `pcall` ([`command_function`] around the host's executor) and
//!    `acl_check_cmd` ([`acl_check_function`]) to [`redis_table`]; [`seal`]. One VM per core:
//!    `mlua::Lua` is not `Send` here.
//! 2. Per script: [`compile_script`] once (keyed by SHA1); per call [`set_keys_and_argv`],
//!    [`begin_run`], [`run_script`]; then [`lua_to_reply`] with the [`run_state`]'s protocol
//!    for booleans, or [`ScriptError::reply_text`] with the SHA1 for a failure.
//!
//! mlua holds every Lua value Rust keeps (a `Value`, `Table`, `LuaString`) in one auxiliary
//! Lua stack of at most 8000 slots for the whole VM, and panics when it is full: code here
//! never holds more than a few per nesting level, and a host should not collect thousands of
//! Lua values at once either.

mod bit;
mod cjson;
mod cmsgpack;
mod library;
mod raise;
mod rand;
mod redis_api;
mod resp;
mod structlib;
#[cfg(test)]
mod valkey_cases;
mod vm;

pub use library::{
    FUNCTION_CHUNK_NAME, LOAD_TIMEOUT, Registered, ScriptFlags, call_function, load_library,
    seal_for_functions,
};
pub use rand::reset_random;
pub use redis_api::{
    CallMode, CommandArgsError, CommandOutcome, LOG_DEBUG, LOG_NOTICE, LOG_VERBOSE, LOG_WARNING,
    LogVerbosity, REPL_ALL, REPL_AOF, REPL_NONE, REPL_REPLICA, RunState, acl_check_function,
    add_redis_helpers, command_args, command_function, error_table, run_state, set_log_verbosity,
};
pub use resp::{lua_to_reply, reply_to_lua, write_error};
pub use vm::{
    EVAL_CHUNK_NAME, RuntimeError, ScriptError, begin_run, compile_named, compile_script, new_vm,
    redis_table, run_script, seal, set_global, set_keys_and_argv,
};

/// Lua 5.1's `LUAI_MAXCSTACK`: how many values a C function may keep on the Lua stack. Valkey's
/// libraries and conversions hit it on deep nesting or many results, with their own errors.
///
/// The limits here emulate it with a smaller budget: mlua keeps every value Rust holds in one
/// auxiliary Lua stack with the same 8000-slot cap (shared with the host), and running out of it
/// panics. So each emulated limit counts the slots C would use and stops at [`STACK_BUDGET`],
/// leaving room for the references held elsewhere; only absurdly deep or long inputs see the
/// error a little earlier than Valkey would show it.
const STACK_BUDGET: usize = 7000;

/// The limit itself, where no Rust-held references are involved.
const LUA_C_STACK: usize = 8000;

/// Runs deeply recursive conversions (nested tables, nested replies) on a growing stack:
/// Valkey bounds their depth only by Lua's 8000-slot C stack, which is deeper than a 2 MiB
/// thread stack allows for Rust frames (a level takes ~10 KiB unoptimised). The red zone
/// covers one level plus whatever the allocator and Lua need below it: 64 KiB was measured
/// to be too little for a debug jemalloc realloc.
fn deep<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(256 * 1024, 2 * 1024 * 1024, f)
}

#[cfg(test)]
pub(crate) mod test_support {
    use mlua::{Lua, Table, Value};

    /// A sealed VM whose `redis` table the test may extend first.
    pub fn sealed_vm_with(extend: impl FnOnce(&Lua, &Table) -> mlua::Result<()>) -> Lua {
        let lua = super::new_vm().expect("a VM");
        let redis = super::redis_table(&lua).expect("the redis table");
        extend(&lua, &redis).expect("extending redis");
        super::seal(&lua).expect("sealing");
        lua
    }

    pub fn sealed_vm() -> Lua {
        sealed_vm_with(|_, _| Ok(()))
    }

    /// Runs `code` as an EVAL script in a fresh sealed VM; its result as text (strings as
    /// they are, numbers as Lua prints them).
    pub fn eval(code: &str) -> String {
        let lua = sealed_vm();
        let f =
            super::compile_script(&lua, code.as_bytes()).unwrap_or_else(|e| panic!("{code}: {e}"));
        let v = super::run_script(&lua, &f, ()).unwrap_or_else(|e| panic!("{code}: {e}"));
        match &v {
            Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
            Value::Nil => "nil".to_string(),
            Value::Boolean(b) => b.to_string(),
            _ => match lua.coerce_string(v.clone()) {
                Ok(Some(s)) => s.to_str().expect("numbers print as ASCII").to_string(),
                _ => format!("{v:?}"),
            },
        }
    }

    /// Runs `code` expecting a runtime error; the error's `err` text (code included).
    pub fn eval_err(code: &str) -> String {
        let lua = sealed_vm();
        let f =
            super::compile_script(&lua, code.as_bytes()).unwrap_or_else(|e| panic!("{code}: {e}"));
        match super::run_script(&lua, &f, ()) {
            Err(super::ScriptError::Runtime(e)) => e.err,
            other => panic!("{code}: expected a runtime error, got {other:?}"),
        }
    }
}
