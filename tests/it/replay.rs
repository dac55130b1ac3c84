//! Transactions and scripts replayed: random streams of MULTI/EXEC blocks and Lua scripts
//! (including scripts whose effects are random: SPOP, SRANDMEMBER-driven writes) over lists,
//! sets, sorted sets, hashes and counters; then SIGKILL and restart (standalone), or a leader's
//! SIGKILL and restart (3-node cluster). What every node holds afterwards equals what was
//! acknowledged: each counter counts exactly the acknowledged units that incremented it, and
//! every replica of a group holds the same values as its leader, byte for byte.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::cluster::Cluster;
use common::{DEADLINE, Server, wait_until};
use redis::{ConnectionLike, Value};

/// Elements of each key, as a client sees them (sets and hashes sorted).
type Dump = BTreeMap<String, (String, Vec<Vec<u8>>)>;

fn dump_keys(c: &mut impl ConnectionLike, keys: &[String]) -> Result<Dump, redis::RedisError> {
    let mut out = BTreeMap::new();
    for k in keys {
        let ty: String = redis::cmd("TYPE").arg(k).query(c)?;
        let mut items: Vec<Vec<u8>> = match ty.as_str() {
            "none" => continue,
            "string" => vec![redis::cmd("GET").arg(k).query(c)?],
            "list" => redis::cmd("LRANGE").arg(k).arg(0).arg(-1).query(c)?,
            "set" => redis::cmd("SMEMBERS").arg(k).query(c)?,
            "zset" => redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)?,
            "hash" => {
                let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(k).query(c)?;
                pairs.sort();
                pairs.into_iter().flat_map(|(f, v)| [f, v]).collect()
            }
            other => panic!("unexpected type {other}"),
        };
        if ty == "set" {
            items.sort();
        }
        out.insert(k.clone(), (ty, items));
    }
    Ok(out)
}

/// The keys of hash tag `t`.
fn keys_of(t: &str) -> Vec<String> {
    ["cnt", "list", "z", "h", "s", "popped"]
        .iter()
        .map(|k| format!("{{{t}}}:{k}"))
        .collect()
}

/// Increments its counter, pushes and trims a list, scores a member, and moves a random set
/// member (SPOP: its effect, not the script, is what replicas and storage get).
const SCRIPT: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('LPUSH', KEYS[2], n)
redis.call('LTRIM', KEYS[2], 0, 40)
redis.call('ZADD', KEYS[3], n % 17, ARGV[1])
if n % 5 == 0 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, 1) end
redis.call('SADD', KEYS[4], ARGV[1], n)
local m = redis.call('SPOP', KEYS[4])
if m then redis.call('RPUSH', KEYS[5], m) end
return n
"#;

/// One unit (a transaction or a script) on tag `t`; every unit increments `{t}:cnt` once.
fn unit(rng: &mut fastrand::Rng, t: &str, step: usize) -> redis::Pipeline {
    let k = keys_of(t);
    let m = format!("m{}", rng.usize(0..60));
    let mut p = redis::pipe();
    if rng.bool() {
        p.atomic()
            .cmd("INCR")
            .arg(&k[0])
            .cmd("RPUSH")
            .arg(&k[1])
            .arg(step)
            .cmd("ZINCRBY")
            .arg(&k[2])
            .arg(rng.u8(1..9))
            .arg(&m)
            .cmd("HINCRBY")
            .arg(&k[3])
            .arg(&m)
            .arg(1)
            .cmd("SADD")
            .arg(&k[4])
            .arg(&m);
        if rng.u8(0..4) == 0 {
            p.cmd("LPOP").arg(&k[1]).cmd("ZPOPMIN").arg(&k[2]);
        }
    } else {
        p.cmd("EVAL")
            .arg(SCRIPT)
            .arg(5)
            .arg(&k[0])
            .arg(&k[1])
            .arg(&k[2])
            .arg(&k[4])
            .arg(&k[5])
            .arg(&m);
    }
    p
}

const TAGS: [&str; 3] = ["a", "b", "c"];

fn all_keys() -> Vec<String> {
    TAGS.iter().flat_map(|t| keys_of(t)).collect()
}

