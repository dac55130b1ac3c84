//! ACL users (standalone): SETUSER rules, AUTH as a user, permission checks before a command
//! runs, and changes reaching connected clients at once. Examples from Valkey's ACL docs.

use crate::common;

use common::{Server, err, run};

const NOPERM_KEY: &str = "NOPERM No permissions to access a key";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn ok(c: &mut redis::Connection, args: &[&str]) {
    assert_eq!(run::<String>(c, args).unwrap(), "OK", "{args:?}");
}

#[test]
fn read_only_user_on_a_key_prefix() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &["ACL", "SETUSER", "reader", "on", ">pw", "~pay:*", "+@read"],
    );
    ok(&mut admin, &["SET", "pay:1", "10"]);
    ok(&mut admin, &["SET", "other:1", "x"]);

    let mut c = s.conn();
    ok(&mut c, &["AUTH", "reader", "pw"]);
    assert_eq!(run::<String>(&mut c, &["GET", "pay:1"]).unwrap(), "10");
    assert_eq!(
        err(&mut c, &["SET", "pay:1", "11"]),
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    assert_eq!(err(&mut c, &["GET", "other:1"]), NOPERM_KEY);
    assert_eq!(err(&mut c, &["MGET", "pay:1", "other:1"]), NOPERM_KEY);
    // ACL WHOAMI is @slow, not @read.
    assert_eq!(
        err(&mut c, &["ACL", "WHOAMI"]),
        "NOPERM User reader has no permissions to run the 'acl|whoami' command"
    );
    assert_eq!(run::<String>(&mut admin, &["GET", "pay:1"]).unwrap(), "10");
    // CLIENT LIST names each client's user.
    let list = run::<String>(&mut admin, &["CLIENT", "LIST"]).unwrap();
    assert_eq!(list.matches(" user=reader ").count(), 1, "{list}");
    assert_eq!(list.matches(" user=default ").count(), 1, "{list}");
}

#[test]
fn read_and_write_key_permissions() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">pw",
            "%R~card:*",
            "%W~cnt:*",
            "~pay:*",
            "+@all",
        ],
    );
    let mut c = s.conn();
    ok(&mut c, &["AUTH", "app", "pw"]);
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", "card:1"]).unwrap(),
        None
    );
    assert_eq!(err(&mut c, &["SET", "card:1", "v"]), NOPERM_KEY);
    ok(&mut c, &["SET", "cnt:1", "v"]);
    assert_eq!(err(&mut c, &["GET", "cnt:1"]), NOPERM_KEY);
    ok(&mut c, &["SET", "pay:1", "v"]);
    assert_eq!(run::<String>(&mut c, &["GET", "pay:1"]).unwrap(), "v");
    assert_eq!(
        run::<String>(&mut admin, &["ACL", "DRYRUN", "app", "get", "cnt:1"]).unwrap(),
        "This user has no permissions to access the 'cnt:1' key"
    );
    assert_eq!(
        run::<String>(&mut admin, &["ACL", "DRYRUN", "app", "get", "card:1"]).unwrap(),
        "OK"
    );
}

#[test]
fn changes_reach_connected_clients_at_once() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &["ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all"],
    );
    let mut c = s.conn();
    ok(&mut c, &["AUTH", "app", "pw"]);
    ok(&mut c, &["SET", "k", "v"]);
    ok(&mut admin, &["ACL", "SETUSER", "app", "-set"]);
    assert_eq!(
        err(&mut c, &["SET", "k", "v"]),
        "NOPERM User app has no permissions to run the 'set' command"
    );
    ok(&mut admin, &["ACL", "SETUSER", "app", "resetkeys", "~x:*"]);
    assert_eq!(err(&mut c, &["GET", "k"]), NOPERM_KEY);
    // `off` refuses new authentications; connections already authenticated keep working,
    // as in Valkey.
    ok(&mut admin, &["ACL", "SETUSER", "app", "off"]);
    let mut other = s.conn();
    assert_eq!(err(&mut other, &["AUTH", "app", "pw"]), WRONGPASS);
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", "x:1"]).unwrap(),
        None
    );
    // A deleted user's clients are disconnected at their next command.
    assert_eq!(
        run::<i64>(&mut admin, &["ACL", "DELUSER", "app"]).unwrap(),
        1
    );
    assert!(run::<redis::Value>(&mut c, &["GET", "x:1"]).is_err());
}

