//! Scripting: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT LOAD/EXISTS/FLUSH/KILL, and the
//! script runner FCALL shares (see `function`).
//!
//! A script runs like one command: on the core that owns its keys (or on the scratch shard
//! when its keys span cores, see `engine::span`; through the slot group's leader in a
//! cluster), against that shard. A long one pauses now and then so its core's Raft traffic
//! runs, holding the core's gate so nothing sees it half done (see `engine::pause`). Its
//! `redis.call`s run the commands' own handlers on the same shard, so everything it writes is
//! applied through mutation records and, in a cluster, journaled as ONE unit of records:
//! replicas apply the script's effects and never run the script.
//!
//! Each core has its own Lua VM (`crate::script`: Valkey's sandbox and libraries), compiled
//! lazily from the node's script cache (SCRIPT LOAD and EVAL fill it; SCRIPT FLUSH empties it
//! and every core's compiled copies go with it). A count hook watches the running time: past
//! `busy-reply-threshold` the other cores answer `-BUSY` for this core's keys, and SCRIPT KILL
//! (FUNCTION KILL for a function) stops a script that has not written yet.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mlua::{Function, HookTriggers, Lua, Value, VmState};

use super::function::library::Libraries;
use super::table::{CommandDef, def, numkeys};
use super::{Ctx, Exec, KeyAccess, NodeView, flags, is};
use crate::cluster::key_slot;
use crate::protocol::Out;
use crate::script::{self, CallMode, CommandOutcome, ScriptError, ScriptFlags};
use crate::security::acl::Caller;
use crate::shard::Shard;

const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
/// Other commands while an EVAL script runs (Valkey's `slowevalerr`).
pub const BUSY: &str =
    "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
/// Other commands while a function runs (Valkey's `slowscripterr`).
pub const BUSY_FUNCTION: &str =
    "BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
const NOTBUSY: &str = "NOTBUSY No scripts in execution right now.";
const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the \
     dataset. You can either wait the script termination or kill the server in a hard way using \
     the SHUTDOWN NOSAVE command.";
const KILLED_SCRIPT: &str = "ERR Script killed by user with SCRIPT KILL...";
const KILLED_FUNCTION: &str = "ERR Script killed by user with FUNCTION KILL.";

/// A function running on a core, for FUNCTION STATS.
#[derive(Clone)]
pub struct RunningFunction {
    pub name: String,
    /// The FCALL command that runs it.
    pub command: Vec<Bytes>,
    /// When it started (Unix ms).
    pub started: u64,
}

/// The node's scripts: EVAL bodies by SHA1, the function libraries, and what runs where.
pub struct Scripts {
    bodies: Mutex<HashMap<String, Arc<[u8]>>>,
    /// Bumped by SCRIPT FLUSH: a core whose compiled copies are older drops them.
    generation: AtomicU64,
    /// The function libraries (FUNCTION LOAD), the same on every core.
    pub libraries: Libraries,
    /// Per core: when its running script started (Unix ms; 0: none running).
    started: Vec<AtomicU64>,
    /// Per core: SCRIPT KILL asked the running script to stop (shared with its hook).
    kill: Vec<Arc<AtomicBool>>,
    /// Per core: the running script has written (it can no longer be killed).
    wrote: Vec<AtomicBool>,
    /// Per core: the running script is a function (None: an EVAL script, or nothing).
    function: Vec<Mutex<Option<RunningFunction>>>,
}

