//! Cluster mode through real processes and real clients: the Redis Cluster protocol as
//! clients see it (redis-rs's cluster client, plain connections, `redis-cli -c`), and what
//! survives faults: kill -9 of a leader, a paused (SIGSTOP) leader, racing SET NX through a
//! failover, and a whole-cluster crash.
//!
//! Fault tests judge the final state against what every client was told: an acknowledged
//! write (an integer or OK reply) must be there, a refused one (MOVED, TRYAGAIN, or never
//! sent) must not, and one whose outcome is unknown (UNCERTAIN, a broken connection, no reply
//! in time) may or may not be.
//!
//! The tests take a file-wide lock and run one at a time: each starts three nodes, and two
//! clusters fighting over two shared cores would mostly test the scheduler.
//!
//! Nothing here asserts how fast a failover was: the tests wait for conditions (new leaders
//! named, every group acknowledging writes again) with generous deadlines and print the
//! times for the record. Failover times are measured by `benches/failover.py`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::ErrorKind::{TimedOut, WouldBlock};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Outcome, Router};
use common::load::{
    IncrLoad, Tally, check_counter, check_counters, cmd, keys_per_group, probe_until_redirected,
    read_incr_reply, record_raw, replicas_converge, replies_summary, set_until_acked, text,
};
use common::{DEADLINE, error_text, ttl_after, wait_until};
use redis::Value;
use tallykv::cluster::meta::META;
use tallykv::cluster::net::KIND_ADMIN;
use tallykv::cluster::{admin, key_slot, wire};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `--cluster-node-timeout` of the fault tests (ms): a follower stands for election after
/// between this and 1.25× this without hearing from its leader.
const NODE_TIMEOUT_MS: u64 = 500;

/// Three nodes with a short node timeout ([`NODE_TIMEOUT_MS`]).
fn start_fast() -> Cluster {
    Cluster::start(3, &["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
}

/// Reply timeout of the load's clients: a paused node is given up on after this (only how
/// soon the load moves on depends on it, never an outcome).
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1500);

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer reply, got {other:?}"),
    }
}

/// A map reply as key/value pairs: a RESP3 map, or RESP2's flat array of alternating items.
fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| (text(k).expect("map key"), v.clone()))
            .collect(),
        Value::Array(a) => a
            .chunks(2)
            .map(|kv| (text(&kv[0]).expect("map key"), kv[1].clone()))
            .collect(),
        other => panic!("expected a map, got {other:?}"),
    }
}

fn field<'a>(pairs: &'a [(String, Value)], name: &str) -> &'a Value {
    &pairs
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {pairs:?}"))
        .1
}

// ---------------------------------------------------------------------------------------
// The protocol as clients see it
// ---------------------------------------------------------------------------------------

/// One CLUSTER NODES line.
#[derive(Debug, PartialEq, Eq)]
struct NodeLine {
    id: String,
    port: u16,
    bus: u16,
    myself: bool,
    master: bool,
    slots: Vec<(usize, usize)>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 8, "short CLUSTER NODES line {l:?}");
            let addr = f[1].split(',').next().expect("address");
            let (hostport, bus) = addr.split_once('@').expect("host:port@bus");
            let port = hostport.rsplit_once(':').expect("host:port").1;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                    None => {
                        let s = r.parse().expect("slot");
                        (s, s)
                    }
                })
                .collect();
            assert_eq!(f[7], "connected", "{l}");
            NodeLine {
                id: f[0].to_string(),
                port: port.parse().expect("port"),
                bus: bus.parse().expect("bus port"),
                myself: flags.contains(&"myself"),
                master: flags.contains(&"master"),
                slots,
            }
        })
        .collect()
}

/// CLUSTER SLOTS as (first, last, [(port, id)]) with the primary first.
type SlotRange = (usize, usize, Vec<(u16, String)>);

fn parse_slots(v: &Value) -> Vec<SlotRange> {
    let Value::Array(ranges) = v else {
        panic!("CLUSTER SLOTS: {v:?}")
    };
    ranges
        .iter()
        .map(|r| {
            let Value::Array(r) = r else {
                panic!("slot range {r:?}")
            };
            let nodes = r[2..]
                .iter()
                .map(|n| {
                    let Value::Array(n) = n else {
                        panic!("slot range node {n:?}")
                    };
                    assert_eq!(text(&n[0]).as_deref(), Some("127.0.0.1"));
                    (int(&n[1]) as u16, text(&n[2]).expect("node id"))
                })
                .collect();
            (int(&r[0]) as usize, int(&r[1]) as usize, nodes)
        })
        .collect()
}