#[test]
fn auth_failures_and_users() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["AUTH", "nosuch", "pw"]), WRONGPASS);
    assert!(err(&mut c, &["AUTH", "pw"]).starts_with("ERR AUTH <password> called without"));
    ok(&mut c, &["ACL", "SETUSER", "u", ">pw", "+@all", "~*"]);
    // A new user is off until `on`.
    assert_eq!(err(&mut c, &["AUTH", "u", "pw"]), WRONGPASS);
    ok(&mut c, &["ACL", "SETUSER", "u", "on"]);
    assert_eq!(err(&mut c, &["AUTH", "u", "wrong"]), WRONGPASS);
    ok(&mut c, &["AUTH", "u", "pw"]);
    assert_eq!(run::<String>(&mut c, &["ACL", "WHOAMI"]).unwrap(), "u");
    ok(&mut c, &["ACL", "SETUSER", "u", "<pw", ">new"]);
    assert_eq!(err(&mut c, &["AUTH", "u", "pw"]), WRONGPASS);

    // HELLO ... AUTH user pass.
    let mut h = s.conn();
    assert!(run::<redis::Value>(&mut h, &["HELLO", "3", "AUTH", "u", "new"]).is_ok());
    assert_eq!(run::<String>(&mut h, &["ACL", "WHOAMI"]).unwrap(), "u");
    assert_eq!(err(&mut h, &["HELLO", "2", "AUTH", "u", "bad"]), WRONGPASS);

    assert_eq!(
        run::<Vec<String>>(&mut c, &["ACL", "USERS"]).unwrap(),
        ["default", "u"]
    );
    assert_eq!(
        run::<Vec<String>>(&mut c, &["ACL", "LIST"]).unwrap()[0],
        "user default on nopass sanitize-payload ~* &* +@all"
    );
    assert_eq!(
        err(&mut c, &["ACL", "SETUSER", "u", "bogus"]),
        "ERR Error in ACL SETUSER modifier 'bogus': Syntax error"
    );
    assert_eq!(
        err(&mut c, &["ACL", "DELUSER", "default"]),
        "ERR The 'default' user cannot be removed"
    );
    assert_eq!(
        run::<Option<String>>(&mut c, &["ACL", "GETUSER", "nosuch"]).unwrap(),
        None
    );
    assert_eq!(
        run::<String>(&mut c, &["ACL", "GENPASS"]).unwrap().len(),
        64
    );
    let cats: Vec<String> = run(&mut c, &["ACL", "CAT"]).unwrap();
    assert_eq!(cats.len(), 21);
    let reads: Vec<String> = run(&mut c, &["ACL", "CAT", "read"]).unwrap();
    assert!(reads.contains(&"get".to_string()) && !reads.contains(&"set".to_string()));
}

#[test]
fn requirepass_is_the_default_users_password() {
    let s = Server::start(&["--requirepass", "s3cret"]);
    let mut c = s.conn();
    assert_eq!(
        err(&mut c, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    ok(&mut c, &["AUTH", "default", "s3cret"]);
    let list: Vec<String> = run(&mut c, &["ACL", "LIST"]).unwrap();
    assert!(
        list[0].starts_with("user default on sanitize-payload #"),
        "{list:?}"
    );
    ok(&mut c, &["CONFIG", "SET", "requirepass", "other"]);
    let mut d = s.conn();
    assert_eq!(err(&mut d, &["AUTH", "s3cret"]), WRONGPASS);
    ok(&mut d, &["AUTH", "other"]);
    ok(&mut c, &["CONFIG", "SET", "requirepass", ""]);
    let mut e = s.conn();
    assert_eq!(run::<Option<String>>(&mut e, &["GET", "k"]).unwrap(), None);
}

#[test]
fn selectors_add_permissions() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL", "SETUSER", "sel", "on", "nopass", "~pay:*", "+get", "(~log:*", "+set)",
        ],
    );
    let user: redis::Value = run(&mut admin, &["ACL", "GETUSER", "sel"]).unwrap();
    assert!(format!("{user:?}").contains("~log:*"), "{user:?}");
    let mut c = s.conn();
    ok(&mut c, &["AUTH", "sel", "any"]);
    ok(&mut c, &["SET", "log:1", "v"]);
    assert_eq!(err(&mut c, &["SET", "pay:1", "v"]), NOPERM_KEY);
    assert_eq!(
        run::<Option<String>>(&mut c, &["GET", "pay:1"]).unwrap(),
        None
    );
}

