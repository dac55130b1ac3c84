//! The basics through a real client: the server starts, answers, and routes keys across cores.

use crate::common;

use common::{Server, err, run};

#[test]
fn ping_set_get_across_cores() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(run::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    for i in 0..200 {
        let k = format!("key:{i}");
        assert_eq!(
            run::<String>(&mut c, &["SET", &k, &i.to_string()]).unwrap(),
            "OK"
        );
    }
    for i in 0..200 {
        let k = format!("key:{i}");
        assert_eq!(run::<i64>(&mut c, &["GET", &k]).unwrap(), i);
    }
    assert_eq!(run::<i64>(&mut c, &["DBSIZE"]).unwrap(), 200);
    assert_eq!(
        err(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
}

#[test]
fn pipeline_of_ten_thousand_keeps_order() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let mut p = redis::pipe();
    for i in 0..10_000 {
        p.cmd("SET").arg(format!("p:{i}")).arg(i).ignore();
        p.cmd("INCR").arg(format!("p:{i}"));
    }
    let replies: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(replies.len(), 10_000);
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(*r, i as i64 + 1);
    }
}
