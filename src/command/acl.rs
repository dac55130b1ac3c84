//! ACL: SETUSER, GETUSER, DELUSER, USERS, LIST, WHOAMI, CAT, GENPASS, DRYRUN, HELP. The
//! users and their rules live in `security::acl`; these handlers parse and render.

use std::io::Read;

use bytes::Bytes;

use super::connection::{ConnCtx, help};
use super::flags::*;
use super::table::{CommandDef, NOKEY, container, def, registry, resolve};
use super::{Exec, category};
use crate::protocol::Out;
use crate::security::acl::{Denied, Selector};

const SENTINEL_CONN: u32 = NOSCRIPT | LOADING | STALE | SENTINEL;
const ADMIN_CMD: u32 = ADMIN | NOSCRIPT | LOADING | STALE | SENTINEL;

pub fn setuser(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    match ctx.shared.acl.set_user(&args[2], &args[3..]) {
        Ok(()) => ctx.out.ok(),
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
        Ok(n) => ctx.out.int(n as i64),
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
    let Some(id) = resolve(cmd) else {
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
            "LOG [<count> | RESET]",
            "    Show the ACL log entries.",
            "SETUSER <username> <attribute> [<attribute> ...]",
            "    Create or modify a user with the specified attributes.",
            "USERS",
            "    List all the registered usernames.",
            "WHOAMI",
            "    Return the current connection username.",
        ],
    );
}

use Exec::Conn as C;

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
            C(deluser),
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
            "setuser",
            -3,
            ADMIN_CMD | BARRIER,
            NOKEY,
            "server",
            "6.0.0",
            "Creates and modifies an ACL user and its rules.",
            "O(N). Where N is the number of rules provided.",
            C(setuser),
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
