//! The libraries payment services use, unchanged, against a standalone node and a 3-node
//! cluster: `limits` (fixed window, moving window and sliding window counter — all Lua over
//! counters, lists and sorted sets — with cost, get_window_stats and clear, exact counts under
//! 8-way concurrency) and redis-py (pipelines with and without MULTI/EXEC, WATCH retry
//! loops, Lock). The script is `tests/py/libraries.py`; CI installs redis-py and limits
//! (`.ci/run`): without them this test fails, it is not skipped.

use crate::common;

use std::process::Command;

use common::Server;
use common::cluster::Cluster;

fn run_script(args: &[String]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/libraries.py");
    Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (CI installs it, redis-py and limits)")
}

#[test]
fn limits_and_redis_py_work_against_a_standalone_node() {
    let s = Server::start(&["--threads", "2"]);
    let out = run_script(&["standalone".into(), s.port.to_string()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn limits_and_redis_py_work_in_a_numbered_database() {
    let s = Server::start(&["--threads", "2"]);
    let out = run_script(&["standalone-db".into(), s.port.to_string()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn limits_and_redis_py_work_against_a_cluster() {
    let c = Cluster::start(3, &[]);
    c.wait_ok();
    let mut args = vec!["cluster".to_string()];
    args.extend(c.ports().iter().map(u16::to_string));
    let out = run_script(&args);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.logs(20)
    );
}