#[test]
fn protocol_through_cluster_clients() {
    let _serial = serial();
    let c = Cluster::start(3, &[]);
    let groups = c.groups.len();
    assert_eq!(groups, 6, "two slot groups per node by default");

    // redis-rs's cluster client routes by CLUSTER SLOTS and follows MOVED by itself.
    let client = c.cluster_client();
    let mut cc = client.get_connection().expect("cluster connection");
    let keys: Vec<String> = (0..120).map(|i| format!("key:{i}")).collect();
    let hit: BTreeSet<usize> = keys.iter().map(|k| c.group_of_key(k)).collect();
    assert_eq!(hit.len(), groups, "the keys reach every group");
    for (i, k) in keys.iter().enumerate() {
        let v = format!("v{i}");
        let _: () = cmd(&["SET", k, &v]).query(&mut cc).expect("SET");
    }
    for (i, k) in keys.iter().enumerate() {
        let got: String = cmd(&["GET", k]).query(&mut cc).expect("GET");
        assert_eq!(got, format!("v{i}"));
    }
    for i in 0..30 {
        let k = format!("ctr:{i}");
        for n in 1..=3 {
            let got: i64 = cmd(&["INCR", &k]).query(&mut cc).expect("INCR");
            assert_eq!(got, n, "{k}");
        }
        let h = format!("h:{i}");
        let added: i64 = cmd(&["HSET", &h, "f1", "a", "f2", &k])
            .query(&mut cc)
            .expect("HSET");
        assert_eq!(added, 2);
        let f2: String = cmd(&["HGET", &h, "f2"]).query(&mut cc).expect("HGET");
        assert_eq!(f2, k);
    }
    for k in &keys[..30] {
        let set: i64 = cmd(&["EXPIRE", k, "100"]).query(&mut cc).expect("EXPIRE");
        assert_eq!(set, 1);
        let ttl: i64 = cmd(&["TTL", k]).query(&mut cc).expect("TTL");
        assert!(ttl_after(100).contains(&ttl), "TTL {k} = {ttl}");
    }
    let ttl: i64 = cmd(&["TTL", &keys[100]]).query(&mut cc).expect("TTL");
    assert_eq!(ttl, -1);

    // CLUSTER INFO and MYID.
    let mut names = BTreeSet::new();
    for i in 0..c.len() {
        let info: String = c.query(i, &cmd(&["CLUSTER", "INFO"]));
        let fields: HashMap<&str, &str> = info
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .collect();
        assert_eq!(fields["cluster_state"], "ok", "node {i}: {info}");
        assert_eq!(fields["cluster_slots_assigned"], "16384");
        assert_eq!(fields["cluster_slots_ok"], "16384");
        assert_eq!(fields["cluster_slots_fail"], "0");
        assert_eq!(fields["cluster_known_nodes"], "3");
        assert_eq!(fields["cluster_slot_groups"], "6");
        let size: usize = fields["cluster_size"].parse().expect("cluster_size");
        assert!((1..=3).contains(&size), "cluster_size {size}");
        let id: String = c.query(i, &cmd(&["CLUSTER", "MYID"]));
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(id, c.name(i));
        names.insert(id);
    }
    assert_eq!(names.len(), 3, "node ids differ");

    // The leaders every node agrees on (the cluster is quiet: no elections run).
    let leaders: Vec<usize> = (0..groups).map(|g| c.leader_of_group(g)).collect();

    // CLUSTER NODES: the same nodes everywhere, each node itself once, the masters' slots
    // are exactly the groups they lead.
    for i in 0..c.len() {
        let text: String = c.query(i, &cmd(&["CLUSTER", "NODES"]));
        let lines = parse_nodes(&text);
        assert_eq!(lines.len(), 3, "node {i}: {text}");
        for (j, l) in lines.iter().enumerate() {
            assert_eq!(l.id, c.name(j), "node {i}: line {j}: {text}");
            assert_eq!(l.port, c.port(j));
            assert_eq!(l.bus, c.port(j) + 10000);
            assert_eq!(l.myself, i == j, "node {i}: {text}");
            let led: Vec<(usize, usize)> = (0..groups)
                .filter(|&g| leaders[g] == j)
                .map(|g| (c.groups[g].start, c.groups[g].end - 1))
                .collect();
            assert_eq!(l.master, !led.is_empty(), "node {i}: {text}");
            assert_eq!(l.slots, led, "node {i}: {text}");
        }
    }

    // CLUSTER SLOTS: one range per group with its leader only (listing the followers as
    // replicas would make clients that classify nodes by role take leaders for replicas).
    let mut first_slots = None;
    for i in 0..c.len() {
        let slots = parse_slots(&c.query(i, &cmd(&["CLUSTER", "SLOTS"])));
        assert_eq!(slots.len(), groups);
        for (g, (a, b, nodes)) in slots.iter().enumerate() {
            assert_eq!((*a, *b + 1), (c.groups[g].start, c.groups[g].end));
            assert_eq!(nodes.len(), 1, "group {g}: {nodes:?}");
            assert_eq!(
                nodes[0],
                (c.port(leaders[g]), c.name(leaders[g]).to_string())
            );
        }
        match &first_slots {
            None => first_slots = Some(slots),
            Some(first) => assert_eq!(&slots, first, "node {i} disagrees on CLUSTER SLOTS"),
        }
    }

    // CLUSTER SHARDS: the same picture as maps.
    for i in 0..c.len() {
        let Value::Array(shards) = c.query::<Value>(i, &cmd(&["CLUSTER", "SHARDS"])) else {
            panic!("CLUSTER SHARDS is not an array");
        };
        assert_eq!(shards.len(), groups);
        for (g, shard) in shards.iter().enumerate() {
            let shard = pairs(shard);
            let Value::Array(range) = field(&shard, "slots") else {
                panic!("slots of shard {g}")
            };
            let range: Vec<usize> = range.iter().map(|v| int(v) as usize).collect();
            assert_eq!(range, [c.groups[g].start, c.groups[g].end - 1]);
            let Value::Array(nodes) = field(&shard, "nodes") else {
                panic!("nodes of shard {g}")
            };
            assert_eq!(nodes.len(), 3);
            let mut masters = Vec::new();
            for n in nodes {
                let n = pairs(n);
                let port = int(field(&n, "port")) as u16;
                let j = c.node_of_port(port).expect("a node's port");
                assert_eq!(text(field(&n, "id")).as_deref(), Some(c.name(j)));
                assert_eq!(text(field(&n, "ip")).as_deref(), Some("127.0.0.1"));
                assert_eq!(text(field(&n, "health")).as_deref(), Some("online"));
                if text(field(&n, "role")).as_deref() == Some("master") {
                    masters.push(j);
                }
            }
            assert_eq!(masters, [leaders[g]], "shard {g}");
        }
    }

    // CLUSTER KEYSLOT: values from the Redis Cluster spec, hash tags.
    let slot_of = |k: &str| c.query::<i64>(0, &cmd(&["CLUSTER", "KEYSLOT", k]));
    assert_eq!(slot_of("foo"), 12182);
    assert_eq!(slot_of("bar"), 5061);
    assert_eq!(slot_of("123456789"), 12739);
    assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));

    // COUNTKEYSINSLOT / GETKEYSINSLOT on every node, followers included once they applied.
    let tagged: Vec<String> = (0..5).map(|i| format!("{{tagged}}:{i}")).collect();
    for k in &tagged {
        let _: () = cmd(&["SET", k, "x"]).query(&mut cc).expect("SET");
    }
    let slot = slot_of("tagged").to_string();
    for i in 0..c.len() {
        let counted = wait_until(Duration::from_secs(10), || {
            c.query::<i64>(i, &cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])) == 5
        });
        assert!(counted, "node {i} does not count the slot's 5 keys");
        let mut got: Vec<String> = c.query(i, &cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "10"]));
        got.sort();
        assert_eq!(got, tagged, "node {i}");
        let two: Vec<String> = c.query(i, &cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "2"]));
        assert_eq!(two.len(), 2);
    }
    assert_eq!(
        error_text(
            &cmd(&["CLUSTER", "COUNTKEYSINSLOT", "16384"])
                .query::<i64>(&mut c.conn(0))
                .unwrap_err()
        ),
        "ERR Invalid slot"
    );

    // MOVED from a node that does not lead the key's group names the leader's port.
    let key = &keys[0];
    let s = key_slot(key.as_bytes()) as usize;
    let leader = c.leader_of_slot(s);
    let follower = (leader + 1) % c.len();
    let moved = format!("MOVED {s} 127.0.0.1:{}", c.port(leader));
    let mut fc = c.conn(follower);
    for args in [vec!["SET", key, "x"], vec!["GET", key]] {
        let e = cmd(&args).query::<Value>(&mut fc).unwrap_err();
        assert_eq!(error_text(&e), moved, "{args:?}");
    }

    // CROSSSLOT for multi-key commands across slots, whichever node is asked.
    let (a, b) = ("{a}1", "{b}1");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    for i in 0..c.len() {
        let e = cmd(&["MSET", a, "1", b, "2"])
            .query::<Value>(&mut c.conn(i))
            .unwrap_err();
        assert!(
            error_text(&e).starts_with("CROSSSLOT"),
            "{}",
            error_text(&e)
        );
    }

    // READONLY: a follower serves reads of its own replica; writes still go to the leader.
    let mut lc = c.conn(leader);
    let _: () = cmd(&["SET", key, "replicated"])
        .query(&mut lc)
        .expect("SET");
    let _: () = cmd(&["READONLY"]).query(&mut fc).expect("READONLY");
    let replicated = wait_until(Duration::from_secs(10), || {
        cmd(&["GET", key])
            .query::<Option<String>>(&mut fc)
            .expect("GET")
            == Some("replicated".to_string())
    });
    assert!(replicated, "the follower never served the replicated value");
    let e = cmd(&["SET", key, "y"]).query::<Value>(&mut fc).unwrap_err();
    assert_eq!(error_text(&e), moved);
    let _: () = cmd(&["READWRITE"]).query(&mut fc).expect("READWRITE");
    let e = cmd(&["GET", key]).query::<Value>(&mut fc).unwrap_err();
    assert_eq!(error_text(&e), moved);

    redis_cli_follows_redirects(&c);
}

/// `redis-cli -c` asked at a follower is redirected to the leader and the write lands.
fn redis_cli_follows_redirects(c: &Cluster) {
    let cli = |port: u16, args: &[&str], follow: bool| -> Option<String> {
        let mut command = std::process::Command::new("redis-cli");
        if follow {
            command.arg("-c");
        }
        let out = command
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("redis-cli: {e}"),
            Ok(out) => {
                assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
        }
    };
    let key = "cli:key";
    let leader = c.leader_of_slot(key_slot(key.as_bytes()) as usize);
    let follower = (leader + 1) % c.len();
    let Some(plain) = cli(c.port(follower), &["SET", key, "hello"], false) else {
        eprintln!("note: redis-cli is not installed; skipping the redis-cli -c check");
        return;
    };
    assert!(plain.contains("MOVED"), "without -c: {plain}");
    assert_eq!(
        cli(c.port(follower), &["SET", key, "hello"], true).as_deref(),
        Some("OK")
    );
    let other = (leader + 2) % c.len();
    assert_eq!(
        cli(c.port(other), &["GET", key], true).as_deref(),
        Some("hello")
    );
}

// ---------------------------------------------------------------------------------------
// Counters under load through faults
// ---------------------------------------------------------------------------------------

/// Kill -9 the leader of some groups in the middle of an INCR load, keep the load going,
/// restart the node: every group the node led elects a new leader and acknowledges writes
/// again, no acknowledged increment is lost, none refused is applied.
#[test]
fn kill9_leader_keeps_acknowledged_increments() {
    let _serial = serial();
    let mut c = start_fast();
    let load = IncrLoad::start(&c, 4, 4, CLIENT_TIMEOUT);
    load.wait_progress(&c, 30, Duration::from_secs(20));

    let victim = c.leader_of_group(0);
    let led = c.led_by(victim);
    assert!(
        led.contains(&0),
        "node {victim} leads group 0 (it says {led:?})"
    );
    c.kill9(victim);
    load.mark_fault();
    let elected = c
        .wait_leader_change(&led, victim, DEADLINE)
        .unwrap_or_else(|| panic!("no new leaders for groups {led:?}\n{}", c.logs(30)));
    let unavailable = load.wait_recovered(&c, DEADLINE);
    eprintln!(
        "killed node {victim} (leading groups {led:?}): new leaders known everywhere after \
         {elected:?}; per group ms from the kill to the first acknowledged write: \
         {unavailable:?}"
    );
    load.wait_progress(&c, 30, Duration::from_secs(20));

    c.restart(victim);
    load.wait_progress(&c, 30, Duration::from_secs(20));
    let (counters, tallies) = load.finish();
    c.wait_ok();
    check_counters(&c, &counters, &tallies);
}

