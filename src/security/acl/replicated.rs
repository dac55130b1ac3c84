//! The users a cluster shares: committed through its meta group, so ACL SETUSER, DELUSER or
//! LOAD on any node applies on every node, survives restarts and reaches a node that joins
//! later.
//!
//! A change ([`UsersChange`]) is checked against this node's users first, with the errors a
//! standalone node gives, then committed as one meta entry. Every node applies it in log order
//! to the users it holds ([`Users::apply_replicated`]): SETUSER's rules to the user, DELUSER's
//! names removed, ACL LOAD's users in place of all. So every node ends with the same users,
//! and two SETUSERs sent to two nodes at once both take effect. The proposer learns the outcome
//! from the entry's nonce. A password travels, and is stored, as its SHA-256 digest only.
//!
//! A cluster node enforces its own configured users (`user` lines, aclfile, `requirepass`) only
//! until it holds the cluster's. The first meta leader commits its configured users as the
//! cluster's first set ([`UsersChange::Seed`], taken only where none was committed before).
//! From then on every node enforces the committed users, whatever its config says: after a
//! restart too, and while cut off from the meta group.

use std::collections::{BTreeMap, VecDeque};
use std::sync::MutexGuard;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::file::{self, LoadError};
use super::{BAD_NAME, DEFAULT_STAYS, User, Users, hash_password, setuser_rules, with_rules};

/// A user as the cluster stores it: its name, and its rules as ACL LIST shows them, one each
/// ([`User::rules`]; a `(...)` selector is one). A pattern holding a space survives this form,
/// where it would not survive a line of the ACL file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRules {
    pub name: String,
    pub rules: Vec<String>,
}

impl UserRules {
    fn of(user: &User) -> UserRules {
        UserRules {
            name: user.name.clone(),
            rules: user.rules(),
        }
    }

    /// The user the rules make; the error names the first rule refused (which holds no
    /// password: stored rules carry digests).
    fn build(&self) -> Result<User, String> {
        let rules: Vec<&[u8]> = self.rules.iter().map(|r| r.as_bytes()).collect();
        match file::build(&self.name, &rules) {
            Ok((user, refused)) => match refused.first() {
                None => Ok(user),
                Some((rule, e)) => Err(format!(
                    "user '{}', rule '{}': {}",
                    self.name,
                    String::from_utf8_lossy(rule),
                    e.text()
                )),
            },
            Err(_) => Err(format!(
                "user '{}': unmatched parenthesis in a selector",
                self.name
            )),
        }
    }
}

/// The users `set` makes, by name; the error names the first user that cannot be made (on a
/// node whose `rename-command` differs from the node that made the set, a rule may name a
/// command this node does not have).
fn users_of(set: &[UserRules]) -> Result<BTreeMap<String, User>, String> {
    let mut users = BTreeMap::new();
    for u in set {
        users.insert(u.name.clone(), u.build()?);
    }
    if !users.contains_key("default") {
        return Err("the set has no default user".into());
    }
    Ok(users)
}

/// One change to a cluster's users, as its meta entry carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsersChange {
    /// ACL SETUSER: `rules` (a `(...)` selector is one; a password only as its digest)
    /// applied to user `name`, created if new.
    SetUser { name: String, rules: Vec<Vec<u8>> },
    /// ACL DELUSER: the users named removed (never `default`).
    DelUser { names: Vec<String> },
    /// ACL LOAD: every user replaced by these (`default` among them).
    Load { users: Vec<UserRules> },
    /// The cluster's first users (the configured ones of the meta leader that proposed it):
    /// taken only where no users were committed before, so a second seed changes nothing.
    Seed { users: Vec<UserRules> },
}

/// What a committed change did: how many users it removed (DELUSER's reply), or the error
/// reply refusing it.
pub type Outcome = Result<usize, String>;

/// How many outcomes of committed changes a node remembers (see [`Users::outcome`]).
const OUTCOMES_KEPT: usize = 256;

/// What a cluster node knows of its cluster's users, beside the users themselves.
#[derive(Default)]
pub(super) struct Committed {
    /// The meta log index of the last change applied; None while the node enforces its own
    /// configured users (standalone, or before it received its cluster's).
    applied: Option<u64>,
    /// The outcomes of recent changes, by nonce.
    outcomes: VecDeque<(u64, Outcome)>,
}