impl Scripts {
    pub fn new(cores: usize) -> Scripts {
        Scripts {
            bodies: Mutex::default(),
            generation: AtomicU64::new(0),
            libraries: Libraries::default(),
            started: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            kill: (0..cores)
                .map(|_| Arc::new(AtomicBool::new(false)))
                .collect(),
            wrote: (0..cores).map(|_| AtomicBool::new(false)).collect(),
            function: (0..cores).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn bodies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<[u8]>>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Caches `body`; returns its SHA1 (lowercase hex).
    pub fn load(&self, body: &[u8]) -> String {
        let sha = sha1_hex(body);
        self.bodies()
            .entry(sha.clone())
            .or_insert_with(|| body.into());
        sha
    }

    fn body(&self, sha: &str) -> Option<Arc<[u8]>> {
        self.bodies().get(sha).cloned()
    }

    /// How many scripts are cached (MEMORY DOCTOR's "many scripts").
    pub fn count(&self) -> usize {
        self.bodies().len()
    }

    /// Bytes the script cache takes (MEMORY STATS' lua.caches): the table and, per script,
    /// its SHA and its body (with the Arc's two counters).
    pub fn cache_memory(&self) -> usize {
        use crate::shard::usage::{alloc_size, table_bytes};
        let bodies = self.bodies();
        let slot = std::mem::size_of::<(String, Arc<[u8]>)>();
        // hashbrown keeps tables of 8+ buckets at most 7/8 full.
        let buckets = match bodies.capacity() {
            0 => 0,
            cap if cap < 8 => (cap + 1).next_power_of_two(),
            cap => (cap * 8 / 7).next_power_of_two(),
        };
        table_bytes(buckets, slot)
            + bodies
                .iter()
                .map(|(sha, body)| alloc_size(sha.capacity()) + alloc_size(body.len() + 16))
                .sum::<usize>()
    }

    /// Whether core `core` runs a script for longer than `threshold_ms`.
    pub fn busy(&self, core: usize, threshold_ms: u64) -> bool {
        self.busy_in(core, threshold_ms) == Some(0)
    }

    /// How long until core `core`'s running script is past `threshold_ms` (0: it is); None
    /// when no script runs there.
    pub fn busy_in(&self, core: usize, threshold_ms: u64) -> Option<u64> {
        let since = self.started.get(core).map_or(0, |s| s.load(Relaxed));
        (since != 0).then(|| {
            let ran = crate::util::now_ms().saturating_sub(since);
            threshold_ms.saturating_sub(ran)
        })
    }

    /// The -BUSY reply for commands that wait on core `core`'s running script.
    pub fn busy_error(&self, core: usize) -> &'static str {
        if self.running_function(core).is_some() {
            BUSY_FUNCTION
        } else {
            BUSY
        }
    }

    /// The function core `core` runs, if it runs one.
    pub fn running_function(&self, core: usize) -> Option<RunningFunction> {
        self.function
            .get(core)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_running_function(&self, core: usize, f: Option<RunningFunction>) {
        if let Some(slot) = self.function.get(core) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = f;
        }
    }

    /// The first core running a script, if any.
    pub fn running_core(&self) -> Option<usize> {
        (0..self.started.len()).find(|&c| self.started[c].load(Relaxed) != 0)
    }

    /// The first core running an EVAL script for longer than `threshold_ms` (Valkey would be
    /// answering -BUSY by then).
    pub fn busy_eval(&self, threshold_ms: u64) -> Option<usize> {
        (0..self.started.len())
            .find(|&c| self.busy(c, threshold_ms) && self.running_function(c).is_none())
    }
}

pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// Parses a script's shebang line, Valkey's evalExtractShebangFlags.
fn shebang(body: &[u8]) -> Result<ScriptFlags, String> {
    if !body.starts_with(b"#!") {
        return Ok(ScriptFlags::default());
    }
    let line_end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..line_end]).into_owned();
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}"));
    }
    let mut flags = ScriptFlags::default();
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for flag in list.split(',').filter(|f| !f.is_empty()) {
            match ScriptFlags::named(flag.as_bytes(), false) {
                Some(bit) => flags.0 |= bit,
                None => return Err(format!("ERR Unexpected flag in script shebang: {flag}")),
            }
        }
    }
    Ok(flags)
}

/// This core's EVAL VM and its compiled scripts.
struct CoreVm {
    lua: Lua,
    /// By SHA1: the function, its shebang flags, and whether it has a shebang (without one a
    /// script runs in Valkey's compatibility mode, where the flag checks do not apply).
    compiled: HashMap<String, (Function, ScriptFlags, bool)>,
    generation: u64,
}

