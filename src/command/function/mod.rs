//! Functions: FCALL, FCALL_RO and FUNCTION LOAD/DELETE/FLUSH/RESTORE/LIST/DUMP/STATS/KILL.
//!
//! A library is Lua code that registers named functions when it loads; FCALL runs one like
//! EVALSHA runs a script (same key routing, cross-core atomicity, records, `-BUSY` and kill,
//! see `script`), with its keys and arguments as the function's two parameters.
//!
//! The libraries are node-wide ([`library::Libraries`] in `Scripts`): every core sees the
//! same set, and each core's functions VM loads a library's code the first time one of its
//! functions is called there (again after the library changed). FUNCTION LOAD, DELETE,
//! FLUSH and RESTORE are checked and prepared here, on the connection's core (LOAD runs the
//! library's code in the load sandbox to learn its functions), into a [`LibraryChange`]; the
//! engine applies it (`engine::libraries`): standalone at once and to storage, in a cluster
//! through the meta group so it reaches every node.

pub mod library;
mod payload;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mlua::{Lua, RegistryKey};

use self::library::{
    ENGINE, FunctionInfo, Libraries, Library, LibraryChange, LibrarySet, RestorePolicy,
};
use super::connection::ConnCtx;
use super::script::{Invocation, RunningFunction, execute, flags_allow, kill, new_lua};
use super::table::{CommandDef, NOKEY, container, def, numkeys};
use super::{Ctx, Exec, KeyAccess, NodeView, flags, is};
use crate::script::{self, LOAD_TIMEOUT, ScriptFlags};

/// This core's functions VM: the libraries it loaded, following the node's set.
struct FunctionVm {
    lua: Lua,
    /// The node's set as this core last saw it, and that set's version.
    set: Arc<LibrarySet>,
    version: u64,
    /// Loaded libraries by name: the library as loaded, and its callbacks by function name.
    loaded: HashMap<String, (Arc<Library>, HashMap<String, RegistryKey>)>,
}

impl FunctionVm {
    fn new() -> mlua::Result<FunctionVm> {
        Ok(FunctionVm {
            lua: new_lua(true)?,
            set: Arc::default(),
            version: u64::MAX,
            loaded: HashMap::new(),
        })
    }

    /// Catches up with the node's set: libraries deleted or replaced are unloaded; after a
    /// flush the VM starts afresh, as Valkey's does.
    fn refresh(&mut self, libraries: &Libraries) -> mlua::Result<()> {
        let version = libraries.version();
        if version == self.version {
            return Ok(());
        }
        self.set = libraries.snapshot();
        self.version = version;
        if self.set.is_empty() && !self.loaded.is_empty() {
            self.lua = new_lua(true)?;
            self.loaded.clear();
            return Ok(());
        }
        let set = &self.set;
        let before = self.loaded.len();
        self.loaded
            .retain(|name, (lib, _)| set.library(name).is_some_and(|now| now == &**lib));
        if self.loaded.len() != before {
            self.lua.expire_registry_values();
        }
        Ok(())
    }

    /// Loads `lib` unless the VM has it as it is now.
    fn ensure_loaded(&mut self, lib: &Arc<Library>) -> Result<(), String> {
        if let Some((have, _)) = self.loaded.get(&lib.name)
            && (Arc::ptr_eq(have, lib) || have == lib)
        {
            return Ok(());
        }
        // The library was accepted already: no load timeout (Valkey loads replicated and
        // stored libraries without one).
        let registered =
            script::load_library(&self.lua, lib.body(), None).map_err(|e| format!("ERR {e}"))?;
        let callbacks = registered
            .into_iter()
            .map(|r| (String::from_utf8_lossy(&r.name).into_owned(), r.callback))
            .collect();
        self.loaded
            .insert(lib.name.clone(), (lib.clone(), callbacks));
        Ok(())
    }
}

thread_local! {
    static VM: RefCell<Option<FunctionVm>> = const { RefCell::new(None) };
}

/// Runs `f` with this core's functions VM (created on first use).
fn with_vm<R>(f: impl FnOnce(&mut FunctionVm) -> R) -> Result<R, String> {
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                FunctionVm::new().map_err(|e| format!("ERR could not start the Lua VM: {e}"))?,
            );
        }
        Ok(f(slot.as_mut().expect("created above")))
    })
}

