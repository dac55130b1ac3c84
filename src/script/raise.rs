//! Raising Lua errors from Rust the way Valkey's C libraries raise them.
//!
//! An mlua callback that returns `Err` raises a userdata wrapping the Rust error: a script's
//! `pcall` would see a userdata instead of the message, and Valkey's error handler would see a
//! C frame that is not the script's caller. Valkey's libraries raise plain values instead:
//! `luaL_error` (a string prefixed with the caller's `chunk:line:`), `luaL_argerror`
//! (`bad argument #n to 'name' (...)`, the name taken from the calling instruction) or
//! `lua_error` with a table (`redis.call`).
//!
//! So every library function here is a Rust closure wrapped in one small C closure, the
//! *trampoline*: it calls the closure, and when the closure hands back a failure marker it
//! raises the failure itself with `luaL_where` / `luaL_argerror` / `lua_error`. Those run in the
//! trampoline's frame, which is the frame the script called, so positions and function names
//! come out exactly as from a C library function. Three more small C functions live here for
//! the same reason (a C frame where Valkey has one): the guards around builtins for `seal`'s
//! read-only views, Valkey's `pcall`, and the protected call that runs a script. This file is
//! the only raw Lua FFI of the room.

use std::ffi::{c_int, c_void};

use mlua::{Function, IntoLuaMulti, LightUserData, Lua, MultiValue, Value, ffi};

/// How a library function fails, mirroring the three ways Valkey's C code raises.
#[derive(Debug)]
pub enum Raise {
    /// `luaL_error`: the message gets the calling script's `chunk:line: ` prefix.
    Error(Vec<u8>),
    /// `luaL_argerror(n, msg)`: `bad argument #n to 'name' (msg)`, with the position prefix.
    Arg(i32, Vec<u8>),
    /// `lua_error`: the value is raised unchanged (a string gets no prefix, a table stays a
    /// table).
    Value(Value),
}

impl Raise {
    pub fn error(msg: impl Into<Vec<u8>>) -> Raise {
        Raise::Error(msg.into())
    }

    pub fn arg(n: i32, msg: impl Into<Vec<u8>>) -> Raise {
        Raise::Arg(n, msg.into())
    }

    /// A message raised with no position, as `luaG_runerror` gives from inside a C function
    /// (`rawset` on a read-only table, `next` with an invalid key).
    pub fn plain(lua: &Lua, msg: impl AsRef<[u8]>) -> Raise {
        match lua.create_string(msg) {
            Ok(s) => Raise::Value(Value::String(s)),
            Err(e) => e.into(),
        }
    }
}

/// An mlua failure inside a library function (out of memory, a failing metamethod): raised as
/// its message, the nearest a C library would do.
impl From<mlua::Error> for Raise {
    fn from(e: mlua::Error) -> Raise {
        Raise::Error(root_message(&e).into_bytes())
    }
}

/// The message of the innermost cause of an mlua error (a callback error wraps the cause in a
/// traceback that Valkey never shows).
pub fn root_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => root_message(cause),
        mlua::Error::RuntimeError(msg) => msg.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(msg) => msg.clone(),
        other => other.to_string(),
    }
}

pub type LibResult<T> = Result<T, Raise>;

// What the inner closure returns on failure: [marker, kind, payload, argn].
const KIND_ERROR: ffi::lua_Integer = 0;
const KIND_ARG: ffi::lua_Integer = 1;
const KIND_VALUE: ffi::lua_Integer = 2;

/// The failure marker is the address of this static: scripts cannot forge a light userdata
/// (the only one they see is `cjson.null`, which is NULL).
static FAILURE_MARK: u8 = 0;

fn failure_mark() -> *mut c_void {
    &FAILURE_MARK as *const u8 as *mut c_void
}

