//! The write path of the node's function libraries (FUNCTION LOAD / DELETE / FLUSH /
//! RESTORE), the other side of `command::function::prepare_change`.
//!
//! Standalone, a change applies to the node's set at once and the new set goes to storage as
//! one node-wide record ([`FUNCTIONS_RECORD`]); with `appendfsync always` the reply waits
//! until it is durable. In a cluster the change is committed through the meta group
//! (`cluster::admin::change_functions`), which every node applies in log order and persists
//! with its state, and the reply waits until this node applied it, so an FCALL sent here
//! right after works.

use std::rc::Rc;

use super::core::Core;
use crate::cluster::wire;
use crate::command::function::library::{Library, LibraryChange, LibrarySet};
use crate::config::AppendFsync;
use crate::state::Shared;
use crate::storage::{Batch, FUNCTIONS_RECORD, Item, Storage};

/// The stored form of a set: the meta log index of the last replicated change it holds (0
/// standalone) and its libraries (code and registered functions), versioned.
pub fn encode(set: &LibrarySet, applied: u64) -> Vec<u8> {
    wire::encode(&(applied, set.libraries().collect::<Vec<&Library>>()))
}

pub fn decode(bytes: &[u8]) -> Result<(LibrarySet, u64), String> {
    let (applied, libraries): (u64, Vec<Library>) =
        wire::decode(bytes, "stored function libraries").map_err(|e| e.0)?;
    Ok((LibrarySet::from_libraries(libraries)?, applied))
}

/// The record holding `set`, for a storage batch.
pub fn record(set: &LibrarySet, applied: u64) -> Item {
    Item {
        key: FUNCTIONS_RECORD.to_vec(),
        value: Some(encode(set, applied)),
    }
}

/// Takes the stored libraries when the data dir opens (before the cores serve).
pub fn load_stored(shared: &Shared, storage: &Storage) -> Result<(), String> {
    if let Some(bytes) = storage.raft_get(&FUNCTIONS_RECORD)? {
        let (set, applied) = decode(&bytes)?;
        if !set.is_empty() {
            tracing::info!(
                "{} function libraries ({} functions) loaded",
                set.len(),
                set.function_count()
            );
        }
        shared.scripts.libraries.replace(set, applied);
    }
    Ok(())
}

/// Applies `change` to the node's libraries: here and to storage, or through the cluster.
/// The error is the reply text.
pub async fn commit(core: &Rc<Core>, change: LibraryChange) -> Result<(), String> {
    if core.shared.config.cluster.enabled {
        return core
            .on_core(0, move |core| {
                Box::pin(async move {
                    match core.host() {
                        Some(host) => crate::cluster::admin::change_functions(&host, change).await,
                        None => Err(crate::cluster::CLUSTERDOWN.to_string()),
                    }
                })
            })
            .await
            .unwrap_or_else(|| Err("ERR the cluster node stopped".to_string()));
    }
    let storage = core.shared.storage().cloned();
    core.shared.scripts.libraries.change(&change, |set| {
        if let Some(s) = &storage {
            s.write(Batch {
                raft: vec![record(set, 0)],
                ..Batch::default()
            });
        }
    })?;
    if let Some(s) = storage
        && core.shared.config.runtime.appendfsync() == AppendFsync::Always
    {
        s.synced().await.map_err(|e| format!("ERR {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::function::library::FunctionInfo;

    #[test]
    fn stored_sets_read_back() {
        let lib = Library {
            name: "l".into(),
            code: b"#!lua name=l\nredis.register_function('f', function() end)".to_vec(),
            functions: vec![FunctionInfo {
                name: "f".into(),
                description: Some(b"d".to_vec()),
                flags: 1,
            }],
        };
        let set = LibrarySet::from_libraries(vec![lib]).unwrap();
        assert_eq!(decode(&encode(&set, 7)).unwrap(), (set, 7));
        assert!(
            decode(&encode(&LibrarySet::default(), 0))
                .unwrap()
                .0
                .is_empty()
        );
        assert!(decode(b"\x09junk").is_err());
    }
}
