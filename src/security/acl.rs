//! ACL users, as Valkey has them: a user's flags (on/off, nopass), its passwords (SHA-256
//! hex digests, never the text), and selectors — the root one plus `(...)` ones — each
//! allowing commands (by name, subcommand or category), key patterns with read/write
//! permissions, and pub/sub channel patterns. `SETUSER`'s rule grammar, the rendering
//! `ACL LIST`/`GETUSER` show, and the permission check the dispatcher runs before a command.
//!
//! Where users live: one [`Users`] registry per node (in `Shared`), a map of immutable
//! `Arc<User>` records behind a lock taken only by ACL commands, AUTH and a client's refresh.
//! A change replaces the record and bumps an epoch; each client holds its user's record and
//! the epoch it saw ([`Session`]), so the hot path is one atomic load and, for an
//! unrestricted user such as the default one, one flag test. A client notices a changed
//! user at its next command; a deleted user's clients are disconnected then.
//!
//! Users as text — the config file's `user` lines, the ACL file ACL LOAD reads and ACL SAVE
//! writes — are in `acl/file.rs`; the users a cluster shares, committed through its meta
//! group, in `acl/replicated.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::command::category;
use crate::command::table::{CommandDef, lookup, lookup_sub, registry};
use crate::command::{Exec, KeyAccess, flags};

mod file;
mod replicated;
pub use file::{LoadError, SaveError, declaration};
pub use replicated::{Outcome, UserRules, UsersChange};

/// Key permissions of a pattern (`%R~`, `%W~`, `~` = both): the bits a command's
/// [`KeyAccess`] says each of its keys needs.
pub const READ: u8 = KeyAccess::READ;
pub const WRITE: u8 = KeyAccess::WRITE;

/// Why a SETUSER rule was refused: Valkey's texts (ACLSetUserStringError).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleError {
    UnknownCommand,
    Syntax,
    PatternAfterAllKeys,
    ChannelAfterAllChannels,
    NoSuchPassword,
    BadHash,
}

impl RuleError {
    pub fn text(self) -> &'static str {
        match self {
            RuleError::UnknownCommand => "Unknown command or category name in ACL",
            RuleError::Syntax => "Syntax error",
            RuleError::PatternAfterAllKeys => {
                "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
            }
            RuleError::ChannelAfterAllChannels => {
                "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels"
            }
            RuleError::NoSuchPassword => {
                "The password you are trying to remove from the user does not exist"
            }
            RuleError::BadHash => {
                "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"
            }
        }
    }
}

/// Why a command was refused by [`User::check`] (ordered: a key denial is the more precise
/// answer, as Valkey's ACLCheckAllUserCommandPerm picks it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Denied {
    Command,
    /// The first key argument refused.
    Key(Bytes),
}

/// A script's caller whose user is restricted, carried by the script's op to the core that
/// runs it: each `redis.call` is checked against `user`, and a refusal goes to `users`' ACL
/// LOG (context `lua`, with `client`'s CLIENT LIST line) and the audit log, as Valkey logs it.
#[derive(Clone)]
pub struct Caller {
    pub user: Arc<User>,
    pub client: Arc<crate::state::ClientInfo>,
    pub users: Arc<Users>,
    /// `acllog-max-len` when the script was called.
    pub log_max_len: usize,
}

/// A key pattern and what it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern {
    pub pattern: Vec<u8>,
    pub perms: u8,
    /// For the common `prefix*` form (one trailing `*`, no other glob character): the
    /// prefix's length, matched with a compare instead of the glob (benches/acl_check.rs).
    prefix: Option<usize>,
}

impl KeyPattern {
    fn new(pattern: &[u8], perms: u8) -> KeyPattern {
        let prefix = match pattern.split_last() {
            Some((b'*', head)) if !head.iter().any(|c| b"*?[\\".contains(c)) => Some(head.len()),
            _ => None,
        };
        KeyPattern {
            pattern: pattern.to_vec(),
            perms,
            prefix,
        }
    }

    /// Whether `key` matches the pattern (Valkey's glob, case-sensitive).
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self.prefix {
            // Valkey's glob matches nothing against an empty string, `*` included.
            Some(n) => !key.is_empty() && key.starts_with(&self.pattern[..n]),
            None => crate::util::glob_match(&self.pattern, key, false),
        }
    }
}

/// One set of permissions: the user's root selector or a `(...)` one.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Allowed commands, one bit per registry id (subcommands have ids of their own).
    commands: Vec<u64>,
    /// Set by `allcommands`/`+@all`, cleared by `nocommands`/`-@all`: commands added later
    /// would be allowed too (rendered as `+@all`, else `-@all`).
    all_commands: bool,
    /// The command rules after the `+@all`/`-@all` base, in order, each command or category
    /// once (a later rule for it replaces the earlier): what ACL LIST shows.
    rules: Vec<String>,
    all_keys: bool,
    keys: Vec<KeyPattern>,
    all_channels: bool,
    channels: Vec<Vec<u8>>,
}

impl Selector {
    fn new() -> Selector {
        Selector {
            commands: vec![0; registry().len().div_ceil(64)],
            all_commands: false,
            rules: Vec::new(),
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
        }
    }

    fn allows_command(&self, id: usize) -> bool {
        self.commands[id / 64] & (1 << (id % 64)) != 0
    }

    fn set_command(&mut self, id: usize, on: bool) {
        if on {
            self.commands[id / 64] |= 1 << (id % 64);
        } else {
            self.commands[id / 64] &= !(1 << (id % 64));
        }
    }

