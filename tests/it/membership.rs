//! Membership while serving, through real processes: a node joins with CLUSTER MEET and
//! takes a share of the replicas, then one of the first nodes leaves with CLUSTER FORGET and
//! its replicas move away — all under an INCR load whose every acknowledgement is checked
//! afterwards (nothing acknowledged lost, nothing applied twice).

use crate::common;

use std::time::Duration;

use common::cluster::Cluster;
use common::load::{IncrLoad, check_counters, cmd};
use common::{DEADLINE, wait_until};

const NODE_TIMEOUT_MS: u64 = 500;
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the replica moves may take: each is a learner catching up plus two membership
/// changes, one group at a time (a few seconds on these loaded debug builds).
const MOVES_TIMEOUT: Duration = Duration::from_secs(60);

/// `cluster_known_nodes` and `cluster_map_epoch` from node `i`'s CLUSTER INFO.
fn known_and_epoch(c: &Cluster, i: usize) -> Option<(usize, u64)> {
    let mut conn = c.try_conn(i, Duration::from_secs(1)).ok()?;
    let info: String = cmd(&["CLUSTER", "INFO"]).query(&mut conn).ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        field("cluster_known_nodes:")? as usize,
        field("cluster_map_epoch:")?,
    ))
}

/// How many groups node `i` replicates (is a voter of; a voter standing in an election is
/// a candidate for that moment).
fn replicated(c: &Cluster, i: usize) -> usize {
    c.info_groups(i)
        .unwrap_or_default()
        .iter()
        .filter(|v| matches!(v.role.as_str(), "leader" | "follower" | "candidate"))
        .count()
}

/// Waits until the replica moves are done: every running node has the same cluster map,
/// every group has three voters, and no node replicates more than one group more than
/// another — the planner's goal, past which it moves nothing.
///
/// Counted from what each node's Raft says (not the map), so a move still under way shows:
/// its new replica is a learner (not counted) until promoted, and the replica it replaces
/// still counts until it is removed and dropped, so the group has four voters meanwhile.
fn wait_moves_done(c: &Cluster, groups: usize, what: &str) {
    let mut seen = String::new();
    let done = wait_until(MOVES_TIMEOUT, || {
        let running: Vec<usize> = (0..c.len()).filter(|&i| c.running(i)).collect();
        let counts: Vec<usize> = running.iter().map(|&i| replicated(c, i)).collect();
        let maps: Vec<Option<(usize, u64)>> =
            running.iter().map(|&i| known_and_epoch(c, i)).collect();
        seen = format!("groups replicated per node {counts:?}, (nodes, map epoch) {maps:?}");
        let (least, most) = (counts.iter().min(), counts.iter().max());
        counts.iter().sum::<usize>() == groups * 3
            && least.zip(most).is_some_and(|(l, m)| m - l <= 1)
            && maps[0].is_some()
            && maps.iter().all(|m| *m == maps[0])
    });
    assert!(
        done,
        "{what}: the replica moves did not finish: {seen}\n{}",
        c.logs(40)
    );
}