/// Pause a leader (SIGSTOP) until the other nodes have elected new leaders for its groups
/// (so past its election timeout) while the load runs, and resume it: the counters'
/// invariants hold, and the resumed node acknowledges nothing from its stale state: INCRs
/// queued on its connection while it was paused and sent right after it resumed are
/// refused, unknown, or get values consistent with the new leader's history.
#[test]
fn paused_leader_acknowledges_nothing_stale() {
    let _serial = serial();
    let mut c = start_fast();
    let probe = keys_per_group(&c, "probe", 1)[0][0].clone();
    let probe_slot = key_slot(probe.as_bytes()) as usize;
    let victim = c.leader_of_group(0);
    let mut probe_tally = Tally::default();

    // A raw connection to the leader, used before, during and after the pause.
    let stream = TcpStream::connect(("127.0.0.1", c.port(victim))).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut old_writer = stream.try_clone().expect("clone stream");
    let mut old = BufReader::new(stream);
    let incr = format!("*2\r\n$4\r\nINCR\r\n${}\r\n{probe}\r\n", probe.len());
    for expected in 1..=3 {
        old_writer.write_all(incr.as_bytes()).expect("write");
        let v = record_raw(&mut probe_tally, read_incr_reply(&mut old));
        assert_eq!(
            v,
            Some(expected),
            "the leader serves the probe before the pause"
        );
    }

    let load = IncrLoad::start(&c, 4, 4, CLIENT_TIMEOUT);
    load.wait_progress(&c, 30, Duration::from_secs(20));
    let led = c.led_by(victim);
    c.stop(victim);
    load.mark_fault();
    // Queued in the paused node's socket: it reads them the moment it resumes, before it
    // can have heard of the new leader.
    const QUEUED: usize = 5;
    old_writer
        .write_all(incr.repeat(QUEUED).as_bytes())
        .expect("write");
    let elected = c
        .wait_leader_change(&led, victim, DEADLINE)
        .unwrap_or_else(|| panic!("no new leaders for groups {led:?}\n{}", c.logs(30)));
    let unavailable = load.wait_recovered(&c, DEADLINE);
    eprintln!(
        "paused node {victim} (leading groups {led:?}): new leaders known everywhere after \
         {elected:?}; per group ms from the pause to the first acknowledged write: \
         {unavailable:?} (clients wait up to {CLIENT_TIMEOUT:?} on the paused node before \
         trying another, so they add to that)"
    );
    // A new leader for the paused node's groups means its followers stopped hearing from it
    // for an election timeout: the pause lasted past it.
    let new_leader = c.leader_of_group(0);
    assert_ne!(
        new_leader, victim,
        "group 0 elected a new leader during the pause"
    );
    // Increments through the new leader while the old one sleeps.
    let mut router = Router::new(&c, CLIENT_TIMEOUT);
    let mut before_resume = Vec::new();
    while before_resume.len() < 5 {
        probe_tally.attempts += 1;
        if let Some(v) = probe_tally.record(router.send(&cmd(&["INCR", &probe]), probe_slot)) {
            before_resume.push(v);
        }
        assert!(
            probe_tally.attempts < 500,
            "the new leader does not take the probe"
        );
    }
    let newest = *before_resume.iter().max().expect("values");

    c.cont(victim);
    let mut queued_replies = Vec::new();
    for _ in 0..QUEUED {
        let reply = read_incr_reply(&mut old);
        queued_replies.push(reply.clone());
        record_raw(&mut probe_tally, reply);
    }
    // Sent after every increment above completed: any value acknowledged now must be newer.
    let after_resume = probe_until_redirected(
        &mut old_writer,
        &mut old,
        &incr,
        newest,
        &mut probe_tally,
        "resumed node",
    );
    eprintln!(
        "probe on the resumed node's connection: queued while paused {queued_replies:?}, sent \
         after resuming: {}",
        replies_summary(&after_resume)
    );

    load.wait_progress(&c, 30, Duration::from_secs(20));
    c.wait_ok();
    let (counters, tallies) = load.finish();
    c.wait_ok();
    check_counters(&c, &counters, &tallies);
    let v = router.query(&cmd(&["GET", &probe]), probe_slot, Duration::from_secs(20));
    let fin = text(&v).map_or(0, |s| s.parse::<i64>().expect("a counter"));
    let mut problems = Vec::new();
    check_counter(&probe, &probe_tally, fin, &mut problems);
    assert!(problems.is_empty(), "probe: {problems:?}\n{}", c.logs(40));
}

/// A node paused past the election timeout and resumed must not take over groups whose
/// leaders stayed healthy meanwhile: it should rejoin them as a follower (terms unchanged).
///
/// Without care this fails: on SIGCONT the resumed node's election timers have all
/// expired, and openraft 0.9 has no pre-vote, so it would stand in every group it follows
/// with a higher term and depose leaders that stayed healthy. The node notices it did not
/// run and holds its elections until it has heard from the leaders.
#[test]
fn resumed_node_does_not_depose_healthy_leaders() {
    let _serial = serial();
    let mut c = start_fast();
    let victim = 0;
    let before: Vec<(usize, u64)> = (0..c.groups.len())
        .map(|g| {
            let l = c.leader_of_group(g);
            let term = c.info_groups(l).expect("INFO cluster")[g].term;
            (l, term)
        })
        .collect();
    let led = c.led_by(victim);
    let others: Vec<usize> = (0..c.groups.len()).filter(|g| !led.contains(g)).collect();
    c.stop(victim);
    // Paused until its own groups have new leaders, so well past its election timeout.
    c.wait_leader_change(&led, victim, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no new leaders for groups {led:?}\n{}", c.logs(30)));
    c.cont(victim);
    c.wait_ok();
    let mut changed = Vec::new();
    for &g in &others {
        let l = c.leader_of_group(g);
        let term = c.info_groups(l).expect("INFO cluster")[g].term;
        if (l, term) != before[g] {
            changed.push(format!(
                "group {g}: leader node {} term {} -> node {l} term {term}",
                before[g].0, before[g].1
            ));
        }
    }
    assert!(
        changed.is_empty(),
        "resuming node {victim} disturbed groups it did not lead:\n{}\n{}",
        changed.join("\n"),
        c.logs(20)
    );
}

// ---------------------------------------------------------------------------------------
// SET NX through a failover
// ---------------------------------------------------------------------------------------

/// What one thread learned about one key.
#[derive(Clone, Default)]
struct NxResult {
    /// Got OK: this thread set the key.
    won: bool,
    /// Some attempt's outcome was unknown (it may have set the key though a retry got nil).
    unknown: bool,
    /// Got a definite answer (OK or nil) in time.
    settled: bool,
    /// An unexpected reply.
    failed: Option<String>,
}

/// Eight threads race `SET k v<thread> NX PX 60000` on fresh keys, key by key, while the
/// keys' group leader is killed: at most one thread is told OK per key (exactly one when no
/// outcome was unknown), and the key holds the winner's value (or, with no winner, the value
/// of a thread whose attempt's outcome was unknown).
#[test]
fn set_nx_race_through_failover() {
    let _serial = serial();
    let mut c = start_fast();
    const THREADS: usize = 8;
    const KEYS: usize = 120;
    const KILL_AFTER: usize = 30;
    let group = 1;
    let keys = Arc::new(keys_per_group(&c, "nx", KEYS).swap_remove(group));
    let victim = c.leader_of_group(group);
    let progress = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<JoinHandle<Vec<NxResult>>> = (0..THREADS)
        .map(|t| {
            let mut router = Router::new(&c, CLIENT_TIMEOUT);
            let (keys, progress, barrier) = (keys.clone(), progress.clone(), barrier.clone());
            std::thread::spawn(move || {
                let value = format!("v{t}");
                let mut results = vec![NxResult::default(); keys.len()];
                for (k, key) in keys.iter().enumerate() {
                    barrier.wait();
                    if t == 0 {
                        progress.store(k, Relaxed);
                    }
                    let slot = key_slot(key.as_bytes()) as usize;
                    let set = cmd(&["SET", key, &value, "NX", "PX", "60000"]);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    // Never panic here: the others would wait at the barrier forever.
                    while Instant::now() < deadline {
                        match router.send(&set, slot) {
                            Outcome::Reply(Value::Okay) => results[k].won = true,
                            Outcome::Reply(Value::Nil) => {}
                            Outcome::Unknown(_) => {
                                results[k].unknown = true;
                                continue;
                            }
                            Outcome::Refused(_) => continue,
                            Outcome::Reply(other) => {
                                results[k].failed = Some(format!("{other:?}"));
                            }
                            Outcome::Failed(e) => results[k].failed = Some(e),
                        }
                        results[k].settled = true;
                        break;
                    }
                }
                results
            })
        })
        .collect();
    let reached = wait_until(Duration::from_secs(60), || {
        progress.load(Relaxed) >= KILL_AFTER
    });
    assert!(reached, "the race did not get going\n{}", c.logs(30));
    c.kill9(victim);
    let killed_at = progress.load(Relaxed);
    let results: Vec<Vec<NxResult>> = threads
        .into_iter()
        .map(|t| t.join().expect("racing thread"))
        .collect();
    assert!(
        killed_at + 20 < KEYS,
        "the race was almost over when the leader was killed (key {killed_at} of {KEYS})"
    );
    c.restart(victim);

    let mut router = Router::new(&c, Duration::from_secs(5));
    let mut problems = Vec::new();
    let mut expected = BTreeMap::new();
    let mut with_unknown = 0;
    for (k, key) in keys.iter().enumerate() {
        let slot = key_slot(key.as_bytes()) as usize;
        let value = text(&router.query(&cmd(&["GET", key]), slot, Duration::from_secs(20)));
        let winners: Vec<usize> = (0..THREADS).filter(|&t| results[t][k].won).collect();
        let unknown: Vec<usize> = (0..THREADS).filter(|&t| results[t][k].unknown).collect();
        if !unknown.is_empty() {
            with_unknown += 1;
        }
        for (t, per_key) in results.iter().enumerate() {
            match &per_key[k] {
                NxResult {
                    failed: Some(e), ..
                } => problems.push(format!("{key}: thread {t} got {e}")),
                NxResult { settled: false, .. } => {
                    problems.push(format!("{key}: thread {t} never got OK or nil"))
                }
                _ => {}
            }
        }
        match (winners.as_slice(), &value) {
            ([], Some(v)) if unknown.iter().any(|t| *v == format!("v{t}")) => {}
            ([], v) => problems.push(format!(
                "{key}: nobody was told OK, the value is {v:?}, unknown outcomes from {unknown:?}"
            )),
            ([w], Some(v)) if *v == format!("v{w}") => {}
            ([w], v) => problems.push(format!("{key}: thread {w} won but the value is {v:?}")),
            (many, _) => problems.push(format!("{key}: threads {many:?} were all told OK")),
        }
        let pttl = int(&router.query(&cmd(&["PTTL", key]), slot, Duration::from_secs(20)));
        if !(1..=60_000).contains(&pttl) {
            problems.push(format!("{key}: PTTL {pttl}"));
        }
        expected.insert(key.clone(), value);
    }
    eprintln!(
        "SET NX race: killed node {victim} at key {killed_at}; {with_unknown} of {KEYS} keys \
         had an attempt with an unknown outcome"
    );
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        c.logs(40)
    );
    replicas_converge(&c, &expected);
}