    /// A command and, for a container, all its subcommands.
    fn set_command_tree(&mut self, id: usize, on: bool) {
        self.set_command(id, on);
        for s in registry().subs_of(id) {
            self.set_command(s, on);
        }
    }

    fn update_rules(&mut self, body: &str, allow: bool) {
        self.rules.retain(|r| r[1..] != *body);
        self.rules
            .push(format!("{}{body}", if allow { '+' } else { '-' }));
    }

    /// Applies one rule that belongs to a selector (commands, keys, channels).
    fn apply(&mut self, op: &[u8]) -> Result<(), RuleError> {
        let lower = op.to_ascii_lowercase();
        match lower.as_slice() {
            b"allcommands" | b"+@all" | b"nocommands" | b"-@all" => {
                let on = matches!(lower.as_slice(), b"allcommands" | b"+@all");
                self.commands.fill(if on { u64::MAX } else { 0 });
                self.all_commands = on;
                self.rules.clear();
                return Ok(());
            }
            b"allkeys" => return self.apply(b"~*"),
            b"resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
                return Ok(());
            }
            b"allchannels" => return self.apply(b"&*"),
            b"resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
                return Ok(());
            }
            _ => {}
        }
        match op.first() {
            Some(b'+' | b'-') if op.get(1) == Some(&b'@') => {
                let allow = op[0] == b'+';
                let cat = category::by_name(&op[2..]).ok_or(RuleError::UnknownCommand)?;
                let reg = registry();
                for id in 0..reg.len() {
                    if reg.categories(id) & cat != 0 {
                        self.set_command(id, allow);
                    }
                }
                self.update_rules(&String::from_utf8_lossy(&lower[1..]), allow);
                Ok(())
            }
            Some(b'+' | b'-') => {
                let allow = op[0] == b'+';
                let name = &op[1..];
                let id = match name.iter().position(|&b| b == b'|') {
                    None => lookup(name).ok_or(RuleError::UnknownCommand)?,
                    Some(bar) => {
                        let parent = lookup(&name[..bar]).ok_or(RuleError::UnknownCommand)?;
                        if !matches!(registry().def(parent).exec, Exec::Container) {
                            // Valkey's deprecated first-argument rules (+select|0) are not
                            // supported: no command here takes them.
                            return Err(RuleError::UnknownCommand);
                        }
                        lookup_sub(parent, &name[bar + 1..]).ok_or(RuleError::UnknownCommand)?
                    }
                };
                self.set_command_tree(id, allow);
                self.update_rules(registry().full_name(id), allow);
                Ok(())
            }
            Some(b'~' | b'%') => {
                if self.all_keys {
                    return Err(RuleError::PatternAfterAllKeys);
                }
                let (perms, pattern) = if op[0] == b'%' {
                    let tilde = op
                        .iter()
                        .position(|&b| b == b'~')
                        .ok_or(RuleError::Syntax)?;
                    let mut perms = 0;
                    for &c in &op[1..tilde] {
                        match c.to_ascii_uppercase() {
                            b'R' if perms & READ == 0 => perms |= READ,
                            b'W' if perms & WRITE == 0 => perms |= WRITE,
                            _ => return Err(RuleError::Syntax),
                        }
                    }
                    if perms == 0 || tilde + 1 == op.len() {
                        return Err(RuleError::Syntax);
                    }
                    (perms, &op[tilde + 1..])
                } else {
                    (READ | WRITE, &op[1..])
                };
                if pattern == b"*" && perms == READ | WRITE {
                    self.all_keys = true;
                    self.keys.clear();
                } else if let Some(p) = self.keys.iter_mut().find(|p| p.pattern == pattern) {
                    p.perms |= perms;
                } else {
                    self.keys.push(KeyPattern::new(pattern, perms));
                }
                Ok(())
            }
            Some(b'&') => {
                if self.all_channels {
                    return Err(RuleError::ChannelAfterAllChannels);
                }
                let pattern = &op[1..];
                if pattern == b"*" {
                    self.all_channels = true;
                    self.channels.clear();
                } else if !self.channels.iter().any(|c| c == pattern) {
                    self.channels.push(pattern.to_vec());
                }
                Ok(())
            }
            _ => Err(RuleError::Syntax),
        }
    }

    /// The rules of the key patterns: `~pay:*`, `%R~card:*` (or `~*`).
    fn key_rules(&self) -> Vec<String> {
        if self.all_keys {
            return vec!["~*".into()];
        }
        let perms = |p: &KeyPattern| match p.perms {
            READ => "%R",
            WRITE => "%W",
            _ => "",
        };
        self.keys
            .iter()
            .map(|p| format!("{}~{}", perms(p), String::from_utf8_lossy(&p.pattern)))
            .collect()
    }

    /// `~pay:* %R~card:*` (or `~*`), as ACL LIST and GETUSER show keys.
    pub fn describe_keys(&self) -> String {
        self.key_rules().join(" ")
    }

    /// `&*`, or the channel patterns (GETUSER's form, without `resetchannels`).
    pub fn describe_channels(&self) -> String {
        if self.all_channels {
            return "&*".into();
        }
        let pats: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect();
        pats.join(" ")
    }

    /// `+@all -debug`, `-@all +get +@read`.
    pub fn describe_commands(&self) -> String {
        let mut s = String::from(if self.all_commands { "+@all" } else { "-@all" });
        for r in &self.rules {
            s.push(' ');
            s.push_str(r);
        }
        s
    }

    /// The selector as ACL LIST shows it, one rule each: keys, channels, commands.
    fn rules(&self, out: &mut Vec<String>) {
        out.extend(self.key_rules());
        if self.all_channels {
            out.push("&*".into());
        } else {
            out.push("resetchannels".into());
            out.extend(
                self.channels
                    .iter()
                    .map(|c| format!("&{}", String::from_utf8_lossy(c))),
            );
        }
        out.push(if self.all_commands { "+@all" } else { "-@all" }.into());
        out.extend(self.rules.iter().cloned());
    }

    /// The selector as ACL LIST shows it: keys, channels, commands.
    fn describe(&self) -> String {
        let mut rules = Vec::new();
        self.rules(&mut rules);
        rules.join(" ")
    }

    /// Whether this selector lets `def` (registry id `id`) run with `args`.
    fn check(&self, id: usize, def: &CommandDef, args: &[Bytes]) -> Result<(), Denied> {
        if def.flags & flags::NO_AUTH == 0 && !self.allows_command(id) {
            return Err(Denied::Command);
        }
        if self.all_keys || !def.keys.has_keys() {
            return Ok(());
        }
        // What each key needs comes from the command's key specs, as in Valkey: INCR's key
        // needs read and write, EXISTS's any matching pattern, SUNIONSTORE's destination
        // write and its sources read (`KeyAccess`). A row without it (none has keys and no
        // access: a test checks) is taken to read and write every key, the worst case.
        let (first, rest) = def.key_access.unwrap_or(KeyAccess::READ_WRITE).needs(args);
        let mut need = first;
        for p in def.keys.positions(args) {
            let key = &args[p];
            let ok = self
                .keys
                .iter()
                .any(|k| k.perms & need == need && k.matches(key));
            if !ok {
                return Err(Denied::Key(key.clone()));
            }
            need = rest;
        }
        Ok(())
    }
}