fn failure(lua: &Lua, raise: Raise) -> mlua::Result<MultiValue> {
    let (kind, payload, argn) = match raise {
        Raise::Error(msg) => (KIND_ERROR, Value::String(lua.create_string(msg)?), 0),
        Raise::Arg(n, msg) => (KIND_ARG, Value::String(lua.create_string(msg)?), n),
        Raise::Value(v) => (KIND_VALUE, v, 0),
    };
    Ok(MultiValue::from_vec(vec![
        Value::LightUserData(LightUserData(failure_mark())),
        Value::Number(kind as f64),
        payload,
        Value::Number(argn as f64),
    ]))
}

/// Marks arguments handed over as one table (see [`PACK_ABOVE`]).
static PACKED_MARK: u8 = 0;

fn packed_mark() -> *mut c_void {
    &PACKED_MARK as *const u8 as *mut c_void
}

/// Above this many arguments the trampoline hands them to Rust in one table. mlua gives each
/// argument of a Rust function its own slot in its auxiliary stack, which holds 8000 values
/// for the whole VM and panics when full; a script can pass ~8000 values
/// (`redis.call('rpush', k, unpack(t))`), so long argument lists must not become that many
/// references at once.
const PACK_ABOVE: c_int = 32;

/// The C closure around every library function: upvalue 1 is the mlua function.
///
/// Safety: called by Lua as a C function. `lua_error` / `luaL_argerror` longjmp out of this
/// frame, which holds no Rust value with a destructor at that point (only integers and raw
/// pointers), as mlua's own raising code requires.
unsafe extern "C-unwind" fn trampoline(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let nargs = ffi::lua_gettop(state);
        let call_args = if nargs > PACK_ABOVE {
            // [args...] -> [mark, n, {args...}]
            ffi::lua_createtable(state, nargs, 0);
            for i in 1..=nargs {
                ffi::lua_pushvalue(state, i);
                ffi::lua_rawseti(state, nargs + 1, i as ffi::lua_Integer);
            }
            ffi::lua_replace(state, 1);
            ffi::lua_settop(state, 1);
            ffi::lua_pushlightuserdata(state, packed_mark());
            ffi::lua_insert(state, 1);
            ffi::lua_pushnumber(state, nargs as ffi::lua_Number);
            ffi::lua_insert(state, 2);
            3
        } else {
            nargs
        };
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, call_args, ffi::LUA_MULTRET);
        let nres = ffi::lua_gettop(state);
        if nres == 4
            && ffi::lua_type(state, 1) == ffi::LUA_TLIGHTUSERDATA
            && ffi::lua_touserdata(state, 1) == failure_mark()
        {
            match ffi::lua_tointeger(state, 2) {
                KIND_ERROR => {
                    ffi::luaL_where(state, 1);
                    ffi::lua_pushvalue(state, 3);
                    ffi::lua_concat(state, 2);
                    ffi::lua_error(state)
                }
                KIND_ARG => {
                    let n = ffi::lua_tointeger(state, 4) as c_int;
                    // The message stays on the stack (index 3) while luaL_argerror reads it.
                    let msg = ffi::lua_tostring(state, 3);
                    ffi::luaL_argerror(state, n, msg);
                    unreachable!("luaL_argerror does not return")
                }
                _ => {
                    ffi::lua_settop(state, 3);
                    ffi::lua_error(state)
                }
            }
        }
        nres
    }
}

/// Wraps `inner` (which returns either its results or the failure marker) in the trampoline.
fn wrap(lua: &Lua, inner: Function) -> mlua::Result<Function> {
    // Safety: exec_raw runs the closure in a protected call with `inner` pushed as the only
    // argument; lua_pushcclosure pops it as upvalue 1 and leaves the closure as the result.
    unsafe {
        lua.exec_raw::<Function>(inner, |state| {
            ffi::lua_pushcclosure(state, trampoline, 1);
        })
    }
}

/// What a guard around a builtin does when its first argument is a read-only view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Refuse, as Valkey's patched Lua refuses any write to a read-only table (`rawset`,
    /// `table.insert`, ...): `Attempt to modify a readonly table`, raised from C (no position).
    Refuse,
    /// Hand the builtin the real table behind the view instead (`rawget`, `next`).
    SeeThrough,
}