/// FCALL / FCALL_RO function numkeys [key ...] [arg ...]
pub fn fcall(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let read_only = is(&args[0], "fcall_ro");
    let scripts = ctx.node.scripts();
    let ran = with_vm(|vm| {
        if let Err(e) = vm.refresh(&scripts.libraries) {
            ctx.out
                .error(&format!("ERR could not start the Lua VM: {e}"));
            return;
        }
        let Some((lib, info)) = vm
            .set
            .function(&args[1])
            .map(|(lib, info)| (lib.clone(), info.clone()))
        else {
            ctx.out.error("ERR Function not found");
            return;
        };
        let Some(numkeys) = super::arg_i64(&args[2]) else {
            ctx.out.error("ERR Bad number of keys provided");
            return;
        };
        if numkeys > args.len() as i64 - 3 {
            ctx.out
                .error("ERR Number of keys can't be greater than number of args");
            return;
        }
        if numkeys < 0 {
            ctx.out.error("ERR Number of keys can't be negative");
            return;
        }
        let flags = ScriptFlags(info.flags);
        if let Err(e) = flags_allow(ctx.node, flags, read_only) {
            ctx.out.error(e);
            return;
        }
        if let Err(e) = vm.ensure_loaded(&lib) {
            ctx.out.error(&e);
            return;
        }
        let Some(callback) = vm.loaded[&lib.name].1.get(&info.name) else {
            ctx.out.error("ERR Function not found");
            return;
        };
        let keys = &args[3..3 + numkeys as usize];
        let argv = &args[3 + numkeys as usize..];
        let run = Invocation {
            keys,
            read_only: read_only || flags.has(ScriptFlags::NO_WRITES),
            allow_oom: flags.has(ScriptFlags::ALLOW_OOM),
            cross_slot: flags.has(ScriptFlags::ALLOW_CROSS_SLOT),
            name: &info.name,
            function: Some(RunningFunction {
                name: info.name.clone(),
                command: args.to_vec(),
                started: crate::util::now_ms(),
            }),
        };
        execute(ctx, &vm.lua, run, |lua| {
            script::call_function(lua, callback, keys, argv)
        });
    });
    if let Err(e) = ran {
        ctx.out.error(&e);
    }
}

const LIBRARY_NAME_RULE: &str = "ERR Library names can only contain letters, numbers, or \
     underscores(_) and must be at least one character long";
const FUNCTION_NAME_RULE: &str = "ERR Function names can only contain letters, numbers, or \
     underscores(_) and must be at least one character long";

/// Checks and loads a library's code as FUNCTION LOAD does (Valkey's
/// `functionsCreateWithLibraryCtx`, in its order of errors): the metadata line, the library
/// name, the engine, an existing library of that name (against `set`, unless `replace`), the
/// code itself, the functions it registered. The error is the reply text.
fn prepare_load(
    set: &LibrarySet,
    code: &[u8],
    replace: bool,
    timeout: Option<std::time::Duration>,
) -> Result<Library, String> {
    let md = library::parse_metadata(code).map_err(|e| format!("ERR {e}"))?;
    if !library::valid_name(&md.name) {
        return Err(LIBRARY_NAME_RULE.into());
    }
    if !md.engine.eq_ignore_ascii_case(b"lua") {
        return Err(format!(
            "ERR Engine '{}' not found",
            String::from_utf8_lossy(&md.engine)
        ));
    }
    let name = String::from_utf8(md.name).map_err(|_| LIBRARY_NAME_RULE.to_string())?;
    if !replace && set.library(&name).is_some() {
        return Err(format!("ERR Library '{name}' already exists"));
    }
    let mut lib = Library {
        name,
        code: code.to_vec(),
        functions: Vec::new(),
    };
    let registered = with_vm(|vm| script::load_library(&vm.lua, lib.body(), timeout))?
        .map_err(|e| format!("ERR {e}"))?;
    for r in registered {
        if !library::valid_name(&r.name) {
            return Err(FUNCTION_NAME_RULE.into());
        }
        let name = String::from_utf8(r.name).map_err(|_| FUNCTION_NAME_RULE.to_string())?;
        if lib.functions.iter().any(|f| f.name == name) {
            return Err("ERR Function already exists in the library".into());
        }
        lib.functions.push(FunctionInfo {
            name,
            description: r.description,
            flags: r.flags.0,
        });
    }
    if lib.functions.is_empty() {
        return Err("ERR No functions registered".into());
    }
    Ok(lib)
}