/// A script runs with its caller's permissions: each `redis.call` is checked against the
/// user (Valkey's rule), on the EVAL's core, across cores and inside MULTI, and
/// `redis.acl_check_cmd` answers for that user.
#[test]
fn scripts_run_with_their_callers_permissions() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "limiter",
            "on",
            ">pw",
            "~pay:*",
            "+@scripting",
            "+@transaction",
            "+get",
            "+incr",
        ],
    );
    ok(&mut admin, &["SET", "pay:1", "10"]);
    let mut c = s.conn();
    ok(&mut c, &["AUTH", "limiter", "pw"]);
    let call = "return redis.call(ARGV[1], KEYS[1])";
    assert_eq!(
        run::<i64>(&mut c, &["EVAL", call, "1", "pay:1", "INCR"]).unwrap(),
        11
    );
    let denied = err(&mut c, &["EVAL", call, "1", "pay:1", "DEL"]);
    assert!(
        denied.contains("NOPERM User limiter has no permissions to run the 'del' command"),
        "{denied}"
    );
    // A key outside ~pay:* named in KEYS is refused before the script runs; one the script
    // reaches itself is refused at its redis.call.
    assert_eq!(
        err(&mut c, &["EVAL", call, "1", "other:1", "GET"]),
        NOPERM_KEY
    );
    // A key outside ~pay:* that the script reaches itself (same slot as its KEYS, so the
    // same core) is refused at its redis.call.
    let outside = "return redis.call('GET', 'other:{t}')";
    let denied = err(&mut c, &["EVAL", outside, "1", "pay:{t}"]);
    assert!(denied.contains(NOPERM_KEY), "{denied}");
    // redis.acl_check_cmd answers for the caller.
    let check = "return redis.acl_check_cmd(ARGV[1], ARGV[2]) and 1 or 0";
    for (cmd, key, allowed) in [("GET", "pay:1", 1), ("DEL", "pay:1", 0), ("GET", "zz:1", 0)] {
        assert_eq!(
            run::<i64>(&mut c, &["EVAL", check, "0", cmd, key]).unwrap(),
            allowed,
            "{cmd} {key}"
        );
    }
    // Queued in MULTI, and on the other core's key (pay:{a} and pay:{b} hash apart).
    ok(&mut c, &["MULTI"]);
    for (key, cmd) in [("pay:{a}", "INCR"), ("pay:{b}", "DEL")] {
        assert_eq!(
            run::<String>(&mut c, &["EVAL", call, "1", key, cmd]).unwrap(),
            "QUEUED"
        );
    }
    // redis-rs answers the EXEC with its first error: the DEL's refusal; the INCR ran.
    let refused = err(&mut c, &["EXEC"]);
    assert!(
        refused.contains("no permissions to run the 'del' command"),
        "{refused}"
    );
    assert_eq!(run::<String>(&mut admin, &["GET", "pay:{a}"]).unwrap(), "1");
    // The default user (allowed everything) is unaffected.
    assert_eq!(
        run::<i64>(&mut admin, &["EVAL", call, "1", "pay:1", "DEL"]).unwrap(),
        1
    );
}

/// ACL LOG entries of the refused commands, keys and authentications, as Valkey fields them.
fn acl_log(
    c: &mut redis::Connection,
    args: &[&str],
) -> Vec<std::collections::HashMap<String, String>> {
    let mut all = vec!["ACL", "LOG"];
    all.extend_from_slice(args);
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::Double(d) => d.to_string(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    match run::<redis::Value>(c, &all).unwrap() {
        redis::Value::Array(entries) => entries
            .iter()
            .map(|e| match e {
                redis::Value::Array(kv) => {
                    kv.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect()
                }
                other => panic!("entry {other:?}"),
            })
            .collect(),
        other => panic!("ACL LOG {other:?}"),
    }
}

#[test]
fn acl_log_notes_refused_commands_keys_and_authentications() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL", "SETUSER", "reader", "on", ">pw", "~pay:*", "+@read", "+multi",
        ],
    );
    let mut c = s.conn();
    assert_eq!(
        err(&mut c, &["AUTH", "reader", "not-the-password"]),
        WRONGPASS
    );
    ok(&mut c, &["AUTH", "reader", "pw"]);
    for _ in 0..2 {
        err(&mut c, &["SET", "pay:1", "x"]);
    }
    assert_eq!(err(&mut c, &["GET", "other:1"]), NOPERM_KEY);
    ok(&mut c, &["MULTI"]);
    err(&mut c, &["DEL", "pay:1"]);

    let log = acl_log(&mut admin, &[]);
    let fields: Vec<(&str, &str, &str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e["reason"].as_str(),
                e["context"].as_str(),
                e["object"].as_str(),
                e["username"].as_str(),
                e["count"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("command", "multi", "del", "reader", "1"),
            ("key", "toplevel", "other:1", "reader", "1"),
            ("command", "toplevel", "set", "reader", "2"),
            ("auth", "toplevel", "AUTH", "reader", "1"),
        ]
    );
    let keys: Vec<&str> = {
        let mut k: Vec<&str> = log[0].keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    };
    assert_eq!(
        keys,
        [
            "age-seconds",
            "client-info",
            "context",
            "count",
            "entry-id",
            "object",
            "reason",
            "timestamp-created",
            "timestamp-last-updated",
            "username"
        ]
    );
    assert!(
        log[0]["client-info"].contains(" user=reader "),
        "{:?}",
        log[0]
    );
    // Never a password.
    let all = format!("{log:?}");
    assert!(
        !all.contains("not-the-password") && !all.contains("pw\""),
        "{all}"
    );
    assert_eq!(acl_log(&mut admin, &["1"]).len(), 1);
    assert_eq!(
        err(&mut admin, &["ACL", "LOG", "-1"]),
        "ERR value is out of range, must be positive"
    );
    // acllog-max-len bounds it; RESET empties it.
    ok(&mut admin, &["CONFIG", "SET", "acllog-max-len", "2"]);
    err(&mut c, &["GET", "other:2"]);
    assert_eq!(acl_log(&mut admin, &[]).len(), 2);
    ok(&mut admin, &["ACL", "LOG", "RESET"]);
    assert!(acl_log(&mut admin, &[]).is_empty());
}

