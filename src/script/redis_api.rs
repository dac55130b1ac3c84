//! The `redis` (alias `server`) table: everything Valkey puts in it except the parts that run
//! commands, plus the pieces the host needs to build `redis.call` / `redis.pcall` /
//! `redis.acl_check_cmd` exactly as Valkey behaves (argument conversion, error tables, raising).
//!
//! Per-run state that `redis.setresp` and `redis.set_repl` change lives in [`RunState`], stored
//! in the VM; the host resets it with [`super::begin_run`] and reads it after the script.

use mlua::{Function, Lua, Table, Value};

use super::raise::{Args, LibResult, Raise, c_double_to_i64, lib_function, to_lua_number};
use super::resp::reply_to_lua;

/// `redis.LOG_*`: Valkey's log levels.
pub const LOG_DEBUG: i32 = 0;
pub const LOG_VERBOSE: i32 = 1;
pub const LOG_NOTICE: i32 = 2;
pub const LOG_WARNING: i32 = 3;

/// `redis.REPL_*`: where the script's writes propagate.
pub const REPL_NONE: u8 = 0;
pub const REPL_AOF: u8 = 1;
pub const REPL_REPLICA: u8 = 2;
pub const REPL_ALL: u8 = REPL_AOF | REPL_REPLICA;

/// The Redis version scripts see (`redis.REDIS_VERSION`), the one INFO reports.
pub const REDIS_VERSION: &str = crate::REDIS_COMPAT_VERSION;
/// `redis.REDIS_VERSION_NUM`: 0x00MMmmpp.
pub const REDIS_VERSION_NUM: u32 = 0x07_02_04;
/// The Valkey Lua API this room implements (`redis.VALKEY_VERSION`).
pub const VALKEY_VERSION: &str = "8.0.0";
pub const VALKEY_VERSION_NUM: u32 = 0x08_00_00;
/// `redis.SERVER_NAME`, as INFO's `server_name`.
pub const SERVER_NAME: &str = "tallykv";

/// What a running script changed about its own execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    /// The protocol `redis.call` replies are produced in (`redis.setresp`), 2 or 3.
    pub resp: u8,
    /// `redis.set_repl` flags (`REPL_*`).
    pub repl: u8,
}

impl Default for RunState {
    /// Every script starts with RESP2 (whatever the caller speaks) and full propagation.
    fn default() -> Self {
        RunState {
            resp: 2,
            repl: REPL_ALL,
        }
    }
}

/// The run state of the script running (or last run) in `lua`.
pub fn run_state(lua: &Lua) -> RunState {
    lua.app_data_ref::<RunState>()
        .map(|s| *s)
        .unwrap_or_default()
}

fn update_run_state(lua: &Lua, f: impl FnOnce(&mut RunState)) {
    let mut state = run_state(lua);
    f(&mut state);
    lua.set_app_data(state);
}

/// The level below which `redis.log` drops messages (Valkey's `verbosity`, default notice).
#[derive(Debug, Clone, Copy)]
pub struct LogVerbosity(pub i32);

pub fn set_log_verbosity(lua: &Lua, level: i32) {
    lua.set_app_data(LogVerbosity(level));
}

/// `luaPushErrorBuff`: the `{err = "CODE message"}` table Valkey uses for command errors.
///
/// `text` is either `-CODE message` (the code is the first word; a lone word gets `ERR`) or a
/// plain message (which gets `ERR`). Trailing and leading CR/LF are trimmed from the message.
pub fn error_table(lua: &Lua, text: &[u8]) -> mlua::Result<Table> {
    let (code, msg): (&[u8], &[u8]) = match text.strip_prefix(b"-") {
        Some(rest) => match rest.iter().position(|&b| b == b' ') {
            Some(sp) => (&rest[..sp], &rest[sp + 1..]),
            None => (b"ERR", rest),
        },
        None => (b"ERR", text),
    };
    let is_crlf = |b: &u8| *b == b'\r' || *b == b'\n';
    let start = msg.iter().position(|b| !is_crlf(b)).unwrap_or(msg.len());
    let end = msg
        .iter()
        .rposition(|b| !is_crlf(b))
        .map_or(start, |e| e + 1);
    let mut err = code.to_vec();
    err.push(b' ');
    err.extend_from_slice(&msg[start..end]);
    let t = lua.create_table()?;
    t.raw_set("err", lua.create_string(err)?)?;
    Ok(t)
}

