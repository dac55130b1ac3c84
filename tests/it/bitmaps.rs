//! Bitmaps through a real client: SETBIT/GETBIT, BITCOUNT, BITPOS, BITOP (Valkey 9's DIFF,
//! DIFF1, ANDOR and ONE too), BITFIELD and BITFIELD_RO, their errors and WRONGTYPE, RESP3,
//! TYPE/OBJECT ENCODING/SCAN TYPE, persistence across a restart, and random command streams
//! against a bit-vector model. Expected replies are Valkey's (checked against redis-server where
//! Valkey 8 and Redis 7 agree).

use crate::common;

use common::{Server, err, int, run};
use proptest::prelude::*;
use redis::Value;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
const BAD_TYPE: &str = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

fn get(c: &mut redis::Connection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn set(c: &mut redis::Connection, key: &str, value: &[u8]) {
    let _: () = redis::cmd("SET").arg(key).arg(value).query(c).unwrap();
}

/// A BITFIELD reply: integers, None for an OVERFLOW FAIL.
fn fields(c: &mut redis::Connection, args: &[&str]) -> Vec<Option<i64>> {
    run(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn setbit_and_getbit() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["SETBIT", "k", "7", "1"]), 0);
    assert_eq!(int(&mut c, &["SETBIT", "k", "7", "1"]), 1);
    assert_eq!(get(&mut c, "k"), Some(vec![0x01]));
    assert_eq!(int(&mut c, &["SETBIT", "k", "0", "1"]), 0);
    assert_eq!(get(&mut c, "k"), Some(vec![0x81]));
    assert_eq!(int(&mut c, &["SETBIT", "k", "7", "0"]), 1);
    assert_eq!(get(&mut c, "k"), Some(vec![0x80]));
    // Clearing a bit past the end still lengthens the string (zero-padded).
    assert_eq!(int(&mut c, &["SETBIT", "k", "100", "0"]), 0);
    assert_eq!(int(&mut c, &["STRLEN", "k"]), 13);
    // SETBIT on a missing key creates it, even to clear a bit.
    assert_eq!(int(&mut c, &["SETBIT", "fresh", "9", "0"]), 0);
    assert_eq!(get(&mut c, "fresh"), Some(vec![0, 0]));

    assert_eq!(int(&mut c, &["GETBIT", "k", "0"]), 1);
    assert_eq!(int(&mut c, &["GETBIT", "k", "1"]), 0);
    assert_eq!(int(&mut c, &["GETBIT", "k", "100000"]), 0);
    assert_eq!(int(&mut c, &["GETBIT", "nokey", "0"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "nokey"]), 0);

    // The largest offset is the last bit of proto-max-bulk-len bytes (512 MB: 2^32 - 1).
    for bad in ["-1", "4294967296", "x", "01", "#1", "1.0", ""] {
        assert_eq!(
            err(&mut c, &["SETBIT", "k", bad, "1"]),
            BAD_OFFSET,
            "{bad:?}"
        );
        assert_eq!(err(&mut c, &["GETBIT", "k", bad]), BAD_OFFSET, "{bad:?}");
    }
    assert_eq!(int(&mut c, &["GETBIT", "k", "4294967295"]), 0);
    for bad in ["2", "-1", "x", "", "01"] {
        assert_eq!(
            err(&mut c, &["SETBIT", "k", "1", bad]),
            "ERR bit is not an integer or out of range",
            "{bad:?}"
        );
    }
    // The offset is checked before the bit.
    assert_eq!(err(&mut c, &["SETBIT", "k", "-1", "2"]), BAD_OFFSET);

    // An integer-encoded string reads as its digits: "12" is 0x31 0x32.
    assert_eq!(run::<String>(&mut c, &["SET", "n", "12"]).unwrap(), "OK");
    assert_eq!(int(&mut c, &["GETBIT", "n", "2"]), 1);
    assert_eq!(int(&mut c, &["GETBIT", "n", "0"]), 0);
    assert_eq!(int(&mut c, &["SETBIT", "n", "15", "1"]), 0);
    assert_eq!(get(&mut c, "n"), Some(b"13".to_vec()));

    // A TTL survives SETBIT.
    assert_eq!(int(&mut c, &["EXPIRE", "k", "100"]), 1);
    assert_eq!(int(&mut c, &["SETBIT", "k", "200", "1"]), 0);
    assert!(int(&mut c, &["TTL", "k"]) > 0);

    assert_eq!(
        err(&mut c, &["SETBIT", "k", "1"]),
        "ERR wrong number of arguments for 'setbit' command"
    );
    assert_eq!(
        err(&mut c, &["GETBIT", "k"]),
        "ERR wrong number of arguments for 'getbit' command"
    );
}

