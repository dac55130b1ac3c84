//! The command table, as data. One row per command: name, arity (Valkey's convention:
//! positive = exact, negative = at least), flags, key positions, group, since, summary,
//! complexity, and how the dispatcher runs it.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::flags::*;
use super::{Exec, Fanout, KeyAccess, KeySpec, Multi, Refine, TxCmd};
use super::{cluster as cl, connection as c, counter, expire, keyspace, server, string};

pub struct CommandDef {
    /// Lowercase name; a subcommand's own name ("setname").
    pub name: &'static str,
    pub arity: i32,
    pub flags: u32,
    pub keys: KeySpec,
    /// What the command does to its keys, for ACL key permissions (`security::acl`): set
    /// with [`CommandDef::key_access`] on every row with keys, from Valkey's key specs.
    /// None for a command without keys.
    pub key_access: Option<KeyAccess>,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    pub exec: Exec,
    pub subcommands: &'static [CommandDef],
}

pub(crate) const fn k(first: i32, last: i32, step: i32) -> KeySpec {
    KeySpec {
        first,
        last,
        step,
        numkeys_at: 0,
    }
}
/// Keys counted by the argument at `at` and following it (Valkey's keynum key spec); the
/// legacy triple stays (0, 0, 0), as Valkey reports for SINTERCARD.
pub(crate) const fn numkeys(at: i32) -> KeySpec {
    KeySpec {
        numkeys_at: at,
        ..KeySpec::NONE
    }
}
/// Legacy (first, last, step) keys plus keys counted by the argument at `numkeys_at`
/// (ZUNIONSTORE's destination and sources).
pub(crate) const fn kn(first: i32, last: i32, step: i32, numkeys_at: i32) -> KeySpec {
    KeySpec {
        first,
        last,
        step,
        numkeys_at,
    }
}
pub(crate) const NOKEY: KeySpec = KeySpec::NONE;
pub(crate) const K1: KeySpec = k(1, 1, 1);

#[allow(clippy::too_many_arguments)]
pub(crate) const fn def(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeySpec,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    complexity: &'static str,
    exec: Exec,
) -> CommandDef {
    CommandDef {
        name,
        arity,
        flags,
        keys,
        key_access: None,
        group,
        since,
        summary,
        complexity,
        exec,
        subcommands: &[],
    }
}

impl CommandDef {
    /// The row with what the command does to its keys (see [`KeyAccess`]).
    pub(crate) const fn key_access(self, access: KeyAccess) -> CommandDef {
        CommandDef {
            key_access: Some(access),
            ..self
        }
    }
}

pub(crate) const fn container(
    name: &'static str,
    group: &'static str,
    since: &'static str,
    summary: &'static str,
    subs: &'static [CommandDef],
) -> CommandDef {
    CommandDef {
        name,
        arity: -2,
        flags: 0,
        keys: NOKEY,
        key_access: None,
        group,
        since,
        summary,
        complexity: "Depends on subcommand.",
        exec: Exec::Container,
        subcommands: subs,
    }
}

use Exec::{Conn as C, Fanout as F, Multi as M, Shard as S};

pub(crate) const W: u32 = WRITE | DENYOOM;
pub(crate) const WF: u32 = WRITE | DENYOOM | FAST;
pub(crate) const RF: u32 = READONLY | FAST;
const CONN: u32 = NOSCRIPT | LOADING | STALE | FAST;