/// Reads upvalue 2 (view -> real table) for argument 1; leaves the real table or nil on top.
unsafe fn lookup_view(state: *mut ffi::lua_State) -> bool {
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TTABLE {
            return false;
        }
        ffi::lua_pushvalue(state, 1);
        ffi::lua_rawget(state, ffi::lua_upvalueindex(2));
        if ffi::lua_isnil(state, -1) != 0 {
            ffi::lua_pop(state, 1);
            return false;
        }
        true
    }
}

/// Runs the original C function (upvalue 1) in this very frame: its argument errors then name
/// the function the script called and carry the script's position, exactly as unguarded.
unsafe fn run_original(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        match ffi::lua_tocfunction(state, ffi::lua_upvalueindex(1)) {
            Some(original) => original(state),
            None => 0,
        }
    }
}

/// Safety: as [`trampoline`]; the original builtins have no upvalues of their own, which is
/// what makes calling them in this frame equivalent to calling them directly.
unsafe extern "C-unwind" fn refusing_guard(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        if lookup_view(state) {
            ffi::lua_pop(state, 1);
            ffi::lua_pushstring(state, c"Attempt to modify a readonly table".as_ptr());
            ffi::lua_error(state)
        }
        run_original(state)
    }
}

/// Safety: as [`refusing_guard`].
unsafe extern "C-unwind" fn see_through_guard(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        if lookup_view(state) {
            ffi::lua_replace(state, 1);
        }
        run_original(state)
    }
}

/// Wraps a builtin C function without upvalues (`rawset`, `rawget`, `next`, `setmetatable`,
/// `table.insert`, ...) so that a read-only view as its first argument is refused or seen
/// through; `views` maps each view to its real table.
pub fn guard_builtin(
    lua: &Lua,
    original: Function,
    views: mlua::Table,
    guard: Guard,
) -> mlua::Result<Function> {
    let f = match guard {
        Guard::Refuse => refusing_guard as ffi::lua_CFunction,
        Guard::SeeThrough => see_through_guard as ffi::lua_CFunction,
    };
    // Safety: exec_raw pushes the two upvalues and runs this in a protected call; a Lua
    // function (not a C function) is refused before the closure is made, since the guard
    // could not run it in its own frame.
    unsafe {
        lua.exec_raw::<Value>((original, views), |state| {
            if ffi::lua_tocfunction(state, -2).is_none() {
                ffi::lua_settop(state, 0);
                ffi::lua_pushnil(state);
                return;
            }
            ffi::lua_pushcclosure(state, f, 2);
        })
        .and_then(|v| match v {
            Value::Function(f) => Ok(f),
            _ => Err(mlua::Error::runtime("only a C function can be guarded")),
        })
    }
}

/// Calls a script the way `luaCallFunction` does: `lua_pcall(L, nargs, 1, handler)`.
/// Arguments: the error handler, the function, its arguments. Returns the status and the one
/// result (or the handler's value). Being a C function, it is the script's caller, as in
/// Valkey: `error(msg, 2)` at a script's top level gets no position.
///
/// Safety: called by Lua as a C function with at least two values on its stack; after the
/// protected call two values remain and the C function's reserved slots cover the push.
unsafe extern "C-unwind" fn protected_call(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let nargs = ffi::lua_gettop(state) - 2;
        let status = ffi::lua_pcall(state, nargs, 1, 1);
        ffi::lua_pushboolean(state, (status == 0) as c_int);
        ffi::lua_replace(state, 1);
        2
    }
}

/// The function behind [`protected_call`].
pub fn protected_runner(lua: &Lua) -> mlua::Result<Function> {
    // Safety: `protected_call` follows the Lua C API contract described on it.
    unsafe { lua.create_c_function(protected_call) }
}