// ---------------------------------------------------------------------------------------
// Whole-cluster crash
// ---------------------------------------------------------------------------------------

/// Sends a write until it is acknowledged; its key is `args[1]`. Refusals (MOVED, TRYAGAIN)
/// are retried; an unknown outcome fails the test, as nothing disturbs the cluster meanwhile
/// and a blind retry of INCR could count twice.
fn acked(router: &mut Router, args: &[&str]) -> Value {
    let slot = key_slot(args[1].as_bytes()) as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match router.send(&cmd(args), slot) {
            Outcome::Reply(v) => return v,
            Outcome::Refused(_) if Instant::now() < deadline => {}
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

/// Acknowledged writes survive kill -9 of every node at once. The default appendfsync
/// (everysec) suffices here: kill -9 ends the processes, not the machine, so what they wrote
/// is in the page cache even if it was not fsynced yet. A power loss would need
/// `--appendfsync always`.
#[test]
fn acknowledged_writes_survive_full_cluster_kill9() {
    let _serial = serial();
    let mut c = start_fast();
    let mut router = Router::new(&c, Duration::from_secs(5));
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (g, keys) in keys_per_group(&c, "dur", 30).iter().enumerate() {
        for (i, k) in keys.iter().enumerate() {
            let v = format!("{g}:{i}");
            assert_eq!(acked(&mut router, &["SET", k, &v]), Value::Okay);
            expected.insert(k.clone(), Some(v));
        }
        // Overwritten and deleted keys: the last acknowledged state counts.
        for k in &keys[..10] {
            assert_eq!(acked(&mut router, &["SET", k, "second"]), Value::Okay);
            expected.insert(k.clone(), Some("second".to_string()));
        }
        for k in &keys[10..15] {
            assert_eq!(int(&acked(&mut router, &["DEL", k])), 1);
            expected.insert(k.clone(), None);
        }
    }
    // Counters, hashes and expiry times, one per group.
    let groups = keys_per_group(&c, "durx", 1);
    for (g, keys) in groups.iter().enumerate() {
        let base = &keys[0];
        let ctr = format!("{{{base}}}:ctr");
        for n in 1..=25 {
            assert_eq!(int(&acked(&mut router, &["INCR", &ctr])), n);
        }
        expected.insert(ctr, Some("25".to_string()));
        let h = format!("{{{base}}}:h");
        assert_eq!(
            int(&acked(
                &mut router,
                &["HSET", &h, "a", "1", "b", &g.to_string()]
            )),
            2
        );
        let ttl = format!("{{{base}}}:ttl");
        assert_eq!(
            acked(&mut router, &["SET", &ttl, "t", "PX", "600000"]),
            Value::Okay
        );
        expected.insert(ttl, Some("t".to_string()));
    }

    for i in 0..c.len() {
        c.kill9(i);
    }
    for i in 0..c.len() {
        c.respawn(i);
    }
    c.wait_ok();

    let mut router = Router::new(&c, Duration::from_secs(5));
    let mut missing = Vec::new();
    for (k, want) in &expected {
        let slot = key_slot(k.as_bytes()) as usize;
        let got = text(&router.query(&cmd(&["GET", k]), slot, Duration::from_secs(20)));
        if &got != want {
            missing.push(format!("{k}: {got:?} != {want:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged writes lost in the crash:\n{}\n{}",
        missing.join("\n"),
        c.logs(30)
    );
    for (g, keys) in groups.iter().enumerate() {
        let base = &keys[0];
        let h = format!("{{{base}}}:h");
        let slot = key_slot(h.as_bytes()) as usize;
        let all = router.query(&cmd(&["HGETALL", &h]), slot, Duration::from_secs(20));
        let mut fields: Vec<(String, Value)> = pairs(&all);
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let fields: Vec<(String, Option<String>)> =
            fields.into_iter().map(|(k, v)| (k, text(&v))).collect();
        assert_eq!(
            fields,
            [
                ("a".to_string(), Some("1".to_string())),
                ("b".to_string(), Some(g.to_string()))
            ]
        );
        let ttl = format!("{{{base}}}:ttl");
        let pttl = int(&router.query(&cmd(&["PTTL", &ttl]), slot, Duration::from_secs(20)));
        assert!(
            (500_000..=600_000).contains(&pttl),
            "{ttl}: PTTL {pttl} after the restart"
        );
    }
    replicas_converge(&c, &expected);
}

/// A node killed and restarted with an empty data dir rejoins its groups (it does not form
/// rival ones: it waits to hear from the leaders) and catches up by snapshot, the log
/// before the leaders' snapshots being purged. Writes made while it was gone are on it.
#[test]
fn wiped_node_catches_up_by_snapshot() {
    let _serial = serial();
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            "--cluster-snapshot-after",
            "20",
        ],
    );
    let mut router = Router::new(&c, Duration::from_secs(5));
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    let keys = keys_per_group(&c, "snap", 60);
    for (g, ks) in keys.iter().enumerate() {
        for k in &ks[..30] {
            let v = format!("before:{g}");
            assert_eq!(acked(&mut router, &["SET", k, &v]), Value::Okay);
            expected.insert(k.clone(), Some(v));
        }
    }
    let victim = 2;
    c.kill9(victim);
    c.wipe(victim);
    // Enough writes to every group for its leaders to snapshot and purge past the log the
    // wiped node would need.
    for (g, ks) in keys.iter().enumerate() {
        for k in &ks[30..] {
            let v = format!("while-gone:{g}");
            set_until_acked(&mut router, k, &v);
            expected.insert(k.clone(), Some(v));
        }
        for k in &ks[..5] {
            // Overwriting with the same value is idempotent: retried through the failover.
            set_until_acked(&mut router, k, "overwritten");
            expected.insert(k.clone(), Some("overwritten".to_string()));
        }
    }
    // Its log file spans both lives: count what the second one adds.
    let formed_before = c.log_count(victim, "formed");
    c.respawn(victim);
    c.wait_ok();
    replicas_converge(&c, &expected);
    assert!(
        c.log_count(victim, "installed the leader's snapshot") > 0,
        "the wiped node caught up without a snapshot:\n{}",
        c.logs(30)
    );
    assert_eq!(
        c.log_count(victim, "formed"),
        formed_before,
        "the wiped node formed a group of its own:\n{}",
        c.logs(30)
    );
}

/// KEYS, SCAN, DBSIZE and RANDOMKEY on a node see the slots it serves as primary (the groups
/// it leads), not the copies it keeps as a replica: over all nodes, every key once.
#[test]
fn keyspace_commands_see_the_slots_a_node_serves() {
    let _serial = serial();
    let c = start_fast();
    let client = c.cluster_client();
    let mut cc = client.get_connection().expect("cluster connection");
    let keys: BTreeSet<String> = (0..300).map(|i| format!("sk:{i}")).collect();
    for k in &keys {
        let _: () = cmd(&["SET", k, "v"]).query(&mut cc).expect("SET");
    }
    let mut total = 0;
    let mut from_keys = Vec::new();
    let mut from_scan = Vec::new();
    for i in 0..c.len() {
        let led: BTreeSet<usize> = c.led_by(i).into_iter().collect();
        let mine = keys
            .iter()
            .filter(|k| led.contains(&c.group_of_key(k)))
            .count() as i64;
        let size: i64 = c.query(i, &cmd(&["DBSIZE"]));
        assert_eq!(size, mine, "node {i} leads groups {led:?}");
        total += size;
        let listed: Vec<String> = c.query(i, &cmd(&["KEYS", "*"]));
        assert!(
            listed.iter().all(|k| led.contains(&c.group_of_key(k))),
            "node {i} lists a key of a group it does not lead"
        );
        from_keys.extend(listed);
        let mut cursor = "0".to_string();
        loop {
            let (next, batch): (String, Vec<String>) =
                c.query(i, &cmd(&["SCAN", &cursor, "COUNT", "50"]));
            from_scan.extend(batch);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        let random: Option<String> = c.query(i, &cmd(&["RANDOMKEY"]));
        match random {
            Some(k) => assert!(led.contains(&c.group_of_key(&k)), "node {i}: RANDOMKEY {k}"),
            None => assert_eq!(mine, 0, "node {i}: RANDOMKEY found nothing"),
        }
    }
    assert_eq!(total, keys.len() as i64, "DBSIZE over all nodes");
    for (what, mut got) in [("KEYS", from_keys), ("SCAN", from_scan)] {
        got.sort();
        let want: Vec<String> = keys.iter().cloned().collect();
        assert_eq!(got, want, "{what} over all nodes: every key once");
    }
}

/// FLUSHALL on a node deletes the keys of the groups it leads (the slots it serves as
/// primary), on their replicas too, through the groups' logs, and leaves the other groups'
/// keys alone; run on every node (what `redis-cli --cluster call ... FLUSHALL` does) it
/// empties the cluster.
#[test]
fn flushall_deletes_the_led_groups_through_their_logs() {
    let _serial = serial();
    let c = start_fast();
    let client = c.cluster_client();
    let mut cc = client.get_connection().expect("cluster connection");
    let keys: Vec<String> = (0..200).map(|i| format!("fk:{i}")).collect();
    for k in &keys {
        let _: () = cmd(&["SET", k, k]).query(&mut cc).expect("SET");
    }
    let led: BTreeSet<usize> = c.led_by(0).into_iter().collect();
    assert!(!led.is_empty(), "node 0 leads a group\n{}", c.logs(10));
    let ok: String = c.query(0, &cmd(&["FLUSHALL", "ASYNC"]));
    assert_eq!(ok, "OK");
    for k in &keys {
        let got: Option<String> = cmd(&["GET", k]).query(&mut cc).expect("GET");
        if led.contains(&c.group_of_key(k)) {
            assert_eq!(got, None, "{k} is in a group node 0 leads");
        } else {
            assert_eq!(got.as_deref(), Some(k.as_str()), "{k} is in another group");
        }
    }
    let err = cmd(&["FLUSHALL", "LATER"])
        .query::<Value>(&mut c.conn(0))
        .expect_err("a bad argument");
    assert_eq!(err.code(), Some("ERR"), "{err}");
    for i in 1..c.len() {
        let reply = cmd(&["FLUSHDB"]).query::<Value>(&mut c.conn(i));
        if c.led_by(i).is_empty() {
            let err = reply.expect_err("a node leading nothing is a replica");
            assert_eq!(err.code(), Some("READONLY"), "{err}");
        } else {
            assert_eq!(reply.expect("FLUSHDB"), Value::Okay);
        }
    }
    // Every copy is gone (INFO keyspace counts the replica copies too): each node only
    // flushed the groups it leads, so the replicas deleted theirs by applying the leaders'
    // entries.
    for i in 0..c.len() {
        let empty = wait_until(Duration::from_secs(10), || {
            let info: String = c.query(i, &cmd(&["INFO", "keyspace"]));
            !info.contains("db0:keys=")
        });
        assert!(empty, "node {i} still holds keys\n{}", c.logs(10));
    }
}

/// A field of node `i`'s INFO (all sections) as a number.
fn info_field(c: &Cluster, i: usize, name: &str) -> u64 {
    let info: String = c.query(i, &cmd(&["INFO", "everything"]));
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {name}"))
}

/// What node `i` compares with maxmemory: used memory less the storage and Raft buffers.
fn counted_memory(c: &Cluster, i: usize) -> u64 {
    info_field(c, i, "used_memory") - info_field(c, i, "mem_not_counted_for_evict")
}

/// Over maxmemory, the leaders choose the victims and evict them through their groups' logs:
/// memory comes back under the limit on every node, the replicas of each group hold exactly
/// the same keys afterwards (no replica evicted on its own), and under allkeys-lru the keys
/// written last survive the evictions they cause.
#[test]
fn leaders_evict_through_the_log() {
    let _serial = serial();
    let c = start_fast();
    const HEADROOM: u64 = 16 << 20;
    let mut limits = Vec::new();
    for i in 0..c.len() {
        let limit = counted_memory(&c, i) + HEADROOM;
        let _: () = c.query(
            i,
            &cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        );
        let _: () = c.query(i, &cmd(&["CONFIG", "SET", "maxmemory", &limit.to_string()]));
        limits.push(limit);
    }
    let wait_under_limit = |what: &str| {
        for (i, &limit) in limits.iter().enumerate() {
            let under = wait_until(Duration::from_secs(20), || counted_memory(&c, i) <= limit);
            assert!(
                under,
                "{what}: node {i} stays over maxmemory: {} > {limit}\n{}",
                counted_memory(&c, i),
                c.logs(20)
            );
        }
    };
    let mut conns: Vec<redis::Connection> = (0..c.groups.len())
        .map(|g| c.conn(c.leader_of_group(g)))
        .collect();
    let value = "v".repeat(1024);
    let mut refused = std::collections::BTreeSet::new();
    // Pipelined SETs of 1 KB values to each group's leader, round-robin over the groups;
    // an OOM refusal is allowed (the evictions had not caught up), and so is a write not
    // acknowledged in an election; anything else fails.
    let mut write = |keys: &[Vec<String>]| {
        let rounds = keys.iter().map(Vec::len).max().unwrap_or(0).div_ceil(64);
        for round in 0..rounds {
            for (g, ks) in keys.iter().enumerate() {
                let chunk = &ks[(round * 64).min(ks.len())..((round + 1) * 64).min(ks.len())];
                let mut pipe = redis::pipe();
                // Each reply as it came, errors included (OOM is checked below).
                pipe.ignore_errors();
                for k in chunk {
                    pipe.cmd("SET").arg(k).arg(&value);
                }
                let replies: Vec<Value> = pipe.query(&mut conns[g]).expect("pipelined SETs");
                let mut moved = false;
                for (k, r) in chunk.iter().zip(&replies) {
                    match r {
                        Value::Okay => {}
                        // The group elected another leader: the next rounds go there.
                        Value::ServerError(e) if e.code() == "MOVED" => {
                            refused.insert(k.clone());
                            moved = true;
                        }
                        Value::ServerError(e) if e.code() == "OOM" => {
                            refused.insert(k.clone());
                        }
                        // A leader that lost its quorum or leadership under a loaded
                        // machine: not acknowledged, so nothing is expected of the key.
                        Value::ServerError(e)
                            if matches!(e.code(), "TRYAGAIN" | "CLUSTERDOWN" | "UNCERTAIN") =>
                        {
                            refused.insert(k.clone());
                        }
                        other => panic!("SET {k}: {other:?}\n{}", c.logs(20)),
                    }
                }
                if moved {
                    conns[g] = c.conn(c.leader_of_group(g));
                }
            }
        }
    };
    // Twice the headroom. (The headroom is large beside what a 3-node cluster allocates
    // for its logs and tables as it writes: with a few MB, that growth alone made the
    // leaders evict nearly every key and then the fresh ones.)
    let old = keys_per_group(&c, "old:", (2 * HEADROOM as usize / 1024) / c.groups.len());
    write(&old);
    wait_under_limit("after the first writes");
    let evicted: u64 = (0..c.len())
        .map(|i| info_field(&c, i, "evicted_keys"))
        .sum();
    assert!(evicted > 0, "nothing was evicted");
    // The LRU clock counts seconds: let the old keys grow idle, then write a few more,
    // which push memory over the limit again; the evictions must take old keys.
    std::thread::sleep(Duration::from_millis(2100));
    let fresh = keys_per_group(&c, "fresh:", 32);
    write(&fresh);
    wait_under_limit("after the fresh writes");
    // No more eviction rounds from here (the sampling below allocates, and a round that
    // evicted after it would leave the leaders' answers stale). The evictions already
    // asked may still be committing: the leaders' answers below are taken once no node
    // has evicted for two seconds.
    for i in 0..c.len() {
        let _: () = c.query(i, &cmd(&["CONFIG", "SET", "maxmemory", "0"]));
    }
    let evicted_total = || -> u64 {
        (0..c.len())
            .map(|i| info_field(&c, i, "evicted_keys"))
            .sum()
    };
    let mut last = evicted_total();
    let mut quiet = 0;
    let settled = wait_until(DEADLINE, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = evicted_total();
        quiet = if std::mem::replace(&mut last, now) == now {
            quiet + 1
        } else {
            0
        };
        quiet >= 4
    });
    assert!(settled, "the evictions never settled\n{}", c.logs(20));
    // Every replica holds what its group's leader holds: the fresh keys acknowledged, and
    // for a sample of the old ones the leader's answer, present or evicted.
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    for k in fresh.iter().flatten().filter(|k| !refused.contains(*k)) {
        expected.insert(k.clone(), Some(value.clone()));
    }
    assert!(
        expected.len() * 2 > fresh.iter().flatten().count(),
        "most fresh SETs were refused with OOM: {refused:?}"
    );
    let mut router = Router::new(&c, Duration::from_secs(5));
    for k in old.iter().flatten().step_by(7) {
        let slot = key_slot(k.as_bytes()) as usize;
        let v = router.query(&cmd(&["GET", k]), slot, Duration::from_secs(10));
        expected.insert(k.clone(), text(&v));
    }
    let kept = expected
        .iter()
        .filter(|(k, v)| k.starts_with("old:") && v.is_some())
        .count();
    assert!(kept > 0, "every old key was evicted");
    // Every node holds as many keys of each group as the others (all applied one log).
    let counts = |i: usize| -> Vec<i64> {
        let mut conn = c.conn(i);
        let _: () = cmd(&["READONLY"]).query(&mut conn).expect("READONLY");
        c.groups
            .iter()
            .map(|slots| {
                let mut pipe = redis::pipe();
                for s in slots.clone() {
                    pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(s);
                }
                let n: Vec<i64> = pipe.query(&mut conn).expect("COUNTKEYSINSLOT");
                n.iter().sum()
            })
            .collect()
    };
    let mut table = Vec::new();
    let agree = wait_until(Duration::from_secs(15), || {
        table = (0..c.len()).map(counts).collect();
        table.windows(2).all(|w| w[0] == w[1])
    });
    if !agree {
        let evicted: Vec<u64> = (0..c.len())
            .map(|i| info_field(&c, i, "evicted_keys"))
            .collect();
        panic!(
            "keys per group differ between nodes: {table:?}; evicted_keys per node {evicted:?}\n{}",
            c.logs(20)
        );
    }
    // The leaders kept every acknowledged fresh key (allkeys-lru evicts the idle old ones
    // first); per group, what the leader still holds of each kind when it did not.
    let mut lost = Vec::new();
    for k in fresh.iter().flatten().filter(|k| !refused.contains(*k)) {
        let slot = key_slot(k.as_bytes()) as usize;
        let v = router.query(&cmd(&["GET", k]), slot, Duration::from_secs(10));
        if text(&v).is_none() {
            lost.push(k.clone());
        }
    }
    if !lost.is_empty() {
        let per_group: Vec<String> = (0..c.groups.len())
            .map(|g| {
                let held = |prefix: &str| {
                    expected
                        .iter()
                        .filter(|(k, v)| {
                            k.starts_with(prefix) && v.is_some() && c.group_of_key(k) == g
                        })
                        .count()
                };
                let gone = lost.iter().filter(|k| c.group_of_key(k) == g).count();
                format!(
                    "group {g} (leader node {}): old kept {} of sample, fresh lost {gone}",
                    c.leader_of_group(g),
                    held("old:")
                )
            })
            .collect();
        let evicted: Vec<u64> = (0..c.len())
            .map(|i| info_field(&c, i, "evicted_keys"))
            .collect();
        panic!(
            "leaders evicted {} fresh keys; evicted_keys per node {evicted:?}\n{}\n{}",
            lost.len(),
            per_group.join("\n"),
            c.logs(20)
        );
    }
    replicas_converge(&c, &expected);

    // noeviction: a leader over the limit refuses writes that may grow memory, with Valkey's
    // error, and still runs the others.
    for i in 0..c.len() {
        let _: () = c.query(
            i,
            &cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        );
        let _: () = c.query(i, &cmd(&["CONFIG", "SET", "maxmemory", "1"]));
    }
    let k = &fresh[0][0];
    let slot = key_slot(k.as_bytes()) as usize;
    let refused = router.send(&cmd(&["SET", k, "x"]), slot);
    assert!(
        matches!(&refused, Outcome::Failed(e)
            if e.contains("OOM command not allowed when used memory > 'maxmemory'.")),
        "{refused:?}"
    );
    let deleted = router.query(&cmd(&["DEL", k]), slot, Duration::from_secs(10));
    assert_eq!(deleted, Value::Int(1));
}

/// With `cluster-databases` (Valkey 9), each numbered database's writes go through the slot
/// group's log like database 0's: every replica holds them in the same database, a new
/// leader serves them after a failover, FLUSHDB empties one database, MOVE and COPY ... DB
/// work within a slot, and a wiped node catches up by a snapshot that carries them.
#[test]
fn numbered_databases_replicate_through_the_slot_groups_logs() {
    let _serial = serial();
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            "--cluster-databases",
            "4",
            "--cluster-snapshot-after",
            "20",
        ],
    );
    let key = "numdb";
    let slot = key_slot(key.as_bytes()) as usize;
    let leader = c.leader_of_slot(slot);
    let mut conn = c.conn(leader);
    let mut on = |args: &[&str]| -> Value { cmd(args).query(&mut conn).expect("reply") };
    assert_eq!(on(&["SET", key, "zero"]), Value::Okay);
    assert_eq!(on(&["SELECT", "2"]), Value::Okay);
    assert_eq!(on(&["SET", key, "two"]), Value::Okay);
    assert_eq!(on(&["HSET", "{numdb}h", "f", "v"]), Value::Int(1));
    // MOVE and COPY ... DB within the slot; a transaction in database 2.
    assert_eq!(on(&["MOVE", "{numdb}h", "3"]), Value::Int(1));
    assert_eq!(on(&["COPY", key, "{numdb}c", "DB", "1"]), Value::Int(1));
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("INCR")
        .arg("{numdb}n")
        .cmd("INCR")
        .arg("{numdb}n");
    let (_, n): (i64, i64) = tx.query(&mut conn).expect("EXEC");
    assert_eq!(n, 2);
    let err = |v: redis::RedisResult<Value>| error_text(&v.expect_err("an error"));
    assert_eq!(
        err(cmd(&["SELECT", "4"]).query(&mut conn)),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(cmd(&["SWAPDB", "0", "1"]).query(&mut conn)),
        "ERR SWAPDB is not allowed in cluster mode"
    );

    // Every node's replica has each database's keys where they belong.
    let expect: [(&str, &str, Value); 5] = [
        ("0", key, Value::BulkString(b"zero".to_vec())),
        ("2", key, Value::BulkString(b"two".to_vec())),
        ("1", "{numdb}c", Value::BulkString(b"two".to_vec())),
        ("2", "{numdb}n", Value::BulkString(b"2".to_vec())),
        ("2", "{numdb}h", Value::Nil),
    ];
    let converged = |c: &Cluster, nodes: &[usize]| {
        nodes.iter().all(|&i| {
            let mut r = c.conn(i);
            let _: () = cmd(&["READONLY"]).query(&mut r).expect("READONLY");
            expect.iter().all(|(db, k, want)| {
                let _: () = cmd(&["SELECT", db]).query(&mut r).expect("SELECT");
                cmd(&["GET", k]).query::<Value>(&mut r).ok().as_ref() == Some(want)
            }) && {
                let _: () = cmd(&["SELECT", "3"]).query(&mut r).expect("SELECT");
                cmd(&["HGET", "{numdb}h", "f"]).query::<Value>(&mut r).ok()
                    == Some(Value::BulkString(b"v".to_vec()))
            }
        })
    };
    assert!(
        wait_until(DEADLINE, || converged(&c, &[0, 1, 2])),
        "replicas differ\n{}",
        c.logs(20)
    );

    // The leader goes; the new one serves every database from what committed.
    let g = c.group_of_slot(slot);
    c.kill9(leader);
    assert!(
        c.wait_leader_change(&[g], leader, DEADLINE).is_some(),
        "no new leader\n{}",
        c.logs(20)
    );
    let next = c.leader_of_group(g);
    let mut conn = c.conn(next);
    let _: () = cmd(&["SELECT", "2"]).query(&mut conn).expect("SELECT");
    let got: Option<String> = cmd(&["GET", key]).query(&mut conn).expect("GET");
    assert_eq!(got.as_deref(), Some("two"));
    // FLUSHDB empties database 2 of the groups this node leads, through their logs.
    let _: () = cmd(&["FLUSHDB"]).query(&mut conn).expect("FLUSHDB");
    let got: Option<String> = cmd(&["GET", key]).query(&mut conn).expect("GET");
    assert_eq!(got, None);
    let _: () = cmd(&["SELECT", "0"]).query(&mut conn).expect("SELECT");
    let got: Option<String> = cmd(&["GET", key]).query(&mut conn).expect("GET");
    assert_eq!(got.as_deref(), Some("zero"));
    c.respawn(leader);
    c.wait_ok();

    // A wiped node catches up by snapshot, numbered databases included.
    let victim = (0..3)
        .find(|&i| i != c.leader_of_group(g))
        .expect("a follower");
    c.kill9(victim);
    c.wipe(victim);
    let keys = keys_per_group(&c, "snapdb", 40);
    for ks in &keys {
        for k in ks {
            let node = c.leader_of_slot(key_slot(k.as_bytes()) as usize);
            let mut w = c.conn(node);
            let _: () = cmd(&["SELECT", "1"]).query(&mut w).expect("SELECT");
            let _: () = cmd(&["SET", k, "one"]).query(&mut w).expect("SET");
        }
    }
    c.respawn(victim);
    c.wait_ok();
    let caught_up = wait_until(DEADLINE, || {
        let mut r = c.conn(victim);
        let _: () = cmd(&["READONLY"]).query(&mut r).expect("READONLY");
        let _: () = cmd(&["SELECT", "1"]).query(&mut r).expect("SELECT");
        keys.iter().flatten().all(|k| {
            cmd(&["GET", k])
                .query::<Option<String>>(&mut r)
                .ok()
                .flatten()
                .as_deref()
                == Some("one")
        })
    });
    assert!(caught_up, "the wiped node lacks database 1\n{}", c.logs(30));
    assert!(
        c.log_count(victim, "installed the leader's snapshot") > 0,
        "the wiped node caught up without a snapshot:\n{}",
        c.logs(30)
    );
}

// ---------------------------------------------------------------------------------------
// The bus
// ---------------------------------------------------------------------------------------

/// `body` behind its big-endian length, as every bus frame is sent.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// A hello of protocol `version` from node 9's core 0, with `auth` as its credentials (the
/// layout of `src/cluster/link.rs`).
fn bus_hello(version: u16, auth: &[u8]) -> Vec<u8> {
    let mut body = b"TKVBUS".to_vec();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&9u64.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(&(auth.len() as u32).to_be_bytes());
    body.extend_from_slice(auth);
    framed(&body)
}

/// A bus request carrying the admin `call`, as a member sends it.
fn bus_admin_request(id: u64, call: &admin::Call) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.push(KIND_ADMIN);
    body.extend_from_slice(&META.to_be_bytes());
    body.extend_from_slice(&wire::encode(call));
    framed(&body)
}

