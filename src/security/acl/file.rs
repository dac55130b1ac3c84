//! Users as lines of text, in the form ACL LIST shows them
//! (`user alice on #<sha256> ~pay:* resetchannels -@all +get`): the config file's `user`
//! directive, and the ACL file (`aclfile`) that ACL LOAD reads and ACL SAVE writes. Valkey's
//! rules and error texts (acl.c: ACLAppendUserForLoading, ACLLoadFromFile, ACLSaveToFile).
//!
//! Neither holds a password in clear: a `user` line's `>password` is kept as its digest
//! (`#<sha256>`) from the moment the line is read, and ACL SAVE writes digests only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{RuleError, User, Users, merge_selectors};
use crate::config::strerror;

/// Why ACL LOAD (or loading the `aclfile` at startup) changed nothing: Valkey's texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The file could not be read.
    Open { path: String, reason: String },
    /// Lines that do not make valid users: each problem as Valkey words it
    /// (`users.acl:3: Syntax error. `), in file order.
    Invalid(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open { path, reason } => {
                write!(f, "Error loading ACLs, opening file '{path}': {reason}")
            }
            LoadError::Invalid(problems) => write!(
                f,
                "{problems}WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
            ),
        }
    }
}

/// Why ACL SAVE failed (what the log says; the client gets Valkey's fixed reply).
#[derive(Debug)]
pub struct SaveError {
    /// `Opening temp ACL file`, `Writing ACL file`, `Syncing ACL file`, `Renaming ACL file`
    /// or `Syncing ACL directory`.
    pub step: &'static str,
    pub reason: String,
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for ACL SAVE: {}", self.step, self.reason)
    }
}

/// Whether a user may be named so: no blank (C's isspace) and no NUL, as Valkey's
/// ACLStringHasSpaces.
fn valid_name(name: &[u8]) -> bool {
    !name
        .iter()
        .any(|&b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0))
}

/// A rule a line gave that was refused, and why.
pub(super) type RefusedRule = (Vec<u8>, RuleError);

/// A new user with `rules` applied (words; a `(...)` selector may span several), and every
/// rule refused: the user is what the rules that applied made. The error is a selector left
/// open.
pub(super) fn build(name: &str, rules: &[&[u8]]) -> Result<(User, Vec<RefusedRule>), Vec<u8>> {
    let mut user = User::new(name);
    let mut refused = Vec::new();
    for rule in merge_selectors(rules)? {
        if let Err(e) = user.apply(&rule) {
            refused.push((rule, e));
        }
    }
    Ok((user, refused))
}

/// The `user <name> <rule> ...` directive's arguments (after `user`), checked: the user they
/// make, as ACL LIST shows it without the leading `user ` — what the configuration keeps, so
/// a `>password` is held as its digest only. The error is Valkey's reason for the config line
/// (`Error in user declaration '<rule>': Syntax error`).
///
/// Valkey defers unknown commands to startup, for module commands; tallykv has none, so
/// every rule is checked here and a bad one names its line. (Valkey 7+ quotes the word at the
/// failing rule's index among the directive's arguments, often the user name; this quotes the
/// rule.)
pub fn declaration(args: &[Vec<u8>]) -> Result<String, String> {
    let refuse = |word: &[u8], why: &str| {
        format!(
            "Error in user declaration '{}': {why}",
            String::from_utf8_lossy(word)
        )
    };
    let Some((name, rules)) = args.split_first() else {
        return Err("wrong number of arguments".into());
    };
    if !valid_name(name) {
        return Err(refuse(name, "Spaces not allowed in ACL usernames"));
    }
    let rules: Vec<&[u8]> = rules.iter().map(Vec::as_slice).collect();
    let (user, refused) = build(&String::from_utf8_lossy(name), &rules)
        .map_err(|open| refuse(&open, RuleError::Syntax.text()))?;
    if let Some((rule, e)) = refused.first() {
        return Err(refuse(rule, e.text()));
    }
    let line = user.describe();
    Ok(line.strip_prefix("user ").unwrap_or(&line).to_string())
}

