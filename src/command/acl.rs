//! ACL: SETUSER, GETUSER, DELUSER, USERS, LIST, WHOAMI, CAT, GENPASS, DRYRUN, LOG, LOAD,
//! SAVE, HELP. The users and their rules live in `security::acl`; these handlers parse and
//! render. In a cluster SETUSER, DELUSER and LOAD change the users every node shares: each
//! is checked here ([`prepare_change`]), committed by the engine through the meta group, and
//! answered once it applied ([`change_reply`]).

use std::io::Read;

use bytes::Bytes;

use super::connection::{ConnCtx, help};
use super::flags::*;
use super::table::{CommandDef, NOKEY, container, def, registry, resolve_client};
use super::{Exec, category};
use crate::protocol::Out;
use crate::security::acl::{Denied, Outcome, Selector, UsersChange};
use crate::state::Shared;

const SENTINEL_CONN: u32 = NOSCRIPT | LOADING | STALE | SENTINEL;
const ADMIN_CMD: u32 = ADMIN | NOSCRIPT | LOADING | STALE | SENTINEL;

/// An audit log line for a change of users (the rules are not in it: they may hold a
/// password).
fn audit(ctx: &ConnCtx<'_>, command: &str, target: Option<&[u8]>) {
    if crate::security::audit::enabled() {
        let target = target.map(|t| String::from_utf8_lossy(t).into_owned());
        crate::security::audit::record(&crate::security::audit::Event::AclChange {
            command,
            target: target.as_deref(),
            user: &ctx.client.acl.user.name,
            client: &ctx.client.info.addr,
        });
    }
}

pub fn setuser(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    match ctx.shared.acl.set_user(&args[2], &args[3..]) {
        Ok(()) => {
            audit(ctx, "setuser", Some(&args[2]));
            ctx.out.ok()
        }
        Err(e) => ctx.out.error(&e),
    }
}

fn write_selector(out: &mut Out, s: &Selector) {
    out.bulk(b"commands");
    out.bulk(s.describe_commands().as_bytes());
    out.bulk(b"keys");
    out.bulk(s.describe_keys().as_bytes());
    out.bulk(b"channels");
    out.bulk(s.describe_channels().as_bytes());
}

pub fn getuser(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let Some(u) = ctx.shared.acl.get(&args[2]) else {
        ctx.out.nil();
        return;
    };
    let out = &mut *ctx.out;
    out.map(6);
    out.bulk(b"flags");
    let flags = u.flag_names();
    out.set(flags.len());
    for f in flags {
        out.bulk(f.as_bytes());
    }
    out.bulk(b"passwords");
    out.array(u.passwords().len());
    for p in u.passwords() {
        out.bulk(p.as_bytes());
    }
    write_selector(out, u.root());
    out.bulk(b"selectors");
    out.array(u.selectors().len());
    for s in u.selectors() {
        out.map(3);
        write_selector(out, s);
    }
}

pub fn deluser(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    match ctx.shared.acl.delete(&args[2..]) {
        Ok(n) => {
            for name in &args[2..] {
                audit(ctx, "deluser", Some(name));
            }
            ctx.out.int(n as i64)
        }
        Err(e) => ctx.out.error(e),
    }
}

pub fn users(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let all = ctx.shared.acl.all();
    ctx.out.array(all.len());
    for u in all {
        ctx.out.bulk(u.name.as_bytes());
    }
}

pub fn list(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let all = ctx.shared.acl.all();
    ctx.out.array(all.len());
    for u in all {
        ctx.out.bulk(u.describe().as_bytes());
    }
}

pub fn whoami(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    ctx.out.bulk(ctx.client.acl.user.name.as_bytes());
}