/// A user: immutable once published in [`Users`]; a change publishes a new record.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    /// `sanitize-payload` (true, the default) or `skip-sanitize-payload`: accepted and shown;
    /// RESTORE payloads are always checked here.
    pub sanitize_payload: bool,
    /// SHA-256 digests of the passwords, lowercase hex, in the order they were added.
    passwords: Vec<String>,
    root: Selector,
    selectors: Vec<Selector>,
    /// Every command on every key, no other selector needed: the check is skipped.
    unrestricted: bool,
}

/// SHA-256 of a password as lowercase hex (what ACL LIST shows after `#`).
pub fn hash_password(password: &[u8]) -> String {
    let digest = Sha256::digest(password);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn valid_hash(h: &[u8]) -> bool {
    h.len() == 64 && h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Compares without an early exit, so response time does not reveal how much of a guessed
/// digest matched (Valkey's time_independent_strcmp).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

impl User {
    /// A new user as ACL SETUSER creates it: off, no passwords, no commands, no keys.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            sanitize_payload: true,
            passwords: Vec::new(),
            root: Selector::new(),
            selectors: Vec::new(),
            unrestricted: false,
        }
    }

    /// The `default` user: on, nopass, every command and key, unless `requirepass` gives
    /// it a password.
    pub fn default_user(requirepass: Option<&str>) -> User {
        let mut u = User::new("default");
        for rule in ["on", "allkeys", "allchannels", "allcommands"] {
            u.apply(rule.as_bytes())
                .expect("the default user's rules are valid");
        }
        u.set_requirepass(requirepass);
        u
    }

    /// What `requirepass` does to the default user: `resetpass` then `>pass`, or `nopass`.
    fn set_requirepass(&mut self, requirepass: Option<&str>) {
        self.passwords.clear();
        match requirepass {
            Some(p) => {
                self.nopass = false;
                self.passwords.push(hash_password(p.as_bytes()));
            }
            None => self.nopass = true,
        }
    }

    pub fn passwords(&self) -> &[String] {
        &self.passwords
    }

    pub fn root(&self) -> &Selector {
        &self.root
    }

    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Applies one SETUSER rule (a `(...)` selector is one rule).
    pub fn apply(&mut self, op: &[u8]) -> Result<(), RuleError> {
        let r = self.apply_rule(op);
        self.unrestricted = self.root.all_commands
            && self.root.rules.is_empty()
            && self.root.all_keys
            && self.selectors.is_empty();
        r
    }

    fn apply_rule(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if op.len() >= 2 && op[0] == b'(' && op[op.len() - 1] == b')' {
            let mut s = Selector::new();
            for rule in op[1..op.len() - 1]
                .split(|&b| b == b' ')
                .filter(|r| !r.is_empty())
            {
                s.apply(rule)?;
            }
            self.selectors.push(s);
            return Ok(());
        }
        match op.to_ascii_lowercase().as_slice() {
            b"on" => self.enabled = true,
            b"off" => self.enabled = false,
            b"nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            b"resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            b"sanitize-payload" => self.sanitize_payload = true,
            b"skip-sanitize-payload" => self.sanitize_payload = false,
            b"clearselectors" => self.selectors.clear(),
            b"reset" => {
                for rule in [
                    "resetpass",
                    "resetkeys",
                    "resetchannels",
                    "off",
                    "sanitize-payload",
                    "clearselectors",
                    "-@all",
                ] {
                    self.apply_rule(rule.as_bytes())
                        .expect("reset's rules are valid");
                }
            }
            _ => match op.first() {
                Some(b'>') => {
                    let h = hash_password(&op[1..]);
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                }
                Some(b'#') => {
                    if !valid_hash(&op[1..]) {
                        return Err(RuleError::BadHash);
                    }
                    let h = String::from_utf8_lossy(&op[1..]).into_owned();
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                }
                Some(b'<') => {
                    let h = hash_password(&op[1..]);
                    self.remove_password(&h)?;
                }
                Some(b'!') => {
                    if !valid_hash(&op[1..]) {
                        return Err(RuleError::BadHash);
                    }
                    self.remove_password(&String::from_utf8_lossy(&op[1..]))?;
                }
                _ => self.root.apply(op)?,
            },
        }
        Ok(())
    }

    fn remove_password(&mut self, hash: &str) -> Result<(), RuleError> {
        let before = self.passwords.len();
        self.passwords.retain(|p| p != hash);
        if self.passwords.len() == before {
            return Err(RuleError::NoSuchPassword);
        }
        Ok(())
    }

    /// Whether `password` authenticates this user (Valkey's ACLCheckUserCredentials).
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let h = hash_password(password);
        // Every digest is compared, so timing does not tell which one matched.
        self.passwords.iter().fold(false, |ok, p| {
            constant_time_eq(p.as_bytes(), h.as_bytes()) | ok
        })
    }

    /// The flags ACL GETUSER lists.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        f.push(if self.sanitize_payload {
            "sanitize-payload"
        } else {
            "skip-sanitize-payload"
        });
        f
    }

    /// The user's rules as ACL LIST shows them, one each (a `(...)` selector is one): the
    /// rules that make the user again when applied to a new one (passwords as digests).
    pub fn rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = self.flag_names().into_iter().map(String::from).collect();
        rules.extend(self.passwords.iter().map(|p| format!("#{p}")));
        self.root.rules(&mut rules);
        rules.extend(self.selectors.iter().map(|s| format!("({})", s.describe())));
        rules
    }

    /// The user as ACL LIST shows it (`user default on nopass sanitize-payload ~* &* +@all`).
    pub fn describe(&self) -> String {
        format!("user {} {}", self.name, self.rules().join(" "))
    }

    /// Whether this user may run every command on every key (the check is skipped).
    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// Whether this user may run command `id` (`def`) with `args`: the root selector or any
    /// other one must allow the command and all its keys.
    #[inline]
    pub fn check(&self, id: usize, def: &CommandDef, args: &[Bytes]) -> Result<(), Denied> {
        if self.unrestricted {
            return Ok(());
        }
        let mut worst = match self.root.check(id, def, args) {
            Ok(()) => return Ok(()),
            Err(d) => d,
        };
        for s in &self.selectors {
            match s.check(id, def, args) {
                Ok(()) => return Ok(()),
                Err(d) if d > worst => worst = d,
                Err(_) => {}
            }
        }
        Err(worst)
    }
}

