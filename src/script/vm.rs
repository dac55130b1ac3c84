//! The Lua 5.1 state as Valkey 8 configures it, and running scripts in it.
//!
//! [`new_vm`] builds the state with its libraries; the host then adds `redis.call` and friends
//! to [`redis_table`] and calls [`seal`], after which scripts cannot change any global or any
//! library table. Vendored Lua 5.1 has no read-only tables (Valkey patches its Lua for them),
//! so sealing uses proxies: every table reachable from the globals is replaced by an empty
//! table whose metatable reads through to the real one and refuses writes; the real tables are
//! reachable only from Rust. The builtins that bypass metatables are guarded: `rawset`,
//! `setmetatable` and `table.insert`/`remove`/`sort` refuse the proxies, `rawget`, `next`,
//! `pairs` and `ipairs` see through them, and `getmetatable` shows what Valkey shows (nothing
//! for a library table, a read-only metatable for `_G`).
//!
//! Scripts run as Valkey runs them: called from C with `lua_pcall(L, n, 1, handler)`, Valkey's
//! error handler (here in Rust) shaping errors into `{err, source, line}`, and Valkey's `pcall`
//! turning command error tables back into messages.

use mlua::chunk::ChunkMode;
use mlua::{Function, IntoLuaMulti, Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use super::raise::{
    Args, Guard, LibResult, Raise, guard_builtin, lib_function, protected_runner, root_message,
    to_lua_string, valkey_pcall_function,
};
use super::{bit, cjson, cmsgpack, rand, redis_api, structlib};

/// The chunk name Valkey gives EVAL scripts: errors read `user_script:<line>: ...`.
pub const EVAL_CHUNK_NAME: &str = "@user_script";

const READONLY_ERROR: &str = "Attempt to modify a readonly table";

// Named registry slots.
const REG_GLOBALS: &str = "tallykv.script.globals";
const REG_REDIS: &str = "tallykv.script.redis";
const REG_RUNNER: &str = "tallykv.script.runner";
const REG_HANDLER: &str = "tallykv.script.error_handler";
const REG_TOSTRING: &str = "tallykv.script.tostring";
// Kept by `seal` for tables protected after it (the function engine's load-time API).
const REG_READONLY: &str = "tallykv.script.readonly";
const REG_REFUSE_WRITE: &str = "tallykv.script.refuse_write";
const REG_NONEXISTENT: &str = "tallykv.script.nonexistent";
const REG_VIEW_META: &str = "tallykv.script.globals_view_meta";

/// The globals a script may see: Valkey's allow lists (`script_lua.c`). Whatever else the Lua
/// libraries define (`print`, `dofile`, `loadfile`, `getfenv`, `setfenv`, `newproxy`, ...) is
/// removed.
const ALLOWED_GLOBALS: &[&str] = &[
    // libraries
    "string",
    "cjson",
    "bit",
    "cmsgpack",
    "math",
    "table",
    "struct",
    "os",
    // the server API
    "server",
    "redis",
    // builtins
    "xpcall",
    "tostring",
    "setmetatable",
    "next",
    "assert",
    "tonumber",
    "rawequal",
    "collectgarbage",
    "getmetatable",
    "rawset",
    "pcall",
    "coroutine",
    "type",
    "_G",
    "select",
    "unpack",
    "gcinfo",
    "pairs",
    "rawget",
    "loadstring",
    "ipairs",
    "_VERSION",
    "load",
    "error",
];

/// Why a script did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    /// The script did not compile: Lua's message (`user_script:1: ...`).
    Compile(String),
    /// The script raised an error, after Valkey's error handler shaped it.
    Runtime(RuntimeError),
    /// The error could not go through the handler (out of memory, an error in the handler):
    /// the bare message.
    Unhandled(String),
}

/// A runtime error as Valkey's error handler leaves it: `{err=, source=, line=}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    /// The error text with its code (`ERR user_script:1: boom`, `WRONGTYPE ...`).
    pub err: String,
    /// The chunk the error happened in (`@user_script`), when the handler found a frame.
    pub source: Option<String>,
    /// The line in that chunk.
    pub line: Option<i64>,
    /// The error came from a command that already counted it in the error stats.
    pub ignore_stats: bool,
}

impl ScriptError {
    /// The error reply text (without the leading `-`) for a script called `name` (EVAL: its
    /// SHA1), as `luaCallFunction` and the compile step write it.
    pub fn reply_text(&self, name: &str) -> String {
        match self {
            ScriptError::Compile(msg) => {
                format!("ERR Error compiling script (new function): {msg}")
            }
            ScriptError::Runtime(e) => match (&e.source, e.line) {
                (Some(source), Some(line)) => {
                    format!("{} script: {name}, on {source}:{line}.", e.err)
                }
                _ => e.err.clone(),
            },
            ScriptError::Unhandled(msg) => {
                let msg: String = msg.chars().take(100).collect();
                format!("ERR Error running script {name}, {msg}")
            }
        }
    }