/// The frame bodies in `bytes`.
fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        assert!(rest.len() >= len, "a frame cut short: {bytes:?}");
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    out
}

/// Reads what the node sends on `stream` until it closes the connection; fails the test if
/// it keeps it open 10 s.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => {
                panic!("the node kept a stranger's connection open; it sent {got:?}")
            }
            // Reset: the node closed with our bytes unread.
            Err(_) => return got,
        }
    }
}

/// The nonce of a challenge frame, checking the frame on the way.
fn challenge_nonce(frame: &[u8]) -> [u8; 32] {
    assert_eq!(&frame[..6], b"TKVBUS", "{frame:?}");
    assert_eq!(
        frame[6..9],
        [0, 2, 2],
        "protocol version 2, challenge: {frame:?}"
    );
    frame[9..].try_into().expect("a 32-byte nonce")
}

/// The reason of a refused hello-ack.
fn refusal(frame: &[u8]) -> String {
    assert_eq!(&frame[..6], b"TKVBUS", "{frame:?}");
    assert_eq!(frame[8], 1, "a refused hello-ack: {frame:?}");
    String::from_utf8_lossy(&frame[9..]).into_owned()
}

/// A cluster CA and node certificates for the bus's mutual TLS, in a temporary directory:
/// `node` (signed by the cluster CA) and `stranger` (signed by another CA, which is also the
/// only CA it trusts). Each has both extended key usages, as a node's certificate needs.
struct BusPki {
    dir: tempfile::TempDir,
}