#[test]
fn setbit_offset_follows_proto_max_bulk_len() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let ok: String = run(&mut c, &["CONFIG", "SET", "proto-max-bulk-len", "1mb"]).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(int(&mut c, &["SETBIT", "k", "8388607", "1"]), 0);
    assert_eq!(int(&mut c, &["STRLEN", "k"]), 1 << 20);
    assert_eq!(err(&mut c, &["SETBIT", "k", "8388608", "1"]), BAD_OFFSET);
    assert_eq!(err(&mut c, &["GETBIT", "k", "8388608"]), BAD_OFFSET);
    assert_eq!(
        err(&mut c, &["BITFIELD", "k", "GET", "u8", "8388608"]),
        BAD_OFFSET
    );
    // A field may start on the last byte and reach past it.
    assert_eq!(
        fields(&mut c, &["BITFIELD", "k", "GET", "u16", "8388607"]),
        [Some(0x8000)]
    );
    // A big bitmap is counted and searched a word at a time.
    assert_eq!(int(&mut c, &["BITCOUNT", "k"]), 1);
    assert_eq!(int(&mut c, &["BITPOS", "k", "1"]), 8388607);
    assert_eq!(
        int(&mut c, &["BITPOS", "k", "1", "1", "-1", "BIT"]),
        8388607
    );
    assert_eq!(int(&mut c, &["BITPOS", "k", "0", "3"]), 24);
    assert_eq!(int(&mut c, &["BITCOUNT", "k", "-1", "-1"]), 1);
}

#[test]
fn bitcount() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    set(&mut c, "s", b"foobar");
    for (args, want) in [
        (&["s"][..], 26),
        (&["s", "0", "0"], 4),
        (&["s", "1", "1"], 6),
        (&["s", "1", "1", "BYTE"], 6),
        (&["s", "5", "30", "BIT"], 17),
        (&["s", "5", "30", "bit"], 17),
        (&["s", "-1", "-2"], 0),
        (&["s", "-2", "-1"], 7),
        (&["s", "-100", "100"], 26),
        (&["s", "0", "-1", "bit"], 26),
        (&["s", "3", "2"], 0),
        (&["s", "-3", "-3", "bit"], 0),
        (&["s", "-5", "-5", "bit"], 1),
        (&["s", "10", "-34", "BIT"], 4),
        (&["s", "-2", "1", "BIT"], 0),
        // Valkey 8: `end` is optional, and then the range runs to the last byte.
        (&["s", "1"], 22),
        (&["s", "-1"], 4),
        (&["s", "1000"], 0),
        (&["s", "-1000"], 26),
        (&["nokey"], 0),
        (&["nokey", "0", "1"], 0),
        (&["nokey", "0"], 0),
    ] {
        let full: Vec<&str> = ["BITCOUNT"].iter().chain(args).copied().collect();
        assert_eq!(int(&mut c, &full), want, "{full:?}");
    }
    set(&mut c, "empty", b"");
    assert_eq!(int(&mut c, &["BITCOUNT", "empty"]), 0);
    assert_eq!(int(&mut c, &["BITCOUNT", "empty", "0", "-1"]), 0);
    set(&mut c, "misaligned", b"__PPxxxxxxxxxxxxxxxxRR__");
    assert_eq!(int(&mut c, &["BITCOUNT", "misaligned", "2", "-3"]), 74);

    assert_eq!(err(&mut c, &["BITCOUNT", "s", "0", "1", "bits"]), SYNTAX);
    assert_eq!(
        err(&mut c, &["BITCOUNT", "s", "0", "1", "bit", "x"]),
        SYNTAX
    );
    assert_eq!(err(&mut c, &["BITCOUNT", "nokey", "0", "1", "x"]), SYNTAX);
    assert_eq!(err(&mut c, &["BITCOUNT", "s", "x", "1"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITCOUNT", "s", "0", "x"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITCOUNT", "s", "x"]), NOT_INTEGER);
    // Valkey parses start, then the unit, then end.
    assert_eq!(err(&mut c, &["BITCOUNT", "s", "0", "x", "bits"]), SYNTAX);
    assert_eq!(
        err(&mut c, &["BITCOUNT", "s", "x", "1", "bits"]),
        NOT_INTEGER
    );
    assert_eq!(
        err(&mut c, &["BITCOUNT"]),
        "ERR wrong number of arguments for 'bitcount' command"
    );
}