    /// Whether the error was already counted by the command that produced it.
    pub fn ignore_stats(&self) -> bool {
        matches!(self, ScriptError::Runtime(e) if e.ignore_stats)
    }
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reply_text("?"))
    }
}

impl std::error::Error for ScriptError {}

/// Lua 5.1's `luaO_chunkid`: how a chunk name appears in messages (`LUA_IDSIZE` 60).
fn chunk_id(source: &[u8]) -> Vec<u8> {
    const IDSIZE: usize = 60;
    if let Some(rest) = source.strip_prefix(b"=") {
        return rest[..rest.len().min(IDSIZE - 1)].to_vec();
    }
    if let Some(rest) = source.strip_prefix(b"@") {
        let room = IDSIZE - " '...' ".len() - 1;
        return if rest.len() > room {
            [b"...".as_slice(), &rest[rest.len() - room..]].concat()
        } else {
            rest.to_vec()
        };
    }
    let room = IDSIZE - " [string \"...\"] ".len() - 1;
    let line = source
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .unwrap_or(source.len());
    let len = line.min(room);
    let mut out = b"[string \"".to_vec();
    out.extend_from_slice(&source[..len]);
    if len < source.len() {
        out.extend_from_slice(b"...");
    }
    out.extend_from_slice(b"\"]");
    out
}

/// The error Valkey's Lua gives for a precompiled chunk: its loader was removed, so the
/// binary is lexed as text and the ESC byte is an unexpected symbol.
fn bytecode_refusal(chunkname: &[u8]) -> Vec<u8> {
    let mut msg = chunk_id(chunkname);
    msg.extend_from_slice(b":1: unexpected symbol near 'char(27)'");
    msg
}

/// A C string's bytes: up to the first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(end) => &b[..end],
        None => b,
    }
}

/// Compiles an EVAL script body (chunk `@user_script`). Precompiled bytecode is refused.
pub fn compile_script(lua: &Lua, code: &[u8]) -> Result<Function, ScriptError> {
    compile_named(lua, code, EVAL_CHUNK_NAME)
}

/// Compiles source under a chunk name (`@user_script` for EVAL, `@user_function` for
/// libraries, as the host decides).
pub fn compile_named(lua: &Lua, code: &[u8], chunkname: &str) -> Result<Function, ScriptError> {
    if code.first() == Some(&0x1b) {
        return Err(ScriptError::Compile(
            String::from_utf8_lossy(&bytecode_refusal(chunkname.as_bytes())).into_owned(),
        ));
    }
    lua.load(code)
        .set_name(chunkname)
        .set_mode(ChunkMode::Text)
        .into_function()
        .map_err(|e| ScriptError::Compile(root_message(&e)))
}

fn registry_fn(lua: &Lua, name: &str) -> mlua::Result<Function> {
    lua.named_registry_value(name)
}

/// The real globals table (writable from Rust after sealing).
fn real_globals(lua: &Lua) -> mlua::Result<Table> {
    lua.named_registry_value(REG_GLOBALS)
}

/// The real `redis` table (also the `server` global): the host adds `call`, `pcall` and
/// `acl_check_cmd` to it, normally before [`seal`].
pub fn redis_table(lua: &Lua) -> mlua::Result<Table> {
    lua.named_registry_value(REG_REDIS)
}

/// Sets a global behind the scripts' read-only view, as EVAL sets `KEYS` and `ARGV` before
/// each run (Valkey lifts the protection for that moment).
pub fn set_global(lua: &Lua, name: &str, value: impl mlua::IntoLua) -> mlua::Result<()> {
    real_globals(lua)?.raw_set(name, value)
}

/// Sets `KEYS` and `ARGV` for an EVAL run.
pub fn set_keys_and_argv<K, A>(lua: &Lua, keys: &[K], argv: &[A]) -> mlua::Result<()>
where
    K: AsRef<[u8]>,
    A: AsRef<[u8]>,
{
    let array = |items: &mut dyn Iterator<Item = &[u8]>| -> mlua::Result<Table> {
        let t = lua.create_table()?;
        for (i, item) in items.enumerate() {
            t.raw_set(i + 1, lua.create_string(item)?)?;
        }
        Ok(t)
    };
    set_global(lua, "KEYS", array(&mut keys.iter().map(|k| k.as_ref()))?)?;
    set_global(lua, "ARGV", array(&mut argv.iter().map(|a| a.as_ref()))?)
}

/// Prepares the VM for one script run, as EVAL and FCALL do: RESP2 and full replication
/// ([`redis_api::RunState`]). The PRNG is left running, as in Valkey 7+ (see `rand.rs`).
pub fn begin_run(lua: &Lua) {
    lua.set_app_data(redis_api::RunState::default());
}

