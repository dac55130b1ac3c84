//! Valkey's Lua function engine on top of the sealed VM: `server.register_function`, the
//! sandbox a library's code runs in while it loads, and calling a registered function.
//!
//! A functions VM is a sealed VM without EVAL's debugger helpers ([`seal_for_functions`]).
//! While a library's code runs (FUNCTION LOAD, or a core loading a library it was asked to
//! call), the globals do not read through to the real globals but to the *library API*: a
//! `server` table (alias `redis`) holding only `register_function`, `log`, the log levels and
//! the version fields; any other name, global or in that table, raises `Script attempted to
//! access nonexistent global variable`. The functions a library registers keep the globals
//! view as their environment, which reads through to the real globals again once loading is
//! over, so they see `redis.call`, `string`, `cjson`... and no `register_function`. This is
//! `luaFunctionInitializeLuaState` and `luaFunctionLibraryCreate`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{HookTriggers, Lua, RegistryKey, Table, Value, VmState};

use super::raise::{Args, LibResult, Raise, lib_function, to_lua_string};
use super::redis_api::{add_log_and_version, raise_error_table};
use super::vm::{
    ScriptError, compile_named, protect_sealed, redis_table, run_script, seal, set_error_metatable,
    set_globals_lookup,
};

/// The chunk name Valkey gives library code: errors read `user_function:<line>: ...`.
pub const FUNCTION_CHUNK_NAME: &str = "@user_function";

/// How long a library's code may run while it loads before `FUNCTION LOAD timeout`.
pub const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

const REG_LIBRARY_API: &str = "tallykv.script.library_api";

/// Valkey's script flags (`scripts_flags_def`): a shebang's `flags=` or a function's `flags`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptFlags(pub u8);

impl ScriptFlags {
    pub const NO_WRITES: u8 = 1;
    pub const ALLOW_OOM: u8 = 2;
    pub const ALLOW_STALE: u8 = 4;
    pub const NO_CLUSTER: u8 = 8;
    pub const ALLOW_CROSS_SLOT: u8 = 16;

    /// Every flag with its name, in Valkey's order (FUNCTION LIST shows them in it).
    pub const NAMES: [(u8, &'static str); 5] = [
        (Self::NO_WRITES, "no-writes"),
        (Self::ALLOW_OOM, "allow-oom"),
        (Self::ALLOW_STALE, "allow-stale"),
        (Self::NO_CLUSTER, "no-cluster"),
        (Self::ALLOW_CROSS_SLOT, "allow-cross-slot-keys"),
    ];

    /// The flag named `name` (exact for shebangs, any case for `register_function`).
    pub fn named(name: &[u8], any_case: bool) -> Option<u8> {
        Self::NAMES.iter().find_map(|&(bit, n)| {
            let same = if any_case {
                name.eq_ignore_ascii_case(n.as_bytes())
            } else {
                name == n.as_bytes()
            };
            same.then_some(bit)
        })
    }

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// The names of the flags set, in Valkey's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |&(bit, _)| self.has(bit))
            .map(|(_, n)| n)
    }
}

/// A function a library registered while it loaded.
pub struct Registered {
    /// As given (validated by the host: Valkey checks names after the code ran).
    pub name: Vec<u8>,
    pub description: Option<Vec<u8>>,
    pub flags: ScriptFlags,
    /// The callback, kept in the Lua registry (not on mlua's bounded reference stack: a VM may
    /// hold many libraries).
    pub callback: RegistryKey,
}

/// What `register_function` collects while a library loads; present only then.
struct LoadCtx {
    registered: Vec<Registered>,
}