const NO_ACLFILE: &str = "ERR This Valkey instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Valkey configuration file set) in order to store users in the Valkey configuration.";
const NOAUTH: &str = "NOAUTH Authentication required.";

fn acl_list(c: &mut redis::Connection) -> Vec<String> {
    run(c, &["ACL", "LIST"]).unwrap()
}

fn digest(password: &str) -> String {
    tallykv::security::acl::hash_password(password.as_bytes())
}

/// Runs the server with `args` expecting it to refuse to start: its exit status and stderr.
fn refused_start(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tallykv-server"))
        .args(["--port", "0", "--dir"])
        .arg(dir.path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ok = common::wait_until(common::DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
    if !ok {
        let _ = child.kill();
        panic!("the server started with {args:?}");
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn users_from_user_directives_exist_at_start() {
    let s = Server::start(&[
        "--user",
        "admin on >adminpw ~* &* +@all",
        "--user",
        "reader on >readpw ~pay:* +@read",
        "--user",
        "default off",
    ]);
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["GET", "k"]), NOAUTH);
    assert_eq!(err(&mut c, &["AUTH", "admin", "wrong"]), WRONGPASS);
    ok(&mut c, &["AUTH", "admin", "adminpw"]);
    assert_eq!(
        acl_list(&mut c),
        [
            format!(
                "user admin on sanitize-payload #{} ~* &* +@all",
                digest("adminpw")
            ),
            "user default off sanitize-payload resetchannels -@all".to_string(),
            format!(
                "user reader on sanitize-payload #{} ~pay:* resetchannels -@all +@read",
                digest("readpw")
            ),
        ]
    );
    // CONFIG GET shows the declarations with digests, never a password.
    let user: Vec<String> = run(&mut c, &["CONFIG", "GET", "user"]).unwrap();
    assert!(
        user[1].contains(&digest("adminpw")) && !user[1].contains("adminpw"),
        "{user:?}"
    );
    let mut r = s.conn();
    ok(&mut r, &["AUTH", "reader", "readpw"]);
    assert_eq!(
        err(&mut r, &["SET", "pay:1", "x"]),
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    // The default user is off: AUTH <password> alone is refused too.
    assert_eq!(err(&mut r, &["AUTH", "anything"]), WRONGPASS);
}

#[test]
fn user_default_line_replaces_requirepass() {
    let s = Server::start(&[
        "--requirepass",
        "old",
        "--user",
        "default on >new ~* &* +@all",
    ]);
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["AUTH", "old"]), WRONGPASS);
    ok(&mut c, &["AUTH", "new"]);
    // requirepass set at runtime is still the default user's password, as in Valkey.
    ok(&mut c, &["CONFIG", "SET", "requirepass", "newer"]);
    let mut d = s.conn();
    ok(&mut d, &["AUTH", "newer"]);
}

#[test]
fn acl_save_then_restart_keeps_the_users() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("users.acl");
    // Valkey needs the file to exist: an empty one means the default user only.
    std::fs::write(&path, "").unwrap();
    let aclfile = path.to_str().unwrap();
    let mut s = Server::start(&["--aclfile", aclfile]);
    let mut c = s.conn();
    assert_eq!(
        acl_list(&mut c),
        ["user default on nopass sanitize-payload ~* &* +@all"]
    );
    ok(
        &mut c,
        &[
            "ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "%R~ro:*", "&news", "+@read",
            "+set", "-keys", "(~log:*", "+lpush)",
        ],
    );
    ok(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "admin",
            "on",
            ">admin-pw",
            "~*",
            "&*",
            "+@all",
        ],
    );
    ok(&mut c, &["AUTH", "admin", "admin-pw"]);
    ok(&mut c, &["ACL", "SETUSER", "default", "off"]);
    let before = acl_list(&mut c);
    ok(&mut c, &["ACL", "SAVE"]);
    let saved = std::fs::read_to_string(&path).unwrap();
    assert_eq!(saved, before.join("\n") + "\n");
    assert!(
        !saved.contains("app-pw") && !saved.contains("admin-pw"),
        "{saved}"
    );
    assert!(saved.contains(&digest("app-pw")), "{saved}");
    // Nothing left beside it.
    assert_eq!(std::fs::read_dir(files.path()).unwrap().count(), 1);

    s.restart();
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["GET", "k"]), NOAUTH);
    ok(&mut c, &["AUTH", "admin", "admin-pw"]);
    assert_eq!(acl_list(&mut c), before);
    // The harness waits for the data to load only for a client that needs no AUTH.
    let loaded = common::wait_until(common::DEADLINE, || {
        run::<String>(&mut c, &["INFO", "persistence"])
            .is_ok_and(|info| info.lines().any(|l| l == "loading:0"))
    });
    assert!(loaded, "still loading");
    let mut a = s.conn();
    ok(&mut a, &["AUTH", "app", "app-pw"]);
    ok(&mut a, &["SET", "app:1", "v"]);
    assert_eq!(run::<i64>(&mut a, &["LPUSH", "log:1", "v"]).unwrap(), 1);
    assert_eq!(err(&mut a, &["SET", "other", "v"]), NOPERM_KEY);
}