/// Runs a compiled script under Valkey's error handler and returns its first result
/// (`lua_pcall(..., 1, handler)`: only one result ever reaches Rust). FUNCTION mode passes
/// `(keys, args)` as `args`.
pub fn run_script(lua: &Lua, f: &Function, args: impl IntoLuaMulti) -> Result<Value, ScriptError> {
    let vm_failure = |e: mlua::Error| ScriptError::Unhandled(root_message(&e));
    let runner = registry_fn(lua, REG_RUNNER).map_err(vm_failure)?;
    let handler = registry_fn(lua, REG_HANDLER).map_err(vm_failure)?;
    let mut call_args = args.into_lua_multi(lua).map_err(vm_failure)?;
    call_args.push_front(Value::Function(f.clone()));
    call_args.push_front(Value::Function(handler));
    let results: MultiValue = runner.call(call_args).map_err(vm_failure)?;
    let mut results = results.into_iter();
    let ok = matches!(results.next(), Some(Value::Boolean(true)));
    let first = results.next().unwrap_or(Value::Nil);
    if ok {
        return Ok(first);
    }
    match first {
        Value::Table(t) => Err(ScriptError::Runtime(extract_error(lua, &t))),
        other => Err(ScriptError::Unhandled(
            to_lua_string(lua, &other)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "execution failure".to_string()),
        )),
    }
}

/// `luaExtractErrorInformation` over the handler's table.
fn extract_error(lua: &Lua, t: &Table) -> RuntimeError {
    let text = |name: &str| -> Option<String> {
        let v: Value = t.get(name).ok()?;
        to_lua_string(lua, &v)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(c_str(&b)).into_owned())
    };
    RuntimeError {
        err: text("err").unwrap_or_else(|| "ERR unknown error".to_string()),
        source: text("source"),
        line: text("line").and_then(|l| l.parse().ok()),
        ignore_stats: matches!(
            t.get::<Value>("ignore_error_stats_update"),
            Ok(Value::Boolean(true))
        ),
    }
}

/// `tostring(v)` with the builtin (captured before sealing).
fn lua_tostring(lua: &Lua, v: &Value) -> mlua::Result<Vec<u8>> {
    if let Some(b) = to_lua_string(lua, v)? {
        return Ok(b);
    }
    let tostring = registry_fn(lua, REG_TOSTRING)?;
    let s: mlua::LuaString = tostring.call(v.clone())?;
    Ok(s.as_bytes().to_vec())
}

/// Valkey's EVAL error handler (`luaStateInstallErrorHandler`), in Rust: it finds the frame
/// that raised (skipping a C function, so a failing `redis.call` is reported at the script's
/// line), turns a non-table error into `{err = 'ERR ' .. tostring(err)}` and records the
/// frame's `source` and `line`. It returns a fresh table rather than writing into the
/// script's one, which may be read-only.
fn error_handler(lua: &Lua, err: Value) -> mlua::Result<Table> {
    // Level 0 is this handler, level 1 the function that raised.
    let frame = |level: usize| {
        lua.inspect_stack(level, |d| {
            let s = d.source();
            let line = d.current_line().map_or(-1, |l| l as i64);
            (s.what, s.source.map(|s| s.into_owned()), line)
        })
    };
    let mut info = frame(1);
    if matches!(info, Some(("C", _, _))) {
        info = frame(2);
    }
    let out = lua.create_table()?;
    match &err {
        Value::Table(t) => {
            for field in ["err", "source", "line", "ignore_error_stats_update"] {
                out.raw_set(field, t.get::<Value>(field)?)?;
            }
        }
        Value::Error(e) => {
            let msg = format!("ERR {}", root_message(e));
            out.raw_set("err", msg)?;
        }
        other => {
            let mut msg = b"ERR ".to_vec();
            msg.extend_from_slice(&lua_tostring(lua, other)?);
            out.raw_set("err", lua.create_string(msg)?)?;
        }
    }
    if let Some((_, source, line)) = info {
        out.raw_set("source", source)?;
        out.raw_set("line", line)?;
    }
    Ok(out)
}

/// `loadstring` refusing bytecode, otherwise the builtin (which gives the chunk the scripts'
/// globals).
fn guarded_loadstring(lua: &Lua, orig: Function) -> mlua::Result<Function> {
    lib_function(lua, move |lua, args: Args| -> LibResult<MultiValue> {
        let code = args.check_bytes(lua, 1)?;
        let name = args.opt_bytes(lua, 2, &code)?;
        if code.first() == Some(&0x1b) {
            let msg = bytecode_refusal(c_str(&name));
            return Ok(MultiValue::from_vec(vec![
                Value::Nil,
                Value::String(lua.create_string(msg)?),
            ]));
        }
        // The builtin reads two arguments; extra ones are not passed on.
        orig.call::<MultiValue>((
            Value::String(lua.create_string(&code)?),
            Value::String(lua.create_string(&name)?),
        ))
        .map_err(|e| Raise::plain(lua, root_message(&e)))
    })
}

