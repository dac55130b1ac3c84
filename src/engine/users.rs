//! The write path of a cluster's ACL users (ACL SETUSER / DELUSER / LOAD on a cluster node),
//! the other side of `command::acl::prepare_change`.
//!
//! Standalone the ACL commands change the node's users at once (`security::acl`). In a
//! cluster a change is committed through the meta group (`cluster::admin::change_users`),
//! which every node applies in log order and persists with its state as one node-wide record
//! ([`USERS_RECORD`]), and the reply waits until this node applied it, so an AUTH sent here
//! right after works.

use std::rc::Rc;

use super::core::Core;
use crate::cluster::wire;
use crate::security::acl::{Outcome, UserRules, UsersChange};
use crate::state::Shared;
use crate::storage::{Item, Storage, USERS_RECORD};

/// The stored form of the cluster's users: the meta log index of the last change they hold
/// and each user's rules, versioned.
pub fn encode(users: &[UserRules], applied: u64) -> Vec<u8> {
    wire::encode(&(applied, users))
}

pub fn decode(bytes: &[u8]) -> Result<(Vec<UserRules>, u64), String> {
    let (applied, users): (u64, Vec<UserRules>) =
        wire::decode(bytes, "stored ACL users").map_err(|e| e.0)?;
    Ok((users, applied))
}

/// The record holding `users` (None: no record, the node enforces its configured users),
/// for a storage batch.
pub fn record(users: Option<(&[UserRules], u64)>) -> Item {
    Item {
        key: USERS_RECORD.to_vec(),
        value: users.map(|(users, applied)| encode(users, applied)),
    }
}

/// When a cluster node's data dir opens (before it serves anyone: its users are sealed until
/// then): the users its cluster committed, if it stored any, replace its configured ones —
/// whatever its config says, so a node cut off from the meta group keeps enforcing the last
/// users it committed. A stored set this node cannot make stops the start rather than
/// letting it serve with other users.
pub fn load_stored(shared: &Shared, storage: &Storage) -> Result<(), String> {
    if let Some(bytes) = storage.raft_get(&USERS_RECORD)? {
        let (users, applied) = decode(&bytes)?;
        shared.acl.install_committed(&users, applied).map_err(|e| {
            format!(
                "{}: the ACL users this node's cluster committed cannot be made here: {e}",
                storage.dir().display()
            )
        })?;
        tracing::info!(
            "{} ACL users committed by the cluster (meta log {applied}) loaded",
            users.len()
        );
    }
    shared.acl.unseal();
    Ok(())
}

/// Commits `change` through the cluster's meta group (from core 0, which hosts it) and
/// waits until this node applied it. The error is the reply text.
pub async fn commit(core: &Rc<Core>, change: UsersChange) -> Outcome {
    core.on_core(0, move |core| {
        Box::pin(async move {
            match core.host() {
                Some(host) => crate::cluster::admin::change_users(&host, change).await,
                None => Err(crate::cluster::CLUSTERDOWN.to_string()),
            }
        })
    })
    .await
    .unwrap_or_else(|| Err("ERR the cluster node stopped".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_users_read_back() {
        let users = vec![UserRules {
            name: "default".into(),
            rules: vec!["on".into(), "nopass".into(), "~*".into(), "+@all".into()],
        }];
        assert_eq!(decode(&encode(&users, 7)).unwrap(), (users, 7));
        assert!(decode(b"\x09junk").is_err());
    }
}