thread_local! {
    static VM: RefCell<Option<CoreVm>> = const { RefCell::new(None) };
    /// The script running on this thread, for `redis.call` (null when none).
    static RUNNING: Cell<*mut Running> = const { Cell::new(std::ptr::null_mut()) };
    /// Whether memory was over `maxmemory` (with no room to make) when the engine started
    /// the script command about to run (see [`flags::SCRIPT`]).
    static PRE_OOM: Cell<bool> = const { Cell::new(false) };
    /// The ACL user of the script command about to run on this thread, when restricted
    /// (None: allowed everything).
    static CALLER: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

/// Tells the script command about to run on this thread which restricted ACL user called it
/// (None: a caller allowed everything): each `redis.call` is checked against it, as Valkey
/// checks a script's commands against its caller's permissions.
pub fn set_caller(caller: Option<Caller>) {
    CALLER.with(|c| *c.borrow_mut() = caller);
}

/// Whether the script's caller may run command `id` with `args`: the refusal's text if not.
/// `log`: a refusal of `redis.call` goes to ACL LOG and the audit log (`redis.acl_check_cmd`
/// only asks).
fn caller_denied(
    id: usize,
    def: &super::table::CommandDef,
    args: &[Bytes],
    log: bool,
) -> Option<String> {
    CALLER.with(|c| {
        let caller = c.borrow();
        let caller = caller.as_ref()?;
        let denied = caller.user.check(id, def, args).err()?;
        let full_name = super::table::registry().full_name(id);
        if log {
            super::connection::log_denied(
                &caller.users,
                &caller.user,
                &caller.client,
                full_name,
                &denied,
                "lua",
                caller.log_max_len,
            );
        }
        Some(crate::security::acl::denied_error(
            &caller.user,
            full_name,
            &denied,
        ))
    })
}

/// Valkey's error for a write refused over `maxmemory`.
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Tells the script command about to run on this thread whether memory is over `maxmemory`
/// (the engine, before each [`flags::SCRIPT`] command).
pub fn set_pre_oom(oom: bool) {
    PRE_OOM.with(|c| c.set(oom));
}

fn pre_oom() -> bool {
    PRE_OOM.with(Cell::get)
}

/// What `redis.call` needs while a script runs: the shard and node of the EVAL's context.
struct Running {
    shard: *mut Shard,
    node: *const dyn NodeView,
    now: u64,
    read_only: bool,
    /// DENYOOM commands are refused: memory was over `maxmemory` when the script started and
    /// it lacks the `allow-oom` flag.
    deny_oom: bool,
    /// In a cluster, the one slot the script's keys may be in (the first key's), unless it
    /// may cross slots (`allow-cross-slot-keys`, or a script without flags); see
    /// [`Invocation::cross_slot`].
    slot: Option<Cell<Option<u16>>>,
    /// In a cluster, the slot of the script's first key: its records are one entry of that
    /// slot's group's log, so every key it touches must be in that group.
    home_slot: Option<usize>,
    /// The keys the script declared.
    declared: Vec<Bytes>,
    core: usize,
    /// `card-pan-guard refuse`: the shard keeps before-images while the script runs.
    guarded: bool,
    /// The guard refused one of the script's writes: it refuses every later one, and the
    /// script is undone whole when it ends.
    doomed: bool,
}

/// A Lua VM whose `redis.call` / `redis.pcall` run commands for the script running on this
/// thread: EVAL's (sealed) or the function engine's (`functions`).
pub(super) fn new_lua(functions: bool) -> mlua::Result<Lua> {
    let lua = script::new_vm()?;
    let redis = script::redis_table(&lua)?;
    redis.raw_set(
        "call",
        script::command_function(&lua, CallMode::Call, |_, argv| call_from_script(argv))?,
    )?;
    redis.raw_set(
        "pcall",
        script::command_function(&lua, CallMode::Pcall, |_, argv| call_from_script(argv))?,
    )?;
    redis.raw_set(
        "acl_check_cmd",
        script::acl_check_function(&lua, |_, argv| {
            // Whether the caller may run that command with those arguments.
            let id = super::table::resolve_client(&argv)?;
            let args: Vec<Bytes> = argv.into_iter().map(Bytes::from).collect();
            Some(caller_denied(id, super::table::registry().def(id), &args, false).is_none())
        })?,
    )?;
    if functions {
        script::seal_for_functions(&lua)?;
    } else {
        script::seal(&lua)?;
    }
    Ok(lua)
}

fn new_core_vm() -> mlua::Result<CoreVm> {
    Ok(CoreVm {
        lua: new_lua(false)?,
        compiled: HashMap::new(),
        generation: 0,
    })
}
/// Runs one `redis.call` / `redis.pcall` of the script running on this thread.
fn call_from_script(mut argv: Vec<Vec<u8>>) -> CommandOutcome {
    let ptr = RUNNING.with(|r| r.get());
    if ptr.is_null() {
        return CommandOutcome::Refused(b"-ERR no script is running".to_vec());
    }
    // Between two commands is as good a place as the hook to let the core's other tasks run
    // (see `engine::pause`): a script spending its time in `redis.call` runs few
    // instructions of its own.
    crate::engine::pause::between_calls();
    // SAFETY: RUNNING points at the `Running` of the EVAL on this thread's stack, set just
    // before the script starts and cleared right after it returns; Lua calls back into here
    // only while the script runs, on this thread.
    let run = unsafe { &mut *ptr };
    let refuse = |msg: &str| CommandOutcome::Refused(msg.as_bytes().to_vec());
    let reg = super::table::registry();
    let Some(mut id) = super::table::lookup_client(&argv[0]) else {
        return refuse("Unknown command called from script");
    };
    if super::table::renamed() {
        // As the dispatcher does: the command runs under its own name.
        argv[0] = reg.def(id).name.as_bytes().to_vec();
    }
    if matches!(reg.def(id).exec, Exec::Container) {
        match argv.get(1).and_then(|a| super::table::lookup_sub(id, a)) {
            Some(sub) => id = sub,
            None => return refuse("Unknown command called from script"),
        }
    }
    let def = reg.def(id);
    let argc = argv.len() as i32;
    if (def.arity > 0 && argc != def.arity) || argc < -def.arity {
        return refuse("Wrong number of args calling command from script");
    }
    let args: Vec<Bytes> = argv.into_iter().map(Bytes::from).collect();
    if let Some(denied) = caller_denied(id, def, &args, true) {
        return refuse(&format!("-{denied}"));
    }
    // SAFETY: as for RUNNING; the shard and node outlive the script's run.
    let (shard, node) = unsafe { (&mut *run.shard, &*run.node) };
    if def.name == "select" {
        return select_in_script(shard, node, &args[1]);
    }
    if def.flags & flags::NOSCRIPT != 0 {
        return refuse("This command is not allowed from script");
    }
    let write = def.flags & flags::WRITE != 0;
    if write && run.read_only {
        return refuse("Write commands are not allowed from read-only scripts.");
    }
    if run.deny_oom && def.flags & flags::DENYOOM != 0 {
        return refuse(&format!("-{OOM}"));
    }
    if super::key_too_long(def, &args) {
        return refuse(&format!("-{}", super::key_too_long_error()));
    }
    if write && run.doomed {
        return refuse(&format!("-{}", crate::security::pan_guard::REFUSED));
    }
    if write
        && let Some(guard) = node.pan_guard()
        && let Some(finding) = guard.inspect(def, &args)
    {
        let verdict = CALLER.with(|c| match &*c.borrow() {
            Some(caller) => guard.decide(&finding, "lua", &caller.user.name, &caller.client.addr),
            None => guard.decide(&finding, "lua", "", ""),
        });
        if verdict == crate::security::pan_guard::Verdict::Refuse {
            run.doomed = run.guarded;
            return refuse(&format!("-{}", crate::security::pan_guard::REFUSED));
        }
    }
    for p in def.keys.positions(&args) {
        let key = &args[p];
        let slot = key_slot(key);
        if let Some(first) = &run.slot {
            match first.get() {
                None => first.set(Some(slot)),
                Some(s) if s != slot => {
                    return refuse(
                        "-ERR Script attempted to access keys that do not hash to the same slot",
                    );
                }
                Some(_) => {}
            }
        }
        if !key_is_reachable(run, shard, node, key, slot as usize) {
            return refuse(if node.clustered() {
                "-ERR Script attempted to access a non local key in a cluster node script"
            } else {
                "-ERR Script attempted to access a key served by another thread: pass every \
                 key the script uses in KEYS"
            });
        }
    }
    let script_resp3 = RESP3.with(|r| r.get());
    let mut out = Out::new(script_resp3);
    match def.exec {
        Exec::Shard(f) | Exec::Multi(f, _) => {
            let mut ctx = Ctx {
                shard,
                now: run.now,
                out: &mut out,
                node,
            };
            f(&mut ctx, &args);
        }
        Exec::Conn(_) if def.name == "ping" => match args.len() {
            1 => out.simple("PONG"),
            _ => out.bulk(&args[1]),
        },
        Exec::Conn(_) if def.name == "echo" => out.bulk(&args[1]),
        Exec::Conn(_) if def.name == "time" => super::connection::time_reply(&mut out),
        _ => return refuse("This command is not allowed from script"),
    }
    if write {
        node.scripts().wrote[run.core].store(true, Relaxed);
        // APPEND and SETRANGE check what they would store themselves (the guard's error is
        // their reply).
        if run.guarded
            && out.buf.first() == Some(&b'-')
            && out.buf[1..].starts_with(crate::security::pan_guard::REFUSED.as_bytes())
        {
            run.doomed = true;
        }
    }
    CommandOutcome::Reply(out.buf)
}

/// SELECT from a script: later `redis.call`s use that database, the caller's stays as it was.
fn select_in_script(shard: &mut Shard, node: &dyn NodeView, arg: &[u8]) -> CommandOutcome {
    let refuse = |msg: &str| CommandOutcome::Refused(msg.as_bytes().to_vec());
    let db = match super::connection::select_index(node, arg) {
        Ok(db) => db as usize,
        Err(e) => return refuse(&format!("-{e}")),
    };
    // A scratch shard holds copies of the declared keys of one database (`engine::span`).
    if shard.scratch && db != shard.db() {
        return refuse(
            "-ERR SELECT of another database in a script whose keys live on several threads \
             is not supported",
        );
    }
    shard.select(db);
    let mut out = Out::new(RESP3.with(|r| r.get()));
    out.ok();
    CommandOutcome::Reply(out.buf)
}

thread_local! {
    /// The running script's `redis.setresp` choice, read by `call_from_script`.
    static RESP3: Cell<bool> = const { Cell::new(false) };
}

/// Whether a script running here may touch `key`: it is in this shard (a scratch shard holds
/// only the declared keys), and in a cluster in a slot this node serves.
fn key_is_reachable(
    run: &Running,
    shard: &Shard,
    node: &dyn NodeView,
    key: &[u8],
    slot: usize,
) -> bool {
    if shard.scratch {
        return run.declared.iter().any(|k| k == key);
    }
    // In a cluster, the script's records go into one entry of its first key's group's log.
    let in_group = run.home_slot.is_none_or(|h| node.same_group(slot, h));
    shard.owned_slots().contains(&slot) && node.serves(slot) && in_group
}

/// EVAL / EVAL_RO script numkeys [key ...] [arg ...]
pub fn eval(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let read_only = is(&args[0], "eval_ro");
    let sha = ctx.node.scripts().load(&args[1]);
    run(ctx, args, &sha, Some(&args[1]), read_only);
}

/// EVALSHA / EVALSHA_RO sha1 numkeys [key ...] [arg ...]
pub fn evalsha(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let read_only = is(&args[0], "evalsha_ro");
    let sha = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    if sha.len() != 40 {
        ctx.out.error(NOSCRIPT);
        return;
    }
    run(ctx, args, &sha, None, read_only);
}

fn run(ctx: &mut Ctx<'_>, args: &[Bytes], sha: &str, body: Option<&Bytes>, read_only: bool) {
    let Some(numkeys) = super::arg_i64(&args[2]) else {
        ctx.out.error(super::NOT_INTEGER);
        return;
    };
    if numkeys < 0 {
        ctx.out.error("ERR Number of keys can't be negative");
        return;
    }
    if numkeys as usize > args.len() - 3 {
        ctx.out
            .error("ERR Number of keys can't be greater than number of args");
        return;
    }
    let keys = &args[3..3 + numkeys as usize];
    let argv = &args[3 + numkeys as usize..];
    let scripts = ctx.node.scripts();
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            match new_core_vm() {
                Ok(vm) => *slot = Some(vm),
                Err(e) => {
                    ctx.out
                        .error(&format!("ERR could not start the Lua VM: {e}"));
                    return;
                }
            }
        }
        let vm = slot.as_mut().expect("created above");
        let generation = scripts.generation.load(Relaxed);
        if vm.generation != generation {
            vm.compiled.clear();
            vm.generation = generation;
        }
        if !vm.compiled.contains_key(sha) {
            let source = match body {
                Some(b) => Arc::from(&b[..]),
                None => match scripts.body(sha) {
                    Some(b) => b,
                    None => {
                        ctx.out.error(NOSCRIPT);
                        return;
                    }
                },
            };
            let flags = match shebang(&source) {
                Ok(f) => f,
                Err(e) => {
                    ctx.out.error(&e);
                    return;
                }
            };
            // The shebang line is a Lua comment only for Lua's own `#` rule on the first
            // line, which `load` does not apply: blank it out, keeping line numbers.
            let code: Vec<u8> = if source.starts_with(b"#!") {
                let end = source
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(source.len());
                source[end..].to_vec()
            } else {
                source.to_vec()
            };
            match script::compile_script(&vm.lua, &code) {
                Ok(f) => {
                    let shebang = source.starts_with(b"#!");
                    vm.compiled.insert(sha.to_string(), (f, flags, shebang));
                }
                Err(e) => {
                    ctx.out.error(&e.reply_text(sha));
                    return;
                }
            }
        }
        let (function, flags, shebang) = vm.compiled.get(sha).cloned().expect("compiled above");
        if shebang && let Err(e) = flags_allow(ctx.node, flags, read_only) {
            ctx.out.error(e);
            return;
        }
        let lua = &vm.lua;
        if let Err(e) = script::set_keys_and_argv(lua, keys, argv) {
            ctx.out.error(&format!("ERR {e}"));
            return;
        }
        let run = Invocation {
            keys,
            read_only: read_only || flags.has(ScriptFlags::NO_WRITES),
            allow_oom: flags.has(ScriptFlags::ALLOW_OOM),
            // Without a shebang, Valkey's compatibility mode lets a script cross slots.
            cross_slot: !shebang || flags.has(ScriptFlags::ALLOW_CROSS_SLOT),
            name: sha,
            function: None,
        };
        execute(ctx, lua, run, |lua| script::run_script(lua, &function, ()));
    });
}