pub static COMMANDS: &[CommandDef] = &[
    // connection
    def(
        "ping",
        -1,
        FAST | SENTINEL,
        NOKEY,
        "connection",
        "1.0.0",
        "Returns the server's liveliness response.",
        "O(1)",
        C(c::ping),
    ),
    def(
        "echo",
        2,
        FAST,
        NOKEY,
        "connection",
        "1.0.0",
        "Returns the given string.",
        "O(1)",
        C(c::echo),
    ),
    def(
        "select",
        2,
        CONN,
        NOKEY,
        "connection",
        "1.0.0",
        "Changes the selected database.",
        "O(1)",
        C(c::select),
    ),
    def(
        "readonly",
        1,
        FAST | LOADING | STALE,
        NOKEY,
        "cluster",
        "3.0.0",
        "Enables read-only queries for a connection to a Redis Cluster replica node.",
        "O(1)",
        C(cl::readonly),
    ),
    def(
        "readwrite",
        1,
        FAST | LOADING | STALE,
        NOKEY,
        "cluster",
        "3.0.0",
        "Enables read-write queries for a connection to a Redis Cluster replica node.",
        "O(1)",
        C(cl::readwrite),
    ),
    container(
        "cluster",
        "cluster",
        "3.0.0",
        "A container for Redis Cluster commands.",
        &[
            def(
                "info",
                2,
                LOADING | STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns information about the state of a node.",
                "O(1)",
                C(cl::info),
            ),
            def(
                "myid",
                2,
                LOADING | STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the ID of a node.",
                "O(1)",
                C(cl::myid),
            ),
            def(
                "slots",
                2,
                LOADING | STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the mapping of cluster slots to nodes.",
                "O(N) where N is the total number of Cluster nodes",
                C(cl::slots),
            ),
            def(
                "shards",
                2,
                LOADING | STALE,
                NOKEY,
                "cluster",
                "7.0.0",
                "Returns the mapping of cluster slots to shards.",
                "O(N) where N is the total number of cluster nodes",
                C(cl::shards),
            ),
            def(
                "nodes",
                2,
                LOADING | STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the cluster configuration for a node.",
                "O(N) where N is the total number of Cluster nodes",
                C(cl::nodes),
            ),
            def(
                "keyslot",
                3,
                STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the hash slot for a key.",
                "O(N) where N is the number of bytes in the key",
                C(cl::keyslot),
            ),
            def(
                "countkeysinslot",
                3,
                STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the number of keys in a hash slot.",
                "O(1)",
                F(Fanout::CountKeysInSlot),
            ),
            def(
                "getkeysinslot",
                4,
                STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Returns the key names in a hash slot.",
                "O(N) where N is the number of requested keys",
                F(Fanout::GetKeysInSlot),
            ),
            def(
                "meet",
                -4,
                ADMIN | STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Forces a node to handshake with another node.",
                "O(1)",
                Exec::ClusterAdmin,
            ),
            def(
                "forget",
                3,
                ADMIN | STALE,
                NOKEY,
                "cluster",
                "3.0.0",
                "Removes a node from the nodes table.",
                "O(1)",
                Exec::ClusterAdmin,
            ),
        ],
    ),
    def(
        "quit",
        -1,
        ALLOW_BUSY | NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | BARRIER,
        NOKEY,
        "connection",
        "1.0.0",
        "Closes the connection.",
        "O(1)",
        C(c::quit),
    ),
    def(
        "multi",
        1,
        NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY,
        NOKEY,
        "transactions",
        "1.2.0",
        "Starts a transaction.",
        "O(1)",
        Exec::Tx(TxCmd::Multi),
    ),
    def(
        "exec",
        1,
        NOSCRIPT | LOADING | STALE,
        NOKEY,
        "transactions",
        "1.2.0",
        "Executes all commands in a transaction.",
        "Depends on commands in the transaction",
        Exec::Tx(TxCmd::Exec),
    ),
    def(
        "discard",
        1,
        NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY,
        NOKEY,
        "transactions",
        "2.0.0",
        "Discards a transaction.",
        "O(N) when N is the number of queued commands",
        Exec::Tx(TxCmd::Discard),
    ),
    def(
        "watch",
        -2,
        NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY,
        k(1, -1, 1),
        "transactions",
        "2.2.0",
        "Monitors changes to keys to determine the execution of a transaction.",
        "O(1) for every key.",
        Exec::Tx(TxCmd::Watch),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "unwatch",
        1,
        NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY,
        NOKEY,
        "transactions",
        "2.2.0",
        "Forgets about watched keys of a transaction.",
        "O(1)",
        Exec::Tx(TxCmd::Unwatch),
    ),
    def(
        "reset",
        1,
        NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | BARRIER,
        NOKEY,
        "connection",
        "6.2.0",
        "Resets the connection.",
        "O(1)",
        C(c::reset),
    ),
    def(
        "auth",
        -2,
        NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | ALLOW_BUSY,
        NOKEY,
        "connection",
        "1.0.0",
        "Authenticates the connection.",
        "O(N) where N is the number of passwords defined for the user",
        C(c::auth),
    ),
    def(
        "hello",
        -1,
        NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | ALLOW_BUSY | BARRIER,
        NOKEY,
        "connection",
        "6.0.0",
        "Handshakes with the server.",
        "O(1)",
        C(c::hello),
    ),
    container(
        "client",
        "connection",
        "2.4.0",
        "A container for client connection commands.",
        &[
            def(
                "setname",
                3,
                CONN | BARRIER,
                NOKEY,
                "connection",
                "2.6.9",
                "Sets the connection name.",
                "O(1)",
                C(c::client_setname),
            ),
            def(
                "getname",
                2,
                CONN,
                NOKEY,
                "connection",
                "2.6.9",
                "Returns the name of the connection.",
                "O(1)",
                C(c::client_getname),
            ),
            def(
                "id",
                2,
                CONN,
                NOKEY,
                "connection",
                "5.0.0",
                "Returns the unique client ID of the connection.",
                "O(1)",
                C(c::client_id),
            ),
            def(
                "setinfo",
                4,
                CONN | BARRIER,
                NOKEY,
                "connection",
                "7.2.0",
                "Sets information specific to the client or connection.",
                "O(1)",
                C(c::client_setinfo),
            ),
            def(
                "list",
                -2,
                ADMIN | NOSCRIPT | LOADING | STALE | BARRIER,
                NOKEY,
                "connection",
                "2.4.0",
                "Lists open connections.",
                "O(N) where N is the number of client connections",
                C(c::client_list),
            ),
            def(
                "info",
                2,
                CONN | BARRIER,
                NOKEY,
                "connection",
                "6.2.0",
                "Returns information about the connection.",
                "O(1)",
                C(c::client_info),
            ),
            def(
                "help",
                2,
                LOADING | STALE,
                NOKEY,
                "connection",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                "O(1)",
                C(c::client_help),
            ),
        ],
    ),
    // server
    def(
        "info",
        -1,
        LOADING | STALE | BARRIER,
        NOKEY,
        "server",
        "1.0.0",
        "Returns information and statistics about the server.",
        "O(1)",
        C(server::info),
    ),
    def(
        "time",
        1,
        LOADING | STALE | FAST,
        NOKEY,
        "server",
        "2.6.0",
        "Returns the server time.",
        "O(1)",
        C(c::time),
    ),
    def(
        "lastsave",
        1,
        LOADING | STALE | FAST,
        NOKEY,
        "server",
        "1.0.0",
        "Returns the Unix timestamp of the last successful save to disk.",
        "O(1)",
        C(c::lastsave),
    ),
    def(
        "save",
        1,
        ADMIN | NOSCRIPT,
        NOKEY,
        "server",
        "1.0.0",
        "Synchronously saves the database(s) to disk.",
        "O(N) where N is the total number of keys in all databases",
        Exec::Snapshot(false),
    ),
    def(
        "bgsave",
        -1,
        ADMIN | NOSCRIPT,
        NOKEY,
        "server",
        "1.0.0",
        "Asynchronously saves the database(s) to disk.",
        "O(1)",
        Exec::Snapshot(true),
    ),
    def(
        "bgrewriteaof",
        1,
        ADMIN | NOSCRIPT,
        NOKEY,
        "server",
        "1.0.0",
        "Asynchronously rewrites the append-only file to disk.",
        "O(1)",
        C(c::bgrewriteaof),
    ),
    def(
        "shutdown",
        -1,
        ADMIN | NOSCRIPT | LOADING | STALE | SENTINEL | ALLOW_BUSY,
        NOKEY,
        "server",
        "1.0.0",
        "Synchronously saves the database(s) to disk and shuts down the server.",
        "O(N) when saving, where N is the total number of keys in all databases when saving data, otherwise O(1)",
        C(c::shutdown),
    ),
    def(
        "dbsize",
        1,
        READONLY | FAST,
        NOKEY,
        "server",
        "1.0.0",
        "Returns the number of keys in the database.",
        "O(1)",
        F(Fanout::DbSize),
    ),
    def(
        "flushall",
        -1,
        WRITE,
        NOKEY,
        "server",
        "1.0.0",
        "Removes all keys from all databases.",
        "O(N) where N is the total number of keys in all databases",
        F(Fanout::FlushAll),
    ),
    def(
        "flushdb",
        -1,
        WRITE,
        NOKEY,
        "server",
        "1.0.0",
        "Remove all keys from the current database.",
        "O(N) where N is the number of keys in the selected database",
        F(Fanout::FlushAll),
    ),
    def(
        "swapdb",
        3,
        WRITE | FAST | NOSCRIPT,
        NOKEY,
        "server",
        "4.0.0",
        "Swaps two databases.",
        "O(N) where N is the count of clients watching or blocking on keys from both databases.",
        F(Fanout::SwapDb),
    ),
    container(
        "config",
        "server",
        "2.0.0",
        "A container for server configuration commands.",
        &[
            def(
                "get",
                -3,
                ADMIN | NOSCRIPT | LOADING | STALE,
                NOKEY,
                "server",
                "2.0.0",
                "Returns the effective values of configuration parameters.",
                "O(N) when N is the number of configuration parameters provided",
                C(server::config_get),
            ),
            def(
                "set",
                -4,
                ADMIN | NOSCRIPT | LOADING | STALE | BARRIER,
                NOKEY,
                "server",
                "2.0.0",
                "Sets configuration parameters in-flight.",
                "O(N) when N is the number of configuration parameters provided",
                C(server::config_set),
            ),
            def(
                "resetstat",
                2,
                ADMIN | NOSCRIPT | LOADING | STALE | BARRIER,
                NOKEY,
                "server",
                "2.0.0",
                "Resets the server's statistics.",
                "O(1)",
                C(server::config_resetstat),
            ),
            def(
                "help",
                2,
                LOADING | STALE,
                NOKEY,
                "server",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                "O(1)",
                C(server::config_help),
            ),
        ],
    ),
    container(
        "command",
        "server",
        "2.8.13",
        "Returns detailed information about all commands.",
        &[
            def(
                "count",
                2,
                LOADING | STALE,
                NOKEY,
                "server",
                "2.8.13",
                "Returns a count of commands.",
                "O(1)",
                C(super::meta::command_count),
            ),
            def(
                "info",
                -2,
                LOADING | STALE,
                NOKEY,
                "server",
                "2.8.13",
                "Returns information about one, multiple or all commands.",
                "O(N) where N is the number of commands to look up",
                C(super::meta::command_info),
            ),
            def(
                "docs",
                -2,
                LOADING | STALE,
                NOKEY,
                "server",
                "7.0.0",
                "Returns documentary information about one, multiple or all commands.",
                "O(N) where N is the number of commands to look up",
                C(super::meta::command_docs),
            ),
            def(
                "getkeys",
                -3,
                LOADING | STALE,
                NOKEY,
                "server",
                "2.8.13",
                "Extracts the key names from an arbitrary command.",
                "O(N) where N is the number of arguments to the command",
                C(super::meta::command_getkeys),
            ),
            def(
                "list",
                -2,
                LOADING | STALE,
                NOKEY,
                "server",
                "7.0.0",
                "Returns a list of command names.",
                "O(N) where N is the total number of commands",
                C(super::meta::command_list),
            ),
            def(
                "help",
                2,
                LOADING | STALE,
                NOKEY,
                "server",
                "5.0.0",
                "Returns helpful text about the different subcommands.",
                "O(1)",
                C(super::meta::command_help),
            ),
        ],
    ),
    // strings
    def(
        "get",
        2,
        RF,
        K1,
        "string",
        "1.0.0",
        "Returns the string value of a key.",
        "O(1)",
        S(string::get),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "set",
        -3,
        W,
        K1,
        "string",
        "1.0.0",
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
        "O(1)",
        S(string::set),
    )
    .key_access(KeyAccess::WRITE_ONLY.refined(Refine::SetGet)),
    def(
        "setnx",
        3,
        WF,
        K1,
        "string",
        "1.0.0",
        "Set the string value of a key only when the key doesn't exist.",
        "O(1)",
        S(string::setnx),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "setex",
        4,
        W,
        K1,
        "string",
        "2.0.0",
        "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
        "O(1)",
        S(string::setex),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "psetex",
        4,
        W,
        K1,
        "string",
        "2.6.0",
        "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.",
        "O(1)",
        S(string::psetex),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "getex",
        -2,
        WRITE | FAST,
        K1,
        "string",
        "6.2.0",
        "Returns the string value of a key after setting its expiration time.",
        "O(1)",
        S(string::getex),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "getdel",
        2,
        WRITE | FAST,
        K1,
        "string",
        "6.2.0",
        "Returns the string value of a key after deleting the key.",
        "O(1)",
        S(string::getdel),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "getset",
        3,
        WF,
        K1,
        "string",
        "1.0.0",
        "Returns the previous string value of a key after setting it to a new value.",
        "O(1)",
        S(string::getset),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "mget",
        -2,
        RF,
        k(1, -1, 1),
        "string",
        "1.0.0",
        "Atomically returns the string values of one or more keys.",
        "O(N) where N is the number of keys to retrieve.",
        M(string::mget, Multi::MGet),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "mset",
        -3,
        W,
        k(1, -1, 2),
        "string",
        "1.0.1",
        "Atomically creates or modifies the string values of one or more keys.",
        "O(N) where N is the number of keys to set.",
        M(string::mset, Multi::MSet),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "msetnx",
        -3,
        W,
        k(1, -1, 2),
        "string",
        "1.0.1",
        "Atomically modifies the string values of one or more keys only when all keys don't exist.",
        "O(N) where N is the number of keys to set.",
        M(string::msetnx, Multi::MSetNx),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "append",
        3,
        WF,
        K1,
        "string",
        "2.0.0",
        "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        "O(1)",
        S(string::append),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "strlen",
        2,
        RF,
        K1,
        "string",
        "2.2.0",
        "Returns the length of a string value.",
        "O(1)",
        S(string::strlen),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "getrange",
        4,
        READONLY,
        K1,
        "string",
        "2.4.0",
        "Returns a substring of the string stored at a key.",
        "O(N) where N is the length of the returned string.",
        S(string::getrange),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "substr",
        4,
        READONLY,
        K1,
        "string",
        "1.0.0",
        "Returns a substring from a string value.",
        "O(N) where N is the length of the returned string.",
        S(string::getrange),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "setrange",
        4,
        W,
        K1,
        "string",
        "2.2.0",
        "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
        "O(1), not counting the time taken to copy the new string in place.",
        S(string::setrange),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    // counters
    def(
        "incr",
        2,
        WF,
        K1,
        "string",
        "1.0.0",
        "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
        "O(1)",
        S(counter::incr),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "decr",
        2,
        WF,
        K1,
        "string",
        "1.0.0",
        "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
        "O(1)",
        S(counter::decr),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "incrby",
        3,
        WF,
        K1,
        "string",
        "1.0.0",
        "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
        "O(1)",
        S(counter::incrby),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "decrby",
        3,
        WF,
        K1,
        "string",
        "1.0.0",
        "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.",
        "O(1)",
        S(counter::decrby),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "incrbyfloat",
        3,
        WF,
        K1,
        "string",
        "2.6.0",
        "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
        "O(1)",
        S(counter::incrbyfloat),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "increx",
        -2,
        WF,
        K1,
        "string",
        "9.2.0",
        "Increments the numeric value of a key, optionally setting its expiration and bounding the result. Uses 0 as initial value if the key doesn't exist.",
        "O(1)",
        S(counter::increx),
    )
    .key_access(KeyAccess::READ_WRITE),
    // keyspace
    def(
        "del",
        -2,
        WRITE,
        k(1, -1, 1),
        "generic",
        "1.0.0",
        "Deletes one or more keys.",
        "O(N) where N is the number of keys that will be removed.",
        M(keyspace::del, Multi::SumInts),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "unlink",
        -2,
        WRITE | FAST,
        k(1, -1, 1),
        "generic",
        "4.0.0",
        "Asynchronously deletes one or more keys.",
        "O(1) for each key removed regardless of its size.",
        M(keyspace::unlink, Multi::SumInts),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "exists",
        -2,
        RF,
        k(1, -1, 1),
        "generic",
        "1.0.0",
        "Determines whether one or more keys exist.",
        "O(N) where N is the number of keys to check.",
        M(keyspace::exists, Multi::SumInts),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "touch",
        -2,
        RF,
        k(1, -1, 1),
        "generic",
        "3.2.1",
        "Returns the number of existing keys out of those specified after updating the time they were last accessed.",
        "O(N) where N is the number of keys that will be touched.",
        M(keyspace::touch, Multi::SumInts),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "type",
        2,
        RF,
        K1,
        "generic",
        "1.0.0",
        "Determines the type of value stored at a key.",
        "O(1)",
        S(keyspace::type_),
    )
    .key_access(KeyAccess::METADATA),
    def(
        "rename",
        3,
        WRITE,
        k(1, 2, 1),
        "generic",
        "1.0.0",
        "Renames a key and overwrites the destination.",
        "O(1)",
        M(keyspace::rename, Multi::Move),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "renamenx",
        3,
        WF,
        k(1, 2, 1),
        "generic",
        "1.0.0",
        "Renames a key only when the target key name doesn't exist.",
        "O(1)",
        M(keyspace::renamenx, Multi::Move),
    )
    .key_access(KeyAccess::SOURCE_TO_DEST),
    def(
        "copy",
        -3,
        W,
        k(1, 2, 1),
        "generic",
        "6.2.0",
        "Copies the value of a key to a new key.",
        "O(N) worst case for collections, where N is the number of nested items. O(1) for string values.",
        M(keyspace::copy, Multi::Move),
    )
    .key_access(KeyAccess::COPY),
    def(
        "move",
        3,
        WRITE | FAST,
        K1,
        "generic",
        "1.0.0",
        "Moves a key to another database.",
        "O(1)",
        S(keyspace::move_),
    )
    .key_access(KeyAccess::READ_WRITE),
    def(
        "keys",
        2,
        READONLY,
        NOKEY,
        "generic",
        "1.0.0",
        "Returns all key names that match a pattern.",
        "O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length.",
        F(Fanout::Keys),
    ),
    def(
        "scan",
        -2,
        READONLY,
        NOKEY,
        "generic",
        "2.8.0",
        "Iterates over the key names in the database.",
        "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
        F(Fanout::Scan),
    ),
    def(
        "randomkey",
        1,
        READONLY,
        NOKEY,
        "generic",
        "1.0.0",
        "Returns a random key name from the database.",
        "O(1)",
        F(Fanout::RandomKey),
    ),
    def(
        "expire",
        -3,
        WRITE | FAST,
        K1,
        "generic",
        "1.0.0",
        "Sets the expiration time of a key in seconds.",
        "O(1)",
        S(expire::expire),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "pexpire",
        -3,
        WRITE | FAST,
        K1,
        "generic",
        "2.6.0",
        "Sets the expiration time of a key in milliseconds.",
        "O(1)",
        S(expire::pexpire),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "expireat",
        -3,
        WRITE | FAST,
        K1,
        "generic",
        "1.2.0",
        "Sets the expiration time of a key to a Unix timestamp.",
        "O(1)",
        S(expire::expireat),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "pexpireat",
        -3,
        WRITE | FAST,
        K1,
        "generic",
        "2.6.0",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        "O(1)",
        S(expire::pexpireat),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    def(
        "ttl",
        2,
        RF,
        K1,
        "generic",
        "1.0.0",
        "Returns the expiration time in seconds of a key.",
        "O(1)",
        S(expire::ttl),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "pttl",
        2,
        RF,
        K1,
        "generic",
        "2.6.0",
        "Returns the expiration time in milliseconds of a key.",
        "O(1)",
        S(expire::pttl),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "expiretime",
        2,
        RF,
        K1,
        "generic",
        "7.0.0",
        "Returns the expiration time of a key as a Unix timestamp.",
        "O(1)",
        S(expire::expiretime),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "pexpiretime",
        2,
        RF,
        K1,
        "generic",
        "7.0.0",
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        "O(1)",
        S(expire::pexpiretime),
    )
    .key_access(KeyAccess::READ_ONLY),
    def(
        "persist",
        2,
        WRITE | FAST,
        K1,
        "generic",
        "2.2.0",
        "Removes the expiration time of a key.",
        "O(1)",
        S(expire::persist),
    )
    .key_access(KeyAccess::WRITE_ONLY),
    container(
        "object",
        "generic",
        "2.2.3",
        "A container for object introspection commands.",
        &[
            def(
                "encoding",
                3,
                READONLY,
                k(2, 2, 1),
                "generic",
                "2.2.3",
                "Returns the internal encoding of an object.",
                "O(1)",
                S(keyspace::object_encoding),
            )
            .key_access(KeyAccess::METADATA),
            def(
                "freq",
                3,
                READONLY,
                k(2, 2, 1),
                "generic",
                "4.0.0",
                "Returns the logarithmic access frequency counter of an object.",
                "O(1)",
                S(keyspace::object_freq),
            )
            .key_access(KeyAccess::METADATA),
            def(
                "idletime",
                3,
                READONLY,
                k(2, 2, 1),
                "generic",
                "2.2.3",
                "Returns the time since the last access to an object.",
                "O(1)",
                S(keyspace::object_idletime),
            )
            .key_access(KeyAccess::METADATA),
            def(
                "refcount",
                3,
                READONLY,
                k(2, 2, 1),
                "generic",
                "2.2.3",
                "Returns the reference count of a value of a key.",
                "O(1)",
                S(keyspace::object_refcount),
            )
            .key_access(KeyAccess::METADATA),
            def(
                "help",
                2,
                LOADING | STALE,
                NOKEY,
                "generic",
                "6.2.0",
                "Returns helpful text about the different subcommands.",
                "O(1)",
                C(super::meta::object_help),
            ),
        ],
    ),
];

/// The flattened table: every command and subcommand with a dense id (for statistics and
/// CLIENT LIST), and the name index the dispatcher looks commands up in.
pub struct Registry {
    defs: Vec<&'static CommandDef>,
    full_names: Vec<String>,
    /// Each command's ACL categories (`category::of`), by id.
    categories: Vec<u32>,
    by_name: HashMap<&'static str, usize, ahash::RandomState>,
    sub_by_name: HashMap<usize, HashMap<&'static str, usize, ahash::RandomState>>,
}

impl Registry {
    fn build() -> Registry {
        let mut r = Registry {
            defs: Vec::new(),
            full_names: Vec::new(),
            categories: Vec::new(),
            by_name: HashMap::default(),
            sub_by_name: HashMap::new(),
        };
        for d in families() {
            let id = r.defs.len();
            r.defs.push(d);
            r.full_names.push(d.name.to_string());
            let container = matches!(d.exec, Exec::Container);
            r.categories.push(super::category::of(d, d.name, container));
            r.by_name.insert(d.name, id);
            for s in d.subcommands {
                let sid = r.defs.len();
                r.defs.push(s);
                let full = format!("{}|{}", d.name, s.name);
                r.categories.push(super::category::of(s, &full, false));
                r.full_names.push(full);
                r.sub_by_name.entry(id).or_default().insert(s.name, sid);
            }
        }
        r
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The definition with registry id `id`, if there is one (ids of split command parts
    /// are not).
    pub fn get(&self, id: usize) -> Option<&'static CommandDef> {
        (id < self.len()).then(|| self.def(id))
    }

    pub fn def(&self, id: usize) -> &'static CommandDef {
        self.defs[id]
    }

    /// "get", or "client|list" for a subcommand.
    pub fn full_name(&self, id: usize) -> &str {
        &self.full_names[id]
    }

    /// The ACL categories of command `id` (`category::KEYSPACE | category::READ ...`).
    #[inline]
    pub fn categories(&self, id: usize) -> u32 {
        self.categories[id]
    }

    /// Whether `id` is a subcommand (its full name has a `|`).
    pub fn is_sub(&self, id: usize) -> bool {
        self.full_names[id].contains('|')
    }

    /// Ids of the top-level commands, in table order.
    pub fn top_level(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.defs.len()).filter(|&id| !self.is_sub(id))
    }

    /// Ids of a container's subcommands.
    pub fn subs_of(&self, id: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .sub_by_name
            .get(&id)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}

/// Every command, the core table's first, then each family's own (a family registers its
/// commands beside its code, as Dragonfly's families do).
fn families() -> impl Iterator<Item = &'static CommandDef> {
    COMMANDS
        .iter()
        .chain(super::hash::COMMANDS)
        .chain(super::list::COMMANDS)
        .chain(super::set::COMMANDS)
        .chain(super::zset::COMMANDS)
        .chain(super::script::COMMANDS)
        .chain(super::function::COMMANDS)
        .chain(super::bitmap::COMMANDS)
        .chain(super::memory::COMMANDS)
        .chain(super::acl::COMMANDS)
}

pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::build)
}