#[test]
fn nodes_join_and_leave_while_serving() {
    // Every node appends its audit lines to one file (whole lines: each is one O_APPEND write).
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let audit = audit_dir.path().join("audit.log");
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            "--cluster-leader-balance-delay",
            "3000",
            "--audit-log-file",
            audit.to_str().unwrap(),
        ],
    );
    let groups = c.groups.len();
    let load = IncrLoad::start(&c, 4, 3, CLIENT_TIMEOUT);
    load.wait_progress(&c, 20, Duration::from_secs(20));

    // A fourth node joins and takes its share: 3 replicas x 6 groups over 4 nodes.
    let joiner = c.add_joiner();
    c.meet(1, joiner);
    wait_moves_done(&c, groups, "after MEET");
    let share = replicated(&c, joiner);
    assert!(
        share >= groups * 3 / 4,
        "the new node replicates {share} of {groups} groups\n{}",
        c.logs(40)
    );
    for i in 0..c.len() {
        assert_eq!(
            known_and_epoch(&c, i).map(|k| k.0),
            Some(4),
            "node {i} does not know 4 nodes\n{}",
            c.logs(20)
        );
    }
    // Leaders spread too: the joiner is handed a leadership (after the imbalance lasted
    // cluster-leader-balance-delay, 3 s here).
    let leads = wait_until(Duration::from_secs(30), || !c.led_by(joiner).is_empty());
    assert!(leads, "the new node leads no group\n{}", c.logs(40));
    load.wait_progress(&c, 20, Duration::from_secs(20));
    // The joiner restarts from its data dir (its id and the map are stored there).
    c.restart(joiner);
    assert_eq!(replicated(&c, joiner), share, "{}", c.logs(30));
    load.wait_progress(&c, 20, Duration::from_secs(20));

    // Node 0, one of the first three, leaves: its replicas (and leaderships) move away
    // first, then it is removed from the map and holds nothing.
    let gone = c.name(0).to_string();
    let reply: String = cmd(&["CLUSTER", "FORGET", &gone])
        .query(&mut c.conn(2))
        .expect("CLUSTER FORGET");
    assert_eq!(reply, "OK");
    let left = wait_until(MOVES_TIMEOUT, || {
        known_and_epoch(&c, 2).is_some_and(|(known, _)| known == 3) && replicated(&c, 0) == 0
    });
    assert!(
        left,
        "node 0 was not drained and removed (it replicates {} groups)\n{}",
        replicated(&c, 0),
        c.logs(40)
    );
    c.kill9(0);
    c.wait_ok();
    // Three nodes left for three replicas: each replicates every group again (a learner
    // promoted last sees itself a voter once the change reaches it).
    for i in 1..c.len() {
        let all = wait_until(Duration::from_secs(20), || replicated(&c, i) == groups);
        assert!(
            all,
            "node {i} replicates {} of {groups} groups after node 0 left\n{}",
            replicated(&c, i),
            c.logs(30)
        );
    }
    load.wait_progress(&c, 20, Duration::from_secs(20));
    let (counters, tallies) = load.finish();
    c.wait_ok();
    check_counters(&c, &counters, &tallies);

    // The cluster clients see the new shape: node 0 is gone from every node's table.
    for i in 1..c.len() {
        let nodes: String = cmd(&["CLUSTER", "NODES"])
            .query(&mut c.conn(i))
            .expect("CLUSTER NODES");
        assert!(
            !nodes.contains(&gone),
            "node {i} still lists node 0:\n{nodes}"
        );
        assert_eq!(nodes.lines().count(), 3, "node {i}:\n{nodes}");
    }
    let mut client = c.cluster_client().get_connection().expect("cluster client");
    for k in 0..50 {
        let key = format!("after-moves-{k}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(k)
            .query(&mut client)
            .expect("SET through the cluster client");
        let v: i64 = redis::cmd("GET")
            .arg(&key)
            .query(&mut client)
            .expect("GET through the cluster client");
        assert_eq!(v, k);
    }

    // The audit log holds the MEET and the FORGET, and every node's view of the joiner
    // joining and node 0 leaving.
    let events = || common::json_lines(&audit);
    let count = |kind: &str, field: &str, value: &str| {
        events()
            .iter()
            .filter(|e| e["event"] == kind && e[field].as_str() == Some(value))
            .count()
    };
    let joiner_name = c.name(joiner).to_string();
    assert!(
        wait_until(DEADLINE, || {
            count("cluster_admin", "command", "meet") == 1
                && count("cluster_admin", "peer", &gone) == 1
                && count("membership", "node", &joiner_name) >= 3
                && count("membership", "node", &gone) >= 3
        }),
        "{}",
        std::fs::read_to_string(&audit).unwrap_or_default()
    );
}