/// The checks Valkey's `scriptPrepareForRun` makes of a script's flags (a function's, or an
/// EVAL script's shebang): `no-cluster` does not run on a cluster node, and a script that may
/// write (no `no-writes`) does not run from a `*_RO` command.
pub(super) fn flags_allow(
    node: &dyn NodeView,
    flags: ScriptFlags,
    read_only: bool,
) -> Result<(), &'static str> {
    if flags.has(ScriptFlags::NO_CLUSTER) && node.clustered() {
        return Err("ERR Can not run script on cluster, 'no-cluster' flag is set.");
    }
    if read_only && !flags.has(ScriptFlags::NO_WRITES) {
        return Err("ERR Can not execute a script with write flag using *_ro command.");
    }
    // A script that may write does not start over maxmemory unless it says `allow-oom`.
    if !flags.has(ScriptFlags::NO_WRITES) && !flags.has(ScriptFlags::ALLOW_OOM) && pre_oom() {
        return Err(
            "OOM allow-oom flag is not set on the script, can not run it when used \
                    memory > 'maxmemory'",
        );
    }
    Ok(())
}

/// One run of a script or function, besides the Lua code itself.
pub(super) struct Invocation<'a> {
    /// The keys it declared (the only ones it may touch on a scratch shard).
    pub keys: &'a [Bytes],
    /// `redis.call` refuses writes (`*_RO` commands, the `no-writes` flag).
    pub read_only: bool,
    /// The `allow-oom` flag: DENYOOM commands run even over `maxmemory`.
    pub allow_oom: bool,
    /// In a cluster, `redis.call` may name keys of other slots than the first key's (the
    /// `allow-cross-slot-keys` flag); they must still be served here.
    pub cross_slot: bool,
    /// How errors name it: EVAL's SHA1, or the function's name.
    pub name: &'a str,
    /// FCALL: the function and its command (FUNCTION STATS, FUNCTION KILL).
    pub function: Option<RunningFunction>,
}

