//! Network partitions in cluster mode. The nodes' bus links (node to node) go through a
//! fault-injecting TCP proxy in the test process (`common::netproxy`), not through network
//! namespaces: each node binds its own loopback address, so the proxy knows which node is
//! calling, and a cut link silently drops bytes (no reset, no close) the way a partition
//! does. Clients still reach every node directly, the isolated one included, which is the
//! case that matters: a node cut off from the majority must not acknowledge anything from
//! its stale state while the majority moves on.
//!
//! The final state is judged as in `tests/cluster.rs` (see `common::load`): every
//! acknowledged increment is in it, no refused one is, unknown ones may be. The tests take a
//! file-wide lock: each starts three nodes, and two clusters at once on two shared cores
//! would mostly test the scheduler.
//!
//! Nothing here asserts how fast anything happened: the waits are for conditions (new
//! leaders named, a write acknowledged, a refusal received) with generous deadlines, and the
//! times are printed for the record. Failover times are measured by `benches/failover.py`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, GroupView, Router};
use common::load::{
    IncrLoad, Tally, check_counter, check_counters, cmd, keys_per_group, probe_until_redirected,
    read_incr_reply, read_reply_line, record_raw, replicas_converge, replies_summary, text,
};
use common::netproxy::{NetProxy, ProxiedNode};
use common::{DEADLINE, wait_until};
use tallykv::cluster::{SLOT_COUNT, key_slot};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `--cluster-node-timeout` (ms): a follower stands for election after between this and
/// 1.25× this without hearing from its leader.
const NODE_TIMEOUT_MS: u64 = 500;

/// Reply timeout of the load's clients. An isolated node answers the writes it took in its
/// first node timeout after the cut once it sees its quorum gone (UNCERTAIN, within about
/// 1.5 node timeouts; at most 5 s), and refuses later ones at once; a client that hears
/// nothing for this long gives up on it and tries another node. Only how soon the load moves
/// on depends on it, never an outcome.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Three nodes on 127.0.0.1-3, their bus links through the proxy.
fn start() -> Cluster {
    Cluster::start_partitionable(3, &["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
}

/// Waits until each of `nodes` names a leader other than `old` for each of `groups`; how
/// long that took (for the record), or None after `limit`.
fn wait_new_leaders(
    c: &Cluster,
    nodes: &[usize],
    groups: &[usize],
    old: usize,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let changed = wait_until(limit, || {
        nodes.iter().all(|&i| {
            c.info_groups(i).is_some_and(|views| {
                groups
                    .iter()
                    .all(|&g| views[g].leader.as_deref().is_some_and(|l| l != c.name(old)))
            })
        })
    });
    changed.then(|| start.elapsed())
}

/// Each group's (leader, term) as the cluster agrees on it now.
fn leaders_and_terms(c: &Cluster) -> Vec<(usize, u64)> {
    (0..c.groups.len())
        .map(|g| {
            let l = c.leader_of_group(g);
            (l, c.info_groups(l).expect("INFO cluster")[g].term)
        })
        .collect()
}

/// A raw connection to node `i`'s client port, and a reader on it.
fn raw(c: &Cluster, i: usize, timeout: Duration) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect((c.host(i), c.port(i))).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let writer = stream.try_clone().expect("clone stream");
    (writer, BufReader::new(stream))
}

fn resp(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out
}

/// One reply to GET: `Ok(value)` (None for nil) or `Err(error text)`.
fn read_get_reply(r: &mut BufReader<TcpStream>) -> Result<Option<String>, String> {
    let line = read_reply_line(r)?;
    if let Some(e) = line.strip_prefix('-') {
        return Err(e.to_string());
    }
    let len: i64 = line
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply to GET: {line:?}"));
    if len < 0 {
        return Ok(None);
    }
    let mut body = vec![0u8; len as usize + 2];
    r.read_exact(&mut body).expect("bulk body");
    body.truncate(len as usize);
    Ok(Some(String::from_utf8(body).expect("UTF-8 value")))
}

/// Node `i`'s view of group `g`, for the record ("?" if it does not answer).
fn view(c: &Cluster, i: usize, g: usize) -> String {
    c.info_groups(i)
        .and_then(|v| v.get(g).cloned())
        .map_or("?".to_string(), |v: GroupView| {
            format!("role={} term={} leader={:?}", v.role, v.term, v.leader)
        })
}

// ---------------------------------------------------------------------------------------
// The proxy itself
// ---------------------------------------------------------------------------------------

/// An echo server on `ip` (an ephemeral port), for the proxy's own test.
fn echo_server(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind an echo server");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = stream.try_clone().expect("clone stream");
                let mut r = stream;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

/// A connection from `from` (an address of the loopback) to `to`.
fn dial_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("an address");
    socket.bind(&local.into()).expect("bind the source address");
    socket
        .connect(&to.into())
        .expect("connect through the proxy");
    socket.into()
}

/// How long a cut link is watched for bytes it should not forward. Bytes that get through
/// would come back within it on an idle machine; on a busy one a slow leak could go unseen
/// (a missed bug, never a failed healthy run).
const SILENCE: Duration = Duration::from_millis(300);

/// Sends `sent` and waits (up to [`DEADLINE`]) for the echo: Some(bytes), or None if nothing
/// came back (the connection stays open); panics if it closed.
fn echoed(s: &mut TcpStream, sent: &[u8]) -> Option<Vec<u8>> {
    echoed_within(s, sent, DEADLINE)
}

/// Sends `sent` and checks that nothing comes back within [`SILENCE`] (the connection stays
/// open); panics if it closed.
fn silent(s: &mut TcpStream, sent: &[u8]) -> bool {
    echoed_within(s, sent, SILENCE).is_none()
}

fn echoed_within(s: &mut TcpStream, sent: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.write_all(sent).expect("write");
    let mut got = vec![0u8; sent.len()];
    match s.read_exact(&mut got) {
        Ok(()) => Some(got),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("the connection failed: {e}"),
    }
}

/// Whether the proxy closed `s` (waits up to [`DEADLINE`]).
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    wait_until(DEADLINE, || {
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    })
}