/// A line's words: split at spaces (not quotes: ACL LIST's form has none), each trimmed of
/// tabs and line ends, as Valkey reads an ACL file line.
fn words(line: &[u8]) -> Vec<&[u8]> {
    let edge = |b: &u8| !matches!(b, b'\t' | b'\r' | b'\n');
    line.split(|&b| b == b' ')
        .map(
            |w| match (w.iter().position(edge), w.iter().rposition(edge)) {
                (Some(start), Some(end)) => &w[start..=end],
                _ => &[],
            },
        )
        .filter(|w| !w.is_empty())
        .collect()
}

/// An ACL file's text as users (Valkey's ACLLoadFromFile): each line blank or
/// `user <name> <rules...>`, each user once. Every problem is collected, each naming
/// `file:line`; any problem means no user at all. A file that does not declare `default`
/// gets the fresh default user, with `requirepass` as its password.
fn parse(
    file: &str,
    text: &[u8],
    requirepass: Option<&str>,
) -> Result<BTreeMap<String, User>, LoadError> {
    use fmt::Write as _;
    let mut users = BTreeMap::new();
    let mut problems = String::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let words = words(line);
        let Some((&keyword, rest)) = words.split_first() else {
            continue;
        };
        let Some((&name, rules)) = rest.split_first().filter(|_| keyword == b"user") else {
            let _ = write!(
                problems,
                "{file}:{n} should start with user keyword followed by the username. "
            );
            continue;
        };
        let shown = String::from_utf8_lossy(name);
        if !valid_name(name) {
            let _ = write!(
                problems,
                "'{file}:{n}: username '{shown}' contains invalid characters. "
            );
            continue;
        }
        if users.contains_key(&*shown) {
            let _ = write!(
                problems,
                "WARNING: Duplicate user '{shown}' found on line {n}. "
            );
            continue;
        }
        match build(&shown, rules) {
            Err(_) => {
                let _ = write!(
                    problems,
                    "{file}:{n}: Unmatched parenthesis in selector definition."
                );
                users.insert(shown.to_string(), User::new(&shown));
            }
            Ok((user, refused)) => {
                // An unknown command is named (it reveals nothing); of other refusals only
                // the first, as a later one may follow from it (and a rule may hold a
                // password).
                let mut other_shown = false;
                for (rule, e) in refused {
                    if e == RuleError::UnknownCommand {
                        let _ = write!(
                            problems,
                            "{file}:{n}: Error in applying operation '{}': {}. ",
                            String::from_utf8_lossy(&rule),
                            e.text()
                        );
                    } else if !other_shown {
                        let _ = write!(problems, "{file}:{n}: {}. ", e.text());
                        other_shown = true;
                    }
                }
                users.insert(shown.to_string(), user);
            }
        }
    }
    if !problems.is_empty() {
        return Err(LoadError::Invalid(problems));
    }
    users
        .entry("default".to_string())
        .or_insert_with(|| User::default_user(requirepass));
    Ok(users)
}

/// The ACL file at `path` read and checked, all or nothing ([`parse`]): what ACL LOAD puts in
/// force.
pub(super) fn read(
    path: &str,
    requirepass: Option<&str>,
) -> Result<BTreeMap<String, User>, LoadError> {
    let text = std::fs::read(path).map_err(|e| LoadError::Open {
        path: path.to_string(),
        reason: strerror(&e),
    })?;
    parse(path, &text, requirepass)
}