/// The names clients call commands by once `rename-command` renamed or hid some; unset when
/// nothing is renamed, and clients use the table's names.
static CLIENT_NAMES: OnceLock<HashMap<Box<str>, usize, ahash::RandomState>> = OnceLock::new();

/// Applies `rename-command` lines, in order, to the names clients (and scripts) call commands
/// by: `(from, to)` renames `from` to `to`, or hides it when `to` is empty. Errors are
/// Valkey's. Called once at startup, before any client is served.
///
/// Only the client-facing name changes: the server keeps calling the command by its own
/// name internally, ACL rules and INFO commandstats name it by that, and a renamed command's
/// arguments are rewritten to that name when it is dispatched ([`lookup_client`]).
pub fn rename_commands(pairs: &[(String, String)]) -> Result<(), String> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut names: HashMap<Box<str>, usize, ahash::RandomState> = registry()
        .by_name
        .iter()
        .map(|(&name, &id)| (Box::from(name), id))
        .collect();
    for (from, to) in pairs {
        let Some(id) = names.remove(from.to_ascii_lowercase().as_str()) else {
            return Err("No such command in rename-command".to_string());
        };
        if !to.is_empty() {
            let to = to.to_ascii_lowercase();
            if names.contains_key(to.as_str()) {
                return Err("Target command name already exists".to_string());
            }
            names.insert(to.into_boxed_str(), id);
        }
    }
    CLIENT_NAMES
        .set(names)
        .map_err(|_| "rename-command was already applied".to_string())
}

