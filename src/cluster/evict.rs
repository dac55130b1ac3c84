//! Eviction in a cluster: only a group's leader may evict (every replica must delete the same
//! keys), and the replicas of a group hold the same keys, so a node over `maxmemory` asks the
//! leader of each group it replicates — itself or another node — to evict that group's even
//! part of the excess. The leader's core journals the deletions and proposes them like a
//! write (see `Core::evict_in`).

use std::rc::Rc;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};

use super::admin::{self, CALL_TIMEOUT, Call};
use super::types::GroupId;
use crate::engine::core::{Core, evict_policy};

/// This node over maxmemory with an evicting policy: asks the leaders of its groups to
/// evict (called each memory sample, and when a write finds memory over the limit). At most
/// every 20 ms: the leaders' deletes take a log round trip to show here, and a repeated request
/// before then would evict the same part twice.
pub fn pressure(core: &Rc<Core>) {
    let Some(cluster) = core.shared.cluster() else {
        return;
    };
    if evict_policy(core.shared.config.runtime.maxmemory_policy()).is_none() {
        return;
    }
    let Some((used, limit)) = core.over_limit() else {
        return;
    };
    let now = crate::util::now_ms();
    let last = cluster.evict_asked_ms.load(Relaxed);
    if now < last + 20
        || cluster
            .evict_asked_ms
            .compare_exchange(last, now, AcqRel, Relaxed)
            .is_err()
    {
        return;
    }
    let map = cluster.layout();
    let held: Vec<GroupId> = (0..map.group_count() as GroupId)
        .filter(|&g| cluster.is_member(g))
        .collect();
    if held.is_empty() {
        return;
    }
    let bytes = (used - limit) / held.len() as u64 + 1;
    for g in held {
        let Some(slots) = map.groups.get(g as usize).map(|gl| gl.slots.clone()) else {
            continue;
        };
        match cluster.leader(g) {
            Some(l) if l == cluster.id => {
                let target = core.owner(slots.start);
                core.spawn_on(target, move |core| {
                    Box::pin(async move {
                        if let Some(host) = core.host() {
                            host.evict_led(g, bytes);
                        }
                    })
                });
            }
            Some(l) => {
                let Some(addr) = map.nodes.get(&l).map(|n| n.bus_addr()) else {
                    continue;
                };
                let Some(host) = core.host() else { return };
                // Fire and forget: while still over, the next request goes out soon.
                glommio::spawn_local(async move {
                    let _ = admin::call::<()>(
                        &host,
                        &addr,
                        &Call::Evict { group: g, bytes },
                        CALL_TIMEOUT,
                    )
                    .await;
                })
                .detach();
            }
            None => {} // an election runs: asked again on a later tick
        }
    }
}