/// Runs `call` as this core's running script against `ctx`'s shard: `redis.call` runs
/// commands there, the busy/kill hook watches it, and its result (or error) becomes the reply.
pub(super) fn execute(
    ctx: &mut Ctx<'_>,
    lua: &Lua,
    run: Invocation<'_>,
    call: impl FnOnce(&Lua) -> Result<Value, ScriptError>,
) {
    let scripts = ctx.node.scripts();
    script::begin_run(lua);
    let core = ctx.shard.core.unwrap_or(0);
    // A SELECT inside the script changes its own database only (Valkey 7 and later).
    let db = ctx.shard.db();
    let mut running = Running {
        shard: &mut *ctx.shard,
        // SAFETY: only the lifetime bound is erased; the pointer is used while the script
        // runs, inside this call, where `ctx.node` is alive (see `call_from_script`).
        node: unsafe {
            std::mem::transmute::<*const (dyn NodeView + '_), *const (dyn NodeView + 'static)>(
                ctx.node,
            )
        },
        now: ctx.now,
        read_only: run.read_only,
        deny_oom: !run.allow_oom && pre_oom(),
        slot: (ctx.node.clustered() && !run.cross_slot)
            .then(|| Cell::new(run.keys.first().map(|k| key_slot(k)))),
        home_slot: ctx
            .node
            .clustered()
            .then(|| run.keys.first().map(|k| key_slot(k) as usize))
            .flatten(),
        declared: run.keys.to_vec(),
        core,
        guarded: false,
        doomed: false,
    };
    // With the guard refusing, a script that tries to store a card number is refused as a
    // whole: what it wrote before is undone (its reply is the guard's error, even if it
    // caught that error with pcall).
    running.guarded = !run.read_only && ctx.node.pan_guard().is_some_and(|g| g.refusing());
    if running.guarded {
        ctx.shard.begin_undo();
    }
    let is_function = run.function.is_some();
    let killed = if is_function {
        KILLED_FUNCTION
    } else {
        KILLED_SCRIPT
    };
    scripts.kill[core].store(false, Relaxed);
    scripts.wrote[core].store(false, Relaxed);
    if is_function {
        scripts.set_running_function(core, run.function);
    }
    scripts.started[core].store(crate::util::now_ms().max(1), Relaxed);
    RUNNING.with(|r| r.set(&mut running));
    RESP3.with(|r| r.set(false));
    let kill_flag = scripts.kill[core].clone();
    let _ = lua.set_hook(
        HookTriggers::new().every_nth_instruction(100_000),
        move |lua, _| {
            // Keep `redis.setresp` visible to `redis.call`.
            RESP3.with(|r| r.set(script::run_state(lua).resp == 3));
            // A long script lets its core's other tasks run now and then (see
            // `engine::pause`); SCRIPT KILL may arrive meanwhile.
            crate::engine::pause::point();
            if kill_flag.load(Relaxed) {
                return Err(mlua::Error::RuntimeError(killed.into()));
            }
            Ok(VmState::Continue)
        },
    );
    let result = call(lua);
    lua.remove_hook();
    RUNNING.with(|r| r.set(std::ptr::null_mut()));
    let doomed = running.doomed;
    if running.guarded {
        ctx.shard.end_undo(doomed);
    }
    ctx.shard.select(db);
    scripts.started[core].store(0, Relaxed);
    if is_function {
        scripts.set_running_function(core, None);
    }
    if doomed {
        ctx.out.error(crate::security::pan_guard::REFUSED);
        return;
    }
    match result {
        Ok(v) => {
            let script_resp3 = script::run_state(lua).resp == 3;
            if let Err(e) = script::lua_to_reply(&v, script_resp3, ctx.out) {
                ctx.out.error(&format!("ERR {e}"));
            }
        }
        Err(ScriptError::Runtime(e)) if e.err.contains("Script killed by user") => {
            ctx.out.error(killed);
        }
        Err(e) => ctx.out.error(&e.reply_text(run.name)),
    }
}