/// Writes `text` to `path` so that a crash leaves the old file or the new one, never a part:
/// a temporary file beside it, fsynced, renamed over it, and the directory fsynced.
fn write_atomically(path: &Path, text: &[u8]) -> Result<(), SaveError> {
    // Two saves at once (from two cores) each write a file of their own.
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let fail = |step| {
        move |e: std::io::Error| SaveError {
            step,
            reason: strerror(&e),
        }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SAVES.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    // The file holds password digests: a new one is its owner's only; a file that exists
    // keeps the mode it was given.
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(fail("Opening temp ACL file"))?;
        // open(2)'s mode is narrowed by the umask; the old file's mode is kept whole.
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(fail("Opening temp ACL file"))?;
        f.write_all(text).map_err(fail("Writing ACL file"))?;
        f.sync_all().map_err(fail("Syncing ACL file"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(fail("Renaming ACL file"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("Syncing ACL directory"))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

impl Users {
    /// The users a node starts with, once [`Users::new`] made the default one: the config
    /// file's `user` lines ([`declaration`]s) in order — `user default ...` replaces the
    /// default user, requirepass included, as Valkey's `reset` does — or the `aclfile`'s users
    /// (the configuration refuses both at once). The error is what the server prints before
    /// exiting: a missing or malformed aclfile stops it, as it stops Valkey.
    pub fn load_at_startup(
        &self,
        declarations: &[String],
        aclfile: Option<&str>,
        requirepass: Option<&str>,
    ) -> Result<(), String> {
        for d in declarations {
            let words = words(d.as_bytes());
            let (&name, rules) = words.split_first().expect("a declaration names its user");
            let name = String::from_utf8_lossy(name);
            // Checked when the configuration was read; a refusal here would be a bug.
            match build(&name, rules) {
                Ok((user, refused)) if refused.is_empty() => {
                    if !user.enabled {
                        tracing::info!(
                            "The user '{name}' is disabled (there is no 'on' modifier in the user \
                             description). Make sure this is not a configuration error."
                        );
                    }
                    self.publish(user);
                }
                Ok((_, refused)) => {
                    let (rule, e) = &refused[0];
                    return Err(format!(
                        "Error loading ACL rule '{}' for the user named '{name}': {}",
                        String::from_utf8_lossy(rule),
                        e.text()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "Error loading ACL rules for the user named '{name}': {}",
                        RuleError::Syntax.text()
                    ));
                }
            }
        }
        if let Some(path) = aclfile {
            self.load_file(path, requirepass)
                .map_err(|e| format!("Aborting Valkey startup because of ACL errors: {e}"))?;
        }
        Ok(())
    }

    /// ACL LOAD: replaces every user with the ACL file's, all or nothing. A default user the
    /// file does not declare is the fresh one with `requirepass` as its password (Valkey's
    /// would have none: tallykv does not open a node `requirepass` was meant to close).
    pub fn load_file(&self, path: &str, requirepass: Option<&str>) -> Result<(), LoadError> {
        self.replace_all(read(path, requirepass)?);
        Ok(())
    }

    /// ACL SAVE: every user, one ACL LIST line each, written to `path` atomically. The file
    /// is small and saved rarely, so it is written from the calling core's thread, as Valkey
    /// writes it from its main thread.
    pub fn save_file(&self, path: &str) -> Result<(), SaveError> {
        let text = self.text();
        write_atomically(Path::new(path), text.as_bytes())
    }

    /// Every user as ACL LIST shows it, one line each: the ACL file's text.
    fn text(&self) -> String {
        let mut text = String::new();
        for u in self.all() {
            text.push_str(&u.describe());
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(line: &str) -> Result<String, String> {
        let args: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        declaration(&args)
    }

    fn described(users: &BTreeMap<String, User>) -> Vec<String> {
        users.values().map(User::describe).collect()
    }

    #[test]
    fn a_declaration_keeps_digests_not_passwords() {
        let d = declare("alice on >s3cret ~pay:* +get (~log:* +set)").unwrap();
        assert_eq!(
            d,
            format!(
                "alice on sanitize-payload #{} ~pay:* resetchannels -@all +get (~log:* resetchannels -@all +set)",
                super::super::hash_password(b"s3cret")
            )
        );
        assert!(!d.contains("s3cret"));
        assert_eq!(
            declare("alice on bogus").unwrap_err(),
            "Error in user declaration 'bogus': Syntax error"
        );
        assert_eq!(
            declare("alice +nosuch").unwrap_err(),
            "Error in user declaration '+nosuch': Unknown command or category name in ACL"
        );
        assert_eq!(
            declare("alice (~x +get").unwrap_err(),
            "Error in user declaration '(~x +get': Syntax error"
        );
        assert_eq!(
            declaration(&[b"a b".to_vec(), b"on".to_vec()]).unwrap_err(),
            "Error in user declaration 'a b': Spaces not allowed in ACL usernames"
        );
    }

    #[test]
    fn a_saved_file_loads_back_the_same_users() {
        let users = Users::new(Some("pw"));
        users
            .set_user(
                b"app",
                &[
                    "on",
                    ">x",
                    "%R~card:*",
                    "~pay:*",
                    "&ch",
                    "+@read",
                    "-get",
                    "(~log:*",
                    "+set)",
                ]
                .map(|r| bytes::Bytes::from_static(r.as_bytes())),
            )
            .unwrap();
        let text = users.text();
        assert!(!text.contains(">x") && !text.contains(" pw"), "{text}");
        let loaded = parse("users.acl", text.as_bytes(), None).unwrap();
        let before: Vec<String> = users.all().iter().map(|u| u.describe()).collect();
        assert_eq!(described(&loaded), before);
    }

    #[test]
    fn a_file_without_default_gets_the_fresh_one_with_requirepass() {
        let users = parse("f", b"\n  user a on nopass +@all ~*\r\n\n", Some("pw")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users["default"].accepts(b"pw") && !users["default"].accepts(b"x"));
        assert!(users["a"].accepts(b"anything"));
        let users = parse("f", b"", None).unwrap();
        assert_eq!(
            described(&users),
            ["user default on nopass sanitize-payload ~* &* +@all"]
        );
    }

    #[test]
    fn every_problem_is_named_with_valkeys_texts() {
        let text = b"user a on\n# comment\nuser b on bogus >pw also-bogus\nuser a off\n\
                     user c +nosuch +get +nosuch2\nuser d (~x +get\nuser\n";
        let err = parse("users.acl", text, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "users.acl:2 should start with user keyword followed by the username. \
             users.acl:3: Syntax error. \
             WARNING: Duplicate user 'a' found on line 4. \
             users.acl:5: Error in applying operation '+nosuch': Unknown command or category name in ACL. \
             users.acl:5: Error in applying operation '+nosuch2': Unknown command or category name in ACL. \
             users.acl:6: Unmatched parenthesis in selector definition.\
             users.acl:7 should start with user keyword followed by the username. \
             WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        );
        assert_eq!(
            parse("f", b"user a\tb on", None).unwrap_err().to_string(),
            "'f:1: username 'a\tb' contains invalid characters. \
             WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        );
    }

    #[test]
    fn a_load_replaces_every_user_or_none() {
        let users = Users::new(None);
        users
            .set_user(b"old", &[bytes::Bytes::from_static(b"on")])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.acl");
        let path = path.to_str().unwrap();
        assert_eq!(
            users.load_file(path, None).unwrap_err().to_string(),
            format!("Error loading ACLs, opening file '{path}': No such file or directory")
        );
        std::fs::write(path, "user new on nopass ~* +@all\nuser default off\n").unwrap();
        users.load_file(path, None).unwrap();
        let names: Vec<String> = users.all().iter().map(|u| u.name.clone()).collect();
        assert_eq!(names, ["default", "new"]);
        assert!(users.default_requires_auth());
        std::fs::write(path, "user other on\nuser bad bogus\n").unwrap();
        assert!(users.load_file(path, None).is_err());
        let names: Vec<String> = users.all().iter().map(|u| u.name.clone()).collect();
        assert_eq!(names, ["default", "new"]);
        users.save_file(path).unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "user default off sanitize-payload resetchannels -@all\n\
             user new on nopass sanitize-payload ~* resetchannels +@all\n"
        );
        // A new file is its owner's only; an existing one keeps its mode.
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = dir.path().join("fresh.acl");
        let fresh = fresh.to_str().unwrap();
        users.save_file(fresh).unwrap();
        assert_eq!(mode(fresh), 0o600);
        std::fs::set_permissions(path, Permissions::from_mode(0o640)).unwrap();
        users.save_file(path).unwrap();
        assert_eq!(mode(path), 0o640);
        // No temporary file is left beside them.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