#[test]
fn acl_load_applies_the_file_and_drops_removed_users() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("users.acl");
    std::fs::write(
        &path,
        "user admin on >admin-pw ~* &* +@all\n\
         user app on >app-pw ~* +@all\n\
         user gone on >gone-pw ~* +@all\n",
    )
    .unwrap();
    let aclfile = path.to_str().unwrap();
    let s = Server::start(&["--aclfile", aclfile]);
    let mut admin = s.conn();
    ok(&mut admin, &["AUTH", "admin", "admin-pw"]);
    let mut app = s.conn();
    ok(&mut app, &["AUTH", "app", "app-pw"]);
    let mut gone = s.conn();
    ok(&mut gone, &["AUTH", "gone", "gone-pw"]);
    ok(&mut gone, &["SET", "k", "v"]);
    // A default user the file does not declare is the usual one.
    let mut anon = s.conn();
    ok(&mut anon, &["SET", "k2", "v"]);

    // An edit: `gone` removed, `app` may no longer SET, the default user off.
    std::fs::write(
        &path,
        "user admin on >admin-pw ~* &* +@all\n\
         user app on >app-pw ~* +@all -set\n\
         user default off\n",
    )
    .unwrap();
    ok(&mut admin, &["ACL", "LOAD"]);
    assert_eq!(
        run::<Vec<String>>(&mut admin, &["ACL", "USERS"]).unwrap(),
        ["admin", "app", "default"]
    );
    // The removed user's client is disconnected at its next command, as by ACL DELUSER.
    assert!(run::<redis::Value>(&mut gone, &["GET", "k"]).is_err());
    let mut again = s.conn();
    assert_eq!(err(&mut again, &["AUTH", "gone", "gone-pw"]), WRONGPASS);
    // The changed user's client runs with the new rules at once.
    assert_eq!(
        err(&mut app, &["SET", "k", "v2"]),
        "NOPERM User app has no permissions to run the 'set' command"
    );
    assert_eq!(run::<String>(&mut app, &["GET", "k"]).unwrap(), "v");
    // New connections must authenticate now.
    let mut fresh = s.conn();
    assert_eq!(err(&mut fresh, &["GET", "k"]), NOAUTH);
}

