//! Who is in the cluster and which nodes replicate which slots.
//!
//! The first layout is computed, not negotiated: every node is started with the same
//! `cluster-peers` list, so every node derives the same node ids (1..=N in list order), the
//! same node names and the same slot groups with the same members. Nothing has to be agreed
//! on before the Raft groups exist; each group's first member proposes the membership every
//! node computed.

use std::collections::BTreeMap;
use std::ops::Range;

use super::SLOT_COUNT;
use super::types::{GroupId, NodeId, NodeInfo, join_host_port};
use crate::config::{ClusterConfig, parse_host_port};

/// One slot group: its slots and its voters (the first is the preferred leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    pub slots: Range<usize>,
    pub members: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub groups: Vec<GroupLayout>,
}

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
        Ok(Layout { nodes, groups })
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
    fn replication_factor_is_capped_by_the_node_count() {
        let l = Layout::initial(&ClusterConfig {
            replication_factor: 5,
            ..config(&["a:1", "b:2"])
        })
        .unwrap();
        assert!(l.groups.iter().all(|g| g.members.len() == 2));
    }
}