/// The reply to a refused command (Valkey 8's texts).
pub fn denied_error(user: &User, full_name: &str, denied: &Denied) -> String {
    match denied {
        Denied::Command => format!(
            "NOPERM User {} has no permissions to run the '{full_name}' command",
            user.name
        ),
        Denied::Key(_) => "NOPERM No permissions to access a key".into(),
    }
}

/// A client's view of its user: the record and the registry epoch it was read at.
pub struct Session {
    pub user: Arc<User>,
    epoch: u64,
}

/// One ACL LOG entry: a refused command, key or authentication (Valkey's fields).
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// How many similar refusals it stands for.
    pub count: u64,
    /// `command`, `key` or `auth`.
    pub reason: &'static str,
    /// `toplevel` or `multi` (a command queued in a transaction).
    pub context: &'static str,
    /// The command's full name, the key, or `AUTH`.
    pub object: String,
    pub username: String,
    /// The client's CLIENT LIST line at the last refusal.
    pub client_info: String,
    pub entry_id: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A refusal repeating an entry created less than this long ago counts in it (Valkey's
/// `ACL_LOG_GROUPING_MAX_TIME_DELTA`).
const LOG_GROUPING_MS: u64 = 60_000;

/// ACL LOG: newest entry first.
#[derive(Default)]
struct Log {
    entries: std::collections::VecDeque<LogEntry>,
    next_id: u64,
}

/// What was refused, for [`Users::log`].
pub struct Refusal<'a> {
    pub reason: &'static str,
    pub context: &'static str,
    pub object: &'a [u8],
    pub username: &'a str,
}

/// The node's users.
pub struct Users {
    log: std::sync::Mutex<Log>,
    /// Refusals by reason since the start or CONFIG RESETSTAT (INFO stats'
    /// `acl_access_denied_auth`, `_cmd`, `_key`): authentication, command, key.
    denied: [AtomicU64; 3],
    users: RwLock<BTreeMap<String, Arc<User>>>,
    /// Bumped by every change; a session whose epoch differs re-reads its user.
    epoch: AtomicU64,
    /// Whether a new connection must authenticate: the default user is off or has no
    /// `nopass` (Valkey's authRequired), or the users are sealed; kept here so the check
    /// costs one load.
    default_requires_auth: AtomicBool,
    /// Set while a cluster node does not know yet which users it enforces (see
    /// [`Users::seal`]): nobody authenticates, every client must.
    sealed: AtomicBool,
    /// In a cluster: how far this node applied the users the cluster committed, and the
    /// outcomes of recent changes (`acl/replicated.rs`).
    committed: std::sync::Mutex<replicated::Committed>,
}

