//! Connection commands: PING, ECHO, HELLO, SELECT, QUIT, RESET, AUTH, CLIENT.
//! They run on the connection's own core with the connection's state.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{SYNTAX_ERROR, is, lossy};
use crate::protocol::Out;
use crate::state::{ClientInfo, Shared};

/// A connection's state as commands see it.
pub struct Client {
    pub info: Arc<ClientInfo>,
    pub resp3: bool,
    /// Set by QUIT: close the connection once the reply is written.
    pub closing: bool,
    /// Whether AUTH (or HELLO ... AUTH) succeeded; only consulted while the default user
    /// needs a password (or is off).
    pub authenticated: bool,
    /// The client's ACL user (the default one until AUTH names another).
    pub acl: crate::security::acl::Session,
    /// READONLY: in cluster mode, reads of slots this node replicates are served here.
    pub readonly: bool,
    /// Between MULTI and EXEC/DISCARD: the queued commands.
    pub multi: Option<Multi>,
    /// The keys WATCH named since the last EXEC/DISCARD/UNWATCH.
    pub watching: Option<Watching>,
    /// The numbered database its commands run in (SELECT).
    pub db: u32,
}

/// A transaction being queued (MULTI ... EXEC).
#[derive(Default)]
pub struct Multi {
    pub queued: Vec<Vec<Bytes>>,
    /// A queued command was refused (unknown, wrong arity, ...): EXEC answers EXECABORT.
    pub failed: bool,
}

/// A client's WATCH session: one flag for all its keys (set when any of them changes), and
/// each key with the core that owns it, whether it existed when watched (a watched key
/// that expires afterwards fails the EXEC too, as in Valkey) and its database.
pub struct Watching {
    pub flag: crate::shard::WatchFlag,
    pub keys: Vec<WatchedKey>,
}

/// A watched key: (key, owning core, existed when watched, database).
pub type WatchedKey = (Bytes, usize, bool, u32);

impl Client {
    /// Whether this client must authenticate before running commands (Valkey's authRequired).
    pub fn auth_required(&self, shared: &Shared) -> bool {
        !self.authenticated && shared.acl.default_requires_auth()
    }

    /// What a script op of this client carries (see `engine::core::Op::user`): its user
    /// when restricted, None for a user allowed everything.
    pub fn script_caller(&self, shared: &Shared) -> Option<crate::security::acl::Caller> {
        (!self.acl.user.is_unrestricted()).then(|| crate::security::acl::Caller {
            user: self.acl.user.clone(),
            client: self.info.clone(),
            users: shared.acl.clone(),
            log_max_len: shared.config.runtime.acllog_max_len(),
        })
    }
}

pub struct ConnCtx<'a> {
    pub client: &'a mut Client,
    pub shared: &'a Arc<Shared>,
    pub out: &'a mut Out,
    pub core: usize,
}

pub type ConnFn = fn(&mut ConnCtx<'_>, &[Bytes]);

pub fn ping(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(&args[1]),
        _ => super::arity_error(ctx.out, "ping"),
    }
}

pub fn echo(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    ctx.out.bulk(&args[1]);
}

pub fn select(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    match select_index(&**ctx.shared, &args[1]) {
        Ok(db) => {
            ctx.client.db = db;
            ctx.client.info.db.store(db, Relaxed);
            ctx.out.ok();
        }
        Err(e) => ctx.out.error(e),
    }
}

/// Valkey's error for a database index outside `0..databases`.
pub const DB_OUT_OF_RANGE: &str = "ERR DB index is out of range";

/// The database SELECT `arg` names (from a client or a script), or Valkey's error for it: the
/// index is read as a C int (getIntFromObjectOrReply: beyond it, not an integer).
pub fn select_index(node: &dyn super::NodeView, arg: &[u8]) -> Result<u32, &'static str> {
    let n = crate::util::parse_i64(arg)
        .filter(|n| i32::try_from(*n).is_ok())
        .ok_or(super::NOT_INTEGER)?;
    let databases = node.databases();
    // Valkey 9: a cluster has `cluster-databases`; with one, SELECT answers as in Valkey 8.
    if node.clustered() && databases == 1 && n != 0 {
        return Err("ERR SELECT is not allowed in cluster mode");
    }
    if n < 0 || n >= databases as i64 {
        return Err(DB_OUT_OF_RANGE);
    }
    Ok(n as u32)
}

pub fn quit(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    ctx.client.closing = true;
    ctx.out.ok();
}

