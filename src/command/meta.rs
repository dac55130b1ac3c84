//! COMMAND (COUNT, INFO, DOCS, GETKEYS, LIST) and OBJECT HELP: the command table, read back.

use bytes::Bytes;

use super::connection::{ConnCtx, help};
use super::flags;
use super::table::{lookup, lookup_sub, registry};
use crate::protocol::Out;

fn write_info(out: &mut Out, id: usize) {
    let reg = registry();
    let d = reg.def(id);
    out.array(10);
    out.bulk(reg.full_name(id).as_bytes());
    out.int(d.arity as i64);
    let mut fl: Vec<&str> = flags::NAMES
        .iter()
        .filter(|(f, _)| d.flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    if d.keys.numkeys_at > 0 {
        fl.push("movablekeys");
    }
    out.set(fl.len());
    for f in fl {
        out.simple(f);
    }
    out.int(d.keys.first as i64);
    out.int(d.keys.last as i64);
    out.int(d.keys.step as i64);
    let acl = reg.categories(id);
    out.set(acl.count_ones() as usize);
    for c in super::category::names(acl) {
        out.simple(&format!("@{c}"));
    }
    let tips = tips(reg.full_name(id));
    out.array(tips.len());
    for t in tips {
        out.simple(t);
    }
    // Key specs in the Redis 7 shape, derived from (first, last, step).
    if d.keys.first > 0 {
        out.array(1);
        out.map(3);
        out.bulk(b"flags");
        out.array(0);
        out.bulk(b"begin_search");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"index");
        out.bulk(b"spec");
        out.map(1);
        out.bulk(b"index");
        out.int(d.keys.first as i64);
        out.bulk(b"find_keys");
        out.map(2);
        out.bulk(b"type");
        out.bulk(b"range");
        out.bulk(b"spec");
        out.map(3);
        out.bulk(b"lastkey");
        out.int(if d.keys.last < 0 {
            d.keys.last as i64
        } else {
            (d.keys.last - d.keys.first) as i64
        });
        out.bulk(b"keystep");
        out.int(d.keys.step as i64);
        out.bulk(b"limit");
        out.int(0);
    } else {
        out.array(0);
    }
    let subs = reg.subs_of(id);
    out.array(subs.len());
    for s in subs {
        write_info(out, s);
    }
}

/// COMMAND with no subcommand: INFO for every command.
pub fn command_all(out: &mut Out) {
    let reg = registry();
    let ids: Vec<usize> = reg.top_level().collect();
    out.array(ids.len());
    for id in ids {
        write_info(out, id);
    }
}

pub fn command_count(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    ctx.out.int(registry().top_level().count() as i64);
}

/// Resolves "get" or "client|list" to a registry id.
fn resolve(name: &[u8]) -> Option<usize> {
    match name.iter().position(|&b| b == b'|') {
        Some(p) => lookup_sub(lookup(&name[..p])?, &name[p + 1..]),
        None => lookup(name),
    }
}

pub fn command_info(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    if args.len() == 2 {
        command_all(ctx.out);
        return;
    }
    ctx.out.array(args.len() - 2);
    for name in &args[2..] {
        match resolve(name) {
            Some(id) => write_info(ctx.out, id),
            None => ctx.out.nil_array(),
        }
    }
}

