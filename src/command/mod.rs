//! The command table and the families that implement it.
//!
//! The table is data, as in Valkey's commands.def: name, arity, flags, key positions and ACL
//! categories. The dispatcher (server room) reads it to check arity, find keys, route a command
//! to the core that owns its keys and split multi-key commands; COMMAND INFO/DOCS/GETKEYS read
//! the same table. A family file parses arguments, reads its shard and writes through
//! mutation records — it never sees a socket.

pub mod acl;
pub mod bitmap;
pub mod category;
pub mod cluster;
pub mod connection;
pub mod counter;
pub mod expire;
pub mod function;
pub mod hash;
pub mod keyspace;
pub mod list;
pub mod memory;
pub mod meta;
pub mod script;
pub mod server;
pub mod set;
pub mod string;
pub mod table;
pub mod zset;

use bytes::Bytes;

use crate::protocol::Out;
use crate::shard::{Entry, Mutation, Shard};

pub use table::{COMMANDS, CommandDef, lookup, lookup_sub};

/// Command flags, named as in Valkey's COMMAND INFO.
pub mod flags {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const SKIP_MONITOR: u32 = 1 << 9;
    pub const FAST: u32 = 1 << 10;
    pub const NO_AUTH: u32 = 1 << 11;
    pub const MAY_REPLICATE: u32 = 1 << 12;
    pub const SENTINEL: u32 = 1 << 13;
    pub const ALLOW_BUSY: u32 = 1 << 14;
    /// Our own: the command reads or changes connection/global state, so earlier commands of
    /// the same pipeline must have run on every core before it runs.
    pub const BARRIER: u32 = 1 << 20;
    /// Our own: the op is part of a MULTI/EXEC transaction (see `engine::tx`); it is skipped
    /// when the transaction's WATCH guard found a watched key changed.
    pub const TX: u32 = 1 << 21;
    /// Our own: the op checks a transaction's WATCHed keys on its core (`engine::tx`); the
    /// transaction's ops after it in the batch are skipped when it answers `:0`.
    pub const TX_GUARD: u32 = 1 << 22;
    /// Our own: the first op of a transaction in a batch (`engine::tx`). A batch may hold
    /// several transactions back to back (a pipeline of MULTI/EXEC in a cluster): each
    /// starts its own unit of records, and one's failed WATCH guard skips only its own ops.
    pub const TX_BEGIN: u32 = 1 << 25;
    /// Our own: Valkey's `no-multi` — refused inside MULTI.
    pub const NO_MULTI: u32 = 1 << 23;
    /// Our own: the command runs a script (EVAL, FCALL...): the engine tells it, before it
    /// runs, whether memory is over `maxmemory` (Valkey's `pre_command_oom_state`), which
    /// decides whether the script and its `redis.call`s of DENYOOM commands may run.
    pub const SCRIPT: u32 = 1 << 24;

    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (SKIP_MONITOR, "skip_monitor"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (MAY_REPLICATE, "may_replicate"),
        (SENTINEL, "sentinel"),
        (ALLOW_BUSY, "allow_busy"),
    ];
}

/// Where a command's keys are: Valkey's legacy (first, last, step), where last < 0 counts
/// from the end, plus — for commands that say how many keys they name (SINTERCARD, ZUNION,
/// LMPOP...) — Valkey's "keynum" key spec: `args[numkeys_at]` is that count and the keys
/// follow it (0: no such spec). Such a command is `movablekeys` in COMMAND INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub first: i32,
    pub last: i32,
    pub step: i32,
    pub numkeys_at: i32,
}

impl KeySpec {
    pub const NONE: KeySpec = KeySpec {
        first: 0,
        last: 0,
        step: 0,
        numkeys_at: 0,
    };