/// A cut link drops bytes without closing anything, a connection opened across it is
/// accepted and goes nowhere, one direction can be cut alone, and healing closes exactly the
/// connections that lost bytes.
#[test]
fn proxy_drops_cut_traffic_and_closes_broken_connections_on_heal() {
    let nodes: Vec<ProxiedNode> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| ProxiedNode {
            listen: format!("{ip}:0").parse().expect("an address"),
            target: echo_server(ip),
        })
        .collect();
    let proxy = NetProxy::start(&nodes).expect("start the proxy");
    // Node 1 calls node 0; node 2 calls node 0 (idle during the cut); node 2 calls node 1.
    let mut a = dial_from("127.0.0.2", proxy.listen_addr(0));
    let mut idle = dial_from("127.0.0.3", proxy.listen_addr(0));
    let mut b = dial_from("127.0.0.3", proxy.listen_addr(1));
    assert_eq!(echoed(&mut a, b"hello").as_deref(), Some(&b"hello"[..]));
    assert_eq!(echoed(&mut idle, b"hi").as_deref(), Some(&b"hi"[..]));
    assert_eq!(echoed(&mut b, b"hey").as_deref(), Some(&b"hey"[..]));
    assert!(wait_until(DEADLINE, || proxy.connections(1, 0) == 1));

    proxy.isolate(0);
    assert!(proxy.is_cut(0, 1) && proxy.is_cut(1, 0) && !proxy.is_cut(1, 2));
    assert!(silent(&mut a, b"lost"), "a cut link forwarded bytes");
    let mut late = dial_from("127.0.0.2", proxy.listen_addr(0));
    assert!(
        silent(&mut late, b"late"),
        "a connection across the cut got through"
    );
    // The proxy has taken both writes and dropped them (so the heal below knows those two
    // connections lost bytes): "lost" and "late".
    assert!(
        wait_until(DEADLINE, || proxy.dropped_bytes() >= 8),
        "the proxy dropped {} bytes, not 8",
        proxy.dropped_bytes()
    );
    assert_eq!(
        echoed(&mut b, b"still").as_deref(),
        Some(&b"still"[..]),
        "a link outside the cut stopped"
    );

    proxy.heal();
    assert!(closed(&mut a), "a connection that lost bytes stayed open");
    assert!(
        closed(&mut late),
        "a connection opened across the cut stayed open"
    );
    assert_eq!(
        echoed(&mut idle, b"again").as_deref(),
        Some(&b"again"[..]),
        "an idle connection was closed by the heal"
    );
    let mut fresh = dial_from("127.0.0.2", proxy.listen_addr(0));
    assert_eq!(echoed(&mut fresh, b"back").as_deref(), Some(&b"back"[..]));

    // One direction: node 1's requests reach node 0 (the echo server), the replies do not.
    let dropped = proxy.dropped_bytes();
    proxy.block(0, 1);
    assert!(silent(&mut fresh, b"one-way"));
    assert!(
        wait_until(DEADLINE, || proxy.dropped_bytes() >= dropped + 7),
        "the echo of \"one-way\" was not dropped"
    );
    proxy.heal();
    assert!(closed(&mut fresh));

    drop(proxy);
    assert!(
        TcpStream::connect_timeout(&nodes[0].target, DEADLINE).is_ok(),
        "the echo server is still there"
    );
}