/// Runs `n` units, each on `conn(tag)`, counting per tag the ones acknowledged.
fn run_units<C: ConnectionLike>(
    mut conn: impl FnMut(&str) -> C,
    rng: &mut fastrand::Rng,
    n: usize,
    acked: &mut HashMap<&'static str, i64>,
    step: &mut usize,
) {
    let mut conns: HashMap<&str, C> = HashMap::new();
    for _ in 0..n {
        let t = TAGS[rng.usize(..TAGS.len())];
        *step += 1;
        let p = unit(rng, t, *step);
        let c = conns.entry(t).or_insert_with(|| conn(t));
        let r: redis::RedisResult<Value> = p.query(c);
        r.unwrap_or_else(|e| panic!("unit on {t}: {e}"));
        *acked.entry(t).or_default() += 1;
    }
}

fn check_counts(dump: &Dump, acked: &HashMap<&'static str, i64>) {
    for t in TAGS {
        let want = acked.get(t).copied().unwrap_or(0);
        let got = dump
            .get(&format!("{{{t}}}:cnt"))
            .map_or(0, |(_, v)| String::from_utf8_lossy(&v[0]).parse().unwrap());
        assert_eq!(got, want, "{{{t}}}:cnt against the acknowledged units");
    }
}

#[test]
fn transactions_and_scripts_come_back_after_sigkill() {
    let mut s = Server::start(&["--appendfsync", "always", "--threads", "2"]);
    let mut rng = fastrand::Rng::with_seed(42);
    let mut acked = HashMap::new();
    let mut step = 0;
    for round in 0..3 {
        run_units(|_| s.conn(), &mut rng, 150, &mut acked, &mut step);
        let mut c = s.conn();
        let before = dump_keys(&mut c, &all_keys()).unwrap();
        check_counts(&before, &acked);
        s.kill9();
        s.restart();
        s.wait_loaded();
        let mut c = s.conn();
        let after = dump_keys(&mut c, &all_keys()).unwrap();
        assert_eq!(after, before, "round {round}: the data set after restart");
    }
}

#[test]
fn transactions_and_scripts_equal_on_every_replica_through_a_leader_kill() {
    let mut c = Cluster::start(3, &["--cluster-node-timeout", "500"]);
    let client = c.cluster_client();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut acked = HashMap::new();
    let mut step = 0;
    // Each unit goes straight to the leader of its tag's slot (redis-rs's cluster connection
    // does not send transactions).
    let leader_conn =
        |c: &Cluster, t: &str| c.conn(c.leader_of_group(c.group_of_key(&format!("{{{t}}}"))));
    run_units(|t| leader_conn(&c, t), &mut rng, 150, &mut acked, &mut step);
    // Kill the leader of one tag's group mid-history; the rest goes on after the failover.
    let victim = c.leader_of_group(c.group_of_key("{a}"));
    let led = c.led_by(victim);
    c.kill9(victim);
    assert!(
        c.wait_leader_change(&led, victim, DEADLINE).is_some(),
        "no new leader for groups {led:?}\n{}",
        c.logs(30)
    );
    c.wait_ok();
    {
        run_units(|t| leader_conn(&c, t), &mut rng, 100, &mut acked, &mut step);
        let mut conn = client.get_connection().expect("cluster connection");
        let expected = dump_keys(&mut conn, &all_keys()).unwrap();
        check_counts(&expected, &acked);
        c.restart(victim);
        c.wait_ok();
        // Every node holds, for each group it replicates, what the leader holds.
        for i in 0..c.len() {
            let replicated: Vec<bool> = c
                .info_groups(i)
                .expect("INFO cluster")
                .iter()
                .map(|v| v.role != "none")
                .collect();
            let keys: Vec<String> = all_keys()
                .into_iter()
                .filter(|k| replicated[c.group_of_key(k)])
                .collect();
            let want: Dump = expected
                .iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut node = c.conn(i);
            let _: () = redis::cmd("READONLY").query(&mut node).unwrap();
            let mut last = None;
            let same = wait_until(Duration::from_secs(30), || {
                let got = dump_keys(&mut node, &keys);
                let ok = got.as_ref().is_ok_and(|g| *g == want);
                last = Some(got);
                ok
            });
            assert!(
                same,
                "node {i} (restarted: {}) differs from the leaders: {:?}\nwant {:?}",
                i == victim,
                last,
                want
            );
        }
    }
}
