//! Who is in the cluster and which nodes replicate which slots.
//!
//! The first layout is computed, not negotiated: every node is started with the same
//! `cluster-peers` list, so every node derives the same node ids (1..=N in list order), the
//! same node names and the same slot groups with the same members. Nothing has to be agreed
//! on before the Raft groups exist; each group's first member proposes the membership every
//! node computed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use std::ops::Range;

use super::SLOT_COUNT;
use super::types::{GroupId, NodeId, NodeInfo, join_host_port};
use crate::config::{ClusterConfig, parse_host_port};

/// One slot group: its slots and its voters (the first is the preferred leader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLayout {
    pub slots: Range<usize>,
    pub members: Vec<NodeId>,
}

/// The cluster map: which nodes exist and which replicate each slot group. The first one is
/// computed from `cluster-peers`; every later one is committed through the meta Raft group
/// (see `cluster::meta`), each with a higher epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Bumped by every change (CLUSTER INFO's `cluster_current_epoch`).
    pub epoch: u64,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub groups: Vec<GroupLayout>,
    /// Nodes being removed (CLUSTER FORGET): their replicas move to other nodes first.
    pub leaving: BTreeSet<NodeId>,
    /// The id the next node to join gets (ids are never reused).
    pub next_id: NodeId,
}

/// How many nodes vote in the meta group; the others follow it as learners.
pub const META_VOTERS: usize = 5;

/// The slots of group `g` of `groups`: contiguous, so a group is a few shards' ranges in
/// CLUSTER SLOTS.
pub fn group_slots(g: usize, groups: usize) -> Range<usize> {
    (g * SLOT_COUNT / groups)..((g + 1) * SLOT_COUNT / groups)
}

/// The group owning `slot` (the inverse of [`group_slots`]).
#[inline]
pub fn group_of(slot: usize, groups: usize) -> GroupId {
    let g = slot * groups / SLOT_COUNT;
    let g = if g + 1 < groups && group_slots(g + 1, groups).start <= slot {
        g + 1
    } else {
        g
    };
    g as GroupId
}

/// A 40-hex node name from the peer list and the node id: stable across restarts and the
/// same on every node, so CLUSTER NODES agrees everywhere without exchanging names.
pub fn node_name(peers: &[String], id: NodeId) -> String {
    static CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);
    // Hashed with the id up front, so names differ in their first characters (tools such
    // as `redis-cli --cluster check` show only those).
    let joined = peers.join(",");
    let a = CRC.checksum(format!("{id}/{joined}").as_bytes());
    let b = CRC.checksum(format!("tallykv/{joined}").as_bytes());
    format!("{a:016x}{:08x}{id:016x}", b as u32)
}

impl Layout {
    /// The initial layout for `config`'s peers.
    pub fn initial(config: &ClusterConfig) -> Result<Layout, String> {
        let mut nodes = BTreeMap::new();
        for (i, peer) in config.peers.iter().enumerate() {
            let (host, port) = parse_host_port(peer)?;
            let id = i as NodeId + 1;
            // Peers are listed by client port; their bus is at port + 10000 (Valkey's rule).
            let bus_port = port
                .checked_add(10000)
                .ok_or_else(|| format!("{peer}: port + 10000 is not a port"))?;
            nodes.insert(
                id,
                NodeInfo {
                    name: node_name(&config.peers, id),
                    host,
                    port,
                    bus_port,
                    // Not in `cluster-peers`: each node announces its own once the cluster
                    // has formed (see `membership`).
                    tls_port: 0,
                },
            );
        }
        let n = nodes.len();
        if n == 0 {
            return Err("cluster-peers is empty".to_string());
        }
        let groups = if config.slot_groups == 0 {
            2 * n
        } else {
            config.slot_groups
        };
        let rf = config.replication_factor.min(n);
        let groups = (0..groups)
            .map(|g| GroupLayout {
                slots: group_slots(g, groups),
                members: (0..rf).map(|k| ((g + k) % n) as NodeId + 1).collect(),
            })
            .collect();
        Ok(Layout {
            epoch: 1,
            next_id: n as NodeId + 1,
            nodes,
            groups,
            leaving: BTreeSet::new(),
        })
    }

    /// The meta group's voters: the first [`META_VOTERS`] nodes by id that are not leaving.
    pub fn meta_voters(&self) -> BTreeSet<NodeId> {
        self.nodes
            .keys()
            .filter(|id| !self.leaving.contains(id))
            .take(META_VOTERS)
            .copied()
            .collect()
    }