/// A user name Valkey refuses (ACL SETUSER's error).
pub const BAD_NAME: &str = "ERR Usernames can't contain spaces or null characters";
/// ACL DELUSER default's error.
const DEFAULT_STAYS: &str = "ERR The 'default' user cannot be removed";

impl Users {
    pub fn new(requirepass: Option<&str>) -> Users {
        let default = User::default_user(requirepass);
        let users = Users {
            default_requires_auth: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            committed: Default::default(),
            users: RwLock::new(BTreeMap::new()),
            epoch: AtomicU64::new(0),
            log: std::sync::Mutex::new(Log::default()),
            denied: Default::default(),
        };
        users.publish(default);
        users
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<User>>> {
        // A panic while holding the lock leaves the map whole (inserts and removes only).
        self.users.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<User>>> {
        self.users.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes whether `default` (the default user's new record) makes clients authenticate.
    fn note_default(&self, default: &User) {
        let sealed = self.sealed.load(Ordering::Relaxed);
        self.default_requires_auth.store(
            !default.enabled || !default.nopass || sealed,
            Ordering::Relaxed,
        );
    }

    fn publish(&self, user: User) {
        if user.name == "default" {
            self.note_default(&user);
        }
        self.write().insert(user.name.clone(), Arc::new(user));
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Replaces every user at once (ACL LOAD, the aclfile at startup); `users` holds
    /// `default`. Like a SETUSER or DELUSER, it reaches clients at their next command: a
    /// client whose user is gone is disconnected then, one whose user changed runs with the
    /// new rules (Valkey disconnects the first at once, switches the second too).
    fn replace_all(&self, users: BTreeMap<String, User>) {
        let default = users
            .get("default")
            .expect("a user set holds the default user");
        let mut map = self.write();
        self.note_default(default);
        *map = users.into_iter().map(|(n, u)| (n, Arc::new(u))).collect();
        drop(map);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self, name: &[u8]) -> Option<Arc<User>> {
        let name = std::str::from_utf8(name).ok()?;
        self.read().get(name).cloned()
    }

    /// Every user, by name.
    pub fn all(&self) -> Vec<Arc<User>> {
        self.read().values().cloned().collect()
    }

    /// A session on the default user (a new connection, or after RESET).
    pub fn default_session(&self) -> Session {
        let epoch = self.epoch.load(Ordering::Acquire);
        Session {
            user: self
                .get(b"default")
                .expect("the default user always exists"),
            epoch,
        }
    }

    /// A session on `user` (after AUTH).
    pub fn session(&self, user: Arc<User>) -> Session {
        Session {
            user,
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    pub fn default_requires_auth(&self) -> bool {
        self.default_requires_auth.load(Ordering::Relaxed)
    }

    /// Brings `session` up to date with the registry; false when its user was deleted.
    #[inline]
    pub fn refresh(&self, session: &mut Session) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        if epoch == session.epoch {
            return true;
        }
        match self.get(session.user.name.as_bytes()) {
            Some(u) => {
                session.user = u;
                session.epoch = epoch;
                true
            }
            None => false,
        }
    }

    /// Notes a refusal in ACL LOG (at most `max_len` entries kept, newest first): a
    /// refusal like an entry created less than a minute ago counts in that entry, which
    /// moves to the front, as in Valkey.
    pub fn log(&self, what: Refusal<'_>, client_info: String, now_ms: u64, max_len: usize) {
        let counter = match what.reason {
            "auth" => 0,
            "command" => 1,
            _ => 2,
        };
        self.denied[counter].fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let object = String::from_utf8_lossy(what.object).into_owned();
        let similar = log.entries.iter().position(|e| {
            e.reason == what.reason
                && e.context == what.context
                && e.object == object
                && e.username == what.username
                && now_ms.saturating_sub(e.created_ms) < LOG_GROUPING_MS
        });
        let entry = match similar.and_then(|i| log.entries.remove(i)) {
            Some(mut e) => {
                e.count += 1;
                e.updated_ms = now_ms;
                e.client_info = client_info;
                e
            }
            None => {
                log.next_id += 1;
                LogEntry {
                    count: 1,
                    reason: what.reason,
                    context: what.context,
                    object,
                    username: what.username.to_string(),
                    client_info,
                    entry_id: log.next_id - 1,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                }
            }
        };
        log.entries.push_front(entry);
        log.entries.truncate(max_len);
    }

    /// The newest `count` entries of ACL LOG.
    pub fn log_entries(&self, count: usize) -> Vec<LogEntry> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.entries.iter().take(count).cloned().collect()
    }

    /// ACL LOG RESET.
    /// INFO stats' `acl_access_denied_auth`, `_cmd` and `_key`: refusals since the start or
    /// CONFIG RESETSTAT (the ones ACL LOG notes, counted one by one).
    pub fn denied_counts(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.denied[i].load(Ordering::Relaxed))
    }

    /// CONFIG RESETSTAT.
    pub fn reset_denied_counts(&self) {
        for d in &self.denied {
            d.store(0, Ordering::Relaxed);
        }
    }

    pub fn log_reset(&self) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .clear();
    }

    /// The user `name` if `password` authenticates it (nobody while the users are sealed).
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        if self.sealed() {
            return None;
        }
        self.get(name).filter(|u| u.accepts(password))
    }

    /// Until [`Users::unseal`], nobody authenticates and every client must: a cluster node
    /// starting up does not know yet whether it enforces its configured users or the ones
    /// its cluster committed (stored in its data dir, which is still opening), and must not
    /// let a client in on a password the cluster has changed meanwhile.
    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Relaxed);
        self.default_requires_auth.store(true, Ordering::Relaxed);
    }

