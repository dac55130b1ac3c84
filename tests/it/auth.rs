//! requirepass: unauthenticated clients may only authenticate (or leave).

use crate::common;

use common::{Server, err, run};

#[test]
fn requirepass_is_enforced() {
    let s = Server::start(&["--requirepass", "s3cret"]);
    let mut raw = redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(
        err(&mut raw, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        err(&mut raw, &["SET", "k", "v"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        err(&mut raw, &["AUTH", "wrong"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert!(err(&mut raw, &["HELLO", "3"]).starts_with("NOAUTH HELLO must be called"));
    assert_eq!(run::<String>(&mut raw, &["AUTH", "s3cret"]).unwrap(), "OK");
    assert_eq!(run::<String>(&mut raw, &["SET", "k", "v"]).unwrap(), "OK");
    assert_eq!(run::<String>(&mut raw, &["RESET"]).unwrap(), "RESET");
    assert_eq!(
        err(&mut raw, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        run::<String>(&mut raw, &["AUTH", "default", "s3cret"]).unwrap(),
        "OK"
    );
    assert_eq!(run::<String>(&mut raw, &["GET", "k"]).unwrap(), "v");

    // A client that authenticates through its URL works as usual.
    let url = format!("redis://:s3cret@127.0.0.1:{}/", s.port);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(run::<String>(&mut c, &["GET", "k"]).unwrap(), "v");
}