#[test]
fn bitpos() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    set(&mut c, "m", b"\xff\xf0\x00");
    set(&mut c, "ones", b"\xff\xff\xff");
    set(&mut c, "mid", b"\x00\xff\x00");
    set(&mut c, "empty", b"");
    for (args, want) in [
        (&["m", "0"][..], 12),
        (&["m", "1"], 0),
        (&["m", "1", "2"], -1),
        (&["m", "1", "2", "-1"], -1),
        (&["m", "0", "0", "0"], -1),
        (&["m", "0", "0"], 12),
        (&["m", "0", "0", "-1", "bit"], 12),
        (&["m", "0", "0", "11", "bit"], -1),
        (&["m", "0", "0", "12", "BIT"], 12),
        (&["m", "1", "7", "15", "bit"], 7),
        (&["m", "1", "12", "23", "bit"], -1),
        (&["m", "1", "-1", "-1"], -1),
        (&["m", "1", "100"], -1),
        (&["m", "0", "100"], -1),
        // bit 0 without an explicit end: the string continues with zeros.
        (&["ones", "0"], 24),
        (&["ones", "0", "0"], 24),
        (&["ones", "0", "0", "-1"], -1),
        (&["ones", "0", "0", "-1", "bit"], -1),
        (&["ones", "0", "-100", "-1"], -1),
        (&["ones", "0", "5"], -1),
        (&["ones", "0", "2"], 24),
        (&["mid", "0", "1", "-1"], 16),
        (&["mid", "0", "2", "200"], 16),
        (&["mid", "0", "1", "1"], -1),
        (&["mid", "0", "8", "8", "bit"], -1),
        (&["mid", "1", "8", "8", "bit"], 8),
        (&["mid", "1", "16", "200", "bit"], -1),
        (&["empty", "0"], -1),
        (&["empty", "1"], -1),
        // A missing key is an endless run of zeros, whatever the range.
        (&["nokey", "0"], 0),
        (&["nokey", "1"], -1),
        (&["nokey", "0", "5", "10"], 0),
        (&["nokey", "0", "0", "-1", "bit"], 0),
    ] {
        let full: Vec<&str> = ["BITPOS"].iter().chain(args).copied().collect();
        assert_eq!(int(&mut c, &full), want, "{full:?}");
    }
    // Skipping whole words: the first 0 after 27 bytes of ones, the first 1 after zeros.
    let mut long = vec![0xffu8; 27];
    long.push(0x0f);
    let long_key = "long";
    let _: () = redis::cmd("SET")
        .arg(long_key)
        .arg(&long)
        .query(&mut c)
        .unwrap();
    for start in ["0", "1", "5", "8"] {
        assert_eq!(int(&mut c, &["BITPOS", long_key, "0", start]), 216);
    }
    assert_eq!(
        int(&mut c, &["BITPOS", long_key, "0", "65", "-1", "bit"]),
        216
    );

    assert_eq!(
        err(&mut c, &["BITPOS", "m", "2"]),
        "ERR The bit argument must be 1 or 0."
    );
    assert_eq!(err(&mut c, &["BITPOS", "m", "x"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITPOS", "m", "1", "x"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITPOS", "m", "1", "0", "x"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITPOS", "m", "1", "0", "1", "x"]), SYNTAX);
    assert_eq!(
        err(&mut c, &["BITPOS", "m", "1", "0", "1", "bit", "y"]),
        SYNTAX
    );
    assert_eq!(
        err(&mut c, &["BITPOS", "m"]),
        "ERR wrong number of arguments for 'bitpos' command"
    );
}

#[test]
fn bitop() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    set(&mut c, "{b}1", b"foobar");
    set(&mut c, "{b}2", b"abcdef");
    assert_eq!(int(&mut c, &["BITOP", "AND", "{b}d", "{b}1", "{b}2"]), 6);
    assert_eq!(get(&mut c, "{b}d"), Some(b"`bc`ab".to_vec()));
    assert_eq!(int(&mut c, &["BITOP", "or", "{b}d", "{b}1", "{b}nokey"]), 6);
    assert_eq!(get(&mut c, "{b}d"), Some(b"foobar".to_vec()));
    assert_eq!(
        int(&mut c, &["BITOP", "AND", "{b}d", "{b}1", "{b}nokey"]),
        6
    );
    assert_eq!(get(&mut c, "{b}d"), Some(vec![0; 6]));
    assert_eq!(int(&mut c, &["BITOP", "XOR", "{b}d", "{b}1", "{b}1"]), 6);
    assert_eq!(get(&mut c, "{b}d"), Some(vec![0; 6]));
    assert_eq!(int(&mut c, &["BITOP", "NOT", "{b}d", "{b}1"]), 6);
    assert_eq!(
        get(&mut c, "{b}d"),
        Some(b"foobar".iter().map(|b| !b).collect())
    );
    // Shorter sources are zero-padded to the longest.
    set(&mut c, "{b}3", b"\x01\x02\xff\xff");
    set(&mut c, "{b}4", b"\x01\x02\xff");
    assert_eq!(int(&mut c, &["BITOP", "XOR", "{b}d", "{b}3", "{b}4"]), 4);
    assert_eq!(get(&mut c, "{b}d"), Some(b"\x00\x00\x00\xff".to_vec()));
    // Integer-encoded sources read as their digits.
    set(&mut c, "{b}i1", b"1");
    set(&mut c, "{b}i2", b"2");
    assert_eq!(
        int(&mut c, &["BITOP", "XOR", "{b}d", "{b}i1", "{b}i2", "{b}i1"]),
        1
    );
    assert_eq!(get(&mut c, "{b}d"), Some(b"2".to_vec()));
    // The destination may be a source.
    set(&mut c, "{b}s", b"\xaa\x00\xff\x55");
    assert_eq!(int(&mut c, &["BITOP", "NOT", "{b}s", "{b}s"]), 4);
    assert_eq!(get(&mut c, "{b}s"), Some(b"\x55\xff\x00\xaa".to_vec()));

    // Valkey 9's operations. X = 11110000, Y1 = 11001100, Y2 = 10101010.
    set(&mut c, "{b}x", b"\xf0");
    set(&mut c, "{b}y1", b"\xcc");
    set(&mut c, "{b}y2", b"\xaa");
    for (op, want) in [
        ("DIFF", 0b0001_0000u8),
        ("DIFF1", 0b0000_1110),
        ("ANDOR", 0b1110_0000),
        ("ONE", 0b0001_0110),
    ] {
        assert_eq!(
            int(&mut c, &["BITOP", op, "{b}d", "{b}x", "{b}y1", "{b}y2"]),
            1,
            "{op}"
        );
        assert_eq!(get(&mut c, "{b}d"), Some(vec![want]), "{op}");
    }
    // ONE takes a single source too; a missing first source reads as zeros.
    assert_eq!(int(&mut c, &["BITOP", "one", "{b}d", "{b}x"]), 1);
    assert_eq!(get(&mut c, "{b}d"), Some(vec![0xf0]));
    assert_eq!(
        int(&mut c, &["BITOP", "diff1", "{b}d", "{b}no", "{b}y1"]),
        1
    );
    assert_eq!(get(&mut c, "{b}d"), Some(vec![0xcc]));
    for op in ["DIFF", "DIFF1", "ANDOR"] {
        assert_eq!(
            err(&mut c, &["BITOP", &op.to_lowercase(), "{b}d", "{b}x"]),
            format!("ERR BITOP {op} must be called with at least two source keys.")
        );
    }

    // The result replaces any value and its TTL; an empty result deletes the destination.
    let _: i64 = redis::cmd("HSET")
        .arg("{b}h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, &["EXPIRE", "{b}h", "100"]), 1);
    assert_eq!(int(&mut c, &["BITOP", "OR", "{b}h", "{b}x"]), 1);
    assert_eq!(run::<String>(&mut c, &["TYPE", "{b}h"]).unwrap(), "string");
    assert_eq!(int(&mut c, &["TTL", "{b}h"]), -1);
    assert_eq!(
        int(&mut c, &["BITOP", "AND", "{b}h", "{b}no1", "{b}no2"]),
        0
    );
    assert_eq!(int(&mut c, &["EXISTS", "{b}h"]), 0);
    set(&mut c, "{b}empty", b"");
    assert_eq!(int(&mut c, &["BITOP", "NOT", "{b}d", "{b}empty"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "{b}d"]), 0);

    assert_eq!(
        err(&mut c, &["BITOP", "NOT", "{b}d", "{b}1", "{b}2"]),
        "ERR BITOP NOT must be called with a single source key."
    );
    assert_eq!(err(&mut c, &["BITOP", "NAND", "{b}d", "{b}1"]), SYNTAX);
    assert_eq!(
        err(&mut c, &["BITOP", "AND", "{b}d"]),
        "ERR wrong number of arguments for 'bitop' command"
    );
    let _: i64 = redis::cmd("HSET")
        .arg("{b}h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        err(&mut c, &["BITOP", "OR", "{b}d", "{b}1", "{b}h"]),
        WRONGTYPE
    );
    assert_eq!(int(&mut c, &["EXISTS", "{b}d"]), 0);
}

#[test]
fn bitfield() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let none: Vec<Option<i64>> = Vec::new();
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "bf", "SET", "i8", "0", "100", "GET", "i8", "0", "INCRBY", "i8", "0",
                "100", "GET", "u8", "0"
            ]
        ),
        [Some(0), Some(100), Some(-56), Some(200)]
    );
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "i8", "0", "100", "OVERFLOW",
                "FAIL", "INCRBY", "i8", "0", "1", "OVERFLOW", "WRAP", "INCRBY", "i8", "0", "1"
            ]
        ),
        [Some(44), Some(45), Some(46)]
    );
    // `#n` is the n-th field of the type's width.
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "bf", "SET", "u8", "#1", "255", "GET", "u16", "0", "INCRBY", "u2",
                "100", "1", "GET", "u4", "#24"
            ]
        ),
        [Some(0), Some(0x2eff), Some(1), Some(0)]
    );
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "bf", "GET", "i64", "0", "GET", "u63", "1", "GET", "i1", "0", "GET",
                "u1", "0"
            ]
        ),
        [
            Some(3386425444805902336),
            Some(3386425444805902336),
            Some(0),
            Some(0)
        ]
    );
    // SAT and WRAP at the edges, signed and unsigned, 64-bit included.
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD",
                "nk3",
                "OVERFLOW",
                "SAT",
                "SET",
                "u8",
                "0",
                "-1",
                "GET",
                "u8",
                "0",
                "SET",
                "i8",
                "8",
                "-9223372036854775808",
                "GET",
                "i8",
                "8"
            ]
        ),
        [Some(0), Some(255), Some(0), Some(127)]
    );
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "nk3", "OVERFLOW", "WRAP", "SET", "u8", "0", "-1", "SET", "i8", "0",
                "200", "GET", "i8", "0", "SET", "u8", "0", "256"
            ]
        ),
        [Some(255), Some(-1), Some(-56), Some(200)]
    );
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD",
                "nk3",
                "INCRBY",
                "i64",
                "0",
                "9223372036854775807",
                "INCRBY",
                "i64",
                "0",
                "1",
                "OVERFLOW",
                "SAT",
                "INCRBY",
                "i64",
                "0",
                "-1",
                "INCRBY",
                "u63",
                "0",
                "-1"
            ]
        ),
        [
            Some(-9187624714812522497),
            Some(-9187624714812522496),
            Some(-9187624714812522497),
            Some(4629559679448514558)
        ]
    );
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD",
                "sat",
                "OVERFLOW",
                "SAT",
                "INCRBY",
                "i64",
                "0",
                "9223372036854775807",
                "INCRBY",
                "i64",
                "0",
                "1",
                "INCRBY",
                "u4",
                "64",
                "100",
                "INCRBY",
                "u4",
                "64",
                "-100"
            ]
        ),
        [Some(i64::MAX), Some(i64::MAX), Some(15), Some(0)]
    );
    // OVERFLOW FAIL leaves the field alone and answers nil, but the string still grows (or is
    // created) to reach it, as in Valkey.
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "nk2", "OVERFLOW", "FAIL", "SET", "u8", "800", "300"
            ]
        ),
        [None]
    );
    assert_eq!(int(&mut c, &["STRLEN", "nk2"]), 101);
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "nk2", "OVERFLOW", "FAIL", "INCRBY", "i4", "0", "7", "INCRBY", "i4",
                "0", "1", "GET", "i4", "0"
            ]
        ),
        [Some(7), None, Some(7)]
    );
    // A field across byte boundaries: u3 at 5 and i5 at 13 of zeros.
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "nk5", "SET", "u3", "5", "7", "SET", "i5", "13", "-3", "GET", "u16",
                "0", "GET", "i5", "13"
            ]
        ),
        [Some(0), Some(0), Some(0x0707), Some(-3)]
    );
    assert_eq!(get(&mut c, "nk5"), Some(vec![0x07, 0x07, 0x40]));
    // A huge `#n` wraps as in Valkey's C arithmetic: #2^60 of i16 is offset 0.
    assert_eq!(
        fields(
            &mut c,
            &["BITFIELD", "nk5", "GET", "i16", "#1152921504606846976"]
        ),
        [Some(0x0707)]
    );
    assert_eq!(
        err(
            &mut c,
            &["BITFIELD", "nk5", "GET", "i8", "#1152921504606846976"]
        ),
        BAD_OFFSET
    );
    // Only GETs, or nothing, on a missing key: no key is created.
    assert_eq!(
        fields(&mut c, &["BITFIELD", "nokey", "GET", "u8", "0"]),
        [Some(0)]
    );
    assert_eq!(fields(&mut c, &["BITFIELD", "nokey"]), none);
    assert_eq!(int(&mut c, &["EXISTS", "nokey"]), 0);
    // Reading an integer-encoded string.
    set(&mut c, "n", b"12");
    assert_eq!(
        fields(&mut c, &["BITFIELD", "n", "GET", "u16", "0"]),
        [Some(0x3132)]
    );

    for bad in ["u64", "i65", "u0", "i0", "x8", "", "u08", "u", "i-1", "U8"] {
        assert_eq!(
            err(&mut c, &["BITFIELD", "bf", "GET", bad, "0"]),
            BAD_TYPE,
            "{bad:?}"
        );
    }
    for bad in ["-1", "#-1", "#", "4294967296", "x", "#x", "1.5"] {
        assert_eq!(
            err(&mut c, &["BITFIELD", "bf", "GET", "u8", bad]),
            BAD_OFFSET,
            "{bad:?}"
        );
    }
    assert_eq!(
        fields(&mut c, &["BITFIELD", "bf", "GET", "u8", "4294967295"]),
        [Some(0)]
    );
    assert_eq!(err(&mut c, &["BITFIELD", "bf", "SET", "u8", "0"]), SYNTAX);
    assert_eq!(
        err(&mut c, &["BITFIELD", "bf", "SET", "u8", "0", "x"]),
        NOT_INTEGER
    );
    assert_eq!(
        err(&mut c, &["BITFIELD", "bf", "INCRBY", "u8", "0", "1.5"]),
        NOT_INTEGER
    );
    assert_eq!(err(&mut c, &["BITFIELD", "bf", "OVERFLOW"]), SYNTAX);
    assert_eq!(
        err(
            &mut c,
            &["BITFIELD", "bf", "OVERFLOW", "bad", "GET", "u8", "0"]
        ),
        "ERR Invalid OVERFLOW type specified"
    );
    assert_eq!(err(&mut c, &["BITFIELD", "bf", "FOO", "u8", "0"]), SYNTAX);
    assert_eq!(
        err(&mut c, &["BITFIELD", "bf", "GET", "u8", "0", "GET"]),
        SYNTAX
    );
    // Nothing runs when a later subcommand is wrong.
    assert_eq!(
        err(
            &mut c,
            &[
                "BITFIELD", "fresh", "SET", "u8", "0", "1", "GET", "u99", "0"
            ]
        ),
        BAD_TYPE
    );
    assert_eq!(int(&mut c, &["EXISTS", "fresh"]), 0);
    assert_eq!(
        err(&mut c, &["BITFIELD"]),
        "ERR wrong number of arguments for 'bitfield' command"
    );
}