pub fn reset(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    ctx.client.resp3 = false;
    ctx.out.resp3 = false;
    ctx.client.info.resp.store(2, Relaxed);
    ctx.client.info.meta.lock().expect("client meta lock").name = None;
    // RESET returns to the default user, which must authenticate again when a password is set.
    ctx.client.authenticated = false;
    ctx.client.acl = ctx.shared.acl.default_session();
    ctx.client.info.meta.lock().expect("client meta lock").user = None;
    // RESET also discards a transaction; its watches are dropped by the dispatcher.
    ctx.client.multi = None;
    ctx.client.db = 0;
    ctx.client.info.db.store(0, Relaxed);
    ctx.out.simple("RESET");
}

const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// While a cluster node's users are sealed (it does not know yet whether its cluster
/// committed others: see `Users::seal`), AUTH answers -LOADING, as the commands it guards do.
fn sealed(ctx: &mut ConnCtx<'_>) -> bool {
    let sealed = ctx.shared.acl.sealed();
    if sealed {
        ctx.out
            .error("LOADING Valkey is loading the dataset in memory");
    }
    sealed
}

/// Valkey's ACLAuthenticateUser: on success the client runs as `user` from now on.
fn authenticate(ctx: &mut ConnCtx<'_>, user: &[u8], password: &[u8]) -> bool {
    let found = ctx.shared.acl.authenticate(user, password);
    if crate::security::audit::enabled() {
        use crate::security::audit::{Event, Outcome, record};
        record(&Event::Auth {
            outcome: if found.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            user: &String::from_utf8_lossy(user),
            client: &ctx.client.info.addr,
            tls_subject: ctx.client.info.tls_subject.as_deref(),
        });
    }
    match found {
        Some(u) => {
            ctx.client.info.meta.lock().expect("client meta lock").user =
                (u.name != "default").then(|| u.name.clone());
            ctx.client.acl = ctx.shared.acl.session(u);
            ctx.client.authenticated = true;
            true
        }
        None => {
            // ACL LOG notes the failure, with the name tried (never the password).
            let now = crate::util::now_ms();
            ctx.shared.acl.log(
                crate::security::acl::Refusal {
                    reason: "auth",
                    context: "toplevel",
                    object: b"AUTH",
                    username: &String::from_utf8_lossy(user),
                },
                client_line(&ctx.client.info, now),
                now,
                ctx.shared.config.runtime.acllog_max_len(),
            );
            false
        }
    }
}

pub fn auth(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    if args.len() > 3 {
        ctx.out.error(SYNTAX_ERROR);
        return;
    }
    let (user, password): (&[u8], &[u8]) = if args.len() == 2 {
        // The old one-argument form is an error while the default user has no password.
        let default = ctx.shared.acl.get(b"default");
        if default.is_some_and(|u| u.nopass) {
            ctx.out.error(NO_PASSWORD);
            return;
        }
        (b"default", &args[1])
    } else {
        (&args[1], &args[2])
    };
    if sealed(ctx) {
        return;
    }
    if authenticate(ctx, user, password) {
        ctx.out.ok();
    } else {
        ctx.out.error(WRONGPASS);
    }
}

pub fn hello(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let mut resp3 = ctx.client.resp3;
    let mut i = 1;
    if args.len() > 1 {
        match crate::util::parse_i64(&args[1]) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => {
                ctx.out.error("NOPROTO unsupported protocol version");
                return;
            }
            None => {
                ctx.out
                    .error("ERR Protocol version is not an integer or out of range");
                return;
            }
        }
        i = 2;
    }
    let mut name: Option<&Bytes> = None;
    let mut credentials: Option<(&Bytes, &Bytes)> = None;
    while i < args.len() {
        let more = args.len() - i - 1;
        if is(&args[i], "AUTH") && more >= 2 {
            credentials = Some((&args[i + 1], &args[i + 2]));
            i += 3;
        } else if is(&args[i], "SETNAME") && more >= 1 {
            // Checked as it is read, before any later option (Valkey's order of errors).
            if !valid_client_name(&args[i + 1]) {
                ctx.out.error(BAD_NAME);
                return;
            }
            name = Some(&args[i + 1]);
            i += 2;
        } else {
            ctx.out.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                lossy(&args[i], 128)
            ));
            return;
        }
    }
    match credentials {
        Some(_) if sealed(ctx) => return,
        Some((user, password)) if !authenticate(ctx, user, password) => {
            ctx.out.error(WRONGPASS);
            return;
        }
        Some(_) => {}
        None if ctx.client.auth_required(ctx.shared) => {
            ctx.out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }
        None => {}
    }
    if let Some(n) = name {
        ctx.client.info.meta.lock().expect("client meta lock").name =
            Some(lossy(n, usize::MAX)).filter(|s| !s.is_empty());
    }
    ctx.client.resp3 = resp3;
    ctx.out.resp3 = resp3;
    ctx.client
        .info
        .resp
        .store(if resp3 { 3 } else { 2 }, Relaxed);
    ctx.out.map(7);
    ctx.out.bulk(b"server");
    ctx.out.bulk(b"tallykv");
    ctx.out.bulk(b"version");
    ctx.out.bulk(crate::REDIS_COMPAT_VERSION.as_bytes());
    ctx.out.bulk(b"proto");
    ctx.out.int(if resp3 { 3 } else { 2 });
    ctx.out.bulk(b"id");
    ctx.out.int(ctx.client.info.id as i64);
    ctx.out.bulk(b"mode");
    ctx.out.bulk(b"standalone");
    ctx.out.bulk(b"role");
    ctx.out.bulk(b"master");
    ctx.out.bulk(b"modules");
    ctx.out.array(0);
}