// ---------------------------------------------------------------------------------------
// An isolated leader
// ---------------------------------------------------------------------------------------

/// Cut a leader off from the other two nodes in the middle of an INCR load, while clients can
/// still reach it. The majority elects new leaders and every group takes writes again.
/// Meanwhile the isolated node, which cannot reach a quorum, acknowledges no write and serves
/// no linearizable read: once it has noticed (CLUSTER INFO says cluster_state:fail), INCRs and
/// a GET of a key the majority has changed since are refused at once with CLUSTERDOWN —
/// never a value, and not held until the write timeout (which would answer UNCERTAIN or
/// TRYAGAIN). After the heal the node rejoins, acknowledges nothing older than the new
/// leader's history, the counters' invariants hold and every replica converges.
#[test]
fn isolated_leader_acknowledges_nothing_stale() {
    let _serial = serial();
    let c = start();
    let probe = keys_per_group(&c, "probe", 1)[0][0].clone();
    let probe_slot = key_slot(probe.as_bytes()) as usize;
    let victim = c.leader_of_group(0);
    let majority: Vec<usize> = (0..c.len()).filter(|&i| i != victim).collect();
    let mut probe_tally = Tally::default();

    // A raw connection to the leader's client port: the proxy never touches it.
    let (mut old_writer, mut old) = raw(&c, victim, DEADLINE);
    let incr = resp(&["INCR", &probe]);
    for expected in 1..=3 {
        old_writer.write_all(incr.as_bytes()).expect("write");
        let v = record_raw(&mut probe_tally, read_incr_reply(&mut old));
        assert_eq!(
            v,
            Some(expected),
            "the leader serves the probe before the cut"
        );
    }

    let load = IncrLoad::start(&c, 4, 4, CLIENT_TIMEOUT);
    load.wait_progress(&c, 30, Duration::from_secs(20));
    let led = c.led_by(victim);
    assert!(
        led.contains(&0),
        "node {victim} leads group 0 (it says {led:?})"
    );
    let dropped_before = c.proxy().dropped_bytes();
    c.proxy().isolate(victim);
    let cut = Instant::now();
    load.mark_fault();
    let elected = wait_new_leaders(&c, &majority, &led, victim, DEADLINE).unwrap_or_else(|| {
        panic!(
            "the majority elected no new leaders for {led:?} within {DEADLINE:?}\n{}",
            c.logs(30)
        )
    });
    let unavailable = load.wait_recovered(&c, DEADLINE);
    eprintln!(
        "isolated node {victim} (leading groups {led:?}): the majority named new leaders after \
         {elected:?}; per group ms from the cut to the first acknowledged write: {unavailable:?}"
    );

    // Increments through the new leader while the old one is cut off.
    let mut router = Router::new(&c, CLIENT_TIMEOUT);
    let mut majority_acked = Vec::new();
    while majority_acked.len() < 5 {
        probe_tally.attempts += 1;
        if let Some(v) = probe_tally.record(router.send(&cmd(&["INCR", &probe]), probe_slot)) {
            majority_acked.push(v);
        }
        assert!(
            probe_tally.attempts < 500,
            "the new leader does not take the probe"
        );
    }
    let newest = *majority_acked.iter().max().expect("values");

    // The isolated node notices that no quorum acknowledges it any more (a node timeout
    // without replies): its CLUSTER INFO stops counting the slots of the groups it led.
    let led_slots: usize = led.iter().map(|&g| c.groups[g].len()).sum();
    let mut state = String::new();
    let noticed = wait_until(DEADLINE, || {
        state = c.query(victim, &cmd(&["CLUSTER", "INFO"]));
        state
            .lines()
            .find_map(|l| l.strip_prefix("cluster_slots_ok:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|ok| ok + led_slots <= SLOT_COUNT)
    });
    assert!(
        noticed && state.contains("cluster_state:fail"),
        "the isolated node still reports the slots of {led:?} as served: {state}\n{}",
        c.logs(30)
    );
    assert!(
        c.proxy().is_cut(victim, majority[0])
            && wait_until(DEADLINE, || c.proxy().dropped_bytes() > dropped_before),
        "the proxy did not cut node {victim} off"
    );

    // The isolated node, asked directly: three INCRs (one batch) and a linearizable GET on
    // another connection.
    let (mut get_writer, mut get_reader) = raw(&c, victim, DEADLINE);
    old_writer
        .write_all(incr.repeat(3).as_bytes())
        .expect("write");
    get_writer
        .write_all(resp(&["GET", &probe]).as_bytes())
        .expect("write");
    let mut isolated_incrs = Vec::new();
    for _ in 0..3 {
        let reply = read_incr_reply(&mut old);
        record_raw(&mut probe_tally, reply.clone());
        isolated_incrs.push(reply);
    }
    let isolated_get = read_get_reply(&mut get_reader);
    let isolated_view = view(&c, victim, 0);
    eprintln!(
        "isolated node {victim} sees group 0 as {isolated_view}; INCR there while cut off: \
         {isolated_incrs:?}; GET: {isolated_get:?} (the majority acknowledged up to {newest})"
    );
    // Refused at once, as a Valkey primary cut off from the majority does: CLUSTERDOWN, not
    // proposed, so certainly not applied. A node that held the commands instead would answer
    // the INCRs UNCERTAIN and the GET TRYAGAIN, at its write timeout.
    for reply in &isolated_incrs {
        match reply {
            Ok(v) => panic!(
                "the isolated node acknowledged INCR = {v} without a quorum (the majority had \
                 acknowledged {newest})\n{}",
                c.logs(30)
            ),
            Err(e) => assert!(
                e.starts_with("CLUSTERDOWN"),
                "the isolated node did not refuse INCR at once with CLUSTERDOWN: {e} (it sees \
                 group 0 as {isolated_view})\n{}",
                c.logs(30)
            ),
        }
    }
    match &isolated_get {
        Err(e) => assert!(
            e.starts_with("CLUSTERDOWN"),
            "the isolated node did not refuse GET at once with CLUSTERDOWN: {e} (it sees group \
             0 as {isolated_view})\n{}",
            c.logs(30)
        ),
        Ok(v) => panic!(
            "the isolated node answered GET {probe} = {v:?} as current, though the majority \
             has since acknowledged {newest} (a stale linearizable read)\n{}",
            c.logs(30)
        ),
    }

    let cut_for = cut.elapsed();
    c.proxy().heal();
    // Sent after every increment above completed: any value acknowledged now must be newer.
    let after_heal = probe_until_redirected(
        &mut old_writer,
        &mut old,
        &incr,
        newest,
        &mut probe_tally,
        "healed node",
    );
    eprintln!(
        "cut off for {cut_for:?}; probe on the old leader after the heal: {}",
        replies_summary(&after_heal)
    );
    let redirected = matches!(after_heal.last(), Some(Err(e)) if e.starts_with("MOVED"));
    assert!(
        redirected,
        "the healed node never redirected the probe to the new leader"
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

// ---------------------------------------------------------------------------------------
// An isolated follower
// ---------------------------------------------------------------------------------------

/// Cut a node off for several election timeouts and heal: the groups it led elect new
/// leaders (expected), the others keep theirs, in the same term, throughout and after the
/// heal, and the node catches up.
///
/// The hazard: openraft 0.9 has no pre-vote. Cut off, the node hears from no leader and
/// stands in every group it follows again and again, each time in a higher term; once it can
/// reach the others, a leader that sees the higher term (in a reply to its heartbeat) steps
/// down, though it was healthy all along. The node stands only after a pre-vote round a
/// majority grants (`ClusterNode::pre_vote`), which a cut-off node cannot win.
#[test]
fn isolated_follower_does_not_depose_healthy_leaders() {
    let _serial = serial();
    let c = start();
    let before = leaders_and_terms(&c);
    // The node leading the fewest groups, so most groups are ones it follows.
    let victim = (0..c.len())
        .min_by_key(|&i| before.iter().filter(|(l, _)| *l == i).count())
        .expect("nodes");
    let majority: Vec<usize> = (0..c.len()).filter(|&i| i != victim).collect();
    let led: Vec<usize> = (0..c.groups.len())
        .filter(|&g| before[g].0 == victim)
        .collect();
    let others: Vec<usize> = (0..c.groups.len()).filter(|g| !led.contains(g)).collect();
    let victim_terms = |c: &Cluster| -> Vec<u64> {
        let views = c
            .info_groups(victim)
            .expect("INFO cluster from the isolated node");
        others.iter().map(|&g| views[g].term).collect()
    };

    let load = IncrLoad::start(&c, 4, 4, CLIENT_TIMEOUT);
    load.wait_progress(&c, 30, Duration::from_secs(20));
    let terms_at_cut = victim_terms(&c);
    c.proxy().isolate(victim);
    load.mark_fault();
    let cut = Instant::now();
    if !led.is_empty() {
        wait_new_leaders(&c, &majority, &led, victim, DEADLINE).unwrap_or_else(|| {
            panic!(
                "the majority elected no new leaders for {led:?}\n{}",
                c.logs(30)
            )
        });
    }
    // Writes keep flowing in every group while the node is away.
    load.wait_progress(&c, 30, Duration::from_secs(20));
    // Cut off well past its election timeout in every group it follows: the duration is
    // the point, there is no condition to poll for.
    let away = Duration::from_millis(6 * NODE_TIMEOUT_MS);
    if let Some(left) = away.checked_sub(cut.elapsed()) {
        std::thread::sleep(left);
    }
    let terms_before_heal = victim_terms(&c);
    c.proxy().heal();
    c.wait_ok();
    load.wait_progress(&c, 30, Duration::from_secs(20));
    let (counters, tallies) = load.finish();
    c.wait_ok();

    let after = leaders_and_terms(&c);
    eprintln!(
        "isolated node {victim} (leading {led:?}) for {:?}: its terms in groups {others:?} \
         went {terms_at_cut:?} -> {terms_before_heal:?} while cut off; (leader, term) per \
         group before {before:?}, after {after:?}",
        cut.elapsed()
    );
    // It caught up: every replica, its own included, ends with the leaders' counters.
    check_counters(&c, &counters, &tallies);
    let changed: Vec<String> = others
        .iter()
        .filter(|&&g| after[g] != before[g])
        .map(|&g| {
            format!(
                "group {g}: leader node {} term {} -> node {} term {}",
                before[g].0, before[g].1, after[g].0, after[g].1
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "healing the partition of node {victim} disturbed groups it did not lead:\n{}\n{}",
        changed.join("\n"),
        c.logs(30)
    );
}

/// No dirty read: a write its leader applied while evaluating it, but cannot commit (the
/// leader is cut off from its followers), is seen by no reader — each GET racing it on that
/// leader answers the committed value or a refusal, never the pending one — and once the
/// leader is killed and the majority elects another, the write is gone: it was never
/// acknowledged and never reached a follower. The old leader, back as a follower, drops it.
#[test]
fn a_write_that_never_commits_is_never_read() {
    let _serial = serial();
    let mut c = start();
    let key = keys_per_group(&c, "dirty", 1)[0][0].clone();
    let g = c.group_of_key(&key);
    let slot = key_slot(key.as_bytes()) as usize;
    let leader = c.leader_of_group(g);
    let majority: Vec<usize> = (0..c.len()).filter(|&i| i != leader).collect();
    let (mut w, mut r) = raw(&c, leader, DEADLINE);
    w.write_all(resp(&["SET", &key, "committed"]).as_bytes())
        .expect("write");
    assert_eq!(read_reply_line(&mut r), Ok("+OK".to_string()));
    c.proxy().isolate(leader);
    // The write, on a connection of its own: its reply cannot come (no quorum).
    let (mut dirty_writer, _dirty_reader) = raw(&c, leader, DEADLINE);
    dirty_writer
        .write_all(resp(&["SET", &key, "dirty"]).as_bytes())
        .expect("write the SET");
    // Readers racing it on the leader, each on a new connection.
    let mut answers = Vec::new();
    for _ in 0..4 {
        let (mut w, mut r) = raw(&c, leader, DEADLINE);
        w.write_all(resp(&["GET", &key]).as_bytes())
            .expect("write GET");
        answers.push(read_get_reply(&mut r));
    }
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(Some(v)) if v == "committed") || a.is_err()),
        "a reader saw a write that never committed: {answers:?}"
    );
    let led = c.led_by(leader);
    c.kill9(leader);
    c.proxy().heal();
    wait_new_leaders(&c, &majority, &led, leader, DEADLINE)
        .unwrap_or_else(|| panic!("no new leader for group {g}\n{}", c.logs(30)));
    let mut router = Router::new(&c, CLIENT_TIMEOUT);
    let v = router.query(&cmd(&["GET", &key]), slot, DEADLINE);
    assert_eq!(
        text(&v).as_deref(),
        Some("committed"),
        "after the failover: {v:?}\n{}",
        c.logs(20)
    );
    c.respawn(leader);
    c.wait_ok();
    let mut expected = BTreeMap::new();
    expected.insert(key, Some("committed".to_string()));
    replicas_converge(&c, &expected);
}
