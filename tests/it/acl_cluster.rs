//! ACL users a cluster shares, through real processes: a change made on one node (SETUSER,
//! DELUSER, LOAD) is in force on every node, two SETUSERs sent to two nodes at once both take
//! effect, a restarted node and a node that joins later enforce the cluster's users whatever
//! their own aclfile says, ACL SAVE writes the users a node enforces, and a node cut off from
//! the meta group refuses changes but keeps enforcing the last users it committed.

use crate::common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{DEADLINE, err, run, wait_until};
use redis::Value;
use tallykv::security::acl::hash_password;

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn ok(c: &mut redis::Connection, args: &[&str]) {
    assert_eq!(run::<String>(c, args).unwrap(), "OK", "{args:?}");
}

/// A connection to node `i` authenticated as `user`, or the error AUTH gave.
fn auth(cl: &Cluster, i: usize, user: &str, password: &str) -> Result<redis::Connection, String> {
    let mut c = cl
        .try_conn(i, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    match run::<String>(&mut c, &["AUTH", user, password]) {
        Ok(_) => Ok(c),
        Err(e) => Err(common::error_text(&e)),
    }
}

/// Node `i`'s ACL LIST (empty if it does not answer).
fn acl_list(cl: &Cluster, i: usize) -> Vec<String> {
    let Ok(mut c) = cl.try_conn(i, Duration::from_secs(5)) else {
        return Vec::new();
    };
    run(&mut c, &["ACL", "LIST"]).unwrap_or_default()
}

/// Waits until every node in `nodes` lists exactly `expected` (ACL LIST).
fn wait_listed(cl: &Cluster, nodes: impl IntoIterator<Item = usize>, expected: &[String]) {
    for i in nodes {
        assert!(
            wait_until(DEADLINE, || acl_list(cl, i) == expected),
            "node {i}: {:?}, expected {expected:?}\n{}",
            acl_list(cl, i),
            cl.logs(20)
        );
    }
}

#[test]
fn cluster_users_are_shared_by_every_node() {
    let files = tempfile::tempdir().expect("temp dir");
    let aclfile = files.path().join("users.acl");
    let path = aclfile.to_str().expect("a UTF-8 path").to_string();
    std::fs::write(&aclfile, "user admin on >adminpw ~* &* +@all\n").unwrap();
    let mut cl = Cluster::start(3, &["--aclfile", &path]);
    cl.wait_ok();

    // SETUSER on node 1 applies there at once, and everywhere with its rules.
    let mut c1 = cl.conn(1);
    ok(
        &mut c1,
        &[
            "ACL", "SETUSER", "alice", "on", ">alicepw", "~app:*", "+get", "+set",
        ],
    );
    auth(&cl, 1, "alice", "alicepw").expect("alice on the node that took SETUSER");
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || auth(&cl, i, "alice", "alicepw").is_ok()),
            "node {i}: {:?}\n{}",
            auth(&cl, i, "alice", "alicepw").err(),
            cl.logs(20)
        );
        let mut a = auth(&cl, i, "alice", "alicepw").unwrap();
        assert_eq!(
            err(&mut a, &["DEL", "app:1"]),
            "NOPERM User alice has no permissions to run the 'del' command"
        );
        assert_eq!(
            err(&mut a, &["GET", "other:1"]),
            "NOPERM No permissions to access a key"
        );
        // Allowed: a value, or a redirect to the key's leader.
        if let Err(e) = run::<Value>(&mut a, &["GET", "app:1"]) {
            assert!(!common::error_text(&e).starts_with("NOPERM"), "{e}");
        }
        assert_eq!(
            err(&mut a, &["AUTH", "alice", "nope"]),
            WRONGPASS,
            "node {i}"
        );
    }
    // The configured users seeded the cluster's.
    assert!(auth(&cl, 2, "admin", "adminpw").is_ok());

    // Errors are the standalone ones; inside MULTI a change is refused.
    assert_eq!(
        err(&mut c1, &["ACL", "SETUSER", "x", "on", "bogus"]),
        "ERR Error in ACL SETUSER modifier 'bogus': Syntax error"
    );
    assert_eq!(
        err(&mut c1, &["ACL", "SETUSER", "alice", "<notherpw"]),
        "ERR Error in ACL SETUSER modifier '<notherpw': The password you are trying to remove \
         from the user does not exist"
    );
    assert_eq!(
        err(&mut c1, &["ACL", "DELUSER", "alice", "default"]),
        "ERR The 'default' user cannot be removed"
    );
    ok(&mut c1, &["MULTI"]);
    assert_eq!(
        err(&mut c1, &["ACL", "SETUSER", "x", "on"]),
        "ERR Command not allowed inside a transaction"
    );
    ok(&mut c1, &["DISCARD"]);

    // requirepass is no longer the way to the default user: refused, and nothing changes.
    let refused = err(
        &mut cl.conn(1),
        &["CONFIG", "SET", "requirepass", "nope-nope"],
    );
    assert!(
        refused.starts_with(
            "ERR CONFIG SET failed (possibly related to argument 'requirepass') - this node \
             enforces the ACL users its cluster committed"
        ),
        "{refused}"
    );
    let got: Vec<String> = run(&mut cl.conn(1), &["CONFIG", "GET", "requirepass"]).unwrap();
    assert_eq!(got, ["requirepass", ""]);

    // Two SETUSERs of one user sent to two nodes at once: neither loses the other's rules.
    let (mut c0, mut c2) = (cl.conn(0), cl.conn(2));
    std::thread::scope(|s| {
        let a = s.spawn(|| ok(&mut c0, &["ACL", "SETUSER", "bob", "on", ">b1"]));
        let b = s.spawn(|| ok(&mut c2, &["ACL", "SETUSER", "bob", "~bob:*", "+get"]));
        a.join().unwrap();
        b.join().unwrap();
    });
    let bob = format!(
        "user bob on sanitize-payload #{} ~bob:* resetchannels -@all +get",
        hash_password(b"b1")
    );
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || acl_list(&cl, i).contains(&bob)),
            "node {i}: {:?}",
            acl_list(&cl, i)
        );
    }

    // DELUSER on node 2 removes alice everywhere; her clients are disconnected.
    let mut alice0 = auth(&cl, 0, "alice", "alicepw").unwrap();
    assert_eq!(
        run::<i64>(&mut c2, &["ACL", "DELUSER", "alice"]).unwrap(),
        1
    );
    for i in 0..cl.len() {
        assert!(
            wait_until(DEADLINE, || auth(&cl, i, "alice", "alicepw")
                .err()
                .as_deref()
                == Some(WRONGPASS)),
            "node {i}: {:?}",
            auth(&cl, i, "alice", "alicepw").err()
        );
    }
    let dropped = run::<Value>(&mut alice0, &["GET", "app:1"]).unwrap_err();
    assert!(dropped.code().is_none(), "{dropped:?}");
    let users = acl_list(&cl, 0);
    wait_listed(&cl, 0..cl.len(), &users);

    // ACL SAVE writes the users the node enforces: digests, never a password.
    ok(&mut cl.conn(1), &["ACL", "SAVE"]);
    let saved = std::fs::read_to_string(&aclfile).unwrap();
    assert_eq!(saved, users.join("\n") + "\n");
    assert!(
        !saved.contains("b1 ") && !saved.contains("adminpw"),
        "{saved}"
    );

    // A restarted node enforces the cluster's users, whatever its aclfile says now.
    std::fs::write(&aclfile, "user rogue on nopass ~* &* +@all\n").unwrap();
    cl.restart(2);
    assert_eq!(auth(&cl, 2, "rogue", "x").err().as_deref(), Some(WRONGPASS));
    auth(&cl, 2, "bob", "b1").expect("bob after a restart");
    assert_eq!(acl_list(&cl, 2), users);
    assert!(
        cl.log_count(2, "differ and are not used") > 0,
        "{}",
        cl.logs(20)
    );

    // A node that joins later takes them too, and ignores its own aclfile.
    let joiner = cl.add_joiner();
    cl.meet(0, joiner);
    wait_listed(&cl, [joiner], &users);
    assert_eq!(
        auth(&cl, joiner, "rogue", "x").err().as_deref(),
        Some(WRONGPASS)
    );
    auth(&cl, joiner, "bob", "b1").expect("bob on the joiner");

    // ACL LOAD on one node replaces the users everywhere; a bad file changes nothing.
    std::fs::write(&aclfile, "user carol on >c ~* +@all\n").unwrap();
    ok(&mut cl.conn(joiner), &["ACL", "LOAD"]);
    let loaded = vec![
        format!(
            "user carol on sanitize-payload #{} ~* resetchannels +@all",
            hash_password(b"c")
        ),
        "user default on nopass sanitize-payload ~* &* +@all".to_string(),
    ];
    wait_listed(&cl, 0..cl.len(), &loaded);
    std::fs::write(&aclfile, "user dave on bogus\n").unwrap();
    assert_eq!(
        err(&mut cl.conn(0), &["ACL", "LOAD"]),
        format!(
            "ERR {path}:1: Syntax error. WARNING: ACL errors detected, no change to the \
             previously active ACL rules was performed"
        )
    );
    assert_eq!(acl_list(&cl, 0), loaded);

    // Nodes cut off from a majority of the meta group refuse a change, and keep enforcing the
    // last users they committed.
    cl.kill9(0);
    cl.kill9(1);
    // The refusal comes at once when the meta leader is among the dead; were node 2 the
    // leader, after the meta group's commit timeout (two minutes).
    let mut c2 = cl.try_conn(2, Duration::from_secs(150)).unwrap();
    let refused = err(&mut c2, &["ACL", "SETUSER", "eve", "on"]);
    assert!(refused.starts_with("ERR "), "{refused}");
    assert_eq!(acl_list(&cl, 2), loaded);
    auth(&cl, 2, "carol", "c").expect("carol on a node cut off");
}

/// A node whose data dir was lost catches up from the meta group's snapshot (its log before
/// the snapshot purged) and gets the cluster's users with it.
#[test]
fn a_wiped_node_gets_the_users_from_the_meta_snapshot() {
    let mut cl = Cluster::start(3, &["--cluster-snapshot-after", "5"]);
    cl.wait_ok();
    let mut c = cl.conn(0);
    // More meta entries than a snapshot interval: the meta leader snapshots and purges.
    for n in 0..12 {
        let name = format!("u{n}");
        ok(&mut c, &["ACL", "SETUSER", &name, "on", ">pw", "+get"]);
    }
    let users = acl_list(&cl, 0);
    assert_eq!(users.len(), 13, "{users:?}");
    wait_listed(&cl, 0..cl.len(), &users);
    cl.kill9(2);
    cl.wipe(2);
    cl.respawn(2);
    cl.wait_ok();
    wait_listed(&cl, [2], &users);
    auth(&cl, 2, "u0", "pw").expect("a user from before the snapshot");
}