#[test]
fn a_malformed_file_fails_acl_load_and_changes_nothing() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("users.acl");
    std::fs::write(&path, "user admin on >admin-pw ~* &* +@all\n").unwrap();
    let aclfile = path.to_str().unwrap();
    let s = Server::start(&["--aclfile", aclfile]);
    let mut c = s.conn();
    let before = acl_list(&mut c);

    std::fs::write(
        &path,
        "user admin on >admin-pw ~* &* +@all\n\
         # a comment\n\
         user app on >app-pw ~* +@all bogus\n\
         user other on +nosuch\n",
    )
    .unwrap();
    assert_eq!(
        err(&mut c, &["ACL", "LOAD"]),
        format!(
            "ERR {aclfile}:2 should start with user keyword followed by the username. \
             {aclfile}:3: Syntax error. \
             {aclfile}:4: Error in applying operation '+nosuch': Unknown command or category name in ACL. \
             WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        )
    );
    assert_eq!(acl_list(&mut c), before);
    let mut app = s.conn();
    assert_eq!(err(&mut app, &["AUTH", "app", "app-pw"]), WRONGPASS);

    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        err(&mut c, &["ACL", "LOAD"]),
        format!("ERR Error loading ACLs, opening file '{aclfile}': No such file or directory")
    );
    assert_eq!(acl_list(&mut c), before);
}

#[test]
fn acl_load_and_save_need_an_aclfile() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["ACL", "LOAD"]), NO_ACLFILE);
    assert_eq!(err(&mut c, &["ACL", "SAVE"]), NO_ACLFILE);
    assert_eq!(
        err(&mut c, &["ACL", "SAVE", "x"]),
        "ERR wrong number of arguments for 'acl|save' command"
    );
    let help: Vec<String> = run(&mut c, &["ACL", "HELP"]).unwrap();
    assert!(
        help.iter().any(|l| l == "LOAD") && help.iter().any(|l| l == "SAVE"),
        "{help:?}"
    );
    // Both are admin commands, out of reach of a user without @admin.
    let cats: Vec<String> = run(&mut c, &["ACL", "CAT", "dangerous"]).unwrap();
    assert!(
        cats.iter().any(|n| n == "acl|load") && cats.iter().any(|n| n == "acl|save"),
        "{cats:?}"
    );
    ok(
        &mut c,
        &[
            "ACL", "SETUSER", "ops", "on", "nopass", "~*", "+@all", "-@admin",
        ],
    );
    let mut ops = s.conn();
    ok(&mut ops, &["AUTH", "ops", "x"]);
    assert_eq!(
        err(&mut ops, &["ACL", "SAVE"]),
        "NOPERM User ops has no permissions to run the 'acl|save' command"
    );
}

#[test]
fn a_bad_user_configuration_refuses_to_start() {
    let (status, stderr) = refused_start(&["--user", "alice on bogus"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Error in user declaration 'bogus': Syntax error")
            && stderr.contains(">>> 'user \"alice on bogus\"'"),
        "{stderr}"
    );

    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("users.acl");
    std::fs::write(&path, "user admin on >pw ~* +@all\n").unwrap();
    let aclfile = path.to_str().unwrap();
    let (status, stderr) = refused_start(&["--user", "alice on", "--aclfile", aclfile]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Configuring Valkey with users defined in valkey.conf and at the same setting an \
             ACL file path is invalid."
        ),
        "{stderr}"
    );

    // A malformed or missing aclfile stops the start, as in Valkey.
    std::fs::write(&path, "user admin on >pw ~* +@all bogus\n").unwrap();
    let (status, stderr) = refused_start(&["--aclfile", aclfile]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Aborting Valkey startup because of ACL errors: {aclfile}:1: Syntax error. WARNING"
        )),
        "{stderr}"
    );
    let missing = files.path().join("missing.acl");
    let missing = missing.to_str().unwrap();
    let (status, stderr) = refused_start(&["--aclfile", missing]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Aborting Valkey startup because of ACL errors: Error loading ACLs, opening file \
             '{missing}': No such file or directory"
        )),
        "{stderr}"
    );
}