/// Valkey's `pcall` (`luaRedisPcall`): the builtin pcall, except that an error that is a table
/// with an `err` string comes back as that string, as before Redis 7 made command errors
/// tables. A table without one comes back followed by its `err` field, which the C code leaves
/// on the stack. The status placeholder is pushed before the call, so a function returning
/// thousands of values does not overflow this frame.
///
/// Safety: called by Lua as a C function. `lua_getfield` may run an `__index` metamethod that
/// raises; that unwinds this frame, which holds no Rust value with a destructor.
unsafe extern "C-unwind" fn valkey_pcall(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let mut argc = ffi::lua_gettop(state);
        if argc == 0 {
            // Valkey calls lua_pcall with -1 arguments here and Lua finds a nil to call; say
            // so without the out-of-range call.
            ffi::lua_pushnil(state);
            argc = 1;
        }
        ffi::lua_pushboolean(state, 1);
        ffi::lua_insert(state, 1);
        if ffi::lua_pcall(state, argc - 1, ffi::LUA_MULTRET, 0) != 0 {
            ffi::lua_remove(state, 1);
            if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
                ffi::lua_getfield(state, -1, c"err".as_ptr());
                if ffi::lua_isstring(state, -1) != 0 {
                    ffi::lua_replace(state, -2);
                }
            }
            ffi::lua_pushboolean(state, 0);
            ffi::lua_insert(state, 1);
        }
        ffi::lua_gettop(state)
    }
}

/// The global `pcall` of a Valkey VM.
pub fn valkey_pcall_function(lua: &Lua) -> mlua::Result<Function> {
    // Safety: `valkey_pcall` follows the Lua C API contract described on it.
    unsafe { lua.create_c_function(valkey_pcall) }
}

/// A library function: `f` gets the raw arguments and fails with a [`Raise`].
pub fn lib_function<F, R>(lua: &Lua, f: F) -> mlua::Result<Function>
where
    F: Fn(&Lua, Args) -> LibResult<R> + 'static,
    R: IntoLuaMulti,
{
    let inner =
        lua.create_function(
            move |lua, args: MultiValue| match f(lua, Args::from_call(args)) {
                Ok(r) => r.into_lua_multi(lua),
                Err(raise) => failure(lua, raise),
            },
        )?;
    wrap(lua, inner)
}

/// A function's arguments with the `luaL_check*` family over them (1-based, as in C). Long
/// argument lists arrive as one table and are read one value at a time.
pub struct Args {
    direct: Vec<Value>,
    packed: Option<(mlua::Table, usize)>,
}

impl Args {
    /// Arguments given directly (tests, helpers).
    pub fn new(values: Vec<Value>) -> Args {
        Args {
            direct: values,
            packed: None,
        }
    }

    fn from_call(args: MultiValue) -> Args {
        let mut v = args.into_vec();
        let packed_len = match v.as_slice() {
            [Value::LightUserData(mark), n, Value::Table(_)] if mark.0 == packed_mark() => {
                number_of(n)
            }
            _ => None,
        };
        if let Some(n) = packed_len
            && let Some(Value::Table(t)) = v.pop()
        {
            return Args {
                direct: Vec::new(),
                packed: Some((t, n as usize)),
            };
        }
        Args::new(v)
    }