    /// Indices of the key arguments in `args` (args[0] is the command name). A count that is
    /// not a positive integer, or names more keys than there are arguments, yields no counted
    /// keys: the command itself then replies the error.
    pub fn positions<A: AsRef<[u8]>>(&self, args: &[A]) -> impl Iterator<Item = usize> + use<A> {
        let argc = args.len();
        let first = self.first.max(0) as usize;
        let last = if self.last < 0 {
            argc as i64 + self.last as i64
        } else {
            self.last as i64
        };
        let step = self.step.max(1) as usize;
        let end = if self.first == 0 || last < first as i64 {
            first
        } else {
            last as usize + 1
        };
        let counted = match usize::try_from(self.numkeys_at) {
            Ok(at) if at > 0 => args
                .get(at)
                .and_then(|a| crate::util::parse_i64(a.as_ref()))
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0 && n < argc - at)
                .map_or(0..0, |n| at + 1..at + 1 + n),
            _ => 0..0,
        };
        (first..end.min(argc)).step_by(step).chain(counted)
    }

    /// Whether the command has key arguments at all (COMMAND GETKEYS).
    pub fn has_keys(&self) -> bool {
        self.first > 0 || self.numkeys_at > 0
    }
}

/// What a command does to its keys, as far as ACL key permissions go: Valkey's key-spec
/// flags reduced to the permission each key needs, as acl.c's `ACLSelectorCheckKey` reduces
/// them. A key the command reads (ACCESS: GET, INCR, LPOP...) needs read permission (`%R~`);
/// one it inserts into, deletes from or updates (INSERT, DELETE, UPDATE) needs write
/// permission (`%W~`); one it does neither to (EXISTS, TYPE, STRLEN: only the key's
/// existence, type or size) needs just a pattern that matches it, whatever its permissions.
///
/// Valkey's multi-key commands have one key spec for their first key and one for the others
/// (SUNIONSTORE: the destination, then the sources; LMOVE: the source, then the
/// destination), so a `first` and a `rest` permission describe every command here, in the
/// order [`KeySpec::positions`] yields the keys. [`Refine`] covers the commands whose
/// arguments change what their key needs (Valkey's VARIABLE_FLAGS key specs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAccess {
    /// What the first key needs: [`KeyAccess::READ`] and/or [`KeyAccess::WRITE`] bits.
    pub first: u8,
    /// What every later key needs.
    pub rest: u8,
    pub refine: Refine,
}

/// Commands whose arguments change what their key needs (Valkey's key specs flagged
/// VARIABLE_FLAGS, refined by the command's getkeys function in db.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refine {
    /// The same whatever the arguments.
    Fixed,
    /// SET: write only (OW UPDATE), but read and write (RW ACCESS UPDATE) when an argument
    /// after the value is `GET` (Valkey's `setGetKeys`, which looks at every such argument).
    SetGet,
    /// BITFIELD: read only (RO ACCESS) while every operation is a GET (OVERFLOW aside), read
    /// and write (RW ACCESS UPDATE) once one is a SET or INCRBY, or an argument is not
    /// understood (Valkey's `bitfieldGetKeys`).
    BitfieldWrites,
}

impl KeyAccess {
    /// The key's value is read (Valkey's ACCESS): read permission, `%R~`.
    pub const READ: u8 = 1;
    /// The key is inserted into, deleted from or updated: write permission, `%W~`.
    pub const WRITE: u8 = 2;