    /// The users are known: clients authenticate against them from now on.
    pub fn unseal(&self) {
        self.sealed.store(false, Ordering::Relaxed);
        let default = self
            .get(b"default")
            .expect("the default user always exists");
        self.note_default(&default);
    }

    pub fn sealed(&self) -> bool {
        self.sealed.load(Ordering::Relaxed)
    }

    /// ACL SETUSER: applies `rules` to `name` (created if new), all or nothing. The error
    /// is the full reply.
    pub fn set_user(&self, name: &[u8], rules: &[Bytes]) -> Result<(), String> {
        if name.iter().any(|&b| b == b' ' || b == 0) {
            return Err(BAD_NAME.into());
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let rules = setuser_rules(rules)?;
        // Changes are applied to a copy and published whole, under the write lock so two
        // SETUSERs of one user do not lose each other's rules.
        let mut map = self.write();
        let user = with_rules(map.get(&name).map(|u| &**u), &name, &rules)?;
        if user.name == "default" {
            self.note_default(&user);
        }
        map.insert(name, Arc::new(user));
        drop(map);
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// ACL DELUSER: removes the users named (never `default`); how many there were.
    pub fn delete(&self, names: &[Bytes]) -> Result<usize, &'static str> {
        if names.iter().any(|n| &n[..] == b"default") {
            return Err(DEFAULT_STAYS);
        }
        let mut map = self.write();
        let mut removed = 0;
        for n in names {
            if map.remove(&*String::from_utf8_lossy(n)).is_some() {
                removed += 1;
            }
        }
        drop(map);
        if removed > 0 {
            self.epoch.fetch_add(1, Ordering::Release);
        }
        Ok(removed)
    }

    /// `requirepass` changed (CONFIG SET): it is the default user's password — except on a
    /// cluster node that enforces its cluster's users, which only ACL SETUSER changes.
    pub fn set_requirepass(&self, requirepass: Option<&str>) -> Result<(), String> {
        if self.committed_at().is_some() {
            return Err(
                "this node enforces the ACL users its cluster committed: use ACL \
                        SETUSER default to change the default user's password on every node"
                    .to_string(),
            );
        }
        let mut user = (*self
            .get(b"default")
            .expect("the default user always exists"))
        .clone();
        user.set_requirepass(requirepass);
        self.publish(user);
        Ok(())
    }
}

/// SETUSER's arguments as rules, a `(...)` selector split over several arguments joined
/// into one; the error is the full reply.
fn setuser_rules(rules: &[Bytes]) -> Result<Vec<Vec<u8>>, String> {
    merge_selectors(rules).map_err(|sel| {
        format!(
            "ERR Unmatched parenthesis in acl selector starting at '{}'.",
            String::from_utf8_lossy(&sel)
        )
    })
}

/// User `name` (`current`, or a new one) with SETUSER's `rules` applied, all or nothing; the
/// error is the full reply.
fn with_rules(current: Option<&User>, name: &str, rules: &[Vec<u8>]) -> Result<User, String> {
    let mut user = current.cloned().unwrap_or_else(|| User::new(name));
    for r in rules {
        user.apply(r).map_err(|e| {
            format!(
                "ERR Error in ACL SETUSER modifier '{}': {}",
                String::from_utf8_lossy(r),
                e.text()
            )
        })?;
    }
    Ok(user)
}

/// Joins SETUSER arguments that form one `(...)` selector split over several arguments; the
/// error is the selector left open (its words so far).
fn merge_selectors(rules: &[impl AsRef<[u8]>]) -> Result<Vec<Vec<u8>>, Vec<u8>> {
    let mut out = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for r in rules {
        let r = r.as_ref();
        match open.as_mut() {
            Some(sel) => {
                sel.push(b' ');
                sel.extend_from_slice(r);
                if r.ends_with(b")") {
                    out.push(open.take().expect("a selector is open"));
                }
            }
            None if r.starts_with(b"(") && !r.ends_with(b")") => open = Some(r.to_vec()),
            None => out.push(r.to_vec()),
        }
    }
    match open {
        Some(sel) => Err(sel),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rules: &[&str]) -> Result<User, RuleError> {
        let mut u = User::new("alice");
        for r in rules {
            u.apply(r.as_bytes())?;
        }
        Ok(u)
    }

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn check(u: &User, a: &[&str]) -> Result<(), Denied> {
        let id = lookup(a[0].as_bytes()).unwrap();
        u.check(id, registry().def(id), &args(a))
    }

    #[test]
    fn renders_users_as_valkey_lists_them() {
        assert_eq!(
            User::default_user(None).describe(),
            "user default on nopass sanitize-payload ~* &* +@all"
        );
        assert_eq!(
            User::new("alice").describe(),
            "user alice off sanitize-payload resetchannels -@all"
        );
        let u = user(&[
            "on",
            ">pw",
            "~pay:*",
            "%R~card:*",
            "%W~cnt:*",
            "+@read",
            "-get",
            "+client|id",
            "+get",
            "-@read",
            "&ch*",
            "(~x* +set)",
        ])
        .unwrap();
        assert_eq!(
            u.describe(),
            "user alice on sanitize-payload #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~pay:* %R~card:* %W~cnt:* resetchannels &ch* -@all +client|id +get -@read (~x* resetchannels -@all +set)"
        );
    }

    #[test]
    fn rule_errors() {
        assert_eq!(
            user(&["~a", "~*", "~b"]).unwrap_err(),
            RuleError::PatternAfterAllKeys
        );
        assert_eq!(user(&["%X~a"]).unwrap_err(), RuleError::Syntax);
        assert_eq!(user(&["%~a"]).unwrap_err(), RuleError::Syntax);
        assert_eq!(user(&["+nosuch"]).unwrap_err(), RuleError::UnknownCommand);
        assert_eq!(user(&["+@nosuch"]).unwrap_err(), RuleError::UnknownCommand);
        assert_eq!(
            user(&["+client|nosuch"]).unwrap_err(),
            RuleError::UnknownCommand
        );
        assert_eq!(user(&["bogus"]).unwrap_err(), RuleError::Syntax);
        assert_eq!(user(&["<nopw"]).unwrap_err(), RuleError::NoSuchPassword);
        assert_eq!(user(&["#abc"]).unwrap_err(), RuleError::BadHash);
        assert_eq!(
            user(&["&a", "&*", "&b"]).unwrap_err(),
            RuleError::ChannelAfterAllChannels
        );
    }

    #[test]
    fn passwords_are_hashes() {
        let mut u = user(&["on", ">pw", ">pw2"]).unwrap();
        assert!(u.accepts(b"pw") && u.accepts(b"pw2") && !u.accepts(b"nope"));
        u.apply(b"<pw").unwrap();
        assert!(!u.accepts(b"pw"));
        u.apply(b"off").unwrap();
        assert!(!u.accepts(b"pw2"));
        let h = hash_password(b"x");
        let u = user(&["on", &format!("#{h}")]).unwrap();
        assert!(u.accepts(b"x"));
        assert!(user(&["on", "nopass"]).unwrap().accepts(b"anything"));
    }

    #[test]
    fn commands_and_keys_are_checked() {
        let u = user(&["on", "~pay:*", "%R~card:*", "%W~cnt:*", "+@read", "+set"]).unwrap();
        assert_eq!(check(&u, &["get", "pay:1"]), Ok(()));
        assert_eq!(check(&u, &["get", "card:1"]), Ok(()));
        assert_eq!(
            check(&u, &["get", "cnt:1"]),
            Err(Denied::Key("cnt:1".into()))
        );
        assert_eq!(check(&u, &["set", "cnt:1", "v"]), Ok(()));
        assert_eq!(
            check(&u, &["set", "card:1", "v"]),
            Err(Denied::Key("card:1".into()))
        );
        assert_eq!(check(&u, &["del", "pay:1"]), Err(Denied::Command));
        // A selector adds what the root one lacks.
        let u = user(&["on", "~pay:*", "+get", "(~log:* +set)"]).unwrap();
        assert_eq!(check(&u, &["set", "log:1", "v"]), Ok(()));
        assert_eq!(
            check(&u, &["set", "pay:1", "v"]),
            Err(Denied::Key("pay:1".into()))
        );
        assert!(User::default_user(None).unrestricted);
    }

    #[test]
    fn every_command_with_keys_says_what_it_does_to_them() {
        let reg = registry();
        for id in 0..reg.len() {
            let def = reg.def(id);
            assert_eq!(
                def.keys.has_keys(),
                def.key_access.is_some(),
                "{}: a row with keys sets key_access (from Valkey's key specs), one without \
                 does not",
                reg.full_name(id)
            );
        }
    }

    /// Each key needs what Valkey's key specs say (acl.c's ACLSelectorCheckKey): ACCESS
    /// needs read, INSERT/DELETE/UPDATE write, neither any matching pattern.
    #[test]
    fn key_permissions_follow_valkeys_key_specs() {
        let u = user(&["on", "%R~r:*", "%W~w:*", "~rw:*", "+@all"]).unwrap();
        let denied = |k: &str| Err(Denied::Key(k.to_string().into()));
        // RW ACCESS UPDATE: read and write.
        assert_eq!(check(&u, &["incr", "w:1"]), denied("w:1"));
        assert_eq!(check(&u, &["incr", "r:1"]), denied("r:1"));
        assert_eq!(check(&u, &["incr", "rw:1"]), Ok(()));
        assert_eq!(check(&u, &["lpop", "w:1"]), denied("w:1"));
        assert_eq!(check(&u, &["getdel", "w:1"]), denied("w:1"));
        // SET is OW UPDATE, RW ACCESS UPDATE with GET (anywhere after the value).
        assert_eq!(check(&u, &["set", "w:1", "v"]), Ok(()));
        assert_eq!(check(&u, &["set", "w:1", "v", "EX", "10"]), Ok(()));
        assert_eq!(check(&u, &["set", "w:1", "v", "get"]), denied("w:1"));
        assert_eq!(
            check(&u, &["set", "w:1", "v", "EX", "10", "GET"]),
            denied("w:1")
        );
        assert_eq!(check(&u, &["set", "rw:1", "v", "GET"]), Ok(()));
        // The value is not an option.
        assert_eq!(check(&u, &["set", "w:1", "get"]), Ok(()));
        // RO ACCESS: read.
        assert_eq!(check(&u, &["get", "w:1"]), denied("w:1"));
        assert_eq!(check(&u, &["get", "r:1"]), Ok(()));
        // RO without ACCESS: any matching pattern.
        for cmd in ["exists", "type", "strlen", "touch"] {
            assert_eq!(check(&u, &[cmd, "w:1"]), Ok(()), "{cmd}");
            assert_eq!(check(&u, &[cmd, "r:1"]), Ok(()), "{cmd}");
            assert_eq!(check(&u, &[cmd, "x:1"]), denied("x:1"), "{cmd}");
        }
        assert_eq!(check(&u, &["object", "encoding", "w:1"]), Ok(()));
        // Writes without ACCESS: write.
        assert_eq!(check(&u, &["del", "w:1", "w:2"]), Ok(()));
        assert_eq!(check(&u, &["del", "w:1", "r:2"]), denied("r:2"));
        assert_eq!(check(&u, &["lpush", "w:1", "a"]), Ok(()));
        // Multi-key commands: each key as its own key spec says.
        assert_eq!(check(&u, &["copy", "r:1", "w:1"]), Ok(()));
        assert_eq!(check(&u, &["copy", "w:1", "r:1"]), denied("w:1"));
        assert_eq!(check(&u, &["sunionstore", "w:d", "r:1", "r:2"]), Ok(()));
        assert_eq!(
            check(&u, &["sunionstore", "w:d", "r:1", "w:2"]),
            denied("w:2")
        );
        assert_eq!(check(&u, &["sunionstore", "r:d", "r:1"]), denied("r:d"));
        assert_eq!(
            check(&u, &["zunionstore", "w:d", "2", "r:1", "r:2"]),
            Ok(())
        );
        assert_eq!(check(&u, &["bitop", "and", "w:d", "r:1", "r:2"]), Ok(()));
        assert_eq!(check(&u, &["zrangestore", "w:d", "r:1", "0", "-1"]), Ok(()));
        // LMOVE's source is RW ACCESS DELETE, its destination RW INSERT.
        assert_eq!(
            check(&u, &["lmove", "rw:s", "w:d", "LEFT", "RIGHT"]),
            Ok(())
        );
        assert_eq!(
            check(&u, &["lmove", "w:s", "w:d", "LEFT", "RIGHT"]),
            denied("w:s")
        );
        assert_eq!(
            check(&u, &["lmove", "rw:s", "r:d", "LEFT", "RIGHT"]),
            denied("r:d")
        );
        assert_eq!(check(&u, &["smove", "rw:s", "w:d", "m"]), Ok(()));
        assert_eq!(check(&u, &["rename", "rw:s", "w:d"]), Ok(()));
        assert_eq!(check(&u, &["rename", "w:s", "w:d"]), denied("w:s"));
        // BITFIELD reads only while every operation is a GET.
        assert_eq!(check(&u, &["bitfield", "r:1", "GET", "u8", "0"]), Ok(()));
        assert_eq!(
            check(
                &u,
                &["bitfield", "r:1", "OVERFLOW", "SAT", "get", "u8", "0"]
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &u,
                &["bitfield", "r:1", "GET", "u8", "0", "SET", "u8", "0", "1"]
            ),
            denied("r:1")
        );
        assert_eq!(
            check(&u, &["bitfield", "w:1", "INCRBY", "u8", "0", "1"]),
            denied("w:1")
        );
        assert_eq!(
            check(&u, &["bitfield", "rw:1", "INCRBY", "u8", "0", "1"]),
            Ok(())
        );
        // A GET missing its arguments is not understood: a write, as in Valkey.
        assert_eq!(check(&u, &["bitfield", "r:1", "GET", "u8"]), denied("r:1"));
        // A script's keys: read and write (EVAL), read (EVAL_RO).
        assert_eq!(check(&u, &["eval", "return 1", "1", "w:1"]), denied("w:1"));
        assert_eq!(check(&u, &["eval", "return 1", "1", "rw:1"]), Ok(()));
        assert_eq!(check(&u, &["eval_ro", "return 1", "1", "r:1"]), Ok(()));
        // `~*`/allkeys and `%RW~` allow everything; `%R~x %W~x` adds up to `~x`.
        let all = user(&["on", "allkeys", "+@all"]).unwrap();
        assert_eq!(check(&all, &["incr", "w:1"]), Ok(()));
        let both = user(&["on", "%R~k", "%W~k", "+@all"]).unwrap();
        assert_eq!(check(&both, &["incr", "k"]), Ok(()));
        let rw = user(&["on", "%RW~k", "+@all"]).unwrap();
        assert_eq!(check(&rw, &["getdel", "k"]), Ok(()));
        // A selector allows what the root one does not.
        let sel = user(&["on", "%W~c:*", "+@all", "(%RW~c:* +incr)"]).unwrap();
        assert_eq!(check(&sel, &["incr", "c:1"]), Ok(()));
    }

    #[test]
    fn prefix_patterns_match_as_the_glob_does() {
        let keys: [&[u8]; 7] = [b"", b"k", b"key:", b"key:1", b"KEY:1", b"ke", b"key*x"];
        for pattern in [
            &b"key:*"[..],
            b"*",
            b"k*",
            b"key\\*",
            b"k?y:*",
            b"key:[0-9]*",
            b"key",
            b"**",
        ] {
            let p = KeyPattern::new(pattern, READ);
            for key in keys {
                assert_eq!(
                    p.matches(key),
                    crate::util::glob_match(pattern, key, false),
                    "{:?} against {:?}",
                    String::from_utf8_lossy(pattern),
                    String::from_utf8_lossy(key)
                );
            }
        }
        assert_eq!(KeyPattern::new(b"key:*", READ).prefix, Some(4));
        assert_eq!(KeyPattern::new(b"k?y:*", READ).prefix, None);
    }
}
