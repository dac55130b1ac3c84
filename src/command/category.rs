//! ACL command categories (`@read`, `@write`, `@string`, ...), assigned as Valkey assigns
//! them: a command's explicit categories (in Valkey's command JSON files: the family's own
//! category, plus `@keyspace`, `@dangerous` or `@connection` where a command has them) and
//! the implicit ones its flags give (Valkey's setImplicitACLCategories). The registry
//! computes each command's set once; COMMAND INFO, COMMAND LIST FILTERBY ACLCAT, ACL CAT and
//! the ACL rules (`+@read`) all read that one set.

use super::flags;
use super::table::CommandDef;

pub const KEYSPACE: u32 = 1 << 0;
pub const READ: u32 = 1 << 1;
pub const WRITE: u32 = 1 << 2;
pub const SET: u32 = 1 << 3;
pub const SORTEDSET: u32 = 1 << 4;
pub const LIST: u32 = 1 << 5;
pub const HASH: u32 = 1 << 6;
pub const STRING: u32 = 1 << 7;
pub const BITMAP: u32 = 1 << 8;
pub const HYPERLOGLOG: u32 = 1 << 9;
pub const GEO: u32 = 1 << 10;
pub const STREAM: u32 = 1 << 11;
pub const PUBSUB: u32 = 1 << 12;
pub const ADMIN: u32 = 1 << 13;
pub const FAST: u32 = 1 << 14;
pub const SLOW: u32 = 1 << 15;
pub const BLOCKING: u32 = 1 << 16;
pub const DANGEROUS: u32 = 1 << 17;
pub const CONNECTION: u32 = 1 << 18;
pub const TRANSACTION: u32 = 1 << 19;
pub const SCRIPTING: u32 = 1 << 20;

/// Every category with its name, in the order of Valkey's category table: ACL CAT lists
/// them in this order, and COMMAND INFO lists a command's categories in it.
pub const NAMES: &[(u32, &str)] = &[
    (KEYSPACE, "keyspace"),
    (READ, "read"),
    (WRITE, "write"),
    (SET, "set"),
    (SORTEDSET, "sortedset"),
    (LIST, "list"),
    (HASH, "hash"),
    (STRING, "string"),
    (BITMAP, "bitmap"),
    (HYPERLOGLOG, "hyperloglog"),
    (GEO, "geo"),
    (STREAM, "stream"),
    (PUBSUB, "pubsub"),
    (ADMIN, "admin"),
    (FAST, "fast"),
    (SLOW, "slow"),
    (BLOCKING, "blocking"),
    (DANGEROUS, "dangerous"),
    (CONNECTION, "connection"),
    (TRANSACTION, "transaction"),
    (SCRIPTING, "scripting"),
];

/// The category named `name` (case-insensitive, without the `@`).
pub fn by_name(name: &[u8]) -> Option<u32> {
    NAMES
        .iter()
        .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|(c, _)| *c)
}

/// The names of the categories in `cats`, in Valkey's order.
pub fn names(cats: u32) -> impl Iterator<Item = &'static str> {
    NAMES
        .iter()
        .filter(move |(c, _)| cats & c != 0)
        .map(|(_, n)| *n)
}

/// The category a command of this COMMAND DOCS group belongs to (Valkey's JSON files give
/// every command of a data family its family's category).
fn of_group(group: &str) -> u32 {
    match group {
        "generic" => KEYSPACE,
        "string" => STRING,
        "hash" => HASH,
        "list" => LIST,
        "set" => SET,
        "sorted-set" => SORTEDSET,
        "bitmap" => BITMAP,
        "hyperloglog" => HYPERLOGLOG,
        "geo" => GEO,
        "stream" => STREAM,
        "pubsub" => PUBSUB,
        "connection" => CONNECTION,
        "transactions" => TRANSACTION,
        "scripting" => SCRIPTING,
        _ => 0,
    }
}