/// FUNCTION LOAD / DELETE / FLUSH / RESTORE, checked and prepared into the change the engine
/// applies (`args[1]` is the subcommand). The error is the reply text.
pub fn prepare_change(node: &dyn NodeView, args: &[Bytes]) -> Result<LibraryChange, String> {
    let set = node.scripts().libraries.snapshot();
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"load" => {
            let mut replace = false;
            let mut at = 2;
            while at < args.len() - 1 {
                if !is(&args[at], "replace") {
                    return Err(format!(
                        "ERR Unknown option given: {}",
                        super::lossy(&args[at], 128)
                    ));
                }
                replace = true;
                at += 1;
            }
            let library = prepare_load(&set, &args[at], replace, Some(LOAD_TIMEOUT))?;
            Ok(LibraryChange::Load { library, replace })
        }
        b"delete" => {
            let name = args[2].to_vec();
            // Refused here already so a cluster does not log a change that cannot apply.
            set.apply(&LibraryChange::Delete { name: name.clone() })?;
            Ok(LibraryChange::Delete { name })
        }
        b"flush" => {
            if args.len() > 3 {
                return Err(subcommand_syntax_error("flush"));
            }
            if args.len() == 3 && !is(&args[2], "sync") && !is(&args[2], "async") {
                return Err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option".into());
            }
            Ok(LibraryChange::Flush)
        }
        b"restore" => {
            if args.len() > 4 {
                return Err(subcommand_syntax_error("restore"));
            }
            let policy = match args.get(3) {
                None => RestorePolicy::Append,
                Some(p) if is(p, "append") => RestorePolicy::Append,
                Some(p) if is(p, "replace") => RestorePolicy::Replace,
                Some(p) if is(p, "flush") => RestorePolicy::Flush,
                Some(_) => {
                    return Err(
                        "ERR Wrong restore policy given, value should be either FLUSH, \
                                APPEND or REPLACE."
                            .into(),
                    );
                }
            };
            let codes = payload::read(&args[2]).map_err(|e| format!("ERR {e}"))?;
            // Loaded one after another into a set of their own, as Valkey loads a dump.
            let mut restored = LibrarySet::default();
            let mut libraries = Vec::with_capacity(codes.len());
            for code in codes {
                let library = prepare_load(&restored, &code, false, Some(LOAD_TIMEOUT))?;
                restored = restored.apply(&LibraryChange::Load {
                    library: library.clone(),
                    replace: false,
                })?;
                libraries.push(library);
            }
            let change = LibraryChange::Restore { libraries, policy };
            set.apply(&change)?;
            Ok(change)
        }
        _ => Err(format!(
            "ERR unknown subcommand '{}'. Try FUNCTION HELP.",
            super::lossy(&args[1], 128)
        )),
    }
}

fn subcommand_syntax_error(sub: &str) -> String {
    format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try FUNCTION HELP.")
}

/// The reply to a change once it is applied: the library's name for LOAD, OK otherwise.
pub fn change_reply(change: &LibraryChange, out: &mut crate::protocol::Out) {
    match change {
        LibraryChange::Load { library, .. } => out.bulk(library.name.as_bytes()),
        _ => out.ok(),
    }
}

/// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]
pub fn function_list(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let mut with_code = false;
    let mut pattern: Option<&Bytes> = None;
    let mut i = 2;
    while i < args.len() {
        if !with_code && is(&args[i], "withcode") {
            with_code = true;
        } else if pattern.is_none() && is(&args[i], "libraryname") {
            if i >= args.len() - 1 {
                ctx.out.error("ERR library name argument was not given");
                return;
            }
            i += 1;
            pattern = Some(&args[i]);
        } else {
            ctx.out.error(&format!(
                "ERR Unknown argument {}",
                super::lossy(&args[i], 128)
            ));
            return;
        }
        i += 1;
    }
    let set = ctx.node.scripts().libraries.snapshot();
    let shown: Vec<&Library> = set
        .libraries()
        .filter(|l| {
            pattern.is_none_or(|p| crate::util::glob::glob_match(p, l.name.as_bytes(), true))
        })
        .collect();
    let out = &mut *ctx.out;
    out.array(shown.len());
    for lib in shown {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(lib.name.as_bytes());
        out.bulk(b"engine");
        out.bulk(ENGINE.as_bytes());
        out.bulk(b"functions");
        out.array(lib.functions.len());
        for f in &lib.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.name.as_bytes());
            out.bulk(b"description");
            match &f.description {
                Some(d) => out.bulk(d),
                None => out.nil(),
            }
            out.bulk(b"flags");
            let names: Vec<&str> = ScriptFlags(f.flags).names().collect();
            out.set(names.len());
            for n in names {
                out.simple(n);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&lib.code);
        }
    }
}

