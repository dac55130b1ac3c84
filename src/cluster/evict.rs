//! Eviction in a cluster: only a group's leader may evict (every replica must delete the same
//! keys), and the replicas of a group hold the same keys, so a node over `maxmemory` asks the
//! leader of each group it replicates — itself or another node — to evict that group's part
//! of the excess, in proportion to the keys the group holds among the node's keys. An even
//! split would drain the smaller groups first and then take their newest keys while the
//! others still hold idle ones; the proportional one keeps each group's LRU choice close to
//! what one LRU over the node's keys would pick. The leader's core journals the deletions
//! and proposes them like a write (see `Core::evict_in`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::admin::{self, CALL_TIMEOUT, Call};
use super::node::lock;
use super::types::GroupId;
use crate::engine::core::{Core, evict_policy};

/// How long a round of asks may stay unfinished (an ask lost with its leader, a replica cut
/// off from the log) before this node asks again.
const ROUND_TIMEOUT: Duration = Duration::from_secs(3);
/// The least time between two rounds.
const ROUND_SPACING: Duration = Duration::from_millis(20);

/// One round of eviction asks from this node: one ask per group it replicates. This node's
/// memory shows a leader's evictions only once it applied them, and until then it stays
/// over the limit; asking again meanwhile would evict the excess many times over (a
/// lagging replica could empty a group, and a node waiting on one group's evictions would
/// drain the others). So a new round starts only once every ask of the last one was
/// answered and the evictions they made are applied here, or the round timed out.
#[derive(Default)]
pub struct Round {
    id: u64,
    started: Option<Instant>,
    /// Asks not answered yet.
    unanswered: usize,
    /// Per group: the log index this node must apply before its memory shows the eviction
    /// its ask caused.
    awaiting: Vec<(GroupId, u64)>,
}

/// This node over maxmemory with an evicting policy: asks the leaders of its groups to
/// evict (called each memory sample, and when a write finds memory over the limit), one
/// round at a time (see [`Round`]).
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
    let map = cluster.layout();
    let held: Vec<GroupId> = (0..map.group_count() as GroupId)
        .filter(|&g| cluster.is_member(g))
        .collect();
    if held.is_empty() {
        return;
    }
    let round = {
        let mut round = lock(&cluster.evict_round);
        let now = Instant::now();
        if let Some(started) = round.started {
            let elapsed = now.saturating_duration_since(started);
            let pending = round.unanswered > 0
                || round
                    .awaiting
                    .iter()
                    .any(|&(g, index)| cluster.applied(g) < index);
            if elapsed < ROUND_SPACING || (pending && elapsed < ROUND_TIMEOUT) {
                return;
            }
        }
        *round = Round {
            id: round.id + 1,
            started: Some(now),
            unanswered: held.len(),
            awaiting: Vec::new(),
        };
        round.id
    };
    let excess = used - limit;
    // The keys this node holds, all groups together (what each group's share is of).
    let keys: u64 = core.shared.shard_stats.iter().map(|s| s.keys.get()).sum();
    for g in held {
        // How far this node applied the group: a leader whose last eviction this node has
        // not applied yet answers with that eviction instead (see `Host::evict_led`).
        let seen = cluster.applied(g);
        let slots = map.groups.get(g as usize).map(|gl| gl.slots.clone());
        let leader = cluster.leader(g);
        let (Some(slots), Some(leader)) = (slots, leader) else {
            // An election runs: the group is asked again in a later round.
            answered(core, round, g, None);
            continue;
        };
        if leader == cluster.id {
            let target = core.owner(slots.start);
            core.spawn_on(target, move |core| {
                Box::pin(async move {
                    let index = match core.host() {
                        Some(host) => host.evict_led(g, excess, keys, seen).await,
                        None => None,
                    };
                    answered(&core, round, g, index);
                })
            });
            continue;
        }
        let (Some(addr), Some(host)) = (map.nodes.get(&leader).map(|n| n.bus_addr()), core.host())
        else {
            answered(core, round, g, None);
            continue;
        };
        let core = core.clone();
        glommio::spawn_local(async move {
            let ask = Call::Evict {
                group: g,
                excess,
                keys,
                seen,
            };
            let index = admin::call::<Option<u64>>(&host, &addr, &ask, CALL_TIMEOUT)
                .await
                .ok()
                .flatten();
            answered(&core, round, g, index);
        })
        .detach();
    }
}

/// Group `g`'s leader answered round `round`'s ask: `index` is where its eviction lands in
/// the log (None: it evicted nothing, or the ask failed).
fn answered(core: &Core, round: u64, g: GroupId, index: Option<u64>) {
    let Some(cluster) = core.shared.cluster() else {
        return;
    };
    let mut r = lock(&cluster.evict_round);
    if r.id != round {
        return;
    }
    r.unanswered = r.unanswered.saturating_sub(1);
    if let Some(index) = index {
        r.awaiting.push((g, index));
    }
}
