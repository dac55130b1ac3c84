//! A cluster whose nodes also serve TLS (`tls-port`), through real processes: each client is
//! told the ports it can use, as Valkey tells them — a client on TLS every node's TLS port in
//! CLUSTER SLOTS, CLUSTER NODES and MOVED, a plaintext client the plain ports; CLUSTER SHARDS
//! lists both (`port` and `tls-port`) to everyone. redis-rs's cluster client over TLS then
//! reaches every slot group, and so does redis-py's `RedisCluster` with `ssl=True`.

use crate::common;
use crate::tls::Pki;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::Cluster;
use common::load::{cmd, keys_per_group, text};
use common::{DEADLINE, error_text, wait_until};
use redis::Value;

/// A TLS connection to node `i`'s `tls-port`.
fn tls_conn(pki: &Pki, c: &Cluster, i: usize) -> redis::Connection {
    let conn = pki
        .client(c.tls_port(i), Some(&pki.client))
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("TLS connection to node {i}: {e}"));
    conn.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    conn
}

/// CLUSTER NODES as node name → the port its line shows (`ip:port@cport`).
fn nodes_ports(conn: &mut redis::Connection) -> BTreeMap<String, u16> {
    let nodes: String = cmd(&["CLUSTER", "NODES"])
        .query(conn)
        .expect("CLUSTER NODES");
    nodes
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = f[1].split(['@', ',']).next().expect("ip:port");
            let port = addr.rsplit_once(':').expect("ip:port").1;
            (f[0].to_string(), port.parse().expect("a port"))
        })
        .collect()
}

/// The port of each range's primary in CLUSTER SLOTS, and how many slots the ranges cover.
fn slots_ports(conn: &mut redis::Connection) -> (BTreeSet<u16>, usize) {
    let Value::Array(ranges) = cmd(&["CLUSTER", "SLOTS"]).query(conn).expect("SLOTS") else {
        panic!("CLUSTER SLOTS is not an array")
    };
    let mut ports = BTreeSet::new();
    let mut covered = 0;
    for r in ranges {
        let Value::Array(r) = r else {
            panic!("slot range {r:?}")
        };
        let (Value::Int(first), Value::Int(last), Value::Array(primary)) = (&r[0], &r[1], &r[2])
        else {
            panic!("slot range {r:?}")
        };
        let Value::Int(port) = primary[1] else {
            panic!("primary {primary:?}")
        };
        covered += (last - first + 1) as usize;
        ports.insert(port as u16);
    }
    (ports, covered)
}

/// CLUSTER SHARDS' nodes as name → (`port`, `tls-port`), each None when not listed.
fn shards_ports(conn: &mut redis::Connection) -> BTreeMap<String, (Option<u16>, Option<u16>)> {
    let Value::Array(shards) = cmd(&["CLUSTER", "SHARDS"]).query(conn).expect("SHARDS") else {
        panic!("CLUSTER SHARDS is not an array")
    };
    let pairs = |v: &Value| -> Vec<(String, Value)> {
        let Value::Array(a) = v else {
            panic!("expected a RESP2 map, got {v:?}")
        };
        a.chunks(2)
            .map(|kv| (text(&kv[0]).expect("a field name"), kv[1].clone()))
            .collect()
    };
    let mut out = BTreeMap::new();
    for shard in &shards {
        let shard = pairs(shard);
        let (_, Value::Array(nodes)) = shard.iter().find(|(k, _)| k == "nodes").expect("nodes")
        else {
            panic!("nodes {shard:?}")
        };
        for node in nodes {
            let node = pairs(node);
            let get = |name: &str| node.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            let port = |name: &str| match get(name) {
                Some(Value::Int(p)) => Some(*p as u16),
                None => None,
                other => panic!("{name}: {other:?}"),
            };
            let id = text(get("id").expect("id")).expect("id");
            out.insert(id, (port("port"), port("tls-port")));
        }
    }
    out
}

/// The address a MOVED refusal names, sending SETs over `conn` until one is refused (a key
/// another node leads).
fn moved_addr(conn: &mut redis::Connection) -> String {
    for n in 0..1000 {
        let r: redis::RedisResult<Value> = cmd(&["SET", &format!("moved:{n}"), "x"]).query(conn);
        if let Err(e) = r {
            let text = error_text(&e);
            let mut words = text.split_whitespace();
            assert_eq!(words.next(), Some("MOVED"), "{text}");
            return words.nth(1).expect("MOVED slot addr").to_string();
        }
    }
    panic!("node 0 leads every slot group")
}