#[test]
fn bitfield_ro() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    set(&mut c, "k", b"\x12\x34");
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD_RO",
                "k",
                "GET",
                "u8",
                "0",
                "GET",
                "i4",
                "4",
                "GET",
                "u4",
                "#3"
            ]
        ),
        [Some(0x12), Some(2), Some(4)]
    );
    assert_eq!(
        fields(&mut c, &["BITFIELD_RO", "k"]),
        Vec::<Option<i64>>::new()
    );
    assert_eq!(
        fields(&mut c, &["BITFIELD_RO", "nokey", "GET", "u8", "0"]),
        [Some(0)]
    );
    assert_eq!(int(&mut c, &["EXISTS", "nokey"]), 0);
    for args in [
        &["BITFIELD_RO", "k", "GET", "u8", "0", "SET", "u8", "0", "1"][..],
        &["BITFIELD_RO", "k", "INCRBY", "u8", "0", "1"],
        &["BITFIELD_RO", "k", "OVERFLOW", "SAT", "SET", "u8", "0", "1"],
    ] {
        assert_eq!(
            err(&mut c, args),
            "ERR BITFIELD_RO only supports the GET subcommand",
            "{args:?}"
        );
    }
    // Parse errors come first.
    assert_eq!(
        err(&mut c, &["BITFIELD_RO", "k", "SET", "u64", "0", "1"]),
        BAD_TYPE
    );
    assert_eq!(get(&mut c, "k"), Some(b"\x12\x34".to_vec()));
    assert_eq!(
        err(&mut c, &["BITFIELD_RO"]),
        "ERR wrong number of arguments for 'bitfield_ro' command"
    );
}