    /// Every key only has its existence, type or size looked at (Valkey's RO without
    /// ACCESS: EXISTS, TYPE, STRLEN, WATCH): any pattern matching it allows it.
    pub const METADATA: KeyAccess = KeyAccess::all(0);
    /// Every key is read (RO ACCESS: GET, MGET, LRANGE...).
    pub const READ_ONLY: KeyAccess = KeyAccess::all(Self::READ);
    /// Every key is written without being read (INSERT, DELETE or UPDATE without ACCESS:
    /// DEL, LPUSH, HSET, EXPIRE...).
    pub const WRITE_ONLY: KeyAccess = KeyAccess::all(Self::WRITE);
    /// Every key is read and written (RW ACCESS with INSERT, DELETE or UPDATE: INCR, LPOP,
    /// GETDEL, HINCRBY, EVAL's keys...).
    pub const READ_WRITE: KeyAccess = KeyAccess::all(Self::READ | Self::WRITE);
    /// A destination written, then sources read (SUNIONSTORE, ZUNIONSTORE, ZRANGESTORE,
    /// BITOP: destination OW UPDATE, sources RO ACCESS).
    pub const STORE: KeyAccess = KeyAccess::first_then(Self::WRITE, Self::READ);
    /// A source read and emptied, then a destination written (LMOVE, RPOPLPUSH, SMOVE,
    /// RENAME: source RW ACCESS DELETE, destination INSERT or UPDATE).
    pub const SOURCE_TO_DEST: KeyAccess =
        KeyAccess::first_then(Self::READ | Self::WRITE, Self::WRITE);
    /// A source read, then a destination written (COPY: source RO ACCESS, destination OW
    /// UPDATE).
    pub const COPY: KeyAccess = KeyAccess::first_then(Self::READ, Self::WRITE);

    /// Every key needs `need`.
    pub const fn all(need: u8) -> KeyAccess {
        KeyAccess::first_then(need, need)
    }

    /// The first key needs `first`, every later one `rest`.
    pub const fn first_then(first: u8, rest: u8) -> KeyAccess {
        KeyAccess {
            first,
            rest,
            refine: Refine::Fixed,
        }
    }

    /// The same, refined by the command's arguments as `refine` says.
    pub const fn refined(self, refine: Refine) -> KeyAccess {
        KeyAccess { refine, ..self }
    }

    /// What the first key and every later key of the command called with `args` need.
    #[inline]
    pub fn needs<A: AsRef<[u8]>>(&self, args: &[A]) -> (u8, u8) {
        const BOTH: u8 = KeyAccess::READ | KeyAccess::WRITE;
        match self.refine {
            Refine::Fixed => (self.first, self.rest),
            Refine::SetGet if args.iter().skip(3).any(|a| is(a.as_ref(), "get")) => (BOTH, BOTH),
            Refine::SetGet => (self.first, self.rest),
            Refine::BitfieldWrites if bitfield_only_reads(args) => (Self::READ, Self::READ),
            Refine::BitfieldWrites => (BOTH, BOTH),
        }
    }
}

/// Whether BITFIELD's operations (`args[2..]`) are all GETs, OVERFLOW aside, as Valkey's
/// `bitfieldGetKeys` decides it: an operation it does not understand, or one missing its
/// arguments, counts as a write.
fn bitfield_only_reads<A: AsRef<[u8]>>(args: &[A]) -> bool {
    let mut i = 2;
    while i < args.len() {
        let left = args.len() - i - 1;
        let arg = args[i].as_ref();
        if is(arg, "get") && left >= 2 {
            i += 3;
        } else if is(arg, "overflow") && left >= 1 {
            i += 2;
        } else {
            return false;
        }
    }
    true
}