/// [`error_table`] raised (`luaPushError` + `luaError`).
pub(super) fn raise_error_table(lua: &Lua, text: &str) -> Raise {
    match error_table(lua, text.as_bytes()) {
        Ok(t) => Raise::Value(Value::Table(t)),
        Err(e) => e.into(),
    }
}

/// Why `redis.call`'s arguments could not become a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandArgsError {
    NoArguments,
    NotStringOrInteger,
}

impl CommandArgsError {
    pub fn message(self) -> &'static str {
        match self {
            CommandArgsError::NoArguments => "Please specify at least one argument for this call",
            CommandArgsError::NotStringOrInteger => "Command arguments must be strings or integers",
        }
    }
}

/// `luaArgsToServerArgv`: strings as they are, numbers as Valkey prints them (an integral
/// value within ±2^62 as an integer, anything else with `fpconv_dtoa`, never Lua's lossy
/// `%.14g`); anything else refuses the call.
pub fn command_args(args: &[Value]) -> Result<Vec<Vec<u8>>, CommandArgsError> {
    if args.is_empty() {
        return Err(CommandArgsError::NoArguments);
    }
    args.iter().map(command_arg).collect()
}

/// [`command_args`] over a library function's arguments (read one at a time).
fn command_args_of(args: &Args) -> Result<Vec<Vec<u8>>, CommandArgsError> {
    if args.is_empty() {
        return Err(CommandArgsError::NoArguments);
    }
    (1..=args.len())
        .map(|i| command_arg(&args.get(i).unwrap_or(Value::Nil)))
        .collect()
}

fn command_arg(v: &Value) -> Result<Vec<u8>, CommandArgsError> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => {
            let n = super::raise::number_of(v).expect("matched a number");
            let mut out = Vec::new();
            match double2ll(n) {
                Some(ll) => crate::util::format_i64(ll, &mut out),
                None => crate::util::fpconv_dtoa(n, &mut out),
            }
            Ok(out)
        }
        _ => Err(CommandArgsError::NotStringOrInteger),
    }
}

/// Valkey's `double2ll`: the integer value of an integral double within ±(2^63-1)/2.
fn double2ll(d: f64) -> Option<i64> {
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if !(-LIMIT..=LIMIT).contains(&d) {
        return None;
    }
    let ll = d as i64;
    (ll as f64 == d).then_some(ll)
}

/// What the host's command execution produced for `redis.call` / `redis.pcall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The command ran: its complete encoded reply (RESP2 or RESP3 framing, as the script's
    /// [`RunState::resp`] asked). An error reply (`-...`) is raised by `redis.call`.
    Reply(Vec<u8>),
    /// The script may not run it (`scriptCall`'s error: unknown command, wrong arity, write in
    /// a read-only script, ...): `-CODE message` or a plain message (which gets `ERR`).
    Refused(Vec<u8>),
}

/// Whether the function raises command errors (`redis.call`) or returns them (`redis.pcall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    Call,
    Pcall,
}