/// `load(reader [, chunkname])` refusing bytecode: the pieces are gathered first, then
/// compiled like `loadstring`.
fn guarded_load(lua: &Lua, orig_loadstring: Function) -> mlua::Result<Function> {
    lib_function(lua, move |lua, args: Args| -> LibResult<MultiValue> {
        let name = args.opt_bytes(lua, 2, b"=(load)")?;
        let reader = match args.get(1) {
            Some(Value::Function(f)) => f.clone(),
            _ => return Err(args.type_error(1, "function")),
        };
        let mut code = Vec::new();
        loop {
            let piece: Value = reader
                .call(())
                // The reader's own error passes through unchanged, as from lua_load.
                .map_err(|e| Raise::plain(lua, root_message(&e)))?;
            match &piece {
                Value::Nil => break,
                Value::String(_) | Value::Integer(_) | Value::Number(_) => {
                    let b = to_lua_string(lua, &piece)?.unwrap_or_default();
                    // An empty piece ends the chunk (luaZ_fill).
                    if b.is_empty() {
                        break;
                    }
                    code.extend_from_slice(&b);
                }
                _ => return Err(Raise::error("reader function must return a string")),
            }
        }
        if code.first() == Some(&0x1b) {
            let msg = bytecode_refusal(c_str(&name));
            return Ok(MultiValue::from_vec(vec![
                Value::Nil,
                Value::String(lua.create_string(msg)?),
            ]));
        }
        let code = Value::String(lua.create_string(code)?);
        let name = Value::String(lua.create_string(name)?);
        Ok(orig_loadstring.call::<MultiValue>((code, name))?)
    })
}

/// Creates the Lua state with Valkey's libraries and `redis` helpers, not yet sealed.
pub fn new_vm() -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::OS,
        LuaOptions::default(),
    )?;
    let g = lua.globals();
    lua.set_named_registry_value(REG_GLOBALS, g.clone())?;

    let builtin = |name: &str| -> mlua::Result<Function> { g.raw_get(name) };
    lua.set_named_registry_value(REG_TOSTRING, builtin("tostring")?)?;

    // os is reduced to os.clock.
    let os: Table = g.raw_get("os")?;
    let reduced_os = lua.create_table()?;
    reduced_os.raw_set("clock", os.raw_get::<Function>("clock")?)?;
    g.raw_set("os", reduced_os)?;

    let math: Table = g.raw_get("math")?;
    rand::install(&lua, &math)?;
    g.raw_set("cjson", cjson::create(&lua)?)?;
    g.raw_set("struct", structlib::create(&lua)?)?;
    g.raw_set("cmsgpack", cmsgpack::create(&lua)?)?;
    g.raw_set("bit", bit::create(&lua)?)?;

    let redis = lua.create_table()?;
    redis_api::add_redis_helpers(&lua, &redis)?;
    g.raw_set("redis", redis.clone())?;
    g.raw_set("server", redis.clone())?;
    lua.set_named_registry_value(REG_REDIS, redis)?;

    lua.set_named_registry_value(REG_RUNNER, protected_runner(&lua)?)?;
    lua.set_named_registry_value(REG_HANDLER, lua.create_function(error_handler)?)?;

    let loadstring = builtin("loadstring")?;
    g.raw_set("load", guarded_load(&lua, loadstring.clone())?)?;
    g.raw_set("loadstring", guarded_loadstring(&lua, loadstring)?)?;
    g.raw_set("pcall", valkey_pcall_function(&lua)?)?;

    // Drop everything not on Valkey's allow lists.
    let keys: Vec<Value> = g
        .pairs::<Value, Value>()
        .map(|p| p.map(|(k, _)| k))
        .collect::<mlua::Result<_>>()?;
    for k in keys {
        let allowed = matches!(&k, Value::String(s) if ALLOWED_GLOBALS.iter().any(|a| s.as_bytes() == a.as_bytes()));
        if !allowed {
            g.raw_set(k, Value::Nil)?;
        }
    }
    begin_run(&lua);
    Ok(lua)
}

/// Read-only views: proxy → real table.
struct Sealer<'a> {
    lua: &'a Lua,
    readonly: Table,
    refuse_write: Function,
    /// Real table pointer → its proxy, so shared tables get one proxy (and cycles end).
    proxies: std::collections::HashMap<usize, Table>,
}

