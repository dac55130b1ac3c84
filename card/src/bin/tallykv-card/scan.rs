//! `scan`: PAN discovery. Every key name, string value, hash field name and value, and list,
//! set and sorted-set member is searched for a plaintext card number (`card::discover`);
//! each finding is printed masked on stdout and the exit status is 1 when there is any, so
//! the command can gate a deployment. Other types (streams, modules' types) are counted as
//! unchecked. Large collections are read in pages (HSCAN, SSCAN, ZSCAN, LRANGE).

use std::process::ExitCode;

use card::discover::find_pans;
use redis::Value;

use crate::error::{At, CliError};
use crate::server::{KeyVisitor, Node, Target, Walk, show, walk_keys};

/// Elements per page when reading one collection.
const PAGE: usize = 200;

#[derive(Default)]
struct Counts {
    findings: u64,
    keys_with_findings: u64,
    unchecked: u64,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "{} plaintext card numbers in {} keys, {} keys of unchecked types",
            self.findings, self.keys_with_findings, self.unchecked
        )
    }
}

pub fn run(target: &Target, walk: &Walk, brands_only: bool) -> Result<ExitCode, CliError> {
    let mut scan = Scan {
        brands_only,
        counts: Counts::default(),
    };
    walk_keys(target, walk, &mut scan)?;
    eprintln!("scan: finished: {}", scan.counts.line());
    Ok(if scan.counts.findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

struct Scan {
    brands_only: bool,
    counts: Counts,
}

impl KeyVisitor for Scan {
    const NAME: &'static str = "scan";

    fn visit(&mut self, node: &mut Node, key: &[u8]) -> Result<(), CliError> {
        let before = self.counts.findings;
        scan_key(node, key, self.brands_only, &mut self.counts)?;
        if self.counts.findings > before {
            self.counts.keys_with_findings += 1;
        }
        Ok(())
    }

    fn counts(&self) -> String {
        self.counts.line()
    }
}

/// Reports every card number in `bytes`, found at `place` in `key`.
fn check(
    addr: &str,
    key: &[u8],
    place: &str,
    bytes: &[u8],
    brands_only: bool,
    counts: &mut Counts,
) {
    for f in find_pans(bytes, brands_only) {
        let brand = f.brand.map_or("unknown brand", |b| b.name());
        println!("{addr} key {} {place}: {} ({brand})", show(key), f.masked);
        counts.findings += 1;
    }
}

fn scan_key(
    node: &mut Node,
    key: &[u8],
    brands_only: bool,
    counts: &mut Counts,
) -> Result<(), CliError> {
    let addr = node.addr.clone();
    let con = &mut node.con;
    check(&addr, key, "name", key, brands_only, counts);
    let kind: String = redis::cmd("TYPE").arg(key).query(con).at(&addr)?;
    match kind.as_str() {
        "string" => {
            let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(con).at(&addr)?;
            if let Some(v) = value {
                check(&addr, key, "value", &v, brands_only, counts);
            }
        }
        "hash" => {
            scan_pages(con, &addr, "HSCAN", key, |pair| {
                let [field, value] = pair else { return };
                check(&addr, key, "hash field name", field, brands_only, counts);
                check(
                    &addr,
                    key,
                    &format!("hash field {} value", show(field)),
                    value,
                    brands_only,
                    counts,
                );
            })?;
        }
        "set" => {
            scan_pages(con, &addr, "SSCAN", key, |m| {
                check(&addr, key, "set member", &m[0], brands_only, counts)
            })?;
        }
        "zset" => {
            // ZSCAN pages are member, score pairs; a score is a number, never a PAN.
            scan_pages(con, &addr, "ZSCAN", key, |pair| {
                check(
                    &addr,
                    key,
                    "sorted set member",
                    &pair[0],
                    brands_only,
                    counts,
                );
            })?;
        }
        "list" => {
            let mut start = 0usize;
            loop {
                let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + PAGE - 1)
                    .query(con)
                    .at(&addr)?;
                for (i, element) in page.iter().enumerate() {
                    check(
                        &addr,
                        key,
                        &format!("list element {}", start + i),
                        element,
                        brands_only,
                        counts,
                    );
                }
                if page.len() < PAGE {
                    break;
                }
                start += PAGE;
            }
        }
        "none" => {} // expired or deleted since SCAN returned it
        _ => counts.unchecked += 1,
    }
    Ok(())
}

/// Walks one collection with HSCAN/SSCAN/ZSCAN, calling `each` with the elements of each
/// entry (two for HSCAN and ZSCAN, one for SSCAN).
fn scan_pages(
    con: &mut redis::Connection,
    addr: &str,
    command: &str,
    key: &[u8],
    mut each: impl FnMut(&[Vec<u8>]),
) -> Result<(), CliError> {
    let width = if command == "SSCAN" { 1 } else { 2 };
    let mut cursor = 0u64;
    loop {
        let (next, items): (u64, Vec<Value>) = redis::cmd(command)
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query(con)
            .at(addr)?;
        // RESP2 and RESP3 both send a flat list here; a score may arrive as a double.
        let items: Vec<Vec<u8>> = items.into_iter().map(bytes_of).collect();
        for entry in items.chunks(width) {
            if entry.len() == width {
                each(entry);
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn bytes_of(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        _ => Vec::new(),
    }
}