/// Builds `redis.call` or `redis.pcall` around the host's executor. `exec` gets the command
/// (name first) and runs it as the script's client.
pub fn command_function<F>(lua: &Lua, mode: CallMode, exec: F) -> mlua::Result<Function>
where
    F: Fn(&Lua, Vec<Vec<u8>>) -> CommandOutcome + 'static,
{
    lib_function(lua, move |lua, args: Args| -> LibResult<Value> {
        let fail = |table: Table| match mode {
            CallMode::Call => Err(Raise::Value(Value::Table(table))),
            CallMode::Pcall => Ok(Value::Table(table)),
        };
        let argv = match command_args_of(&args) {
            Ok(argv) => argv,
            Err(e) => return fail(error_table(lua, e.message().as_bytes())?),
        };
        match exec(lua, argv) {
            CommandOutcome::Refused(text) => {
                let t = error_table(lua, &text)?;
                // The command's own error path already counted it.
                t.raw_set("ignore_error_stats_update", true)?;
                fail(t)
            }
            CommandOutcome::Reply(reply) => {
                let resp3 = run_state(lua).resp == 3;
                let v = reply_to_lua(lua, &reply, resp3)?;
                match v {
                    Value::Table(t) if mode == CallMode::Call && reply.first() == Some(&b'-') => {
                        Err(Raise::Value(Value::Table(t)))
                    }
                    v => Ok(v),
                }
            }
        }
    })
}

/// Builds `redis.acl_check_cmd`: `check` answers whether the caller's user may run the
/// command, or `None` when there is no such command.
pub fn acl_check_function<F>(lua: &Lua, check: F) -> mlua::Result<Function>
where
    F: Fn(&Lua, Vec<Vec<u8>>) -> Option<bool> + 'static,
{
    lib_function(lua, move |lua, args: Args| -> LibResult<bool> {
        let argv = command_args_of(&args).map_err(|e| raise_error_table(lua, e.message()))?;
        check(lua, argv).ok_or_else(|| {
            raise_error_table(lua, "Invalid command passed to server.acl_check_cmd()")
        })
    })
}

fn log(lua: &Lua, args: &Args) -> LibResult<()> {
    if args.len() < 2 {
        return Err(raise_error_table(
            lua,
            "server.log() requires two arguments or more.",
        ));
    }
    let first = args.get(1).unwrap_or(Value::Nil);
    let Some(level) = to_lua_number(lua, &first)? else {
        return Err(raise_error_table(
            lua,
            "First argument must be a number (log level).",
        ));
    };
    let level = c_double_to_i64(level) as i32;
    if !(LOG_DEBUG..=LOG_WARNING).contains(&level) {
        return Err(raise_error_table(lua, "Invalid log level."));
    }
    let verbosity = lua
        .app_data_ref::<LogVerbosity>()
        .map_or(LOG_NOTICE, |v| v.0);
    if level < verbosity {
        return Ok(());
    }
    let mut line = Vec::new();
    for j in 1..args.len() {
        let v = args.get(j + 1).unwrap_or(Value::Nil);
        if let Some(s) = super::raise::to_lua_string(lua, &v)? {
            // Valkey adds the separator before every piece but the first argument's.
            if j != 1 {
                line.push(b' ');
            }
            line.extend_from_slice(&s);
        }
    }
    let line = String::from_utf8_lossy(&line);
    match level {
        LOG_DEBUG | LOG_VERBOSE => tracing::debug!(target: "script", "{line}"),
        LOG_NOTICE => tracing::info!(target: "script", "{line}"),
        _ => tracing::warn!(target: "script", "{line}"),
    }
    Ok(())
}

fn sha1hex(lua: &Lua, args: &Args) -> LibResult<String> {
    if args.len() != 1 {
        return Err(raise_error_table(lua, "wrong number of arguments"));
    }
    let data =
        super::raise::to_lua_string(lua, &args.get(1).unwrap_or(Value::Nil))?.unwrap_or_default();
    Ok(sha1_smol::Sha1::from(data).digest().to_string())
}

/// `redis.error_reply` / `redis.status_reply`: a one-field table, or (without exactly one
/// string argument) an error table that is returned, not raised.
fn single_field(lua: &Lua, args: &Args, field: &str) -> LibResult<Table> {
    let s = match (args.len(), args.get(1)) {
        (1, Some(Value::String(s))) => s.as_bytes().to_vec(),
        _ => return Ok(error_table(lua, b"wrong number or type of arguments")?),
    };
    if field == "err" {
        let text = if s.starts_with(b"-") {
            s
        } else {
            [b"-".as_slice(), &s].concat()
        };
        return Ok(error_table(lua, &text)?);
    }
    let t = lua.create_table()?;
    t.raw_set(field, lua.create_string(s)?)?;
    Ok(t)
}