/// A command a script's caller may not run is refused inside the script and noted in ACL
/// LOG with the context `lua`, the caller's name and client, as Valkey notes it;
/// `redis.acl_check_cmd` only asks, and logs nothing.
#[test]
fn script_refusals_are_in_acl_log() {
    let server = Server::start(&[]);
    let mut admin = server.conn();
    let _: () = run(
        &mut admin,
        &[
            "ACL", "SETUSER", "scripter", "on", "nopass", "~*", "+eval", "+get", "+client",
        ],
    )
    .unwrap();
    let mut c = server.conn();
    let _: () = run(&mut c, &["AUTH", "scripter", "x"]).unwrap();
    let _: () = run(&mut c, &["CLIENT", "SETNAME", "lua-caller"]).unwrap();
    let asked: i64 = run(
        &mut c,
        &[
            "EVAL",
            "return redis.acl_check_cmd('set', KEYS[1], 'x') and 1 or 0",
            "1",
            "k",
        ],
    )
    .unwrap();
    assert_eq!(asked, 0);
    let log: Vec<redis::Value> = run(&mut admin, &["ACL", "LOG"]).unwrap();
    assert!(log.is_empty(), "acl_check_cmd logged: {log:?}");
    let refused = err(
        &mut c,
        &["EVAL", "return redis.call('set', KEYS[1], 'x')", "1", "k"],
    );
    assert!(
        refused.contains("User scripter has no permissions to run the 'set' command"),
        "{refused}"
    );
    let log: Vec<Vec<redis::Value>> = run(&mut admin, &["ACL", "LOG", "1"]).unwrap();
    let entry: std::collections::HashMap<String, redis::Value> = log[0]
        .chunks(2)
        .map(|kv| {
            (
                redis::from_redis_value_ref::<String>(&kv[0]).unwrap(),
                kv[1].clone(),
            )
        })
        .collect();
    let text = |k: &str| redis::from_redis_value_ref::<String>(&entry[k]).unwrap();
    assert_eq!(text("reason"), "command");
    assert_eq!(text("context"), "lua");
    assert_eq!(text("object"), "set");
    assert_eq!(text("username"), "scripter");
    assert!(
        text("client-info").contains("name=lua-caller"),
        "{}",
        text("client-info")
    );
}