pub fn cat(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    if args.len() > 3 {
        super::arity_error(ctx.out, "acl|cat");
        return;
    }
    let Some(name) = args.get(2) else {
        ctx.out.array(category::NAMES.len());
        for (_, n) in category::NAMES {
            ctx.out.bulk(n.as_bytes());
        }
        return;
    };
    let Some(c) = category::by_name(name) else {
        ctx.out.error(&format!(
            "ERR Unknown category '{}'",
            super::lossy(name, 128)
        ));
        return;
    };
    let reg = registry();
    let names: Vec<&str> = (0..reg.len())
        .filter(|&id| reg.categories(id) & c != 0)
        .map(|id| reg.full_name(id))
        .collect();
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
}

pub fn genpass(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    const BAD_BITS: &str = "ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096";
    if args.len() > 3 {
        super::arity_error(ctx.out, "acl|genpass");
        return;
    }
    let bits = match args.get(2) {
        None => 256,
        Some(a) => match super::arg_i64(a) {
            Some(b) if (1..=4096).contains(&b) => b as usize,
            _ => {
                ctx.out.error(BAD_BITS);
                return;
            }
        },
    };
    let chars = bits.div_ceil(4);
    let mut random = vec![0u8; chars.div_ceil(2)];
    // The kernel's CSPRNG: a generated password must not be guessable from earlier ones.
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random))
    {
        ctx.out.error(&format!(
            "ERR cannot read random bytes for the password: {e}"
        ));
        return;
    }
    let mut hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(chars);
    ctx.out.bulk(hex.as_bytes());
}

/// ACL DRYRUN user command [arg ...]: whether `user` could run it, without running it.
pub fn dryrun(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let Some(user) = ctx.shared.acl.get(&args[2]) else {
        ctx.out.error(&format!(
            "ERR User '{}' not found",
            super::lossy(&args[2], 128)
        ));
        return;
    };
    let cmd = &args[3..];
    let reg = registry();
    let not_found = |out: &mut Out| {
        out.error(&format!(
            "ERR Command '{}' not found",
            super::lossy(&cmd[0], 128)
        ))
    };
    let Some(id) = resolve_client(cmd) else {
        not_found(ctx.out);
        return;
    };
    let d = reg.def(id);
    let argc = cmd.len() as i32;
    if (d.arity > 0 && argc != d.arity) || argc < -d.arity {
        super::arity_error(ctx.out, reg.full_name(id));
        return;
    }
    match user.check(id, d, cmd) {
        Ok(()) => ctx.out.ok(),
        Err(Denied::Command) => ctx.out.bulk(
            format!(
                "This user has no permissions to run the '{}' command",
                reg.full_name(id)
            )
            .as_bytes(),
        ),
        Err(Denied::Key(k)) => ctx.out.bulk(
            format!(
                "This user has no permissions to access the '{}' key",
                String::from_utf8_lossy(&k)
            )
            .as_bytes(),
        ),
    }
}

/// ACL LOG [<count> | RESET]: the newest refusals (10 by default), Valkey's fields.
pub fn log(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let count = match args.get(2) {
        None => 10,
        Some(a) if super::is(a, "reset") => {
            ctx.shared.acl.log_reset();
            ctx.out.ok();
            return;
        }
        Some(a) => match std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(n) if n >= 0 => n as usize,
            _ => {
                ctx.out.error("ERR value is out of range, must be positive");
                return;
            }
        },
    };
    let now = crate::util::now_ms();
    let entries = ctx.shared.acl.log_entries(count);
    let out = &mut *ctx.out;
    out.array(entries.len());
    for e in entries {
        out.map(10);
        out.bulk(b"count");
        out.int(e.count as i64);
        out.bulk(b"reason");
        out.bulk(e.reason.as_bytes());
        out.bulk(b"context");
        out.bulk(e.context.as_bytes());
        out.bulk(b"object");
        out.bulk(e.object.as_bytes());
        out.bulk(b"username");
        out.bulk(e.username.as_bytes());
        out.bulk(b"age-seconds");
        out.double(now.saturating_sub(e.created_ms) as f64 / 1000.0);
        out.bulk(b"client-info");
        out.bulk(e.client_info.as_bytes());
        out.bulk(b"entry-id");
        out.int(e.entry_id as i64);
        out.bulk(b"timestamp-created");
        out.int(e.created_ms as i64);
        out.bulk(b"timestamp-last-updated");
        out.int(e.updated_ms as i64);
    }
}