/// Whether `rename-command` changed any name clients use.
#[inline]
pub fn renamed() -> bool {
    CLIENT_NAMES.get().is_some()
}

/// Looks up a command name as a client (or a script) calls it, after `rename-command`; see
/// [`lookup`] for the table's own names.
#[inline]
pub fn lookup_client(name: &[u8]) -> Option<usize> {
    let Some(names) = CLIENT_NAMES.get() else {
        return lookup(name);
    };
    let mut buf = [0u8; 32];
    match lowercase(name, &mut buf) {
        Some(lower) => names.get(lower).copied(),
        // A renamed command's name may be longer than any of the table's.
        None => names
            .get(std::str::from_utf8(&name.to_ascii_lowercase()).ok()?)
            .copied(),
    }
}

/// [`resolve`] for the name a client calls a command by (see [`lookup_client`]).
pub fn resolve_client<A: AsRef<[u8]>>(args: &[A]) -> Option<usize> {
    let id = lookup_client(args.first()?.as_ref())?;
    match args.get(1) {
        Some(sub) if matches!(registry().def(id).exec, Exec::Container) => {
            lookup_sub(id, sub.as_ref())
        }
        _ => Some(id),
    }
}

/// Looks a command name up case-insensitively by the table's own name (whatever
/// `rename-command` did to clients' names); returns its registry id.
#[inline]
pub fn lookup(name: &[u8]) -> Option<usize> {
    let mut buf = [0u8; 32];
    let lower = lowercase(name, &mut buf)?;
    registry().by_name.get(lower).copied()
}

/// The command `args` names: its registry id, or its subcommand's when it is a container
/// followed by a subcommand name (None: an unknown command or subcommand). A container
/// named alone is itself.
pub fn resolve<A: AsRef<[u8]>>(args: &[A]) -> Option<usize> {
    let id = lookup(args.first()?.as_ref())?;
    match args.get(1) {
        Some(sub) if matches!(registry().def(id).exec, Exec::Container) => {
            lookup_sub(id, sub.as_ref())
        }
        _ => Some(id),
    }
}

/// Looks a subcommand of container `parent` up case-insensitively.
pub fn lookup_sub(parent: usize, name: &[u8]) -> Option<usize> {
    let mut buf = [0u8; 32];
    let lower = lowercase(name, &mut buf)?;
    registry().sub_by_name.get(&parent)?.get(lower).copied()
}

fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; 32]) -> Option<&'b str> {
    if name.len() > buf.len() {
        return None;
    }
    let b = &mut buf[..name.len()];
    b.copy_from_slice(name);
    b.make_ascii_lowercase();
    std::str::from_utf8(b).ok()
}