/// FUNCTION DUMP
pub fn function_dump(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    let set = ctx.node.scripts().libraries.snapshot();
    ctx.out
        .bulk(&payload::dump(set.libraries().map(|l| l.code.as_slice())));
}

/// FUNCTION STATS
pub fn function_stats(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let scripts = &ctx.shared.scripts;
    let threshold = ctx.shared.config.runtime.busy_reply_threshold();
    if scripts.busy_eval(threshold).is_some() {
        // A long EVAL script runs: Valkey refuses as it refuses every command then.
        ctx.out.error(super::script::BUSY);
        return;
    }
    let running = (0..ctx.shared.cores).find_map(|c| scripts.running_function(c));
    let set = scripts.libraries.snapshot();
    let out = &mut *ctx.out;
    out.map(2);
    out.bulk(b"running_script");
    match running {
        None => out.nil(),
        Some(f) => {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.name.as_bytes());
            out.bulk(b"command");
            out.array(f.command.len());
            for a in &f.command {
                out.bulk(a);
            }
            out.bulk(b"duration_ms");
            out.int(crate::util::now_ms().saturating_sub(f.started) as i64);
        }
    }
    out.bulk(b"engines");
    out.map(1);
    out.bulk(ENGINE.as_bytes());
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(set.len() as i64);
    out.bulk(b"functions_count");
    out.int(set.function_count() as i64);
}

/// FUNCTION KILL
pub fn function_kill(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    kill(ctx, true);
}

/// FUNCTION HELP
pub fn function_help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    super::connection::help(
        ctx.out,
        "FUNCTION",
        &[
            "LOAD [REPLACE] <FUNCTION CODE>",
            "    Load a library: its code starts with '#!lua name=<library name>'.",
            "DELETE <LIBRARY NAME>",
            "    Delete a library and its functions.",
            "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
            "    List the libraries (those whose name matches PATTERN), their engine and",
            "    functions, and their code with WITHCODE.",
            "STATS",
            "    Show the function running now (name, command, duration) and the number of",
            "    libraries and functions per engine.",
            "KILL",
            "    Stop the running function, if it has not written yet.",
            "FLUSH [ASYNC|SYNC]",
            "    Delete every library.",
            "DUMP",
            "    Return every library as a payload for FUNCTION RESTORE.",
            "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
            "    Load the libraries of a payload. FLUSH deletes the existing ones first,",
            "    APPEND (the default) fails on a library name already loaded, REPLACE",
            "    replaces such libraries; a function name already taken fails either.",
        ],
    );
}

use Exec::Shard as S;

const FCALL_FLAGS: u32 = flags::NOSCRIPT | flags::SKIP_MONITOR | flags::STALE | flags::SCRIPT;

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "fcall",
        -3,
        FCALL_FLAGS | flags::MAY_REPLICATE,
        numkeys(2),
        "scripting",
        "7.0.0",
        "Invokes a function.",
        "Depends on the function that is executed.",
        S(fcall),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "fcall_ro",
        -3,
        FCALL_FLAGS | flags::READONLY,
        numkeys(2),
        "scripting",
        "7.0.0",
        "Invokes a read-only function.",
        "Depends on the function that is executed.",
        S(fcall),
    )
    .key_access(KeyAccess::READ_ONLY),
    CommandDef {
        subcommands: FUNCTION_SUBCOMMANDS,
        ..container(
            "function",
            "scripting",
            "7.0.0",
            "A container for function commands.",
            &[],
        )
    },
];