impl BusPki {
    fn new() -> BusPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write PEM");
        };
        for (who, ca_name) in [("node", "cluster CA"), ("stranger", "another CA")] {
            let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, ca_name);
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let ca_key = KeyPair::generate().expect("CA key");
            write(
                &format!("{who}-ca.crt"),
                &ca.self_signed(&ca_key).expect("CA").pem(),
            );
            let issuer = Issuer::new(ca, ca_key);
            let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf");
            leaf.distinguished_name.push(DnType::CommonName, who);
            leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            leaf.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("leaf key");
            write(
                &format!("{who}.crt"),
                &leaf.signed_by(&key, &issuer).expect("leaf").pem(),
            );
            write(&format!("{who}.key"), &key.serialize_pem());
        }
        BusPki { dir }
    }

    /// The arguments that put a node on the bus's mutual TLS with `who`'s certificate.
    fn args(&self, who: &str) -> Vec<String> {
        let path = |name: String| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-cluster".into(),
            "yes".into(),
            "--tls-cert-file".into(),
            path(format!("{who}.crt")),
            "--tls-key-file".into(),
            path(format!("{who}.key")),
            "--tls-ca-cert-file".into(),
            path(format!("{who}-ca.crt")),
        ]
    }
}

/// Mutual TLS on the bus (`tls-cluster yes`): the cluster forms, replicates and takes a
/// killed node back over TLS; a stranger reaching a bus port is told only that TLS is
/// required; a node that holds the secret but whose certificate another CA signed cannot be
/// met into the cluster.
#[test]
fn the_bus_runs_on_mutual_tls() {
    let _serial = serial();
    let pki = BusPki::new();
    let args = pki.args("node");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(3, &args);
    for i in 0..3 {
        assert!(
            c.log_count(i, "cluster bus: mutual TLS") >= 1,
            "{}",
            c.logs(20)
        );
    }
    let client = c.cluster_client();
    let mut con = client.get_connection().expect("cluster connection");
    for k in 0..100 {
        let () = redis::cmd("SET")
            .arg(format!("tls:{k}"))
            .arg(k)
            .query(&mut con)
            .expect("SET over a TLS bus");
    }

    // The bus's first word to anyone is "TLS required"; what is not a route frame is dropped.
    let mut stream = TcpStream::connect(("127.0.0.1", c.port(0) + 10000)).expect("bus port");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: tallykv\r\n\r\n")
        .expect("send");
    let got = frames(&read_until_closed(&mut stream));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&got[0][..6], b"TKVBUS");
    assert_eq!(got[0][8..], [3], "a tls-required greeting: {got:?}");

    // A node killed and restarted catches up over TLS: every write survives.
    let victim = c.leader_of_group(0);
    c.restart(victim);
    let mut con = client.get_connection().expect("cluster connection");
    for k in 0..100 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("tls:{k}"))
            .query(&mut con)
            .expect("GET");
        assert_eq!(v, k);
    }

    // The secret without a certificate of the cluster's CA is not enough to join.
    let stranger_args = pki.args("stranger");
    let stranger_args: Vec<&str> = stranger_args.iter().map(String::as_str).collect();
    let secret = c.secret().to_string();
    let stranger = c.add_joiner_with(&secret, &stranger_args);
    let meet: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("MEET")
        .arg(c.host(stranger))
        .arg(c.port(stranger))
        .query(&mut c.conn(0));
    let error = error_text(&meet.expect_err("CLUSTER MEET of a node of another CA"));
    assert!(error.contains("TLS handshake failed"), "{error}");
    let myid: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut c.conn(stranger));
    assert!(myid.is_err(), "the stranger joined: {myid:?}");
    assert!(
        wait_until(DEADLINE, || c.log_count(stranger, "TLS handshake failed")
            >= 1),
        "{}",
        c.logs(20)
    );

    // CONFIG SET of a tls-* directive rebuilds the bus's TLS (no client port has TLS here):
    // a file that does not load fails it and changes nothing; one that does is taken.
    let mut admin = c.conn(0);
    let failed: redis::RedisResult<String> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tls-client-cert-file")
        .arg("/nonexistent/node.crt")
        .arg("tls-client-key-file")
        .arg("/nonexistent/node.key")
        .query(&mut admin);
    let error = error_text(&failed.expect_err("a missing client certificate"));
    assert!(
        error.contains("Unable to update TLS configuration"),
        "{error}"
    );
    let kept: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("tls-client-cert-file")
        .query(&mut admin)
        .expect("CONFIG GET");
    assert_eq!(kept, ["tls-client-cert-file", ""]);
    let set: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tls-client-cert-file")
        .arg(args[3])
        .arg("tls-client-key-file")
        .arg(args[5])
        .query(&mut admin)
        .expect("CONFIG SET of loadable files");
    assert_eq!(set, "OK");
}