/// A SETUSER rule as it may travel and be stored: `>password` as `#<digest>`, `<password` as
/// `!<digest>` (the same user results).
fn hidden(rule: Vec<u8>) -> Vec<u8> {
    match rule.first() {
        Some(b'>') => format!("#{}", hash_password(&rule[1..])).into_bytes(),
        Some(b'<') => format!("!{}", hash_password(&rule[1..])).into_bytes(),
        _ => rule,
    }
}

impl Users {
    fn committed(&self) -> MutexGuard<'_, Committed> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// ACL SETUSER as a change for the cluster, refused as [`Users::set_user`] refuses it
    /// (the same replies).
    pub fn prepare_set_user(&self, name: &[u8], rules: &[Bytes]) -> Result<UsersChange, String> {
        if name.iter().any(|&b| b == b' ' || b == 0) {
            return Err(BAD_NAME.into());
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let rules = setuser_rules(rules)?;
        with_rules(self.get(name.as_bytes()).as_deref(), &name, &rules)?;
        Ok(UsersChange::SetUser {
            name,
            rules: rules.into_iter().map(hidden).collect(),
        })
    }

    /// ACL DELUSER as a change for the cluster, refused as [`Users::delete`] refuses it.
    pub fn prepare_delete(&self, names: &[Bytes]) -> Result<UsersChange, &'static str> {
        if names.iter().any(|n| &n[..] == b"default") {
            return Err(DEFAULT_STAYS);
        }
        Ok(UsersChange::DelUser {
            names: names
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        })
    }

    /// ACL LOAD as a change for the cluster: the file's users, refused as
    /// [`Users::load_file`] refuses them.
    pub fn prepare_load(
        &self,
        path: &str,
        requirepass: Option<&str>,
    ) -> Result<UsersChange, LoadError> {
        let users = file::read(path, requirepass)?;
        Ok(UsersChange::Load {
            users: users.values().map(UserRules::of).collect(),
        })
    }

    /// This node's users as the cluster's first ones.
    pub fn seed(&self) -> UsersChange {
        UsersChange::Seed {
            users: self.rules(),
        }
    }

    /// Every user, as the cluster stores them.
    pub fn rules(&self) -> Vec<UserRules> {
        self.all().iter().map(|u| UserRules::of(u)).collect()
    }

    /// The meta log index of the last change to the cluster's users this node applied;
    /// None while it enforces its configured users.
    pub fn committed_at(&self) -> Option<u64> {
        self.committed().applied
    }

    /// The cluster's users as this node holds them, and the index of the last change they
    /// hold (None while it enforces its configured users): what the meta group's snapshot
    /// carries.
    pub fn committed_rules(&self) -> Option<(Vec<UserRules>, u64)> {
        let committed = self.committed();
        committed.applied.map(|at| (self.rules(), at))
    }

    /// Applies the change committed at meta log index `at` (every node, in log order) and
    /// remembers its outcome under `nonce`; the new users when they changed. A change the
    /// users hold already (`at` not past the last one applied: replayed after a restart) is
    /// skipped, so each applies exactly once. The users change through the whole-registry
    /// replace ACL LOAD uses: a removed user's clients are disconnected, a changed user's run
    /// with its new rules, from their next command.
    pub fn apply_replicated(
        &self,
        nonce: u64,
        at: u64,
        change: &UsersChange,
    ) -> Option<Vec<UserRules>> {
        let mut committed = self.committed();
        let first = match committed.applied {
            Some(applied) if at <= applied => return None,
            Some(_) => false,
            None => true,
        };
        let (outcome, changed) = match self.next_users(change, first) {
            Ok((removed, Some(next))) => {
                if first {
                    self.note_cluster_users(&next);
                }
                self.replace_all(next);
                (Ok(removed), true)
            }
            Ok((removed, None)) => (Ok(removed), false),
            Err(e) => {
                // Every node refuses the same change alike, unless their `rename-command`s
                // differ: then this node's users are no longer the cluster's.
                if matches!(change, UsersChange::Seed { .. } | UsersChange::Load { .. }) {
                    tracing::error!(
                        "the cluster's users (meta log {at}) cannot be applied here, this node \
                         keeps its users: {e}"
                    );
                } else {
                    tracing::info!("the change to the ACL users at meta log {at} was refused: {e}");
                }
                (Err(e), false)
            }
        };
        // Until the cluster's users took effect here, the node holds its configured ones.
        if changed || !first {
            committed.applied = Some(at);
        }
        if committed.outcomes.len() == OUTCOMES_KEPT {
            committed.outcomes.pop_front();
        }
        committed.outcomes.push_back((nonce, outcome));
        changed.then(|| self.rules())
    }