/// Makes a VM whose `redis` table has the host's `call`/`pcall`/`acl_check_cmd` a functions
/// VM: drops EVAL's debugger helpers, [`seal`]s it and installs the library API.
pub fn seal_for_functions(lua: &Lua) -> mlua::Result<()> {
    let redis = redis_table(lua)?;
    for eval_only in ["breakpoint", "debug", "replicate_commands"] {
        redis.raw_set(eval_only, Value::Nil)?;
    }
    seal(lua)?;
    let server = lua.create_table()?;
    server.raw_set(
        "register_function",
        lib_function(lua, |lua, a| register_function(lua, &a))?,
    )?;
    add_log_and_version(lua, &server)?;
    set_error_metatable(lua, &server)?;
    let server = protect_sealed(lua, &server)?;
    let api = lua.create_table()?;
    api.raw_set("server", server.clone())?;
    api.raw_set("redis", server)?;
    set_error_metatable(lua, &api)?;
    lua.set_named_registry_value(REG_LIBRARY_API, protect_sealed(lua, &api)?)
}

/// Runs a library's code (after its `#!` line: `code` starts at that line's newline, so line
/// numbers count it) in the load sandbox and returns what it registered, in order. `timeout`
/// bounds the run (FUNCTION LOAD: [`LOAD_TIMEOUT`]; None for libraries already accepted).
///
/// The error is Valkey's reply text without the `ERR ` its reply adds: `Error compiling
/// function: ...` or `Error registering functions: ...`.
pub fn load_library(
    lua: &Lua,
    code: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<Registered>, String> {
    let api: Table = lua
        .named_registry_value(REG_LIBRARY_API)
        .map_err(|e| format!("Error registering functions: ERR {e}"))?;
    set_globals_lookup(lua, Some(&api)).map_err(|e| format!("Error compiling function: {e}"))?;
    let result = load_in_sandbox(lua, code, timeout);
    lua.remove_hook();
    lua.remove_app_data::<LoadCtx>();
    // Errors here leave the VM unusable for functions; they happen only out of memory.
    let restored = set_globals_lookup(lua, None);
    let registered = result?;
    restored.map_err(|e| format!("Error registering functions: ERR {e}"))?;
    Ok(registered)
}

fn load_in_sandbox(
    lua: &Lua,
    code: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<Registered>, String> {
    let chunk = compile_named(lua, code, FUNCTION_CHUNK_NAME).map_err(|e| match e {
        ScriptError::Compile(msg) => format!("Error compiling function: {msg}"),
        other => format!("Error compiling function: {other}"),
    })?;
    lua.set_app_data(LoadCtx {
        registered: Vec::new(),
    });
    if let Some(limit) = timeout {
        let started = Instant::now();
        let _ = lua.set_hook(
            HookTriggers::new().every_nth_instruction(100_000),
            move |_, _| {
                if started.elapsed() > limit {
                    return Err(mlua::Error::RuntimeError("FUNCTION LOAD timeout".into()));
                }
                Ok(VmState::Continue)
            },
        );
    }
    match run_script(lua, &chunk, ()) {
        Ok(_) => Ok(lua
            .remove_app_data::<LoadCtx>()
            .map(|c| c.registered)
            .unwrap_or_default()),
        // The message as `luaExtractErrorInformation` reads it: `ERR ` and a raised string,
        // or a raised table's `err`.
        Err(ScriptError::Runtime(e)) => Err(format!("Error registering functions: {}", e.err)),
        Err(e) => Err(format!("Error registering functions: ERR {e}")),
    }
}

/// Calls a registered function with its keys and arguments as two tables, as FCALL does.
pub fn call_function(
    lua: &Lua,
    callback: &RegistryKey,
    keys: &[Bytes],
    args: &[Bytes],
) -> Result<Value, ScriptError> {
    let vm_failure = |e: mlua::Error| ScriptError::Unhandled(e.to_string());
    let f: mlua::Function = lua.registry_value(callback).map_err(vm_failure)?;
    let array = |items: &[Bytes]| -> mlua::Result<Table> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.iter().enumerate() {
            t.raw_set(i + 1, lua.create_string(item)?)?;
        }
        Ok(t)
    };
    let keys = array(keys).map_err(vm_failure)?;
    let args = array(args).map_err(vm_failure)?;
    run_script(lua, &f, (keys, args))
}

/// A string argument as `luaGetStringSds` takes it: a string, or a number as Lua prints it.
fn string_of(lua: &Lua, v: &Value) -> LibResult<Option<Vec<u8>>> {
    Ok(match v {
        Value::String(_) | Value::Integer(_) | Value::Number(_) => to_lua_string(lua, v)?,
        _ => None,
    })
}

/// `server.register_function(name, callback)` or `server.register_function{function_name=,
/// callback=, flags=, description=}` (`luaFunctionRegisterFunction`). The errors are raised
/// as error tables, as Valkey's `luaPushError`.
fn register_function(lua: &Lua, args: &Args) -> LibResult<()> {
    let fail = |msg: &str| Err(raise_error_table(lua, msg));
    if lua.app_data_ref::<LoadCtx>().is_none() {
        return fail("server.register_function can only be called on FUNCTION LOAD command");
    }
    let (name, description, flags, callback) = match args.len() {
        1 => {
            let Some(Value::Table(t)) = args.get(1) else {
                return fail(
                    "calling server.register_function with a single argument is only applicable \
                     to Lua table (representing named arguments).",
                );
            };
            let (mut name, mut description, mut flags, mut callback) = (None, None, 0u8, None);
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(Raise::from)?;
                let Some(key) = string_of(lua, &k)? else {
                    return fail(
                        "named argument key given to server.register_function is not a string",
                    );
                };
                if key.eq_ignore_ascii_case(b"function_name") {
                    match string_of(lua, &v)? {
                        Some(n) => name = Some(n),
                        None => {
                            return fail(
                                "function_name argument given to server.register_function must \
                                 be a string",
                            );
                        }
                    }
                } else if key.eq_ignore_ascii_case(b"description") {
                    match string_of(lua, &v)? {
                        Some(d) => description = Some(d),
                        None => {
                            return fail(
                                "description argument given to server.register_function must be \
                                 a string",
                            );
                        }
                    }
                } else if key.eq_ignore_ascii_case(b"callback") {
                    match v {
                        Value::Function(f) => callback = Some(f),
                        _ => {
                            return fail(
                                "callback argument given to server.register_function must be a \
                                 function",
                            );
                        }
                    }
                } else if key.eq_ignore_ascii_case(b"flags") {
                    let Value::Table(list) = v else {
                        return fail(
                            "flags argument to server.register_function must be a table \
                             representing function flags",
                        );
                    };
                    match read_flags(lua, &list)? {
                        Some(f) => flags = f,
                        None => return fail("unknown flag given"),
                    }
                } else {
                    return fail("unknown argument given to server.register_function");
                }
            }
            let Some(name) = name else {
                return fail("server.register_function must get a function name argument");
            };
            let Some(callback) = callback else {
                return fail("server.register_function must get a callback argument");
            };
            (name, description, flags, callback)
        }
        2 => {
            let Some(name) = string_of(lua, &args.get(1).unwrap_or(Value::Nil))? else {
                return fail("first argument to server.register_function must be a string");
            };
            let Some(Value::Function(callback)) = args.get(2) else {
                return fail("second argument to server.register_function must be a function");
            };
            (name, None, 0, callback)
        }
        _ => return fail("wrong number of arguments to server.register_function"),
    };
    let callback = lua.create_registry_value(callback)?;
    if let Some(mut ctx) = lua.app_data_mut::<LoadCtx>() {
        ctx.registered.push(Registered {
            name,
            description,
            flags: ScriptFlags(flags),
            callback,
        });
    }
    Ok(())
}