#[test]
fn tls_clients_are_told_tls_ports_and_plain_clients_plain_ones() {
    let pki = Pki::new();
    let args = pki.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Cluster::start_tls(3, &args);
    let plain: BTreeMap<String, u16> = (0..3).map(|i| (c.name(i).to_string(), c.port(i))).collect();
    let tls: BTreeMap<String, u16> = (0..3)
        .map(|i| (c.name(i).to_string(), c.tls_port(i)))
        .collect();
    let plain_set: BTreeSet<u16> = plain.values().copied().collect();
    let tls_set: BTreeSet<u16> = tls.values().copied().collect();

    // Each node announces its TLS port once the cluster has formed; then every node shows
    // them to TLS clients.
    let announced = wait_until(Duration::from_secs(30), || {
        (0..3).all(|i| nodes_ports(&mut tls_conn(&pki, &c, i)) == tls)
    });
    assert!(announced, "TLS ports not announced\n{}", c.logs(20));

    let mut over_tls = tls_conn(&pki, &c, 0);
    let mut over_plain = c.conn(0);
    assert_eq!(nodes_ports(&mut over_plain), plain);

    let (ports, covered) = slots_ports(&mut over_tls);
    assert_eq!(covered, 16384);
    assert!(
        ports.is_subset(&tls_set),
        "{ports:?} over TLS, TLS ports {tls_set:?}"
    );
    let (ports, covered) = slots_ports(&mut over_plain);
    assert_eq!(covered, 16384);
    assert!(
        ports.is_subset(&plain_set),
        "{ports:?} over plain, plain ports {plain_set:?}"
    );

    // SHARDS lists both ports to either client (Valkey's fields).
    let both: BTreeMap<String, (Option<u16>, Option<u16>)> = plain
        .iter()
        .map(|(id, &p)| (id.clone(), (Some(p), Some(tls[id]))))
        .collect();
    assert_eq!(shards_ports(&mut over_tls), both);
    assert_eq!(shards_ports(&mut over_plain), both);

    // MOVED names the TLS port to a TLS client, the plain port to the others.
    let addr = moved_addr(&mut over_tls);
    let port: u16 = addr
        .strip_prefix("127.0.0.1:")
        .expect(&addr)
        .parse()
        .unwrap();
    assert!(tls_set.contains(&port), "MOVED to {addr} over TLS");
    let addr = moved_addr(&mut over_plain);
    let port: u16 = addr
        .strip_prefix("127.0.0.1:")
        .expect(&addr)
        .parse()
        .unwrap();
    assert!(plain_set.contains(&port), "MOVED to {addr} over plain");

    // redis-rs's cluster client, seeded with the TLS ports, follows them to every group.
    let client = redis::cluster::ClusterClient::builder(
        (0..3).map(|i| format!("rediss://127.0.0.1:{}/", c.tls_port(i))),
    )
    .certs(pki.certs(Some(&pki.client)))
    .connection_timeout(Duration::from_secs(5))
    .response_timeout(Duration::from_secs(10))
    .build()
    .expect("TLS cluster client");
    let mut cc = client.get_connection().expect("TLS cluster connection");
    let keys: Vec<String> = keys_per_group(&c, "tls:", 3).concat();
    for k in &keys {
        let _: () = cmd(&["SET", k, k]).query(&mut cc).expect("SET over TLS");
    }
    for k in &keys {
        let v: String = cmd(&["GET", k]).query(&mut cc).expect("GET over TLS");
        assert_eq!(&v, k);
    }
    // The plaintext cluster client reads the same.
    let mut pc = c
        .cluster_client()
        .get_connection()
        .expect("cluster connection");
    let v: String = cmd(&["GET", &keys[0]]).query(&mut pc).expect("GET");
    assert_eq!(v, keys[0]);

    // redis-py's RedisCluster with ssl=True, seeded with one TLS port, finds the others.
    let script = format!(
        r#"
from redis.cluster import RedisCluster
rc = RedisCluster(host="127.0.0.1", port={port}, ssl=True, ssl_ca_certs="{ca}",
                  ssl_certfile="{cert}", ssl_keyfile="{key}", socket_timeout=10)
for i in range(60):
    rc.set(f"py:{{i}}", i)
assert [int(rc.get(f"py:{{i}}")) for i in range(60)] == list(range(60))
primaries = sorted(n.port for n in rc.get_primaries())
assert set(primaries) <= {{{tls_ports}}}, primaries
print("ok")
"#,
        port = c.tls_port(0),
        ca = pki.arg("ca.crt"),
        cert = pki.arg("client.crt"),
        key = pki.arg("client.key"),
        tls_ports = tls_set
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (CI installs it and redis-py)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "redis-py's RedisCluster over TLS: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.logs(20)
    );
}