/// INFO stats counts refusals as Valkey does (`acl_access_denied_auth`, `_cmd`, `_key`,
/// `_channel`), and CONFIG RESETSTAT zeroes them.
#[test]
fn info_counts_acl_refusals() {
    let server = Server::start(&[]);
    let mut admin = server.conn();
    let _: () = run(
        &mut admin,
        &["ACL", "SETUSER", "counted", "on", ">pw", "~pay:*", "+get"],
    )
    .unwrap();
    let mut c = server.conn();
    assert!(err(&mut c, &["AUTH", "counted", "wrong"]).starts_with("WRONGPASS"));
    let _: () = run(&mut c, &["AUTH", "counted", "pw"]).unwrap();
    assert!(err(&mut c, &["SET", "pay:1", "x"]).starts_with("NOPERM"));
    assert!(err(&mut c, &["GET", "card:1"]).starts_with("NOPERM"));
    assert!(err(&mut c, &["GET", "card:2"]).starts_with("NOPERM"));
    let stats = |admin: &mut redis::Connection| -> Vec<String> {
        let text: String = run(admin, &["INFO", "stats"]).unwrap();
        text.lines()
            .filter(|l| l.starts_with("acl_access_denied_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        stats(&mut admin),
        [
            "acl_access_denied_auth:1",
            "acl_access_denied_cmd:1",
            "acl_access_denied_key:2",
            "acl_access_denied_channel:0"
        ]
    );
    let _: () = run(&mut admin, &["CONFIG", "RESETSTAT"]).unwrap();
    assert!(stats(&mut admin).iter().all(|l| l.ends_with(":0")));
}

/// What each key needs follows Valkey's key specs, key by key (acl.c's ACLSelectorCheckKey):
/// a key the command reads needs `%R~`, one it inserts, deletes or updates `%W~`, one whose
/// existence only is looked at any matching pattern. ACL DRYRUN and ACL LOG decide the same.
#[test]
fn key_permissions_follow_valkeys_key_specs() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    ok(
        &mut admin,
        &[
            "ACL", "SETUSER", "app", "on", ">pw", "%W~w:*", "%R~r:*", "%RW~rw:*", "+@all",
        ],
    );
    ok(&mut admin, &["SET", "r:src", "v"]);
    for (args, n) in [
        (&["SADD", "r:s1", "a", "b"][..], 2),
        (&["SADD", "r:s2", "c"], 1),
        (&["RPUSH", "rw:list", "x", "y"], 2),
    ] {
        assert_eq!(run::<i64>(&mut admin, args).unwrap(), n, "{args:?}");
    }
    let mut c = s.conn();
    ok(&mut c, &["AUTH", "app", "pw"]);

    // INCR's key is RW ACCESS UPDATE: write permission alone is not enough.
    assert_eq!(err(&mut c, &["INCR", "w:cnt"]), NOPERM_KEY);
    assert_eq!(run::<i64>(&mut c, &["INCR", "rw:cnt"]).unwrap(), 1);
    // SET is OW UPDATE; with GET, RW ACCESS UPDATE.
    ok(&mut c, &["SET", "w:1", "v"]);
    assert_eq!(err(&mut c, &["SET", "w:1", "v2", "GET"]), NOPERM_KEY);
    assert_eq!(
        run::<Option<String>>(&mut c, &["SET", "rw:1", "v", "GET"]).unwrap(),
        None
    );
    // GET is RO ACCESS.
    assert_eq!(err(&mut c, &["GET", "w:1"]), NOPERM_KEY);
    // EXISTS is RO without ACCESS: any matching pattern will do.
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "w:1"]).unwrap(), 1);
    assert_eq!(run::<i64>(&mut c, &["EXISTS", "r:src"]).unwrap(), 1);
    assert_eq!(err(&mut c, &["EXISTS", "other"]), NOPERM_KEY);
    // COPY reads its source (RO ACCESS) and writes its destination (OW UPDATE).
    assert_eq!(run::<i64>(&mut c, &["COPY", "r:src", "w:dst"]).unwrap(), 1);
    assert_eq!(err(&mut c, &["COPY", "w:dst", "r:src2"]), NOPERM_KEY);
    // SUNIONSTORE writes its destination (OW UPDATE) and reads its sources (RO ACCESS).
    assert_eq!(
        run::<i64>(&mut c, &["SUNIONSTORE", "w:u", "r:s1", "r:s2"]).unwrap(),
        3
    );
    assert_eq!(
        err(&mut c, &["SUNIONSTORE", "w:u", "r:s1", "w:1"]),
        NOPERM_KEY
    );
    // LMOVE reads and pops its source (RW ACCESS DELETE), pushes to its destination (RW
    // INSERT).
    assert_eq!(
        run::<String>(&mut c, &["LMOVE", "rw:list", "w:list", "LEFT", "RIGHT"]).unwrap(),
        "x"
    );
    assert_eq!(
        err(&mut c, &["LMOVE", "w:list", "rw:list", "LEFT", "RIGHT"]),
        NOPERM_KEY
    );
    assert_eq!(
        err(&mut c, &["LMOVE", "rw:list", "r:list", "LEFT", "RIGHT"]),
        NOPERM_KEY
    );
    // Nothing refused ran.
    assert_eq!(
        run::<Option<String>>(&mut admin, &["GET", "w:cnt"]).unwrap(),
        None
    );
    assert_eq!(run::<String>(&mut admin, &["GET", "w:1"]).unwrap(), "v");
    assert_eq!(run::<i64>(&mut admin, &["LLEN", "rw:list"]).unwrap(), 1);

    // ACL DRYRUN agrees.
    let dryrun = |admin: &mut redis::Connection, args: &[&str]| -> String {
        let mut all = vec!["ACL", "DRYRUN", "app"];
        all.extend_from_slice(args);
        run::<String>(admin, &all).unwrap()
    };
    let refused = |key: &str| format!("This user has no permissions to access the '{key}' key");
    for (args, key) in [
        (&["INCR", "w:cnt"][..], Some("w:cnt")),
        (&["INCR", "rw:cnt"], None),
        (&["SET", "w:1", "v"], None),
        (&["SET", "w:1", "v", "GET"], Some("w:1")),
        (&["GET", "w:1"], Some("w:1")),
        (&["EXISTS", "w:1"], None),
        (&["COPY", "r:src", "w:dst"], None),
        (&["COPY", "w:dst", "r:src"], Some("w:dst")),
        (&["SUNIONSTORE", "w:u", "r:s1", "r:s2"], None),
        (&["SUNIONSTORE", "w:u", "r:s1", "w:1"], Some("w:1")),
        (&["LMOVE", "rw:list", "w:list", "LEFT", "RIGHT"], None),
        (
            &["LMOVE", "w:list", "rw:list", "LEFT", "RIGHT"],
            Some("w:list"),
        ),
    ] {
        let want = key.map_or_else(|| "OK".to_string(), refused);
        assert_eq!(dryrun(&mut admin, args), want, "{args:?}");
    }

    // ACL LOG notes the key the refusal was about.
    let log = acl_log(&mut admin, &[]);
    let refused_keys: Vec<&str> = log
        .iter()
        .filter(|e| e["reason"] == "key")
        .map(|e| e["object"].as_str())
        .collect();
    for key in ["w:cnt", "w:1", "w:dst", "w:list", "r:list", "other"] {
        assert!(refused_keys.contains(&key), "{key} in {refused_keys:?}");
    }
}