/// SCRIPT LOAD script
pub fn script_load(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if let Err(e) = shebang(&args[2]) {
        ctx.out.error(&e);
        return;
    }
    let sha = ctx.node.scripts().load(&args[2]);
    ctx.out.bulk(sha.as_bytes());
}

/// SCRIPT EXISTS sha1 [sha1 ...]
pub fn script_exists(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    let scripts = ctx.node.scripts();
    ctx.out.array(args.len() - 2);
    for a in &args[2..] {
        let sha = String::from_utf8_lossy(a).to_ascii_lowercase();
        ctx.out.int(scripts.body(&sha).is_some() as i64);
    }
}

/// SCRIPT FLUSH [ASYNC|SYNC]
pub fn script_flush(ctx: &mut Ctx<'_>, args: &[Bytes]) {
    if args.len() > 3 || (args.len() == 3 && !is(&args[2], "async") && !is(&args[2], "sync")) {
        ctx.out
            .error("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
        return;
    }
    let scripts = ctx.node.scripts();
    scripts.bodies().clear();
    scripts.generation.fetch_add(1, Relaxed);
    ctx.out.ok();
}

/// SCRIPT KILL
pub fn script_kill(ctx: &mut Ctx<'_>, _args: &[Bytes]) {
    kill(ctx, false);
}

/// SCRIPT KILL (`function` false) or FUNCTION KILL (true), Valkey's `scriptKill`: each stops
/// only its own kind of script.
pub(super) fn kill(ctx: &mut Ctx<'_>, function: bool) {
    kill_running(ctx.node.scripts(), function, ctx.out);
}

/// SCRIPT KILL (`function` false) or FUNCTION KILL (true) against `scripts`, replying to
/// `out`: what a connection whose core is busy with a paused script may still run.
pub fn kill_running(scripts: &Scripts, function: bool, out: &mut Out) {
    match scripts.running_core() {
        None => out.error(NOTBUSY),
        Some(c) if scripts.wrote[c].load(Relaxed) => out.error(UNKILLABLE),
        Some(c) => match (scripts.running_function(c).is_some(), function) {
            (true, false) => out.error(BUSY_FUNCTION),
            (false, true) => out.error(BUSY),
            _ => {
                scripts.kill[c].store(true, Relaxed);
                out.ok();
            }
        },
    }
}

use Exec::Shard as S;

const SCRIPT_FLAGS: u32 =
    flags::NOSCRIPT | flags::SKIP_MONITOR | flags::MAY_REPLICATE | flags::SCRIPT;

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[
    def(
        "eval",
        -3,
        SCRIPT_FLAGS | flags::STALE,
        numkeys(2),
        "scripting",
        "2.6.0",
        "Executes a server-side Lua script.",
        "Depends on the script that is executed.",
        S(eval),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "evalsha",
        -3,
        SCRIPT_FLAGS | flags::STALE,
        numkeys(2),
        "scripting",
        "2.6.0",
        "Executes a server-side Lua script by SHA1 digest.",
        "Depends on the script that is executed.",
        S(evalsha),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "eval_ro",
        -3,
        flags::NOSCRIPT | flags::SKIP_MONITOR | flags::READONLY | flags::STALE,
        numkeys(2),
        "scripting",
        "7.0.0",
        "Executes a read-only server-side Lua script.",
        "Depends on the script that is executed.",
        S(eval),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "evalsha_ro",
        -3,
        flags::NOSCRIPT | flags::SKIP_MONITOR | flags::READONLY | flags::STALE,
        numkeys(2),
        "scripting",
        "7.0.0",
        "Executes a read-only server-side Lua script by SHA1 digest.",
        "Depends on the script that is executed.",
        S(evalsha),
    )
    .key_access(KeyAccess::READ_ONLY),
    CommandDef {
        subcommands: SCRIPT_SUBCOMMANDS,
        ..super::table::container(
            "script",
            "scripting",
            "2.6.0",
            "A container for Lua scripts management commands.",
            &[],
        )
    },
];

static SCRIPT_SUBCOMMANDS: &[CommandDef] = &[
    def(
        "load",
        3,
        flags::NOSCRIPT | flags::STALE,
        super::table::NOKEY,
        "scripting",
        "2.6.0",
        "Loads a server-side Lua script to the script cache.",
        "O(N) with N being the length in bytes of the script body.",
        S(script_load),
    ),
    def(
        "exists",
        -3,
        flags::NOSCRIPT | flags::STALE,
        super::table::NOKEY,
        "scripting",
        "2.6.0",
        "Determines whether server-side Lua scripts exist in the script cache.",
        "O(N) with N being the number of scripts to check.",
        S(script_exists),
    ),
    def(
        "flush",
        -2,
        flags::NOSCRIPT,
        super::table::NOKEY,
        "scripting",
        "2.6.0",
        "Removes all server-side Lua scripts from the script cache.",
        "O(N) with N being the number of scripts in cache",
        S(script_flush),
    ),
    def(
        "kill",
        2,
        flags::NOSCRIPT | flags::ALLOW_BUSY,
        super::table::NOKEY,
        "scripting",
        "2.6.0",
        "Terminates a server-side Lua script during execution.",
        "O(1)",
        S(script_kill),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs_parse_as_valkey() {
        assert_eq!(shebang(b"return 1").unwrap(), ScriptFlags(0));
        assert_eq!(
            shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap(),
            ScriptFlags(ScriptFlags::NO_WRITES | ScriptFlags::ALLOW_OOM)
        );
        assert_eq!(
            shebang(b"#!lua flags=bogus\nreturn 1").err().unwrap(),
            "ERR Unexpected flag in script shebang: bogus"
        );
        assert_eq!(
            shebang(b"#!python\nreturn 1").err().unwrap(),
            "ERR Unexpected engine in script shebang: #!python"
        );
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