/// ACL LOAD and ACL SAVE without an `aclfile` (Valkey's text).
const NO_ACLFILE: &str = "ERR This Valkey instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Valkey configuration file set) in order to store users in the Valkey configuration.";

/// ACL LOAD: every user replaced by the aclfile's, all or nothing; the error names each
/// problem with its `file:line`.
pub fn load(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let rt = &ctx.shared.config.runtime;
    let Some(path) = rt.aclfile() else {
        ctx.out.error(NO_ACLFILE);
        return;
    };
    match ctx.shared.acl.load_file(&path, rt.requirepass().as_deref()) {
        Ok(()) => {
            audit(ctx, "load", None);
            ctx.out.ok()
        }
        Err(e) => ctx.out.error(&format!("ERR {e}")),
    }
}

/// ACL SAVE: every user written to the aclfile, as ACL LIST shows them. Why a save failed
/// goes to the log; the client gets Valkey's fixed reply.
pub fn save(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let Some(path) = ctx.shared.config.runtime.aclfile() else {
        ctx.out.error(NO_ACLFILE);
        return;
    };
    match ctx.shared.acl.save_file(&path) {
        Ok(()) => {
            audit(ctx, "save", None);
            ctx.out.ok()
        }
        Err(e) => {
            tracing::warn!("{e}");
            ctx.out.error(
                "ERR There was an error trying to save the ACLs. Please check the server logs for more information",
            );
        }
    }
}

/// ACL SETUSER, DELUSER or LOAD (`sub`) on a cluster node: the change to commit, refused with
/// the reply a standalone node gives to what its users refuse.
pub fn prepare_change(shared: &Shared, sub: &str, args: &[Bytes]) -> Result<UsersChange, String> {
    match sub {
        "setuser" => shared.acl.prepare_set_user(&args[2], &args[3..]),
        "deluser" => shared.acl.prepare_delete(&args[2..]).map_err(String::from),
        "load" => {
            let rt = &shared.config.runtime;
            let path = rt.aclfile().ok_or(NO_ACLFILE)?;
            shared
                .acl
                .prepare_load(&path, rt.requirepass().as_deref())
                .map_err(|e| format!("ERR {e}"))
        }
        _ => unreachable!("only SETUSER, DELUSER and LOAD change the users"),
    }
}

/// The reply to a change [`prepare_change`] made, once committed and applied here (or the
/// error that stopped it), with its audit lines.
pub fn change_reply(ctx: &mut ConnCtx<'_>, sub: &str, args: &[Bytes], outcome: Outcome) {
    let removed = match outcome {
        Ok(n) => n,
        Err(e) => {
            ctx.out.error(&e);
            return;
        }
    };
    match sub {
        "setuser" => audit(ctx, "setuser", Some(&args[2])),
        "deluser" => {
            for name in &args[2..] {
                audit(ctx, "deluser", Some(name));
            }
        }
        _ => audit(ctx, "load", None),
    }
    if sub == "deluser" {
        ctx.out.int(removed as i64);
    } else {
        ctx.out.ok();
    }
}

pub fn acl_help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    help(
        ctx.out,
        "ACL",
        &[
            "CAT [<category>]",
            "    List all commands that belong to <category>, or all command categories",
            "    when no category is specified.",
            "DELUSER <username> [<username> ...]",
            "    Delete a list of users.",
            "DRYRUN <username> <command> [<arg> ...]",
            "    Returns whether the user can execute the given command without executing the command.",
            "GETUSER <username>",
            "    Get the user's details.",
            "GENPASS [<bits>]",
            "    Generate a secure 256-bit user password. The optional `bits` argument can",
            "    be used to specify a different size.",
            "LIST",
            "    Show users details in config file format.",
            "LOAD",
            "    Reload users from the ACL file.",
            "LOG [<count> | RESET]",
            "    Show the ACL log entries.",
            "SAVE",
            "    Save the current config to the ACL file.",
            "SETUSER <username> <attribute> [<attribute> ...]",
            "    Create or modify a user with the specified attributes.",
            "USERS",
            "    List all the registered usernames.",
            "WHOAMI",
            "    Return the current connection username.",
        ],
    );
}