/// A `flags` table's flags (`t[1]`, `t[2]`, ... up to the first nil); None on a value that
/// is not a known flag name.
fn read_flags(lua: &Lua, list: &Table) -> LibResult<Option<u8>> {
    let mut flags = 0u8;
    for j in 1.. {
        let v: Value = list.get(j).map_err(Raise::from)?;
        if v.is_nil() {
            break;
        }
        let Some(name) = string_of(lua, &v)? else {
            return Ok(None);
        };
        match ScriptFlags::named(&name, true) {
            Some(bit) => flags |= bit,
            None => return Ok(None),
        }
    }
    Ok(Some(flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn functions_vm() -> Lua {
        let lua = super::super::new_vm().unwrap();
        seal_for_functions(&lua).unwrap();
        lua
    }

    fn load(lua: &Lua, code: &str) -> Result<Vec<Registered>, String> {
        load_library(lua, format!("\n{code}").as_bytes(), Some(LOAD_TIMEOUT))
    }

    fn call(lua: &Lua, r: &Registered, keys: &[&str], args: &[&str]) -> Result<Value, String> {
        let b =
            |v: &[&str]| -> Vec<Bytes> { v.iter().map(|s| Bytes::from(s.to_string())).collect() };
        super::super::begin_run(lua);
        call_function(lua, &r.callback, &b(keys), &b(args)).map_err(|e| e.reply_text("f"))
    }

    fn text(v: Value) -> String {
        match v {
            Value::String(s) => s.to_str().unwrap().to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn registers_positional_and_named_functions() {
        let lua = functions_vm();
        let r = load(
            &lua,
            "local function add1(a) return a + 1 end\n\
             server.register_function('f1', function(keys, args) return add1(1) end)\n\
             redis.register_function{function_name='F2', callback=function(keys, args) \
               return keys[1] .. args[1] end, flags={'no-writes', 'ALLOW-OOM'}, \
               description='two'}",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, b"f1");
        assert_eq!(r[0].flags, ScriptFlags(0));
        assert_eq!(r[1].name, b"F2");
        assert_eq!(r[1].description.as_deref(), Some(&b"two"[..]));
        assert_eq!(
            r[1].flags.names().collect::<Vec<_>>(),
            ["no-writes", "allow-oom"]
        );
        assert_eq!(text(call(&lua, &r[0], &[], &[]).unwrap()), "2");
        assert_eq!(text(call(&lua, &r[1], &["k"], &["a"]).unwrap()), "ka");
    }

    #[test]
    fn the_load_sandbox_shows_only_the_library_api() {
        let lua = functions_vm();
        let err = |code: &str| load(&lua, code).err().unwrap();
        assert_eq!(
            err("return math.random()"),
            "Error registering functions: ERR user_function:2: Script attempted to access \
             nonexistent global variable 'math'"
        );
        assert_eq!(
            err("return redis.call('ping')"),
            "Error registering functions: ERR user_function:2: Script attempted to access \
             nonexistent global variable 'call'"
        );
        assert_eq!(
            err("redis.redis.call('ping')"),
            "Error registering functions: ERR user_function:2: Script attempted to access \
             nonexistent global variable 'redis'"
        );
        assert_eq!(
            err("a = 1"),
            "Error registering functions: ERR user_function:2: Attempt to modify a readonly table"
        );
        assert_eq!(
            err("mt = getmetatable(_G)"),
            "Error registering functions: ERR user_function:2: Script attempted to access \
             nonexistent global variable 'getmetatable'"
        );
        assert_eq!(
            err("bad script"),
            "Error compiling function: user_function:2: '=' expected near 'script'"
        );
        assert_eq!(
            err("local a = 1 while 1 do a = a + 1 end"),
            "Error registering functions: ERR FUNCTION LOAD timeout"
        );
        // Logging and the version fields are there.
        let r = load(
            &lua,
            "redis.log(redis.LOG_DEBUG, 'loading')\n\
             local v = redis.REDIS_VERSION\n\
             redis.register_function('v', function() return v end)",
        )
        .unwrap();
        assert_eq!(text(call(&lua, &r[0], &[], &[]).unwrap()), "7.2.4");
        // After loading, the real globals are back.
        let r = load(
            &lua,
            "redis.register_function('g', function() return string.rep('x', 2) .. \
             type(redis.sha1hex) .. type(redis.register_function) end)",
        )
        .unwrap();
        assert_eq!(text(call(&lua, &r[0], &[], &[]).unwrap()), "xxfunctionnil");
    }

    #[test]
    fn register_function_errors_as_valkey() {
        let lua = functions_vm();
        let err = |code: &str| load(&lua, code).err().unwrap();
        let reg = "Error registering functions: ERR ";
        for (code, msg) in [
            (
                "redis.register_function()",
                "wrong number of arguments to server.register_function",
            ),
            (
                "redis.register_function('f1')",
                "calling server.register_function with a single argument is only applicable to \
                 Lua table (representing named arguments).",
            ),
            (
                "redis.register_function('f1', function() end, {}, 'd', 'x')",
                "wrong number of arguments to server.register_function",
            ),
            (
                "redis.register_function(nil, function() end)",
                "first argument to server.register_function must be a string",
            ),
            (
                "redis.register_function('f2', 'not a function')",
                "second argument to server.register_function must be a function",
            ),
            (
                "redis.register_function{function_name=function() end, callback=function() end}",
                "function_name argument given to server.register_function must be a string",
            ),
            (
                "redis.register_function{function_name='f1', callback='bad'}",
                "callback argument given to server.register_function must be a function",
            ),
            (
                "redis.register_function{function_name='f1', callback=function() end, \
                 description=function() end}",
                "description argument given to server.register_function must be a string",
            ),
            (
                "redis.register_function{function_name='f1', callback=function() end, x='y'}",
                "unknown argument given to server.register_function",
            ),
            (
                "redis.register_function{callback=function() end}",
                "server.register_function must get a function name argument",
            ),
            (
                "redis.register_function{function_name='f1'}",
                "server.register_function must get a callback argument",
            ),
            (
                "redis.register_function{function_name='f1', callback=function() end, \
                 flags='bad'}",
                "flags argument to server.register_function must be a table representing \
                 function flags",
            ),
            (
                "redis.register_function{function_name='f1', callback=function() end, \
                 flags={'unknown'}}",
                "unknown flag given",
            ),
            (
                "redis.register_function{function_name='f1', callback=function() end, \
                 flags={function() end}}",
                "unknown flag given",
            ),
        ] {
            assert_eq!(err(code), format!("{reg}{msg}"), "{code}");
        }
    }

    #[test]
    fn registering_outside_a_load_fails_and_library_tables_stay_read_only() {
        let lua = functions_vm();
        let r = load(
            &lua,
            "local lib = redis\n\
             lib.register_function('f1', function() lib.redis = redis return 1 end)\n\
             lib.register_function('f2', function() lib.register_function('f3', \
             function() end) end)\n\
             lib.register_function('f4', function() redis.register_function('f5', \
             function() end) end)",
        )
        .unwrap();
        assert!(
            call(&lua, &r[0], &[], &[])
                .unwrap_err()
                .contains("Attempt to modify a readonly table")
        );
        assert!(
            call(&lua, &r[1], &[], &[])
                .unwrap_err()
                .contains("server.register_function can only be called on FUNCTION LOAD command")
        );
        assert!(
            call(&lua, &r[2], &[], &[])
                .unwrap_err()
                .contains("attempt to call field 'register_function' (a nil value)")
        );
        // EVAL's debugger helpers and KEYS/ARGV are not there.
        let r = load(
            &lua,
            "redis.register_function('d', function() return tostring(redis.breakpoint) end)\n\
             redis.register_function('k', function() return KEYS end)",
        )
        .unwrap();
        assert_eq!(text(call(&lua, &r[0], &[], &[]).unwrap()), "nil");
        assert!(
            call(&lua, &r[1], &[], &[])
                .unwrap_err()
                .contains("nonexistent global variable 'KEYS'")
        );
    }

    #[test]
    fn runtime_errors_name_the_function() {
        let lua = functions_vm();
        let r = load(
            &lua,
            "redis.register_function('f', function()\n error('boom')\n end)",
        )
        .unwrap();
        assert_eq!(
            call(&lua, &r[0], &[], &[]).unwrap_err(),
            "ERR user_function:3: boom script: f, on @user_function:3."
        );
    }
}