/// The node names CLUSTER NODES lists on node `i`, sorted.
fn node_names(c: &Cluster, i: usize) -> Vec<String> {
    let nodes: String = c.query(i, redis::cmd("CLUSTER").arg("NODES"));
    let mut names: Vec<String> = nodes
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The bus serves only nodes that prove they hold the cluster's `cluster-secret`: a
/// stranger who reaches a bus port gets no request run (a version-1 hello, a hello with a
/// forged proof, garbage), and a node started with another secret cannot be met into the
/// cluster. (That nodes holding the secret work together is every other test here.)
#[test]
fn the_bus_refuses_strangers_and_nodes_with_another_secret() {
    let _serial = serial();
    // Every node appends its audit lines to one file (whole lines: each is one O_APPEND write).
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let audit = audit_dir.path().join("audit.log");
    let mut c = Cluster::start(3, &["--audit-log-file", audit.to_str().unwrap()]);
    let members = node_names(&c, 0);
    assert_eq!(members.len(), 3);
    let bus = format!("127.0.0.1:{}", c.port(0) + 10000);
    // Where a CLUSTER MEET the stranger asks for would make the node dial.
    let bait = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    bait.set_nonblocking(true).expect("nonblocking");
    let bait_port = bait.local_addr().expect("bait addr").port();
    let calls = [
        admin::Call::Meet {
            host: "127.0.0.1".into(),
            port: bait_port.wrapping_sub(10000),
            bus_port: bait_port,
        },
        admin::Call::Forget { id: 1 },
        admin::Call::Forget { id: 2 },
    ];
    let requests: Vec<u8> = calls
        .iter()
        .enumerate()
        .flat_map(|(id, call)| bus_admin_request(id as u64 + 1, call))
        .collect();

    // A hello of the protocol before authentication, the admin calls right behind it.
    let mut stream = TcpStream::connect(&bus).expect("connect to the bus");
    stream
        .write_all(&[bus_hello(1, &[]), requests.clone()].concat())
        .expect("send");
    let got = frames(&read_until_closed(&mut stream));
    assert_eq!(got.len(), 2, "a challenge and a refusal, no reply: {got:?}");
    challenge_nonce(&got[0]);
    assert_eq!(
        refusal(&got[1]),
        "protocol version 1 is not supported; the server speaks version 2"
    );

    // Today's protocol with a forged proof over the node's challenge.
    let mut stream = TcpStream::connect(&bus).expect("connect to the bus");
    let mut len = [0u8; 4];
    std::io::Read::read_exact(&mut stream, &mut len).expect("challenge length");
    let mut challenge = vec![0u8; u32::from_be_bytes(len) as usize];
    std::io::Read::read_exact(&mut stream, &mut challenge).expect("challenge");
    let nonce = challenge_nonce(&challenge);
    let mut forged = [7u8; 64];
    forged[32..].copy_from_slice(&nonce);
    stream
        .write_all(&[bus_hello(2, &forged), requests].concat())
        .expect("send");
    let got = frames(&read_until_closed(&mut stream));
    assert_eq!(got.len(), 1, "a refusal, no reply: {got:?}");
    assert_eq!(refusal(&got[0]), "authentication failed");

    // Garbage.
    let mut stream = TcpStream::connect(&bus).expect("connect to the bus");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: tallykv\r\n\r\n")
        .expect("send");
    let got = frames(&read_until_closed(&mut stream));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(refusal(&got[1]), "malformed hello: longer than 64 KiB");

    // Nothing ran: the members are the same everywhere, and nobody dialled the bait.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(node_names(&c, i), members, "node {i}");
    }
    assert!(
        matches!(bait.accept(), Err(e) if e.kind() == WouldBlock),
        "a stranger's CLUSTER MEET ran"
    );
    assert!(
        c.log_count(0, "cluster link: refused a connection's hello") >= 1,
        "{}",
        c.logs(20)
    );

    // A node with another secret refuses the members, so CLUSTER MEET cannot make it one.
    let stranger = c.add_joiner_with_secret("another-clusters-secret-32-bytes");
    let meet: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("MEET")
        .arg(c.host(stranger))
        .arg(c.port(stranger))
        .query(&mut c.conn(0));
    let error = error_text(&meet.expect_err("CLUSTER MEET of a node with another secret"));
    assert!(error.contains("authentication failed"), "{error}");
    let myid: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut c.conn(stranger));
    assert!(myid.is_err(), "the stranger joined: {myid:?}");
    for i in 0..3 {
        assert_eq!(node_names(&c, i), members, "node {i}");
    }
    assert!(
        c.log_count(stranger, "authentication failed: wrong proof") >= 1,
        "{}",
        c.logs(20)
    );
    // The secret itself is never logged.
    for i in 0..c.len() {
        assert_eq!(c.log_count(i, c.secret()), 0, "node {i} logged the secret");
    }

    // The audit log: the refused connections, and the MEET.
    let events = || common::json_lines(&audit);
    let has = |kind: &str, field: &str, part: &str| {
        events()
            .iter()
            .any(|e| e["event"] == kind && e[field].as_str().is_some_and(|v| v.contains(part)))
    };
    let stranger_port = c.port(stranger).to_string();
    assert!(
        wait_until(DEADLINE, || {
            has("bus_rejected", "reason", "version 1")
                && has("bus_rejected", "reason", "authentication failed")
                && has("cluster_admin", "peer", &stranger_port)
        }),
        "{}",
        std::fs::read_to_string(&audit).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(c.secret()), "the secret is in the audit log");
}