use Exec::{Conn as C, Users as U};

pub static COMMANDS: &[CommandDef] = &[container(
    "acl",
    "server",
    "6.0.0",
    "A container for Access List Control commands.",
    &[
        def(
            "cat",
            -2,
            SENTINEL_CONN,
            NOKEY,
            "server",
            "6.0.0",
            "Lists the ACL categories, or the commands inside a category.",
            "O(1) since the categories and commands are a fixed set.",
            C(cat),
        ),
        def(
            "deluser",
            -3,
            ADMIN_CMD | BARRIER,
            NOKEY,
            "server",
            "6.0.0",
            "Deletes ACL users, and terminates their connections.",
            "O(1) amortized time considering the typical user.",
            U(deluser),
        ),
        def(
            "dryrun",
            -4,
            ADMIN_CMD,
            NOKEY,
            "server",
            "7.0.0",
            "Simulates the execution of a command by a user, without executing the command.",
            "O(1).",
            C(dryrun),
        ),
        def(
            "genpass",
            -2,
            SENTINEL_CONN,
            NOKEY,
            "server",
            "6.0.0",
            "Generates a pseudorandom, secure password that can be used to identify ACL users.",
            "O(1)",
            C(genpass),
        ),
        def(
            "getuser",
            3,
            ADMIN_CMD,
            NOKEY,
            "server",
            "6.0.0",
            "Lists the ACL rules of a user.",
            "O(N). Where N is the number of password, command and pattern rules that the user has.",
            C(getuser),
        ),
        def(
            "help",
            2,
            LOADING | STALE | SENTINEL,
            NOKEY,
            "server",
            "6.0.0",
            "Returns helpful text about the different subcommands.",
            "O(1)",
            C(acl_help),
        ),
        def(
            "list",
            2,
            ADMIN_CMD,
            NOKEY,
            "server",
            "6.0.0",
            "Dumps the effective rules in ACL file format.",
            "O(N). Where N is the number of configured users.",
            C(list),
        ),
        def(
            "load",
            2,
            ADMIN_CMD | BARRIER,
            NOKEY,
            "server",
            "6.0.0",
            "Reloads the rules from the configured ACL file.",
            "O(N). Where N is the number of configured users.",
            U(load),
        ),
        def(
            "log",
            -2,
            ADMIN_CMD,
            NOKEY,
            "server",
            "6.0.0",
            "Lists recent security events generated due to ACL rules.",
            "O(N) with N being the number of entries shown.",
            C(log),
        ),
        def(
            "save",
            2,
            ADMIN_CMD,
            NOKEY,
            "server",
            "6.0.0",
            "Saves the effective ACL rules in the configured ACL file.",
            "O(N). Where N is the number of configured users.",
            C(save),
        ),
        def(
            "setuser",
            -3,
            ADMIN_CMD | BARRIER,
            NOKEY,
            "server",
            "6.0.0",
            "Creates and modifies an ACL user and its rules.",
            "O(N). Where N is the number of rules provided.",
            U(setuser),
        ),
        def(
            "users",
            2,
            ADMIN_CMD,
            NOKEY,
            "server",
            "6.0.0",
            "Lists all ACL users.",
            "O(N). Where N is the number of configured users.",
            C(users),
        ),
        def(
            "whoami",
            2,
            SENTINEL_CONN,
            NOKEY,
            "server",
            "6.0.0",
            "Returns the authenticated username of the current connection.",
            "O(1)",
            C(whoami),
        ),
    ],
)];