    /// The users `change` leaves, and how many it removed; None for the users when it
    /// changes nothing. The error is the reply.
    fn next_users(
        &self,
        change: &UsersChange,
        first: bool,
    ) -> Result<(usize, Option<BTreeMap<String, User>>), String> {
        // Every change but a seed is proposed after the seed (see `cluster::admin`), so on
        // every node it applies to the same users.
        let current = || -> BTreeMap<String, User> {
            self.all()
                .into_iter()
                .map(|u| (u.name.clone(), (*u).clone()))
                .collect()
        };
        match change {
            UsersChange::Seed { .. } if !first => Ok((0, None)),
            UsersChange::Seed { users } | UsersChange::Load { users } => {
                let users = users_of(users).map_err(|e| format!("ERR {e}"))?;
                Ok((0, Some(users)))
            }
            UsersChange::SetUser { name, rules } => {
                let mut next = current();
                let user = with_rules(next.get(name), name, rules)?;
                next.insert(name.clone(), user);
                Ok((0, Some(next)))
            }
            UsersChange::DelUser { names } => {
                if names.iter().any(|n| n == "default") {
                    return Err(DEFAULT_STAYS.into());
                }
                let mut next = current();
                let removed = names.iter().filter(|n| next.remove(*n).is_some()).count();
                Ok((removed, (removed > 0).then_some(next)))
            }
        }
    }

    /// Takes `users` (holding the changes up to meta log index `applied`) as the cluster's:
    /// the ones this node stored (at start, before it serves) or its meta group's snapshot
    /// carried. The error says why they cannot be made here; the users are then unchanged.
    pub fn install_committed(&self, users: &[UserRules], applied: u64) -> Result<(), String> {
        let next = users_of(users)?;
        let mut committed = self.committed();
        if committed.applied.is_none() {
            self.note_cluster_users(&next);
        }
        self.replace_all(next);
        committed.applied = Some(applied);
        Ok(())
    }

    /// Once, when a node's configured users give way to its cluster's: says so if they
    /// differ.
    fn note_cluster_users(&self, next: &BTreeMap<String, User>) {
        let configured = self.rules();
        if configured.len() != next.len()
            || configured
                .iter()
                .zip(next.values())
                .any(|(c, n)| *c != UserRules::of(n))
        {
            tracing::info!(
                "this node now enforces the {} ACL users its cluster committed; its own \
                 configured users (user lines, aclfile, requirepass) differ and are not used \
                 (ACL LIST shows the users in force)",
                next.len()
            );
        }
    }