fn write_docs(out: &mut Out, id: usize) {
    let reg = registry();
    let d = reg.def(id);
    let subs = reg.subs_of(id);
    out.map(if subs.is_empty() { 4 } else { 5 });
    out.bulk(b"summary");
    out.bulk(d.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(d.since.as_bytes());
    out.bulk(b"group");
    out.bulk(d.group.as_bytes());
    out.bulk(b"complexity");
    out.bulk(d.complexity.as_bytes());
    if !subs.is_empty() {
        out.bulk(b"subcommands");
        out.map(subs.len());
        for s in subs {
            out.bulk(reg.full_name(s).as_bytes());
            write_docs(out, s);
        }
    }
}

pub fn command_docs(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let reg = registry();
    let ids: Vec<usize> = if args.len() == 2 {
        reg.top_level().collect()
    } else {
        args[2..].iter().filter_map(|n| resolve(n)).collect()
    };
    ctx.out.map(ids.len());
    for id in ids {
        ctx.out.bulk(reg.full_name(id).as_bytes());
        write_docs(ctx.out, id);
    }
}

pub fn command_list(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let reg = registry();
    let mut names: Vec<String> = Vec::new();
    let filter = if args.len() == 5 && super::is(&args[2], "FILTERBY") {
        Some((args[3].to_ascii_lowercase(), args[4].to_vec()))
    } else if args.len() != 2 {
        ctx.out.error(super::SYNTAX_ERROR);
        return;
    } else {
        None
    };
    for id in 0..reg.len() {
        let name = reg.full_name(id);
        let keep = match &filter {
            None => true,
            Some((kind, arg)) => match kind.as_slice() {
                b"pattern" => crate::util::glob_match(arg, name.as_bytes(), true),
                b"aclcat" => {
                    super::category::by_name(arg).is_some_and(|c| reg.categories(id) & c != 0)
                }
                b"module" => false,
                _ => {
                    ctx.out.error(super::SYNTAX_ERROR);
                    return;
                }
            },
        };
        if keep {
            names.push(name.to_string());
        }
    }
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
}

/// COMMAND GETKEYS, checked in Valkey's order: the command (a container's subcommand when one
/// is named), then whether it has keys at all, then its arity.
pub fn command_getkeys(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let target = &args[2..];
    let Some(id) = super::table::resolve(target) else {
        ctx.out.error("ERR Invalid command specified");
        return;
    };
    let d = registry().def(id);
    if !d.keys.has_keys() {
        ctx.out.error("ERR The command has no key arguments");
        return;
    }
    let argc = target.len() as i32;
    if (d.arity > 0 && argc != d.arity) || argc < -d.arity {
        ctx.out
            .error("ERR Invalid number of arguments specified for command");
        return;
    }
    let keys: Vec<usize> = d.keys.positions(target).collect();
    if keys.is_empty() {
        ctx.out.error("ERR Invalid arguments specified for command");
        return;
    }
    ctx.out.array(keys.len());
    for i in keys {
        ctx.out.bulk(&target[i]);
    }
}

pub fn command_help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    help(
        ctx.out,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all commands.",
            "COUNT",
            "    Return the total number of commands in this server.",
            "LIST",
            "    Return a list of all commands in this server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full command.",
        ],
    );
}

pub fn object_help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    help(
        ctx.out,
        "OBJECT",
        &[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ],
    );
}

/// Valkey's command tips (COMMAND INFO's tips) for the commands tallykv has: cluster clients
/// route by them (redis-py sends KEYS, DBSIZE and FLUSHALL to every primary because of
/// `request_policy:all_shards`, and sums DBSIZE because of `response_policy:agg_sum`).
const TIPS: &[(&str, &[&str])] = &[
    (
        "keys",
        &["request_policy:all_shards", "nondeterministic_output_order"],
    ),
    (
        "dbsize",
        &["request_policy:all_shards", "response_policy:agg_sum"],
    ),
    (
        "flushall",
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    (
        "flushdb",
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    (
        "scan",
        &[
            "nondeterministic_output",
            "request_policy:special",
            "response_policy:special",
        ],
    ),
    (
        "randomkey",
        &[
            "request_policy:all_shards",
            "response_policy:special",
            "nondeterministic_output",
        ],
    ),
    (
        "memory|doctor",
        &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
    ),
    (
        "memory|malloc-stats",
        &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
    ),
    (
        "memory|purge",
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    (
        "memory|stats",
        &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
    ),
    ("mget", &["request_policy:multi_shard"]),
    (
        "mset",
        &[
            "request_policy:multi_shard",
            "response_policy:all_succeeded",
        ],
    ),
    (
        "del",
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    (
        "unlink",
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    (
        "exists",
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    (
        "touch",
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    (
        "ping",
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    (
        "info",
        &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
    ),
    (
        "config|set",
        &["request_policy:all_nodes", "response_policy:all_succeeded"],
    ),
    (
        "config|resetstat",
        &["request_policy:all_nodes", "response_policy:all_succeeded"],
    ),
    (
        "save",
        &["request_policy:all_nodes", "response_policy:all_succeeded"],
    ),
    (
        "bgsave",
        &["request_policy:all_nodes", "response_policy:all_succeeded"],
    ),
    ("time", &["nondeterministic_output"]),
    ("lastsave", &["nondeterministic_output"]),
    ("hrandfield", &["nondeterministic_output"]),
    ("client|list", &["nondeterministic_output"]),
    ("client|info", &["nondeterministic_output"]),
];

/// The tips of the command with this full name ("config|set" for a subcommand).
pub fn tips(full_name: &str) -> &'static [&'static str] {
    TIPS.iter()
        .find(|(n, _)| *n == full_name)
        .map_or(&[], |(_, t)| t)
}