/// A command that runs on the core owning its keys, against that core's shard.
pub type ShardFn = fn(&mut Ctx<'_>, &[Bytes]);

/// How the dispatcher runs a command.
#[derive(Clone, Copy)]
pub enum Exec {
    /// On the core that owns all its keys (or the connection's core when it has none).
    Shard(ShardFn),
    /// On the connection's core, with the connection's state.
    Conn(connection::ConnFn),
    /// A multi-key command that may span cores: the function runs it when all its keys are on
    /// one core; otherwise the dispatcher splits and gathers as `Multi` says.
    Multi(ShardFn, Multi),
    /// A command that needs every core (KEYS, DBSIZE, FLUSHALL, ...).
    Fanout(Fanout),
    /// A container whose subcommands carry the real definitions (CLIENT, CONFIG, ...).
    Container,
    /// SAVE (false) / BGSAVE (true): every core hands its changes to storage, then storage
    /// takes a snapshot; run by the dispatcher because it waits on other cores and on disk.
    Snapshot(bool),
    /// CLUSTER MEET / FORGET: a change of the cluster map, which waits on other nodes.
    ClusterAdmin,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: the dispatcher runs them (`engine::tx`).
    Tx(TxCmd),
    /// FUNCTION LOAD / DELETE / FLUSH / RESTORE: a change of the node's function libraries,
    /// prepared by `function::prepare_change` and applied by the engine (`engine::libraries`:
    /// to storage, or through the cluster's meta group), which waits on disk or other nodes.
    Libraries,
    /// ACL SETUSER / DELUSER / LOAD: a change of the node's users. Standalone it runs as a
    /// `Conn` command; in a cluster `acl::prepare_change` checks it and the engine commits it
    /// through the meta group (`engine::users`), which waits on other nodes.
    Users(connection::ConnFn),
}

/// The transaction commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxCmd {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// Multi-key commands the dispatcher splits by core when their keys span cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multi {
    /// Reply: the sum of the per-core integer replies (DEL, UNLINK, EXISTS, TOUCH).
    SumInts,
    /// MGET: one bulk-or-nil element per key, in argument order.
    MGet,
    /// MSET: +OK once every core has applied its part.
    MSet,
    /// MSETNX: check on every core, then set on every core.
    MSetNx,
    /// RENAME / RENAMENX / COPY: read on the source core, write on the destination core.
    Move,
}

/// Commands that run on every core and combine the results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    Keys,
    DbSize,
    FlushAll,
    RandomKey,
    Scan,
    /// CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT: only the core owning the slot has keys.
    CountKeysInSlot,
    GetKeysInSlot,
    /// SWAPDB: every core swaps its part of two databases, all at once (under every gate).
    SwapDb,
}

/// What a data command may know of the node beyond its shard: a handler gets this narrow
/// view, never the node's shared state (DESIGN.md).
pub trait NodeView {
    /// `proto-max-bulk-len`: the longest string a command may build.
    fn proto_max_bulk_len(&self) -> usize;
    /// Whether this node runs in cluster mode.
    fn clustered(&self) -> bool;
    /// `databases`: how many numbered databases there are (Valkey's default 16).
    fn databases(&self) -> u32 {
        16
    }
    /// Whether this node serves `slot` as its primary (always, standalone): KEYS, SCAN,
    /// DBSIZE and RANDOMKEY cover those slots only, as on a Valkey cluster primary.
    fn serves(&self, slot: usize) -> bool;
    /// Whether two slots belong to the same slot group (always, standalone): a script's
    /// records are one entry of one group's log, so it writes that group's keys only.
    fn same_group(&self, _a: usize, _b: usize) -> bool {
        true
    }
    /// The node's Lua scripts (the cache and what runs where).
    fn scripts(&self) -> &script::Scripts;
    /// `card-pan-guard`, for what a command stores that its arguments alone do not show
    /// (APPEND's and SETRANGE's result, a script's writes); None: not guarded.
    fn pan_guard(&self) -> Option<&crate::security::pan_guard::PanGuard> {
        None
    }
}

/// What a shard command sees: its core's shard, the time, the reply buffer, the node view.
pub struct Ctx<'a> {
    pub shard: &'a mut Shard,
    /// Unix milliseconds, fixed for the batch being executed (Valkey caches time per command).
    pub now: u64,
    pub out: &'a mut Out,
    pub node: &'a dyn NodeView,
}