    /// The outcome of the committed change `nonce`, once this node applied it.
    pub fn outcome(&self, nonce: u64) -> Option<Outcome> {
        self.committed()
            .outcomes
            .iter()
            .rev()
            .find(|(n, _)| *n == nonce)
            .map(|(_, o)| o.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn listed(users: &Users) -> Vec<String> {
        users.all().iter().map(|u| u.describe()).collect()
    }

    #[test]
    fn rules_make_the_same_user_again() {
        let users = Users::new(Some("pw"));
        users
            .set_user(
                b"app",
                &args(&[
                    "on",
                    ">x",
                    "%R~card:*",
                    "~a b",
                    "&ch",
                    "+@read",
                    "-get",
                    "+client|id",
                    "(~log:*",
                    "+set)",
                    "skip-sanitize-payload",
                ]),
            )
            .unwrap();
        let stored = users.rules();
        let again = users_of(&stored).unwrap();
        let before: Vec<String> = users.all().iter().map(|u| u.describe()).collect();
        let after: Vec<String> = again.values().map(User::describe).collect();
        assert_eq!(before, after);
        let id = crate::command::table::lookup(b"strlen").unwrap();
        let def = crate::command::table::registry().def(id);
        assert_eq!(
            again["app"].check(id, def, &args(&["strlen", "a b"])),
            Ok(())
        );
        assert!(!format!("{stored:?}").contains("\"pw\""));
        let without_default: Vec<UserRules> =
            stored.into_iter().filter(|u| u.name != "default").collect();
        assert!(users_of(&without_default).is_err());
    }

    #[test]
    fn a_change_is_checked_as_standalone_and_carries_no_password() {
        let users = Users::new(None);
        assert_eq!(
            users.prepare_set_user(b"a b", &args(&["on"])).unwrap_err(),
            BAD_NAME
        );
        for bad in [&["on", "bogus"][..], &["(~x", "+get"], &["<nopw"]] {
            let standalone = users.set_user(b"alice", &args(bad)).unwrap_err();
            assert_eq!(
                users.prepare_set_user(b"alice", &args(bad)).unwrap_err(),
                standalone
            );
        }
        let change = users
            .prepare_set_user(b"alice", &args(&["on", ">s3cret", "<s3cret", ">s3cret"]))
            .unwrap();
        assert!(!format!("{change:?}").contains("s3cret"));
        assert_eq!(
            users.prepare_delete(&args(&["x", "default"])).unwrap_err(),
            DEFAULT_STAYS
        );
    }

    #[test]
    fn changes_apply_in_log_order_once() {
        let users = Users::new(None);
        assert_eq!(users.committed_at(), None);
        users.set_user(b"local", &args(&["on"])).unwrap();
        // The seed replaces the configured users; a second one changes nothing.
        let seed = Users::new(Some("pw")).seed();
        assert!(users.apply_replicated(1, 1, &seed).is_some());
        assert_eq!(users.committed_at(), Some(1));
        assert!(users.get(b"local").is_none());
        assert!(users.default_requires_auth());
        assert!(
            users
                .apply_replicated(2, 2, &Users::new(None).seed())
                .is_none()
        );
        assert!(users.default_requires_auth());
        // Two SETUSERs prepared against the same users both take effect.
        let a = users
            .prepare_set_user(b"alice", &args(&["on", ">pa"]))
            .unwrap();
        let b = users
            .prepare_set_user(b"alice", &args(&["+get", "~k*"]))
            .unwrap();
        users.apply_replicated(3, 3, &a).unwrap();
        users.apply_replicated(4, 4, &b).unwrap();
        let alice = users.get(b"alice").unwrap();
        assert!(alice.accepts(b"pa"));
        assert_eq!(
            alice.describe(),
            format!(
                "user alice on sanitize-payload #{} ~k* resetchannels -@all +get",
                hash_password(b"pa")
            )
        );
        // A replayed entry is skipped.
        let del = users.prepare_delete(&args(&["alice", "nosuch"])).unwrap();
        assert!(users.apply_replicated(5, 4, &del).is_none());
        assert!(users.get(b"alice").is_some());
        assert!(users.apply_replicated(5, 5, &del).is_some());
        assert_eq!(users.outcome(5), Some(Ok(1)));
        assert!(users.get(b"alice").is_none());
        // What the users refuse when it applies is the proposer's reply.
        let remove = Users::new(None)
            .prepare_set_user(b"default", &args(&["<nopw"]))
            .unwrap_err();
        assert!(remove.contains("does not exist"));
        let c = UsersChange::SetUser {
            name: "default".into(),
            rules: vec![hidden(b"<nopw".to_vec())],
        };
        assert!(users.apply_replicated(6, 6, &c).is_none());
        assert!(
            users
                .outcome(6)
                .unwrap()
                .unwrap_err()
                .contains("does not exist")
        );
        assert_eq!(users.committed_at(), Some(6));
        assert_eq!(users.outcome(99), None);
    }

    #[test]
    fn installed_users_replace_the_configured_ones() {
        let cluster = Users::new(None);
        cluster
            .set_user(b"ops", &args(&["on", "nopass", "+@all"]))
            .unwrap();
        let users = Users::new(Some("pw"));
        users.seal();
        assert!(users.authenticate(b"default", b"pw").is_none());
        assert!(users.default_requires_auth());
        users.install_committed(&cluster.rules(), 9).unwrap();
        users.unseal();
        assert_eq!(listed(&users), listed(&cluster));
        assert_eq!(users.committed_rules().unwrap().1, 9);
        assert!(!users.default_requires_auth());
        assert!(users.authenticate(b"ops", b"any").is_some());
        // Once the cluster's, requirepass is refused and leaves the default user alone.
        assert!(users.set_requirepass(Some("other")).is_err());
        assert!(!users.default_requires_auth());
    }
}