    /// `lua_gettop`.
    pub fn len(&self) -> usize {
        match &self.packed {
            Some((_, n)) => *n,
            None => self.direct.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The argument at `n` (1-based); `None` past the end (C's "no value").
    pub fn get(&self, n: usize) -> Option<Value> {
        if n == 0 || n > self.len() {
            return None;
        }
        match &self.packed {
            Some((t, _)) => Some(t.raw_get(n).unwrap_or(Value::Nil)),
            None => self.direct.get(n - 1).cloned(),
        }
    }

    /// `lua_isnoneornil`.
    pub fn is_none_or_nil(&self, n: usize) -> bool {
        matches!(self.get(n), None | Some(Value::Nil))
    }

    /// `luaL_checkany`.
    pub fn check_any(&self, n: usize) -> LibResult<Value> {
        self.get(n)
            .ok_or_else(|| Raise::arg(n as i32, "value expected"))
    }

    /// `luaL_checktype(n, LUA_TTABLE)`.
    pub fn check_table(&self, n: usize) -> LibResult<mlua::Table> {
        match self.get(n) {
            Some(Value::Table(t)) => Ok(t),
            _ => Err(self.type_error(n, "table")),
        }
    }

    /// `luaL_checklstring`: strings, and numbers converted with Lua's `%.14g`.
    pub fn check_bytes(&self, lua: &Lua, n: usize) -> LibResult<Vec<u8>> {
        match self.get(n) {
            Some(v) => to_lua_string(lua, &v)?.ok_or_else(|| self.type_error(n, "string")),
            None => Err(self.type_error(n, "string")),
        }
    }

    /// `luaL_optlstring`.
    pub fn opt_bytes(&self, lua: &Lua, n: usize, default: &[u8]) -> LibResult<Vec<u8>> {
        if self.is_none_or_nil(n) {
            Ok(default.to_vec())
        } else {
            self.check_bytes(lua, n)
        }
    }

    /// `luaL_checknumber`: numbers, and strings Lua converts (`lua_tonumber`).
    pub fn check_number(&self, lua: &Lua, n: usize) -> LibResult<f64> {
        match self.get(n) {
            Some(v) => to_lua_number(lua, &v)?.ok_or_else(|| self.type_error(n, "number")),
            None => Err(self.type_error(n, "number")),
        }
    }

    /// `luaL_checkinteger`: `luaL_checknumber` truncated towards zero (`lua_Integer` is 64-bit).
    pub fn check_integer(&self, lua: &Lua, n: usize) -> LibResult<i64> {
        self.check_number(lua, n).map(c_double_to_i64)
    }

    /// `luaL_optinteger`.
    pub fn opt_integer(&self, lua: &Lua, n: usize, default: i64) -> LibResult<i64> {
        if self.is_none_or_nil(n) {
            Ok(default)
        } else {
            self.check_integer(lua, n)
        }
    }

    /// `luaL_checkint`: the 64-bit integer cut to C `int`.
    pub fn check_int(&self, lua: &Lua, n: usize) -> LibResult<i32> {
        self.check_integer(lua, n).map(|v| v as i32)
    }

    /// `luaL_typerror`: `<expected> expected, got <type>`.
    pub fn type_error(&self, n: usize, expected: &str) -> Raise {
        let got = self.get(n).map_or("no value", |v| type_name(&v));
        Raise::arg(n as i32, format!("{expected} expected, got {got}"))
    }
}

/// `lua_typename` of a value as Lua 5.1 names it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::LightUserData(_) | Value::UserData(_) | Value::Error(_) => "userdata",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

/// A number's value, whichever variant mlua chose for it.
pub fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

/// `lua_tolstring`: the bytes of a string, or of a number formatted as Lua does (`%.14g`).
pub fn to_lua_string(lua: &Lua, v: &Value) -> mlua::Result<Option<Vec<u8>>> {
    Ok(match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => {
            lua.coerce_string(v.clone())?.map(|s| s.as_bytes().to_vec())
        }
        _ => None,
    })
}

/// `lua_tonumber` with `lua_isnumber`: numbers, and strings Lua's lexer reads as numbers.
pub fn to_lua_number(lua: &Lua, v: &Value) -> mlua::Result<Option<f64>> {
    Ok(match v {
        Value::Integer(_) | Value::Number(_) => number_of(v),
        Value::String(_) => lua.coerce_number(v.clone())?,
        _ => None,
    })
}

/// 2^63 as a double: the first value past `i64::MAX`.
pub const TWO_POW_63: f64 = (1u64 << 63) as f64;

/// C's `(long long)d` as x86-64 computes it: truncation, and the "integer indefinite" value
/// (`i64::MIN`) for NaN and out-of-range values where Rust's `as` would saturate.
pub fn c_double_to_i64(d: f64) -> i64 {
    if (-TWO_POW_63..TWO_POW_63).contains(&d) {
        d as i64
    } else {
        i64::MIN
    }
}

/// A Lua string value from bytes.
pub fn lua_bytes(lua: &Lua, b: impl AsRef<[u8]>) -> mlua::Result<Value> {
    lua.create_string(b).map(Value::String)
}