impl Ctx<'_> {
    /// Applies a mutation record to the shard. The single write path (DESIGN.md's seam).
    #[inline]
    pub fn apply(&mut self, m: Mutation<'_>) -> bool {
        self.shard.apply(m)
    }

    /// The live entry for `key`, counting a keyspace hit or miss (Valkey's lookupKeyRead).
    #[inline]
    pub fn read(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.shard.get_read(key, self.now)
    }

    /// The live entry for `key` for a write (no hit/miss accounting).
    #[inline]
    pub fn write(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.shard.get(key, self.now)
    }

    pub fn wrong_type(&mut self) {
        self.out.error(WRONGTYPE);
    }

    pub fn syntax_error(&mut self) {
        self.out.error(SYNTAX_ERROR);
    }
}

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A looked-up value as the type a command works on (`pick`: `ValueRef::hash`, `::list`...):
/// Ok(None) when the key is missing, Err after replying WRONGTYPE when it holds another type.
pub(crate) fn typed<'s, T: ?Sized>(
    value: Option<crate::shard::ValueRef<'s>>,
    out: &mut Out,
    pick: impl FnOnce(crate::shard::ValueRef<'s>) -> Option<&'s T>,
) -> Result<Option<&'s T>, ()> {
    match value.map(pick) {
        None => Ok(None),
        Some(Some(v)) => Ok(Some(v)),
        Some(None) => {
            out.error(WRONGTYPE);
            Err(())
        }
    }
}
pub const SYNTAX_ERROR: &str = "ERR syntax error";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NO_SUCH_KEY: &str = "ERR no such key";

/// Whether `args` of a write command name a key longer than storage holds
/// ([`crate::storage::codec::MAX_KEY_LEN`]). Such a command is refused before it runs
/// ([`key_too_long_error`]), so no record ever carries that key to storage. Reads of such a
/// key need no check: it cannot exist.
pub fn key_too_long(def: &table::CommandDef, args: &[Bytes]) -> bool {
    def.flags & flags::WRITE != 0
        && def
            .keys
            .positions(args)
            .any(|p| args[p].len() > crate::storage::codec::MAX_KEY_LEN)
}

/// The reply to a write naming a key longer than storage holds (see [`key_too_long`]).
pub fn key_too_long_error() -> String {
    format!(
        "ERR key is too long: keys of a write command are at most {} bytes",
        crate::storage::codec::MAX_KEY_LEN
    )
}

/// `ERR wrong number of arguments for '<name>' command`.
pub fn arity_error(out: &mut Out, full_name: &str) {
    out.error(&format!(
        "ERR wrong number of arguments for '{full_name}' command"
    ));
}

/// Valkey's reply to an unknown command: the name cut at 128 bytes, then arguments quoted
/// one after another while the quoted text is shorter than 128 bytes, each cut to the room
/// left (C-string formatting: an argument ends at its first NUL byte).
pub fn unknown_command(out: &mut Out, args: &[Bytes]) {
    let c_str = |b: &[u8], max: usize| -> Vec<u8> {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(max);
        b[..end].to_vec()
    };
    let mut quoted: Vec<u8> = Vec::new();
    for a in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push(b'\'');
        quoted.extend(c_str(a, room));
        quoted.extend_from_slice(b"' ");
    }
    out.error(&format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&c_str(&args[0], 128)),
        String::from_utf8_lossy(&quoted)
    ));
}

/// Up to `max` bytes of `b` as text (invalid UTF-8 replaced), for error messages.
pub fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// Parses an integer argument strictly, as Valkey's getLongLongFromObject.
pub fn arg_i64(arg: &[u8]) -> Option<i64> {
    crate::util::parse_i64(arg)
}

/// A blocking command's timeout (Valkey's getTimeoutFromObjectOrReply): seconds as a float;
/// None for 0, which waits forever.
pub fn parse_timeout(arg: &[u8]) -> Result<Option<std::time::Duration>, &'static str> {
    const NOT_FLOAT: &str = "ERR timeout is not a float or out of range";
    let secs = crate::util::parse_f64(arg).ok_or(NOT_FLOAT)?;
    if !secs.is_finite() {
        return Err(NOT_FLOAT);
    }
    if secs < 0.0 {
        return Err("ERR timeout is negative");
    }
    if secs > (i64::MAX / 1000) as f64 {
        return Err("ERR timeout is out of range");
    }
    let ms = (secs * 1000.0) as u64;
    Ok((ms > 0).then(|| std::time::Duration::from_millis(ms)))
}

/// Case-insensitive comparison of an argument with an ASCII keyword.
#[inline]
pub fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}
