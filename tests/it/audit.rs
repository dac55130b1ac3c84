//! The audit log (`audit-log-file`): one JSON line per security event, with who and from
//! where, never a password or a value; rotated by size.

use crate::common;

use std::path::Path;

use common::{DEADLINE, Server, err, run, wait_until};
use serde_json::Value as Json;

use common::json_lines as lines;

fn wait_for(path: &Path, what: &str, found: impl Fn(&[Json]) -> bool) -> Vec<Json> {
    assert!(
        wait_until(DEADLINE, || found(&lines(path))),
        "no {what} in the audit log:\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
    lines(path)
}

#[test]
fn security_events_are_json_lines_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let server = Server::start(&["--audit-log-file", log.to_str().unwrap()]);
    let mut c = server.conn();
    let _: () = run(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "clerk",
            "on",
            ">clerk-Secret-77",
            "~pay:*",
            "+get",
        ],
    )
    .unwrap();
    let mut clerk = server.conn();
    assert!(err(&mut clerk, &["AUTH", "clerk", "wrong-Secret-99"]).starts_with("WRONGPASS"));
    let _: () = run(&mut clerk, &["AUTH", "clerk", "clerk-Secret-77"]).unwrap();
    assert!(err(&mut clerk, &["SET", "pay:1", "4111111111111111"]).starts_with("NOPERM"));
    assert!(err(&mut clerk, &["GET", "card:9"]).starts_with("NOPERM"));
    let _: () = run(&mut c, &["CONFIG", "SET", "requirepass", "admin-Secret-55"]).unwrap();

    let events = wait_for(&log, "CONFIG SET", |ls| {
        ls.iter().any(|l| l["event"] == "config_change")
    });
    let of = |kind: &str| -> Vec<&Json> { events.iter().filter(|l| l["event"] == kind).collect() };
    let auths = of("auth");
    assert_eq!(auths.len(), 2, "{events:?}");
    assert_eq!(auths[0]["outcome"], "failure");
    assert_eq!(auths[1]["outcome"], "success");
    assert_eq!(auths[1]["user"], "clerk");
    assert!(
        auths[1]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let denied = of("denied");
    assert_eq!(denied.len(), 2, "{events:?}");
    assert_eq!(
        (&denied[0]["reason"], &denied[0]["object"]),
        (&Json::from("command"), &Json::from("set"))
    );
    assert_eq!(
        (&denied[1]["reason"], &denied[1]["object"]),
        (&Json::from("key"), &Json::from("card:9"))
    );
    let acl = of("acl_change");
    assert_eq!(
        (&acl[0]["command"], &acl[0]["target"], &acl[0]["user"]),
        (
            &Json::from("setuser"),
            &Json::from("clerk"),
            &Json::from("default")
        )
    );
    let config = of("config_change");
    assert_eq!(config[0]["directives"], serde_json::json!(["requirepass"]));
    for e in &events {
        let t = e["time"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z'), "time {t}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in ["Secret", "4111111111111111"] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn the_log_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let server = Server::start(&[
        "--audit-log-file",
        log.to_str().unwrap(),
        "--audit-log-max-size",
        "2kb",
        "--audit-log-max-files",
        "2",
    ]);
    let mut c = server.conn();
    // Each failed AUTH is a line of about 120 bytes: 100 of them fill more than 3 files.
    for _ in 0..100 {
        assert!(err(&mut c, &["AUTH", "nobody", "x"]).starts_with("WRONGPASS"));
    }
    let numbered = |n: usize| dir.path().join(format!("audit.log.{n}"));
    let count = |p: &Path| lines(p).len();
    assert!(
        wait_until(DEADLINE, || {
            count(&log) + count(&numbered(1)) + count(&numbered(2)) > 0 && numbered(2).exists()
        }),
        "not rotated"
    );
    assert!(!numbered(3).exists(), "only two rotated files are kept");
    for p in [numbered(1), numbered(2)] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(
            (2048 - 512..=2048).contains(&size),
            "{} is {size} bytes",
            p.display()
        );
        assert!(lines(&p).iter().all(|l| l["event"] == "auth"));
    }
}