impl Sealer<'_> {
    /// The proxy of `t`, protecting (replacing by proxies) the tables it holds.
    fn protect(&mut self, t: &Table) -> mlua::Result<Table> {
        let key = t.to_pointer() as usize;
        if let Some(p) = self.proxies.get(&key) {
            return Ok(p.clone());
        }
        let proxy = self.lua.create_table()?;
        self.proxies.insert(key, proxy.clone());
        let nested: Vec<(Value, Table)> = t
            .pairs::<Value, Value>()
            .filter_map(|p| match p {
                Ok((k, Value::Table(v))) => Some(Ok((k, v))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<mlua::Result<_>>()?;
        for (k, v) in nested {
            let p = self.protect(&v)?;
            t.raw_set(k, p)?;
        }
        let meta = self.lua.create_table()?;
        meta.raw_set("__index", t.clone())?;
        meta.raw_set("__newindex", self.refuse_write.clone())?;
        // getmetatable() answers false and setmetatable() refuses: the metatable holds the
        // real table and must stay out of reach.
        meta.raw_set("__metatable", false)?;
        proxy.set_metatable(Some(meta))?;
        self.readonly.raw_set(proxy.clone(), t.clone())?;
        Ok(proxy)
    }
}

/// The real table behind a read-only proxy, or the table itself.
fn see_through(readonly: &Table, t: Table) -> mlua::Result<Table> {
    Ok(match readonly.raw_get::<Value>(t.clone())? {
        Value::Table(real) => real,
        _ => t,
    })
}

/// Makes the globals and every table reachable from them read-only for scripts, as Valkey
/// does once the state is set up (`luaSetTableProtectionRecursively`): assigning any global
/// or library field raises `Attempt to modify a readonly table`, and reading an undefined
/// global raises `Script attempted to access nonexistent global variable '<name>'`.
pub fn seal(lua: &Lua) -> mlua::Result<()> {
    let g = real_globals(lua)?;
    // view -> real table, filled as the views are made; the guards below consult it.
    let readonly = lua.create_table()?;

    // Builtins that write without metamethods refuse the views; those that read without
    // metamethods see through them. They run in the guard's own frame (see raise.rs).
    for (name, guard) in [
        ("rawset", Guard::Refuse),
        ("setmetatable", Guard::Refuse),
        ("rawget", Guard::SeeThrough),
        ("next", Guard::SeeThrough),
    ] {
        let original: Function = g.raw_get(name)?;
        g.raw_set(name, guard_builtin(lua, original, readonly.clone(), guard)?)?;
    }
    let table_lib: Table = g.raw_get("table")?;
    for name in ["insert", "remove", "sort"] {
        let original: Function = table_lib.raw_get(name)?;
        table_lib.raw_set(
            name,
            guard_builtin(lua, original, readonly.clone(), Guard::Refuse)?,
        )?;
    }
    // pairs and ipairs keep their iterator in an upvalue, so they are rebuilt instead: the
    // iterator they return walks the real table.
    let next: Function = g.raw_get("next")?;
    let ipairs: Function = g.raw_get("ipairs")?;
    let (ipairs_aux, _, _): (Function, Value, Value) = ipairs.call(lua.create_table()?)?;
    let ro = readonly.clone();
    g.raw_set(
        "pairs",
        lib_function(
            lua,
            move |_lua, a: Args| -> LibResult<(Function, Table, Value)> {
                let t = see_through(&ro, a.check_table(1)?)?;
                Ok((next.clone(), t, Value::Nil))
            },
        )?,
    )?;
    let ro = readonly.clone();
    g.raw_set(
        "ipairs",
        lib_function(
            lua,
            move |_lua, a: Args| -> LibResult<(Function, Table, f64)> {
                let t = see_through(&ro, a.check_table(1)?)?;
                Ok((ipairs_aux.clone(), t, 0.0))
            },
        )?,
    )?;
    // What getmetatable() shows for a view: nothing for a library table (they have no
    // metatable in Valkey), a read-only copy of the globals' metatable for _G.
    let metatable_views = lua.create_table()?;
    let orig_getmetatable: Function = g.raw_get("getmetatable")?;
    let (ro, views) = (readonly.clone(), metatable_views.clone());
    g.raw_set(
        "getmetatable",
        lib_function(lua, move |_lua, a: Args| -> LibResult<Value> {
            let v = a.check_any(1)?;
            if let Value::Table(t) = &v
                && ro.contains_key(t.clone())?
            {
                return Ok(views.raw_get(t.clone())?);
            }
            Ok(orig_getmetatable.call::<Value>(v)?)
        })?,
    )?;

    let refuse_write = lib_function(lua, |_lua, _args| -> LibResult<()> {
        Err(Raise::error(READONLY_ERROR))
    })?;
    let mut sealer = Sealer {
        lua,
        readonly: readonly.clone(),
        refuse_write: refuse_write.clone(),
        proxies: Default::default(),
    };

    // The string metatable is shared by every string: its __index must be the view, and
    // getmetatable('') returns a read-only view of it.
    let string_meta: Option<Table> = lua.load("return getmetatable('')").eval()?;
    if let Some(m) = string_meta {
        let view = sealer.protect(&m)?;
        m.raw_set("__metatable", view)?;
    }

    let entries: Vec<(Value, Table)> = g
        .pairs::<Value, Value>()
        .filter_map(|p| match p {
            Ok((k, Value::Table(v))) => Some(Ok((k, v))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<mlua::Result<_>>()?;
    for (k, v) in entries {
        if v.to_pointer() == g.to_pointer() {
            continue; // _G, set to the globals' view below
        }
        let p = sealer.protect(&v)?;
        g.raw_set(k, p)?;
    }

    // The globals' own view: reads go to the real table, whose metatable reports a missing
    // name (luaSetErrorMetatable); writes are refused.
    let nonexistent = lib_function(lua, |lua, a: Args| -> LibResult<()> {
        if a.len() != 2 {
            return Err(Raise::error(
                "Wrong number of arguments to luaProtectedTableError",
            ));
        }
        match a.get(2) {
            Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
                let name = to_lua_string(lua, &v)?.unwrap_or_default();
                let mut msg = b"Script attempted to access nonexistent global variable '".to_vec();
                msg.extend_from_slice(c_str(&name));
                msg.push(b'\'');
                Err(Raise::Error(msg))
            }
            _ => Err(Raise::error(
                "Second argument to luaProtectedTableError must be a string or number",
            )),
        }
    })?;
    let g_meta = lua.create_table()?;
    g_meta.raw_set("__index", nonexistent.clone())?;
    g.set_metatable(Some(g_meta))?;

    let globals_view = lua.create_table()?;
    let view_meta = lua.create_table()?;
    view_meta.raw_set("__index", g.clone())?;
    view_meta.raw_set("__newindex", refuse_write.clone())?;
    view_meta.raw_set("__metatable", false)?;
    globals_view.set_metatable(Some(view_meta.clone()))?;
    readonly.raw_set(globals_view.clone(), g.clone())?;
    let shown_meta = lua.create_table()?;
    shown_meta.raw_set("__index", nonexistent.clone())?;
    shown_meta.raw_set("__newindex", refuse_write.clone())?;
    metatable_views.raw_set(globals_view.clone(), sealer.protect(&shown_meta)?)?;
    g.raw_set("_G", globals_view.clone())?;
    lua.set_globals(globals_view)?;
    lua.set_named_registry_value(REG_READONLY, readonly)?;
    lua.set_named_registry_value(REG_REFUSE_WRITE, refuse_write)?;
    lua.set_named_registry_value(REG_NONEXISTENT, nonexistent)?;
    lua.set_named_registry_value(REG_VIEW_META, view_meta)?;
    Ok(())
}

/// The read-only view of `t`, made after [`seal`] the way `seal` made the globals' ones (the
/// guarded builtins know it too).
pub(super) fn protect_sealed(lua: &Lua, t: &Table) -> mlua::Result<Table> {
    let mut sealer = Sealer {
        lua,
        readonly: lua.named_registry_value(REG_READONLY)?,
        refuse_write: lua.named_registry_value(REG_REFUSE_WRITE)?,
        proxies: Default::default(),
    };
    sealer.protect(t)
}

/// Valkey's `luaSetErrorMetatable` on `t` (after [`seal`]): reading a missing field raises
/// `Script attempted to access nonexistent global variable '<name>'`.
pub(super) fn set_error_metatable(lua: &Lua, t: &Table) -> mlua::Result<()> {
    let meta = lua.create_table()?;
    meta.raw_set(
        "__index",
        lua.named_registry_value::<Function>(REG_NONEXISTENT)?,
    )?;
    t.set_metatable(Some(meta))
}

/// Where the scripts' globals read through to (after [`seal`]): the real globals, or `target`
/// instead (the function engine's load-time API). Writes stay refused either way.
pub(super) fn set_globals_lookup(lua: &Lua, target: Option<&Table>) -> mlua::Result<()> {
    let meta: Table = lua.named_registry_value(REG_VIEW_META)?;
    match target {
        Some(t) => meta.raw_set("__index", t.clone()),
        None => meta.raw_set("__index", real_globals(lua)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::test_support::{eval, eval_err, sealed_vm};

    #[test]
    fn chunk_ids() {
        assert_eq!(chunk_id(b"@user_script"), b"user_script");
        assert_eq!(chunk_id(b"=(load)"), b"(load)");
        assert_eq!(chunk_id(b"return 1"), b"[string \"return 1\"]");
        assert_eq!(chunk_id(b"a\nb"), b"[string \"a...\"]");
    }

    #[test]
    fn only_valkeys_globals_exist() {
        let names = eval(
            "local t = {} for k in pairs(_G) do t[#t + 1] = k end table.sort(t) \
             return table.concat(t, ' ')",
        );
        assert_eq!(
            names,
            "_G _VERSION assert bit cjson cmsgpack collectgarbage coroutine error gcinfo \
             getmetatable ipairs load loadstring math next os pairs pcall rawequal rawget \
             rawset redis select server setmetatable string struct table tonumber tostring \
             type unpack xpcall"
        );
        assert_eq!(
            eval("local n = 0 for k in pairs(os) do n = n + 1 end return n"),
            "1"
        );
        assert_eq!(eval("return type(os.clock())"), "number");
        assert_eq!(eval("return _VERSION"), "Lua 5.1");
    }

    #[test]
    fn globals_are_read_only() {
        assert_eq!(
            eval_err("x = 1"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("\nredis = nil"),
            "ERR user_script:2: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("string.format = nil"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("redis.call = function() end"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("cjson.null = 1"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("_G.x = 1"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("rawset(_G, 'x', 1)"),
            "ERR Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("rawset(string, 'x', 1)"),
            "ERR Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("getmetatable('').__index = {}"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        // Valkey's "Try trick global protection" tests.
        assert_eq!(
            eval_err("setmetatable(_G, {})"),
            "ERR Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("local g = getmetatable(_G)\ng.__index = {}"),
            "ERR user_script:2: Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("_G = {}"),
            "ERR user_script:1: Attempt to modify a readonly table"
        );
        assert_eq!(eval("return type(getmetatable(_G).__index)"), "function");
        assert_eq!(eval("return tostring(getmetatable(string))"), "nil");
        assert_eq!(
            eval_err("setmetatable(string, {})"),
            "ERR Attempt to modify a readonly table"
        );
        assert!(eval_err("getmetatable(nil).__index = 1").contains("attempt to index a nil value"));
        // setmetatable keeps its own rules elsewhere.
        assert_eq!(
            eval_err("setmetatable({}, 1)"),
            "ERR user_script:1: bad argument #2 to 'setmetatable' (nil or table expected)"
        );
        assert_eq!(
            eval_err("setmetatable(setmetatable({}, {__metatable = 1}), {})"),
            "ERR user_script:1: cannot change a protected metatable"
        );
        assert_eq!(
            eval(
                "local t = setmetatable({}, {__index = function() return 7 end}) \
                  return t.x + tostring(getmetatable(t) ~= nil and 1 or 0)"
            ),
            "8"
        );
        assert_eq!(
            eval_err("table.insert(_G, 1)"),
            "ERR Attempt to modify a readonly table"
        );
        assert_eq!(
            eval_err("table.sort(redis)"),
            "ERR Attempt to modify a readonly table"
        );
        // Guarded builtins report misuse exactly as the unguarded ones.
        assert_eq!(
            eval_err("rawset(nil, 1, 2)"),
            "ERR user_script:1: bad argument #1 to 'rawset' (table expected, got nil)"
        );
        assert_eq!(
            eval_err("table.insert(nil, 1)"),
            "ERR user_script:1: bad argument #1 to 'insert' (table expected, got nil)"
        );
        assert_eq!(
            eval(
                "local t = {3, 1, 2} table.sort(t) table.insert(t, 4) table.remove(t, 1) \
                  return table.concat(t, ',')"
            ),
            "2,3,4"
        );
        // Local state and new tables stay writable.
        assert_eq!(
            eval("local t = {} t.x = 1 rawset(t, 'y', 2) return t.x + t.y"),
            "3"
        );
    }

    #[test]
    fn reading_a_missing_global_fails() {
        assert_eq!(
            eval_err("return a"),
            "ERR user_script:1: Script attempted to access nonexistent global variable 'a'"
        );
        assert_eq!(eval("return tostring(rawget(_G, 'a'))"), "nil");
        assert_eq!(eval("return type(rawget(_G, 'redis'))"), "table");
        assert_eq!(eval("return type(_G.string.rep)"), "function");
    }

    #[test]
    fn iteration_sees_through_the_views() {
        assert_eq!(
            eval("local n = 0 for k, v in pairs(redis) do n = n + 1 end return tostring(n > 20)"),
            "true"
        );
        assert_eq!(eval("return type(next(string))"), "string");
        assert_eq!(
            eval("local n = 0 for i, v in ipairs({5, 6}) do n = n + v end return n"),
            "11"
        );
        assert_eq!(eval("return ('abc'):upper()"), "ABC");
    }

    #[test]
    fn no_io_no_file_loading() {
        for name in [
            "io", "dofile", "loadfile", "require", "package", "debug", "print", "setfenv",
            "getfenv", "newproxy", "module",
        ] {
            let err = eval_err(&format!("return {name}"));
            assert!(err.contains("nonexistent global variable"), "{name}: {err}");
        }
        assert_eq!(eval("return tostring(os.execute)"), "nil");
    }

    #[test]
    fn loadstring_runs_source_and_refuses_bytecode() {
        assert_eq!(eval("return loadstring('return 1 + 1')()"), "2");
        assert_eq!(
            eval("local f, e = loadstring(string.dump(function() return 1 end)) return e"),
            "[string \"\u{1b}LuaQ\"]:1: unexpected symbol near 'char(27)'"
        );
        assert_eq!(
            eval("local f, e = loadstring('\\27abc', '=x') return e"),
            "x:1: unexpected symbol near 'char(27)'"
        );
        assert_eq!(eval("return type(load(function() end))"), "function");
        assert_eq!(
            eval(
                "local parts = {'return ', '40 + 2'} local i = 0 \
                  return load(function() i = i + 1 return parts[i] end)()"
            ),
            "42"
        );
        assert_eq!(
            eval(
                "local done = false local f, e = load(function() if done then return nil end done = true return '\\27Lua' end) return e"
            ),
            "(load):1: unexpected symbol near 'char(27)'"
        );
        // Loaded code sees the same read-only globals.
        assert_eq!(
            eval_err("loadstring('y = 1')()"),
            "ERR [string \"y = 1\"]:1: Attempt to modify a readonly table"
        );
    }

    #[test]
    fn compile_errors() {
        let lua = sealed_vm();
        let err = compile_script(&lua, b"return (").unwrap_err();
        assert_eq!(
            err.reply_text("sha"),
            "ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"
        );
        let err = compile_script(&lua, b"\x1bLuaQ\x00").unwrap_err();
        assert_eq!(
            err.reply_text("sha"),
            "ERR Error compiling script (new function): user_script:1: unexpected symbol near 'char(27)'"
        );
    }

    #[test]
    fn runtime_errors_as_valkey_reports_them() {
        let lua = sealed_vm();
        let run = |code: &str| {
            let f = compile_script(&lua, code.as_bytes()).unwrap();
            run_script(&lua, &f, ()).unwrap_err().reply_text("e0f1")
        };
        assert_eq!(
            run("error('x')"),
            "ERR user_script:1: x script: e0f1, on @user_script:1."
        );
        assert_eq!(
            run("local a = 1\nlocal b = nil + a"),
            "ERR user_script:2: attempt to perform arithmetic on a nil value script: e0f1, on @user_script:2."
        );
        assert_eq!(
            run("error({err='MYCODE custom'})"),
            "MYCODE custom script: e0f1, on @user_script:1."
        );
        assert_eq!(run("error()"), "ERR nil script: e0f1, on @user_script:1.");
        // The script's caller is C, as in Valkey: level 2 has no position.
        assert_eq!(
            run("error('x', 2)"),
            "ERR x script: e0f1, on @user_script:1."
        );
        assert_eq!(
            run("return a"),
            "ERR user_script:1: Script attempted to access nonexistent global variable 'a' script: e0f1, on @user_script:1."
        );
        assert_eq!(
            run("local function f() error('deep') end\n\nf()"),
            "ERR user_script:1: deep script: e0f1, on @user_script:1."
        );
    }

    #[test]
    fn scripts_return_their_first_value_and_see_keys() {
        let lua = sealed_vm();
        set_keys_and_argv(&lua, &[b"k1".as_slice()], &[b"a1", b"a2"]).unwrap();
        let f = compile_script(&lua, b"return KEYS[1] .. #ARGV, 'ignored'").unwrap();
        let v = run_script(&lua, &f, ()).unwrap();
        assert_eq!(v.as_string().unwrap().to_str().unwrap(), "k12");
        // FUNCTION mode: keys and args as arguments.
        let f = compile_script(
            &lua,
            b"return function(keys, args) return keys[1] .. args[1] end",
        )
        .unwrap();
        let inner: Function = run_script(&lua, &f, ())
            .unwrap()
            .as_function()
            .unwrap()
            .clone();
        let keys = lua.create_sequence_from(["x"]).unwrap();
        let args = lua.create_sequence_from(["y"]).unwrap();
        let v = run_script(&lua, &inner, (keys, args)).unwrap();
        assert_eq!(v.as_string().unwrap().to_str().unwrap(), "xy");
    }

    #[test]
    fn pcall_keeps_lua_semantics_for_plain_errors() {
        assert_eq!(
            eval("local ok, e = pcall(error, 'x', 0) return tostring(ok) .. e"),
            "falsex"
        );
        assert_eq!(
            eval("local ok, a, b = pcall(function() return 1, 2 end) return a + b"),
            "3"
        );
        assert_eq!(eval("return select('#', pcall(error, {}))"), "3");
        assert_eq!(
            eval("local ok, e = pcall(error, {err='E x'}) return e"),
            "E x"
        );
        assert_eq!(
            eval("local ok, e = pcall() return tostring(ok) .. ' ' .. e"),
            "false attempt to call a nil value"
        );
        // Thousands of results fit: the status goes in before the call.
        assert_eq!(
            eval(
                "local t = {} for i = 1, 7990 do t[i] = i end \
                  return select('#', pcall(unpack, t))"
            ),
            "7991"
        );
    }

    #[test]
    fn random_follows_lrand48_and_runs_on_between_scripts() {
        let lua = sealed_vm();
        let f = compile_script(
            &lua,
            b"return {math.random(), math.random(), math.random(10), math.random(5, 7)}",
        )
        .unwrap();
        let run = |lua: &Lua| -> Vec<f64> {
            begin_run(lua);
            let Value::Table(t) = run_script(lua, &f, ()).unwrap() else {
                panic!("a table")
            };
            t.sequence_values::<f64>().map(|v| v.unwrap()).collect()
        };
        let expected = |mut r: rand::Lrand48| -> Vec<f64> {
            let max = rand::LRAND48_MAX as f64;
            let mut frac = || (r.next() % rand::LRAND48_MAX) as f64 / max;
            vec![
                frac(),
                frac(),
                (frac() * 10.0).floor() + 1.0,
                (frac() * 3.0).floor() + 5.0,
            ]
        };
        // A fresh VM starts from the unseeded state; the next script continues the sequence.
        let first = run(&lua);
        assert_eq!(first, expected(rand::Lrand48::default()));
        assert_ne!(first, run(&lua), "random numbers are random now");
        // reset_random: the pre-Redis-7 per-call reseed with 0.
        rand::reset_random(&lua);
        assert_eq!(run(&lua), expected(rand::Lrand48::seeded(0)));
        assert_eq!(
            eval_err("math.random(0)"),
            "ERR user_script:1: bad argument #1 to 'random' (interval is empty)"
        );
        assert_eq!(
            eval(
                "math.randomseed(7) local a = math.random() math.randomseed(7) return tostring(a == math.random())"
            ),
            "true"
        );
    }
}
