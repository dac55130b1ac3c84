//! A Python user's view of a cluster: redis-py's `RedisCluster` (pip `redis`) finds every
//! node that leads slot groups as a primary, and `scan_iter`, `keys`, `dbsize` and
//! `flushall`, which it sends to every primary, each cover every key once
//! (`tests/py/redis_py_cluster.py`). CI installs redis-py (`.ci/run`); without it this test
//! fails, it is not skipped.

use crate::common;

use std::process::Command;

use common::cluster::Cluster;

#[test]
fn redis_py_cluster_client_sees_every_primary_and_every_key_once() {
    let c = Cluster::start(3, &[]);
    c.wait_ok();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/redis_py_cluster.py");
    let ports: Vec<String> = c.ports().iter().map(u16::to_string).collect();
    let out = Command::new("python3")
        .arg(script)
        .args(&ports)
        .output()
        .expect("python3 runs (CI installs it and redis-py)");
    assert!(
        out.status.success(),
        "redis-py against the cluster: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.logs(20)
    );
}