/// Explicit categories that do not follow from a command's group (Valkey's JSON files), by
/// full name.
const EXTRA: &[(&str, u32)] = &[
    ("dbsize", KEYSPACE),
    ("flushall", KEYSPACE | DANGEROUS),
    ("flushdb", KEYSPACE | DANGEROUS),
    ("swapdb", KEYSPACE | DANGEROUS),
    ("keys", DANGEROUS),
    ("sort", DANGEROUS),
    ("migrate", DANGEROUS),
    ("restore", DANGEROUS),
    ("info", DANGEROUS),
    ("lastsave", ADMIN | DANGEROUS),
    ("readonly", CONNECTION),
    ("readwrite", CONNECTION),
    ("command", CONNECTION),
    ("command|count", CONNECTION),
    ("command|docs", CONNECTION),
    ("command|getkeys", CONNECTION),
    ("command|getkeysandflags", CONNECTION),
    ("command|help", CONNECTION),
    ("command|info", CONNECTION),
    ("command|list", CONNECTION),
];

/// A command's categories: its explicit ones, then those its flags imply, as Valkey's
/// setImplicitACLCategories adds them. A container (CLIENT, CONFIG...) is only `@slow`, as in
/// Valkey: its subcommands carry the real categories.
pub fn of(def: &CommandDef, full_name: &str, container: bool) -> u32 {
    let mut c = if container { 0 } else { of_group(def.group) };
    if let Some((_, extra)) = EXTRA.iter().find(|(n, _)| *n == full_name) {
        c |= extra;
    }
    let f = def.flags;
    if f & flags::WRITE != 0 {
        c |= WRITE;
    }
    // Scripting commands are left out of @read, even when flagged readonly (EVAL_RO).
    if f & flags::READONLY != 0 && c & SCRIPTING == 0 {
        c |= READ;
    }
    if f & flags::ADMIN != 0 {
        c |= ADMIN | DANGEROUS;
    }
    if f & flags::PUBSUB != 0 {
        c |= PUBSUB;
    }
    if f & flags::FAST != 0 {
        c |= FAST;
    }
    if f & flags::BLOCKING != 0 {
        c |= BLOCKING;
    }
    // Not @fast is @slow, "in this binary world".
    if c & FAST == 0 {
        c |= SLOW;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::table::{lookup, lookup_sub, registry};

    fn cats(name: &str) -> Vec<&'static str> {
        let reg = registry();
        let id = match name.split_once('|') {
            Some((p, s)) => lookup_sub(lookup(p.as_bytes()).unwrap(), s.as_bytes()).unwrap(),
            None => lookup(name.as_bytes()).unwrap(),
        };
        names(reg.categories(id)).collect()
    }

    #[test]
    fn commands_get_valkeys_categories() {
        assert_eq!(cats("get"), ["read", "string", "fast"]);
        assert_eq!(cats("set"), ["write", "string", "slow"]);
        assert_eq!(cats("del"), ["keyspace", "write", "slow"]);
        assert_eq!(cats("keys"), ["keyspace", "read", "slow", "dangerous"]);
        assert_eq!(cats("dbsize"), ["keyspace", "read", "fast"]);
        assert_eq!(cats("flushall"), ["keyspace", "write", "slow", "dangerous"]);
        assert_eq!(cats("setbit"), ["write", "bitmap", "slow"]);
        assert_eq!(cats("blpop"), ["write", "list", "slow", "blocking"]);
        assert_eq!(cats("eval_ro"), ["slow", "scripting"]);
        assert_eq!(cats("client"), ["slow"]);
        assert_eq!(cats("config|set"), ["admin", "slow", "dangerous"]);
        assert_eq!(cats("multi"), ["fast", "transaction"]);
        assert_eq!(cats("auth"), ["fast", "connection"]);
    }

    #[test]
    fn category_names_round_trip() {
        assert_eq!(by_name(b"SortedSet"), Some(SORTEDSET));
        assert_eq!(by_name(b"nosuch"), None);
        assert_eq!(
            names(READ | KEYSPACE).collect::<Vec<_>>(),
            ["keyspace", "read"]
        );
    }
}