    /// How many group replicas each node that is not leaving holds.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self
            .nodes
            .keys()
            .filter(|id| !self.leaving.contains(id))
            .map(|&id| (id, 0))
            .collect();
        for g in &self.groups {
            for m in &g.members {
                if let Some(c) = counts.get_mut(m) {
                    *c += 1;
                }
            }
        }
        counts
    }

    /// The next replica move toward the target: off a leaving node first, else from the
    /// node holding the most replicas to the one holding the fewest while they differ by
    /// more than one. A replica that is not its group's leader (`leader_of`) is moved rather
    /// than a leader's, when there is a choice: moving a leader costs the group an election.
    /// `(group, from, to)`; None when balanced (or no node can take it).
    pub fn next_move(
        &self,
        leader_of: impl Fn(GroupId) -> Option<NodeId>,
    ) -> Option<(GroupId, NodeId, NodeId)> {
        let counts = self.replica_counts();
        let least_without = |members: &[NodeId]| {
            counts
                .iter()
                .filter(|(id, _)| !members.contains(id))
                .min_by_key(|(id, c)| (**c, **id))
                .map(|(id, c)| (*id, *c))
        };
        for leaders_too in [false, true] {
            for (g, gl) in self.groups.iter().enumerate() {
                let g = g as GroupId;
                if let Some(&from) = gl.members.iter().find(|m| {
                    self.leaving.contains(m) && (leaders_too || leader_of(g) != Some(**m))
                }) && let Some((to, _)) = least_without(&gl.members)
                {
                    return Some((g, from, to));
                }
            }
        }
        let (&most, &high) = counts
            .iter()
            .max_by_key(|(id, c)| (**c, std::cmp::Reverse(**id)))?;
        for leaders_too in [false, true] {
            for (g, gl) in self.groups.iter().enumerate() {
                let g = g as GroupId;
                if !gl.members.contains(&most) || (!leaders_too && leader_of(g) == Some(most)) {
                    continue;
                }
                if let Some((to, low)) = least_without(&gl.members)
                    && low + 1 < high
                {
                    return Some((g, most, to));
                }
            }
        }
        None
    }

    /// This map with `from` replaced by `to` in group `g`, one epoch later.
    pub fn with_move(&self, g: GroupId, from: NodeId, to: NodeId) -> Layout {
        let mut next = self.clone();
        next.epoch += 1;
        for m in &mut next.groups[g as usize].members {
            if *m == from {
                *m = to;
            }
        }
        next
    }

    /// Whether `id` replicates no group any more.
    pub fn holds_nothing(&self, id: NodeId) -> bool {
        self.groups.iter().all(|g| !g.members.contains(&id))
    }

    /// This node's id: the peer whose `host:port` is the address this node announces.
    pub fn find_self(&self, host: &str, port: u16) -> Result<NodeId, String> {
        self.nodes
            .iter()
            .find(|(_, n)| n.host == host && n.port == port)
            .map(|(&id, _)| id)
            .ok_or_else(|| {
                format!(
                    "cluster-peers does not list this node ({}); set cluster-announce-hostname \
                     or cluster-announce-ip to the host this node has in cluster-peers",
                    join_host_port(host, port)
                )
            })
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }
}

/// A random 40-hex node name for a node that joins later (the bootstrap's are computed).
pub fn random_node_name() -> String {
    (0..40)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &[&str]) -> ClusterConfig {
        ClusterConfig {
            enabled: true,
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn groups_partition_the_slots() {
        for groups in [1, 3, 6, 7, 16] {
            let mut next = 0;
            for g in 0..groups {
                let r = group_slots(g, groups);
                assert_eq!(r.start, next);
                next = r.end;
                assert_eq!(group_of(r.start, groups) as usize, g);
                assert_eq!(group_of(r.end - 1, groups) as usize, g);
            }
            assert_eq!(next, SLOT_COUNT);
        }
    }

    #[test]
    fn initial_layout_spreads_groups_and_leaders() {
        let l = Layout::initial(&config(&["a:7000", "b:7001", "c:7002"])).unwrap();
        assert_eq!(l.groups.len(), 6);
        let firsts: Vec<NodeId> = l.groups.iter().map(|g| g.members[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 1, 2, 3]);
        assert!(l.groups.iter().all(|g| g.members.len() == 3));
        assert_eq!(l.nodes[&2].bus_port, 17001);
        assert_eq!(l.find_self("b", 7001).unwrap(), 2);
        assert!(l.find_self("b", 7000).is_err());
        // Every node computes the same names; names differ per node.
        let again = Layout::initial(&config(&["a:7000", "b:7001", "c:7002"])).unwrap();
        assert_eq!(l, again);
        assert_eq!(l.nodes[&1].name.len(), 40);
        assert_ne!(l.nodes[&1].name, l.nodes[&2].name);
    }

    #[test]
    fn moves_balance_replicas_and_empty_leaving_nodes() {
        let mut l = Layout::initial(&config(&["a:1", "b:2", "c:3"])).unwrap();
        assert_eq!(
            l.next_move(|_| None),
            None,
            "the initial layout is balanced"
        );
        // A fourth node joins: replicas move to it until counts differ by at most one.
        l.nodes.insert(4, NodeInfo::default());
        l.next_id = 5;
        let mut moves = 0;
        // Node 1 leads group 0: its replica there stays while others can move.
        let leader_of = |g: GroupId| (g == 0).then_some(1);
        while let Some((g, from, to)) = l.next_move(leader_of) {
            assert!(!(g == 0 && from == 1), "moved a leader's replica");
            assert_eq!(to, 4);
            l = l.with_move(g, from, to);
            moves += 1;
            assert!(moves < 20);
        }
        let counts = l.replica_counts();
        assert_eq!(counts.values().sum::<usize>(), 18);
        assert!(counts.values().all(|&c| (4..=5).contains(&c)), "{counts:?}");
        assert!(l.groups.iter().all(|g| {
            let set: BTreeSet<_> = g.members.iter().collect();
            set.len() == 3
        }));
        // Node 2 leaves: its replicas move to the others.
        l.leaving.insert(2);
        while let Some((g, from, to)) = l.next_move(|_| None) {
            assert_ne!(to, 2);
            l = l.with_move(g, from, to);
        }
        assert!(l.holds_nothing(2));
        assert!(l.groups.iter().all(|g| g.members.len() == 3));
        assert_eq!(l.meta_voters(), BTreeSet::from([1, 3, 4]));
    }

    #[test]
    fn replication_factor_is_capped_by_the_node_count() {
        let l = Layout::initial(&ClusterConfig {
            replication_factor: 5,
            ..config(&["a:1", "b:2"])
        })
        .unwrap();
        assert!(l.groups.iter().all(|g| g.members.len() == 2));
    }
}