const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

/// Valkey allows printable ASCII without spaces in client names (and library names).
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

pub fn client_setname(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    if !valid_client_name(&args[2]) {
        ctx.out.error(BAD_NAME);
        return;
    }
    let name = (!args[2].is_empty()).then(|| lossy(&args[2], usize::MAX));
    ctx.client.info.meta.lock().expect("client meta lock").name = name;
    ctx.out.ok();
}

pub fn client_getname(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let name = ctx
        .client
        .info
        .meta
        .lock()
        .expect("client meta lock")
        .name
        .clone();
    match name {
        Some(n) => ctx.out.bulk(n.as_bytes()),
        None => ctx.out.nil(),
    }
}

pub fn client_id(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    ctx.out.int(ctx.client.info.id as i64);
}

pub fn client_setinfo(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let value = &args[3];
    let lib_name = is(&args[2], "LIB-NAME");
    if !lib_name && !is(&args[2], "LIB-VER") {
        ctx.out.error(&format!(
            "ERR Unrecognized option '{}'",
            lossy(&args[2], 128)
        ));
        return;
    }
    if !valid_client_name(value) {
        // Valkey names the option as the client spelled it.
        ctx.out.error(&format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            lossy(&args[2], 128)
        ));
        return;
    }
    let v = (!value.is_empty()).then(|| lossy(value, usize::MAX));
    let mut meta = ctx.client.info.meta.lock().expect("client meta lock");
    if lib_name {
        meta.lib_name = v;
    } else {
        meta.lib_ver = v;
    }
    ctx.out.ok();
}

/// Bytes a client holds as CLIENT LIST's tot-mem shows them: its read buffer and what is
/// pending in it.
pub fn client_memory(c: &ClientInfo) -> usize {
    READ_BUFFER_SIZE + c.query_buf.load(Relaxed)
}

/// The read buffer size CLIENT LIST reports (rbs).
const READ_BUFFER_SIZE: usize = 16384;

/// One CLIENT LIST line, in Valkey's field order.
/// A command or key refused to `user` (`full_name`, `denied`), noted in ACL LOG and the
/// audit log. `context`: `toplevel`, `multi` or `lua`.
pub fn log_denied(
    users: &crate::security::acl::Users,
    user: &crate::security::acl::User,
    client: &ClientInfo,
    full_name: &str,
    denied: &crate::security::acl::Denied,
    context: &'static str,
    log_max_len: usize,
) {
    use crate::security::acl::{Denied, Refusal};
    let (reason, object) = match denied {
        Denied::Command => ("command", full_name.as_bytes()),
        Denied::Key(k) => ("key", &k[..]),
    };
    if crate::security::audit::enabled() {
        crate::security::audit::record(&crate::security::audit::Event::Denied {
            reason,
            context,
            object: &String::from_utf8_lossy(object),
            user: &user.name,
            client: &client.addr,
        });
    }
    let now = crate::util::now_ms();
    users.log(
        Refusal {
            reason,
            context,
            object,
            username: &user.name,
        },
        client_line(client, now),
        now,
        log_max_len,
    );
}

pub fn client_line(c: &ClientInfo, now_ms: u64) -> String {
    let meta = c.meta.lock().expect("client meta lock").clone();
    let cmd = match c.last_cmd.load(Relaxed) {
        0 => "NULL".to_string(),
        id => super::table::registry().full_name(id - 1).to_string(),
    };
    let qbuf = c.query_buf.load(Relaxed);
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs={READ_BUFFER_SIZE} rbp=0 obl=0 oll=0 omem=0 tot-mem={} events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={} tot-net-in={} tot-net-out={} tot-cmds={}",
        c.id,
        c.addr,
        c.laddr,
        c.fd,
        meta.name.unwrap_or_default(),
        now_ms.saturating_sub(c.created_ms) / 1000,
        now_ms.saturating_sub(c.last_interaction_ms.load(Relaxed)) / 1000,
        c.db.load(Relaxed),
        qbuf,
        client_memory(c),
        cmd,
        meta.user.as_deref().unwrap_or("default"),
        c.resp.load(Relaxed),
        meta.lib_name.unwrap_or_default(),
        meta.lib_ver.unwrap_or_default(),
        c.net_in.load(Relaxed),
        c.net_out.load(Relaxed),
        c.commands.load(Relaxed),
    )
}