#[test]
fn wrong_types() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    let _: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    for args in [
        &["SETBIT", "h", "0", "1"][..],
        &["GETBIT", "h", "0"],
        &["BITCOUNT", "h"],
        &["BITCOUNT", "h", "0", "1"],
        &["BITPOS", "h", "1"],
        &["BITPOS", "h", "1", "10", "100"],
        &["BITFIELD", "h", "GET", "u8", "0"],
        &["BITFIELD", "h", "SET", "u8", "0", "1"],
        &["BITFIELD", "h"],
        &["BITFIELD_RO", "h", "GET", "u8", "0"],
        &["BITOP", "OR", "d", "h"],
    ] {
        assert_eq!(err(&mut c, args), WRONGTYPE, "{args:?}");
    }
    // Argument errors win over the type check, as in Valkey.
    assert_eq!(err(&mut c, &["BITCOUNT", "h", "a", "b"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITPOS", "h", "a"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["BITPOS", "h", "1", "a", "b"]), NOT_INTEGER);
    assert_eq!(err(&mut c, &["SETBIT", "h", "-1", "1"]), BAD_OFFSET);
    assert_eq!(err(&mut c, &["BITFIELD", "h", "GET", "u64", "0"]), BAD_TYPE);
    // Nothing was changed.
    assert_eq!(run::<String>(&mut c, &["TYPE", "h"]).unwrap(), "hash");
    assert_eq!(int(&mut c, &["EXISTS", "d"]), 0);
}

#[test]
fn resp3_replies() {
    let s = Server::start(&[]);
    let mut c = s.conn3();
    assert_eq!(int(&mut c, &["SETBIT", "k", "1", "1"]), 0);
    let v: Value = run(
        &mut c,
        &[
            "BITFIELD", "k", "OVERFLOW", "FAIL", "INCRBY", "u2", "0", "4", "GET", "u2", "0",
        ],
    )
    .unwrap();
    assert_eq!(v, Value::Array(vec![Value::Nil, Value::Int(1)]));
    let v: Value = run(&mut c, &["BITFIELD_RO", "k"]).unwrap();
    assert_eq!(v, Value::Array(vec![]));
    assert_eq!(int(&mut c, &["BITCOUNT", "k"]), 1);
    assert_eq!(int(&mut c, &["BITPOS", "k", "1"]), 1);
}

#[test]
fn type_encoding_and_scan() {
    let s = Server::start(&[]);
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["SETBIT", "bm", "1000", "1"]), 0);
    assert_eq!(run::<String>(&mut c, &["TYPE", "bm"]).unwrap(), "string");
    assert_eq!(
        run::<String>(&mut c, &["OBJECT", "ENCODING", "bm"]).unwrap(),
        "raw"
    );
    let _: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let mut cursor = "0".to_string();
    let mut strings = Vec::new();
    loop {
        let (next, keys): (String, Vec<String>) = run(
            &mut c,
            &["SCAN", &cursor, "COUNT", "1000", "TYPE", "string"],
        )
        .unwrap();
        strings.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(strings, ["bm"]);
    // The table rows, through COMMAND INFO.
    let info: Value = run(&mut c, &["COMMAND", "INFO", "bitop", "bitfield_ro"]).unwrap();
    let Value::Array(rows) = info else {
        panic!("COMMAND INFO replies an array")
    };
    let row = |i: usize| match &rows[i] {
        Value::Array(r) => r.clone(),
        other => panic!("a command row, got {other:?}"),
    };
    assert_eq!(row(0)[1], Value::Int(-4));
    assert_eq!(
        &row(0)[3..6],
        &[Value::Int(2), Value::Int(-1), Value::Int(1)]
    );
    assert_eq!(row(1)[1], Value::Int(-2));
}

#[test]
fn bitmaps_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
    let mut c = s.conn();
    for off in [0, 7, 8, 1000, 65535] {
        assert_eq!(int(&mut c, &["SETBIT", "bm", &off.to_string(), "1"]), 0);
    }
    assert_eq!(int(&mut c, &["SETBIT", "bm", "7", "0"]), 1);
    assert_eq!(
        fields(
            &mut c,
            &[
                "BITFIELD", "bf", "SET", "i12", "#3", "-1000", "INCRBY", "u7", "100", "99"
            ]
        ),
        [Some(0), Some(99)]
    );
    set(&mut c, "{o}a", b"\x0f\x0f");
    set(&mut c, "{o}b", b"\xff");
    assert_eq!(int(&mut c, &["BITOP", "ONE", "{o}d", "{o}a", "{o}b"]), 2);
    set(&mut c, "n", b"12");
    assert_eq!(int(&mut c, &["SETBIT", "n", "15", "1"]), 0);
    let before: Vec<Option<Vec<u8>>> = ["bm", "bf", "{o}d", "n"]
        .iter()
        .map(|k| get(&mut c, k))
        .collect();
    s.kill9();
    s.restart();
    s.wait_loaded();
    let mut c = s.conn();
    let after: Vec<Option<Vec<u8>>> = ["bm", "bf", "{o}d", "n"]
        .iter()
        .map(|k| get(&mut c, k))
        .collect();
    assert_eq!(after, before);
    assert_eq!(int(&mut c, &["BITCOUNT", "bm"]), 4);
    assert_eq!(int(&mut c, &["STRLEN", "bm"]), 8192);
    assert_eq!(
        fields(
            &mut c,
            &["BITFIELD_RO", "bf", "GET", "i12", "#3", "GET", "u7", "100"]
        ),
        [Some(-1000), Some(99)]
    );
    assert_eq!(get(&mut c, "{o}d"), Some(vec![0xf0, 0x0f]));
    assert_eq!(get(&mut c, "n"), Some(b"13".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Random command streams against a bit-vector model, through the real server.

#[derive(Debug, Clone)]
enum Op {
    SetBit(u64, bool),
    GetBit(u64),
    /// start, end, BIT unit
    Count(Option<(i64, i64, bool)>),
    /// bit, start, end (None: no end), BIT unit
    Pos(bool, Option<(i64, Option<i64>, bool)>),
    /// signed, bits, offset, value (None: GET)
    Field(bool, u32, u64, Option<i64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..160, any::<bool>()).prop_map(|(o, b)| Op::SetBit(o, b)),
        1 => (0u64..200).prop_map(Op::GetBit),
        2 => prop::option::of((-25i64..25, -25i64..25, any::<bool>())).prop_map(Op::Count),
        2 => (any::<bool>(), prop::option::of((-25i64..25, prop::option::of(-25i64..25), any::<bool>())))
            .prop_map(|(b, r)| Op::Pos(b, r.map(|(s, e, u)| (s, e, u && e.is_some())))),
        3 => (any::<bool>(), 1u32..=32, 0u64..150, prop::option::of(-100_000i64..100_000))
            .prop_map(|(sg, b, o, v)| Op::Field(sg, b, o, v)),
    ]
}

/// Valkey's range rules on `len` bytes: the bits covered, or None.
fn bit_range(len: usize, start: i64, end: i64, bit_unit: bool) -> Option<(usize, usize)> {
    let total = (if bit_unit { len * 8 } else { len }) as i64;
    let fix = |i: i64| if i < 0 { (total + i).max(0) } else { i };
    let (s, e) = (fix(start), fix(end).min(total - 1));
    (s <= e).then(|| {
        if bit_unit {
            (s as usize, e as usize)
        } else {
            (s as usize * 8, e as usize * 8 + 7)
        }
    })
}

/// Applies `op` to the model (None when the key is missing) and returns the expected reply.
fn model(bits: &mut Option<Vec<bool>>, op: &Op) -> Value {
    let grow = |bits: &mut Option<Vec<bool>>, n: usize| {
        let v = bits.get_or_insert_with(Vec::new);
        let want = n.div_ceil(8) * 8;
        if v.len() < want {
            v.resize(want, false);
        }
    };
    match op {
        Op::SetBit(o, b) => {
            grow(bits, *o as usize + 1);
            let v = bits.as_mut().expect("grown");
            let was = std::mem::replace(&mut v[*o as usize], *b);
            Value::Int(was.into())
        }
        Op::GetBit(o) => Value::Int(
            bits.as_ref()
                .and_then(|v| v.get(*o as usize).copied())
                .unwrap_or(false)
                .into(),
        ),
        Op::Count(r) => {
            let Some(v) = bits else {
                return Value::Int(0);
            };
            let len = v.len() / 8;
            let range = match r {
                None => bit_range(len, 0, len as i64 - 1, false),
                Some((s, e, _)) if *s < 0 && *e < 0 && s > e => None,
                Some((s, e, u)) => bit_range(len, *s, *e, *u),
            };
            Value::Int(range.map_or(0, |(a, b)| v[a..=b].iter().filter(|&&x| x).count() as i64))
        }
        Op::Pos(bit, r) => {
            let Some(v) = bits else {
                return Value::Int(if *bit { -1 } else { 0 });
            };
            let len = v.len() / 8;
            let (s, e, u) = r.unwrap_or((0, None, false));
            let Some((a, b)) = bit_range(len, s, e.unwrap_or(len as i64 - 1), u) else {
                return Value::Int(-1);
            };
            Value::Int(match v[a..=b].iter().position(|x| x == bit) {
                Some(p) => (a + p) as i64,
                None if !bit && e.is_none() => b as i64 + 1,
                None => -1,
            })
        }
        Op::Field(signed, width, off, value) => {
            let (w, o) = (*width as usize, *off as usize);
            if value.is_some() {
                grow(bits, o + w);
            }
            let read = |v: &Option<Vec<bool>>| {
                let raw = (0..w).fold(0i64, |acc, i| {
                    acc << 1
                        | i64::from(
                            v.as_ref()
                                .and_then(|v| v.get(o + i).copied())
                                .unwrap_or(false),
                        )
                });
                if *signed && raw >> (w - 1) == 1 {
                    raw - (1 << w)
                } else {
                    raw
                }
            };
            let old = read(bits);
            if let Some(new) = value {
                // OVERFLOW WRAP: the low bits of the value.
                let v = bits.as_mut().expect("grown");
                for i in 0..w {
                    v[o + i] = (new >> (w - 1 - i)) & 1 == 1;
                }
            }
            Value::Array(vec![Value::Int(old)])
        }
    }
}

fn command(op: &Op) -> redis::Cmd {
    let b = |x: bool| if x { "1" } else { "0" };
    let unit = |u: bool| if u { "BIT" } else { "BYTE" };
    let mut c;
    match op {
        Op::SetBit(o, v) => {
            c = redis::cmd("SETBIT");
            c.arg("k").arg(o).arg(b(*v));
        }
        Op::GetBit(o) => {
            c = redis::cmd("GETBIT");
            c.arg("k").arg(o);
        }
        Op::Count(r) => {
            c = redis::cmd("BITCOUNT");
            c.arg("k");
            if let Some((s, e, u)) = r {
                c.arg(s).arg(e).arg(unit(*u));
            }
        }
        Op::Pos(bit, r) => {
            c = redis::cmd("BITPOS");
            c.arg("k").arg(b(*bit));
            if let Some((s, e, u)) = r {
                c.arg(s);
                if let Some(e) = e {
                    c.arg(e).arg(unit(*u));
                }
            }
        }
        Op::Field(signed, w, o, v) => {
            let ty = format!("{}{w}", if *signed { 'i' } else { 'u' });
            c = redis::cmd("BITFIELD");
            c.arg("k");
            match v {
                None => c.arg("GET").arg(ty).arg(o),
                Some(v) => c.arg("SET").arg(ty).arg(o).arg(v),
            };
        }
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn server_matches_a_bit_vector_model(ops in prop::collection::vec(op(), 1..40)) {
        thread_local! {
            static SERVER: Server = Server::start(&[]);
        }
        SERVER.with(|s| -> Result<(), TestCaseError> {
            let mut c = s.conn();
            let _: () = redis::cmd("DEL").arg("k").query(&mut c).map(|_: i64| ()).unwrap();
            let mut bits: Option<Vec<bool>> = None;
            for op in &ops {
                let want = model(&mut bits, op);
                let got: Value = command(op).query(&mut c).unwrap();
                prop_assert_eq!(&got, &want, "{:?}", op);
            }
            let stored: Option<Vec<u8>> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
            let want = bits.map(|v| {
                v.chunks(8).map(|c| c.iter().fold(0u8, |a, &x| a << 1 | u8::from(x))).collect::<Vec<u8>>()
            });
            prop_assert_eq!(stored, want);
            Ok(())
        })?;
    }
}