static FUNCTION_SUBCOMMANDS: &[CommandDef] = &[
    def(
        "load",
        -3,
        flags::WRITE | flags::DENYOOM | flags::NOSCRIPT,
        NOKEY,
        "scripting",
        "7.0.0",
        "Creates a library.",
        "O(1) (considering compilation time is redundant)",
        Exec::Libraries,
    ),
    def(
        "delete",
        3,
        flags::WRITE | flags::NOSCRIPT,
        NOKEY,
        "scripting",
        "7.0.0",
        "Deletes a library and its functions.",
        "O(1)",
        Exec::Libraries,
    ),
    def(
        "flush",
        -2,
        flags::WRITE | flags::NOSCRIPT,
        NOKEY,
        "scripting",
        "7.0.0",
        "Deletes all libraries and functions.",
        "O(N) where N is the number of functions deleted",
        Exec::Libraries,
    ),
    def(
        "restore",
        -3,
        flags::WRITE | flags::DENYOOM | flags::NOSCRIPT,
        NOKEY,
        "scripting",
        "7.0.0",
        "Restores all libraries from a payload.",
        "O(N) where N is the number of functions on the payload",
        Exec::Libraries,
    ),
    def(
        "list",
        -2,
        flags::NOSCRIPT,
        NOKEY,
        "scripting",
        "7.0.0",
        "Returns information about all libraries.",
        "O(N) where N is the number of functions",
        S(function_list),
    ),
    def(
        "dump",
        2,
        flags::NOSCRIPT,
        NOKEY,
        "scripting",
        "7.0.0",
        "Dumps all libraries into a serialized binary payload.",
        "O(N) where N is the number of functions",
        S(function_dump),
    ),
    def(
        "stats",
        2,
        flags::NOSCRIPT | flags::ALLOW_BUSY,
        NOKEY,
        "scripting",
        "7.0.0",
        "Returns information about a function during execution.",
        "O(1)",
        Exec::Conn(function_stats),
    ),
    def(
        "kill",
        2,
        flags::NOSCRIPT | flags::ALLOW_BUSY,
        NOKEY,
        "scripting",
        "7.0.0",
        "Terminates a function during execution.",
        "O(1)",
        S(function_kill),
    ),
    def(
        "help",
        2,
        flags::LOADING | flags::STALE,
        NOKEY,
        "scripting",
        "7.0.0",
        "Returns helpful text about the different subcommands.",
        "O(1)",
        Exec::Conn(function_help),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn load(set: &LibrarySet, code: &str, replace: bool) -> Result<Library, String> {
        prepare_load(set, code.as_bytes(), replace, Some(LOAD_TIMEOUT))
    }

    #[test]
    fn load_checks_in_valkeys_order() {
        let empty = LibrarySet::default();
        let lib = load(
            &empty,
            "#!lua name=mylib\nredis.register_function('f1', function() return 1 end)\n\
             redis.register_function{function_name='f2', callback=function() return 2 end, \
             flags={'no-writes'}, description='two'}",
            false,
        )
        .unwrap();
        assert_eq!(lib.name, "mylib");
        assert_eq!(
            lib.functions,
            vec![
                FunctionInfo {
                    name: "f1".into(),
                    description: None,
                    flags: 0
                },
                FunctionInfo {
                    name: "f2".into(),
                    description: Some(b"two".to_vec()),
                    flags: ScriptFlags::NO_WRITES
                },
            ]
        );
        let set = LibrarySet::from_libraries(vec![lib]).unwrap();
        let err = |code: &str| load(&set, code, false).unwrap_err();
        assert_eq!(err("return 1"), "ERR Missing library metadata");
        assert_eq!(
            err("#!lua name=bad-name\nreturn 1"),
            LIBRARY_NAME_RULE.to_string()
        );
        assert_eq!(
            err("#!python name=x\nreturn 1"),
            "ERR Engine 'python' not found"
        );
        assert_eq!(
            err("#!lua name=mylib\nbad script"),
            "ERR Library 'mylib' already exists"
        );
        assert_eq!(
            err("#!lua name=other\nbad script"),
            "ERR Error compiling function: user_function:2: '=' expected near 'script'"
        );
        assert_eq!(
            err("#!lua name=other\nreturn 1"),
            "ERR No functions registered"
        );
        assert_eq!(
            err("#!lua name=other\nredis.register_function('a-b', function() end)"),
            FUNCTION_NAME_RULE.to_string()
        );
        assert_eq!(
            err("#!lua name=other\nredis.register_function('', function() end)"),
            FUNCTION_NAME_RULE.to_string()
        );
        assert_eq!(
            err(
                "#!lua name=other\nredis.register_function('g', function() end)\n\
                 redis.register_function('g', function() end)"
            ),
            "ERR Function already exists in the library"
        );
        // The collision with another library's function is the apply's (it needs the set).
        let other = load(
            &set,
            "#!LUA name=other\nredis.register_function('F1', function() end)",
            false,
        )
        .unwrap();
        assert_eq!(
            set.apply(&LibraryChange::Load {
                library: other,
                replace: false
            })
            .unwrap_err(),
            "ERR Function F1 already exists"
        );
        // REPLACE skips the existing-library check.
        assert!(
            load(
                &set,
                "#!lua name=mylib\nredis.register_function('f1', function() end)",
                true
            )
            .is_ok()
        );
    }
}