/// `server.log`, the log levels and the version fields (`luaRegisterLogFunction`,
/// `luaRegisterVersion`): all a library sees of `server` while it loads, besides
/// `register_function`.
pub(super) fn add_log_and_version(lua: &Lua, t: &Table) -> mlua::Result<()> {
    t.raw_set("log", lib_function(lua, |lua, a| log(lua, &a))?)?;
    t.raw_set("LOG_DEBUG", LOG_DEBUG)?;
    t.raw_set("LOG_VERBOSE", LOG_VERBOSE)?;
    t.raw_set("LOG_NOTICE", LOG_NOTICE)?;
    t.raw_set("LOG_WARNING", LOG_WARNING)?;

    t.raw_set("REDIS_VERSION_NUM", REDIS_VERSION_NUM)?;
    t.raw_set("REDIS_VERSION", REDIS_VERSION)?;
    t.raw_set("VALKEY_VERSION_NUM", VALKEY_VERSION_NUM)?;
    t.raw_set("VALKEY_VERSION", VALKEY_VERSION)?;
    t.raw_set("SERVER_NAME", SERVER_NAME)
}

/// Adds to `redis` every field Valkey 8 gives it for EVAL except `call`, `pcall` and
/// `acl_check_cmd` (the host's, see [`command_function`] and [`acl_check_function`]).
pub fn add_redis_helpers(lua: &Lua, redis: &Table) -> mlua::Result<()> {
    add_log_and_version(lua, redis)?;

    redis.raw_set(
        "setresp",
        lib_function(lua, |lua, a| -> LibResult<()> {
            if a.len() != 1 {
                return Err(raise_error_table(
                    lua,
                    "server.setresp() requires one argument.",
                ));
            }
            let resp = to_lua_number(lua, &a.get(1).unwrap_or(Value::Nil))?
                .map_or(0, |n| c_double_to_i64(n) as i32);
            if resp != 2 && resp != 3 {
                return Err(raise_error_table(lua, "RESP version must be 2 or 3."));
            }
            update_run_state(lua, |s| s.resp = resp as u8);
            Ok(())
        })?,
    )?;
    redis.raw_set("sha1hex", lib_function(lua, |lua, a| sha1hex(lua, &a))?)?;
    redis.raw_set(
        "error_reply",
        lib_function(lua, |lua, a| single_field(lua, &a, "err"))?,
    )?;
    redis.raw_set(
        "status_reply",
        lib_function(lua, |lua, a| single_field(lua, &a, "ok"))?,
    )?;

    redis.raw_set(
        "set_repl",
        lib_function(lua, |lua, a| -> LibResult<()> {
            if a.len() != 1 {
                return Err(raise_error_table(
                    lua,
                    "server.set_repl() requires one argument.",
                ));
            }
            let flags = to_lua_number(lua, &a.get(1).unwrap_or(Value::Nil))?
                .map_or(0, |n| c_double_to_i64(n) as i32);
            if flags & !(REPL_ALL as i32) != 0 {
                return Err(raise_error_table(
                    lua,
                    "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                ));
            }
            update_run_state(lua, |s| s.repl = flags as u8);
            Ok(())
        })?,
    )?;
    redis.raw_set("REPL_NONE", REPL_NONE)?;
    redis.raw_set("REPL_AOF", REPL_AOF)?;
    redis.raw_set("REPL_SLAVE", REPL_REPLICA)?;
    redis.raw_set("REPL_REPLICA", REPL_REPLICA)?;
    redis.raw_set("REPL_ALL", REPL_ALL)?;

    // EVAL-only helpers. No debugger here: breakpoint() is false and debug() does nothing,
    // as in Valkey outside a debugging session. replicate_commands() is a deprecated no-op.
    redis.raw_set(
        "breakpoint",
        lib_function(lua, |_lua, _a| -> LibResult<bool> { Ok(false) })?,
    )?;
    redis.raw_set(
        "debug",
        lib_function(lua, |_lua, _a| -> LibResult<()> { Ok(()) })?,
    )?;
    redis.raw_set(
        "replicate_commands",
        lib_function(lua, |_lua, _a| -> LibResult<bool> { Ok(true) })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::test_support::{eval, eval_err, sealed_vm_with};

    #[test]
    fn error_table_splits_the_code() {
        let lua = Lua::new();
        let err = |t: &[u8]| -> String {
            error_table(&lua, t)
                .unwrap()
                .raw_get::<String>("err")
                .unwrap()
        };
        assert_eq!(
            err(b"-WRONGTYPE Operation against a key"),
            "WRONGTYPE Operation against a key"
        );
        assert_eq!(err(b"plain message"), "ERR plain message");
        assert_eq!(err(b"-NOCODE"), "ERR NOCODE");
        assert_eq!(err(b"-ERR bad\r\n"), "ERR bad");
    }

    #[test]
    fn command_args_convert_numbers_like_valkey() {
        let lua = Lua::new();
        let s = Value::String(lua.create_string("get").unwrap());
        let args = command_args(&[
            s,
            Value::Integer(10),
            Value::Number(1e15),
            Value::Number(0.1),
            Value::Number(-0.0),
            Value::Number(3.5e20),
        ])
        .unwrap();
        let text: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8(a.clone()).unwrap())
            .collect();
        assert_eq!(
            text,
            ["get", "10", "1000000000000000", "0.1", "0", "3.5e+20"]
        );
        assert_eq!(command_args(&[]), Err(CommandArgsError::NoArguments));
        assert_eq!(
            command_args(&[Value::Boolean(true)]),
            Err(CommandArgsError::NotStringOrInteger)
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(
            eval("return redis.sha1hex('')"),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(eval("return redis.status_reply('OK').ok"), "OK");
        assert_eq!(eval("return redis.error_reply('My Error').err"), "My Error");
        assert_eq!(eval("return redis.error_reply('x').err"), "ERR x");
        assert_eq!(eval("return redis.error_reply('-CODE x').err"), "CODE x");
        assert_eq!(
            eval("return redis.error_reply(1).err"),
            "ERR wrong number or type of arguments"
        );
        assert_eq!(eval("return redis.REDIS_VERSION"), "7.2.4");
        assert_eq!(eval("return redis.REDIS_VERSION_NUM"), "459268");
        assert_eq!(eval("return server.LOG_WARNING"), "3");
        assert_eq!(eval("return tostring(redis.replicate_commands())"), "true");
        assert_eq!(eval("return tostring(redis.breakpoint())"), "false");
        assert_eq!(eval("return redis.REPL_ALL + redis.REPL_SLAVE"), "5");
        assert_eq!(eval("return tostring(rawequal(redis, server))"), "true");
    }

    #[test]
    fn raised_error_tables() {
        assert_eq!(
            eval_err("redis.setresp(4)"),
            "ERR RESP version must be 2 or 3."
        );
        assert_eq!(
            eval_err("redis.setresp()"),
            "ERR server.setresp() requires one argument."
        );
        assert_eq!(
            eval_err("redis.set_repl(8)"),
            "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE."
        );
        assert_eq!(eval_err("redis.log(9, 'x')"), "ERR Invalid log level.");
        assert_eq!(
            eval_err("redis.log(1)"),
            "ERR server.log() requires two arguments or more."
        );
        assert_eq!(
            eval_err("redis.log('a', 'x')"),
            "ERR First argument must be a number (log level)."
        );
        assert_eq!(eval_err("redis.sha1hex()"), "ERR wrong number of arguments");
        // pcall hands back the message of an error table, as Valkey's pcall does.
        assert_eq!(
            eval("local ok, e = pcall(redis.log, 9, 'x') return e"),
            "ERR Invalid log level."
        );
    }

    #[test]
    fn setresp_and_set_repl_change_the_run_state() {
        let lua = sealed_vm_with(|_, _| Ok(()));
        crate::script::begin_run(&lua);
        let f =
            crate::script::compile_script(&lua, b"redis.setresp(3) redis.set_repl(redis.REPL_AOF)")
                .unwrap();
        crate::script::run_script(&lua, &f, ()).unwrap();
        assert_eq!(
            run_state(&lua),
            RunState {
                resp: 3,
                repl: REPL_AOF
            }
        );
        crate::script::begin_run(&lua);
        assert_eq!(run_state(&lua), RunState::default());
    }

    #[test]
    fn call_and_pcall_with_a_host_executor() {
        let lua = sealed_vm_with(|lua, redis| {
            let exec = |_: &Lua, argv: Vec<Vec<u8>>| match argv[0].as_slice() {
                b"get" => CommandOutcome::Reply(b"$3\r\nbar\r\n".to_vec()),
                b"fail" => {
                    CommandOutcome::Reply(b"-WRONGTYPE Operation against a key\r\n".to_vec())
                }
                _ => CommandOutcome::Refused(b"Unknown command called from script".to_vec()),
            };
            redis.raw_set("call", command_function(lua, CallMode::Call, exec)?)?;
            redis.raw_set("pcall", command_function(lua, CallMode::Pcall, exec)?)?;
            Ok(())
        });
        let run = |code: &str| {
            let f = crate::script::compile_script(&lua, code.as_bytes()).unwrap();
            crate::script::run_script(&lua, &f, ())
        };
        let text = |r: Result<Value, crate::script::ScriptError>| match r.unwrap() {
            Value::String(s) => s.to_str().unwrap().to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(text(run("return redis.call('get', 'foo')")), "bar");
        assert_eq!(
            text(run("return redis.pcall('fail').err")),
            "WRONGTYPE Operation against a key"
        );
        assert_eq!(
            text(run("return redis.pcall('nope').err")),
            "ERR Unknown command called from script"
        );
        assert_eq!(
            text(run("return redis.pcall('get', {}).err")),
            "ERR Command arguments must be strings or integers"
        );
        assert_eq!(
            text(run("local ok, e = pcall(redis.call, 'fail') return e")),
            "WRONGTYPE Operation against a key"
        );
        let err = run("\nreturn redis.call('fail')").unwrap_err();
        assert_eq!(
            err.reply_text("abc"),
            "WRONGTYPE Operation against a key script: abc, on @user_script:2."
        );
        let err = run("return redis.call()").unwrap_err();
        assert_eq!(
            err.reply_text("abc"),
            "ERR Please specify at least one argument for this call script: abc, on @user_script:1."
        );
    }

    #[test]
    fn thousands_of_arguments_and_results() {
        // Valkey's "Script check unpack with massive arguments": 7999 values through
        // redis.call. Each would be an mlua reference if passed one by one.
        let lua = sealed_vm_with(|lua, redis| {
            let exec = |_: &Lua, argv: Vec<Vec<u8>>| {
                CommandOutcome::Reply(format!(":{}\r\n", argv.len() - 2).into_bytes())
            };
            redis.raw_set("call", command_function(lua, CallMode::Call, exec)?)?;
            Ok(())
        });
        let run = |code: &str| {
            let f = crate::script::compile_script(&lua, code.as_bytes()).unwrap();
            crate::script::run_script(&lua, &f, ()).unwrap()
        };
        let n = run("local a = {} for i = 1, 7999 do a[i] = 'v' .. i end \
                     return redis.call('rpush', 'l', unpack(a))");
        assert_eq!(n, Value::Number(7999.0));
        let n = run("local a = {} for i = 1, 3000 do a[i] = 'v' .. i end \
                     return #cmsgpack.pack(unpack(a))");
        assert!(matches!(n, Value::Integer(_)));
        // Only the first of thousands of results is kept.
        let v = run("local a = {} for i = 1, 7999 do a[i] = 'v' .. i end return unpack(a)");
        assert_eq!(v.as_string().unwrap().to_str().unwrap(), "v1");
        let v = run("local a = {} for i = 1, 200 do a[i] = 2 ^ (i % 31) end \
                     return bit.bor(unpack(a))");
        assert_eq!(v, Value::Integer(i32::MAX as i64));
    }
}