pub fn client_list(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        if is(&args[i], "TYPE") && i + 1 < args.len() {
            let t = &args[i + 1];
            if is(t, "normal") {
                i += 2;
                continue;
            }
            if is(t, "master") || is(t, "replica") || is(t, "slave") || is(t, "pubsub") {
                // No such clients exist on a standalone node without pub/sub.
                ids = Some(Vec::new());
                i += 2;
                continue;
            }
            ctx.out
                .error(&format!("ERR Unknown client type '{}'", lossy(t, 128)));
            return;
        } else if is(&args[i], "ID") && i + 1 < args.len() {
            let mut list = Vec::new();
            for a in &args[i + 1..] {
                // Any integer is accepted (no client has an id below 1, so those match none).
                match crate::util::parse_i64(a) {
                    Some(id) => list.extend(u64::try_from(id).ok()),
                    None => {
                        ctx.out.error("ERR Invalid client ID");
                        return;
                    }
                }
            }
            ids = Some(list);
            break;
        } else {
            ctx.out.error(SYNTAX_ERROR);
            return;
        }
    }
    let now = crate::util::now_ms();
    let clients = ctx.shared.clients.lock().expect("client registry lock");
    let mut text = String::new();
    for (id, c) in clients.iter() {
        if ids.as_ref().is_some_and(|l| !l.contains(id)) {
            continue;
        }
        text.push_str(&client_line(c, now));
        text.push('\n');
    }
    drop(clients);
    ctx.out.verbatim(text.as_bytes());
}

pub fn client_info(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let mut line = client_line(&ctx.client.info, crate::util::now_ms());
    line.push('\n');
    ctx.out.verbatim(line.as_bytes());
}

pub fn client_help(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    help(
        ctx.out,
        "CLIENT",
        &[
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "LIST [TYPE <normal|master|replica|pubsub>] [ID <id> [<id> ...]]",
            "    Return information about client connections.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
        ],
    );
}

/// A HELP reply in Valkey's shape: a title line, the entries, and a closing HELP line.
pub fn help(out: &mut Out, container: &str, lines: &[&str]) {
    out.array(lines.len() + 3);
    out.simple(&format!(
        "{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for l in lines {
        out.simple(l);
    }
    out.simple("HELP");
    out.simple("    Print this help.");
}

pub fn time(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    time_reply(ctx.out);
}

/// TIME's reply: Unix seconds and microseconds, as two bulk strings (also from scripts).
pub fn time_reply(out: &mut Out) {
    let us = crate::util::now_us();
    let mut b = itoa::Buffer::new();
    out.array(2);
    out.bulk(b.format(us / 1_000_000).as_bytes());
    out.bulk(b.format(us % 1_000_000).as_bytes());
}

pub fn lastsave(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    ctx.out.int(ctx.shared.lastsave_unix() as i64);
}

/// BGREWRITEAOF: tallykv's equivalent of rewriting the append-only file is compacting the
/// storage (dropping overwritten and deleted versions), in the background.
pub fn bgrewriteaof(ctx: &mut ConnCtx<'_>, _args: &[Bytes]) {
    let Some(storage) = ctx.shared.storage() else {
        ctx.out
            .error("ERR Background append only file rewriting is not possible with appendonly no");
        return;
    };
    if storage.compact_in_background() {
        ctx.out
            .simple("Background append only file rewriting started");
    } else {
        ctx.out
            .error("ERR Background append only file rewriting already in progress");
    }
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]: hand every change to storage, sync, exit.
/// SAVE also writes a snapshot first. Like Valkey, a successful SHUTDOWN sends no reply.
pub fn shutdown(ctx: &mut ConnCtx<'_>, args: &[Bytes]) {
    let mut save = false;
    let mut nosave = false;
    for a in &args[1..] {
        if is(a, "save") {
            save = true;
        } else if is(a, "nosave") {
            nosave = true;
        } else if is(a, "now") || is(a, "force") {
            // No replicas to wait for and nothing that could refuse: both are no-ops here.
        } else if is(a, "abort") && args.len() == 2 {
            ctx.out.error("ERR No shutdown in progress.");
            return;
        } else {
            ctx.out.error("ERR syntax error");
            return;
        }
    }
    if save && nosave {
        ctx.out.error("ERR syntax error");
        return;
    }
    if save && ctx.shared.storage().is_none() {
        ctx.out.error("ERR Errors trying to SHUTDOWN. Check logs.");
        tracing::warn!("SHUTDOWN SAVE refused: appendonly no, so there is no data dir to save to");
        return;
    }
    tracing::warn!("User requested shutdown...");
    ctx.shared.begin_shutdown(save);
    ctx.client.closing = true;
}
