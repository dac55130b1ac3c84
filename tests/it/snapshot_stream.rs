//! A replaced node catching up by snapshot, through real processes: snapshots are streamed
//! from the leaders' snapshot files into the node's, and installed from there in batches.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{Cluster, Router};
use common::load::{keys_per_group, replicas_converge, set_until_acked};

/// A node wiped while it was fully caught up and restarted at once: the leaders still
/// remember its log reaching their last entries, and find it went back to nothing. They must
/// start over and send their snapshots (their logs are purged), not append after a gap.
#[test]
fn node_wiped_while_caught_up_catches_up_by_snapshot() {
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-node-timeout",
            "500",
            "--cluster-snapshot-after",
            "20",
        ],
    );
    let mut router = Router::new(&c, Duration::from_secs(5));
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    // More entries per group than a snapshot interval: every leader snapshots and purges.
    let filler = "x".repeat(512);
    for (g, ks) in keys_per_group(&c, "wiped", 60).iter().enumerate() {
        for k in ks {
            let v = format!("{g}:{k}:{filler}");
            set_until_acked(&mut router, k, &v);
            expected.insert(k.clone(), Some(v));
        }
    }
    // Every node holds every write, so each leader's progress has the victim at its last entry.
    replicas_converge(&c, &expected);
    let victim = 2;
    c.kill9(victim);
    c.wipe(victim);
    c.respawn(victim);
    c.wait_ok();
    replicas_converge(&c, &expected);
    // Not by a failover: a leader that took the victim's empty log for a bug would panic
    // (its group's Raft stopping there) or, in a release build, append after a gap.
    for i in 0..c.len() {
        assert_eq!(c.log_count(i, "panicked"), 0, "node {i}:\n{}", c.logs(30));
    }
    assert!(
        c.log_count(victim, "installed the leader's snapshot") > 0,
        "the wiped node caught up without a snapshot:\n{}",
        c.logs(30)
    );
}
