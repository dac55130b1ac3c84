//! What the fault tests share: an INCR load over counters in every slot group, recording what
//! each client was told, and the checks of the final state against it. An acknowledged
//! increment (an integer reply) must be in the final value, a refused one (MOVED, TRYAGAIN,
//! never sent) must not, and one whose outcome is unknown (UNCERTAIN, a broken connection, no
//! reply in time) may or may not be.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Value;
use tallykv::cluster::key_slot;

use super::cluster::{Cluster, Outcome, Router};
use super::{DEADLINE, wait_until};

pub fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// `count` keys named `{prefix}{n}` for each group of `c`, in group order.
pub fn keys_per_group(c: &Cluster, prefix: &str, count: usize) -> Vec<Vec<String>> {
    let mut per_group = vec![Vec::new(); c.groups.len()];
    let mut n = 0;
    while per_group.iter().any(|k: &Vec<String>| k.len() < count) {
        let key = format!("{prefix}{n}");
        n += 1;
        let g = c.group_of_key(&key);
        if per_group[g].len() < count {
            per_group[g].push(key);
        }
    }
    per_group
}

/// The reply as text (bulk or simple string), None for nil.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

/// Every node's copy of `key` (read with READONLY, so followers answer from their own
/// replica) equals `expected`, within 15 s.
pub fn replicas_converge(c: &Cluster, expected: &BTreeMap<String, Option<String>>) {
    for i in (0..c.len()).filter(|&i| c.running(i)) {
        let mut conn = c.conn(i);
        let _: () = cmd(&["READONLY"]).query(&mut conn).expect("READONLY");
        // Only the groups this node replicates (with more nodes than replicas, not all).
        let replicated: Vec<bool> = c
            .info_groups(i)
            .expect("INFO cluster")
            .iter()
            .map(|v| v.role != "none")
            .collect();
        let mut differing = Vec::new();
        let converged = wait_until(Duration::from_secs(15), || {
            differing.clear();
            for (k, want) in expected {
                if !replicated[c.group_of_key(k)] {
                    continue;
                }
                // A replica still installing a snapshot sends READONLY reads to the leader
                // (MOVED): not converged yet.
                match cmd(&["GET", k]).query::<Option<String>>(&mut conn) {
                    Ok(got) if &got == want => {}
                    Ok(got) => differing.push(format!(
                        "{k} (group {}): {:?} != {:?}",
                        c.group_of_key(k),
                        got.map(|v| v.len()),
                        want.as_ref().map(String::len)
                    )),
                    Err(e) => differing.push(format!("{k}: {e}")),
                }
            }
            differing.is_empty()
        });
        let groups = |n: usize| -> String {
            let Some(mut conn) = c.try_conn(n, Duration::from_secs(2)).ok() else {
                return String::new();
            };
            let info: String = cmd(&["INFO", "cluster"])
                .query(&mut conn)
                .unwrap_or_default();
            info.lines()
                .filter(|l| l.starts_with("group"))
                .map(|l| format!("  node {n}: {l}\n"))
                .collect()
        };
        assert!(
            converged,
            "node {i}'s replica differs from the leaders' (value lengths):\n{}\n{}{}",
            differing.join("\n"),
            (0..c.len())
                .filter(|&n| c.running(n))
                .map(groups)
                .collect::<String>(),
            c.logs(20)
        );
    }
}

/// One counter of the load: its key, where the key lives, and the command that bumps it.
pub struct Counter {
    pub key: String,
    pub slot: usize,
    pub group: usize,
    pub incr: redis::Cmd,
}

/// What the clients saw for one counter.
#[derive(Default, Clone)]
pub struct Tally {
    /// Every INCR sent (or about to be: a failed connect counts too).
    pub attempts: u64,
    /// Integer replies.
    pub acked: u64,
    /// Certainly not applied (MOVED, TRYAGAIN, not sent).
    pub refused: u64,
    /// Outcome unknown (UNCERTAIN, broken connection, timeout).
    pub unknown: u64,
    /// The integers replied.
    pub values: Vec<i64>,
    /// Unexpected replies.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn record(&mut self, outcome: Outcome) -> Option<i64> {
        match outcome {
            Outcome::Reply(Value::Int(v)) => {
                self.acked += 1;
                self.values.push(v);
                return Some(v);
            }
            Outcome::Reply(other) => self.failures.push(format!("INCR replied {other:?}")),
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Unknown(_) => self.unknown += 1,
            Outcome::Failed(e) => self.failures.push(e),
        }
        None
    }

    pub fn merge(&mut self, other: Tally) {
        self.attempts += other.attempts;
        self.acked += other.acked;
        self.refused += other.refused;
        self.unknown += other.unknown;
        self.values.extend(other.values);
        self.failures.extend(other.failures);
    }
}

pub const NO_TIME: u64 = u64::MAX;

/// What the load's threads share: when the fault happened, and per group how many writes
/// were acknowledged and the first acknowledgement of a write sent after the fault.
pub struct LoadState {
    stop: AtomicBool,
    epoch: Instant,
    fault_at_ms: AtomicU64,
    acks: Vec<AtomicU64>,
    first_ack_after_fault_ms: Vec<AtomicU64>,
}

impl LoadState {
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// INCR load on counters spread over every group, from several threads each with its own
/// [`Router`].
pub struct IncrLoad {
    state: Arc<LoadState>,
    counters: Arc<Vec<Counter>>,
    threads: Vec<JoinHandle<Vec<Tally>>>,
}

impl IncrLoad {
    /// `client_timeout` bounds each client's connect and reply (a node that does not answer
    /// is given up on after it).
    pub fn start(
        c: &Cluster,
        n_threads: usize,
        per_group: usize,
        client_timeout: Duration,
    ) -> IncrLoad {
        let counters: Vec<Counter> = keys_per_group(c, "ctr", per_group)
            .into_iter()
            .flatten()
            .map(|key| {
                let slot = key_slot(key.as_bytes()) as usize;
                Counter {
                    group: c.group_of_slot(slot),
                    incr: cmd(&["INCR", &key]),
                    key,
                    slot,
                }
            })
            .collect();
        let counters = Arc::new(counters);
        let groups = c.groups.len();
        let state = Arc::new(LoadState {
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            fault_at_ms: AtomicU64::new(NO_TIME),
            acks: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            first_ack_after_fault_ms: (0..groups).map(|_| AtomicU64::new(NO_TIME)).collect(),
        });
        let threads = (0..n_threads)
            .map(|t| {
                let mut router = Router::new(c, client_timeout);
                let counters = counters.clone();
                let state = state.clone();
                std::thread::spawn(move || {
                    let mut tallies = vec![Tally::default(); counters.len()];
                    // Threads start at different counters and walk them all in turn.
                    let mut next = t * counters.len() / n_threads;
                    while !state.stop.load(Relaxed) {
                        let i = next % counters.len();
                        next += 1;
                        let ctr = &counters[i];
                        let sent = state.now_ms();
                        tallies[i].attempts += 1;
                        let outcome = router.send(&ctr.incr, ctr.slot);
                        if tallies[i].record(outcome).is_some() {
                            state.acks[ctr.group].fetch_add(1, Relaxed);
                            if sent >= state.fault_at_ms.load(Relaxed) {
                                state.first_ack_after_fault_ms[ctr.group]
                                    .fetch_min(state.now_ms(), Relaxed);
                            }
                        }
                    }
                    tallies
                })
            })
            .collect();
        IncrLoad {
            state,
            counters,
            threads,
        }
    }

    /// Waits until every group acknowledged `n` more writes (panics after `limit`).
    pub fn wait_progress(&self, c: &Cluster, n: u64, limit: Duration) {
        let base: Vec<u64> = self.state.acks.iter().map(|a| a.load(Relaxed)).collect();
        let progressed = wait_until(limit, || {
            self.state
                .acks
                .iter()
                .zip(&base)
                .all(|(a, b)| a.load(Relaxed) >= b + n)
        });
        if !progressed {
            let now: Vec<u64> = self.state.acks.iter().map(|a| a.load(Relaxed)).collect();
            panic!(
                "some group made no progress in {limit:?}: acks {base:?} -> {now:?}\n{}",
                c.logs(30)
            );
        }
    }

    /// Marks now as the fault time.
    pub fn mark_fault(&self) {
        self.state.fault_at_ms.store(self.state.now_ms(), Relaxed);
    }

    /// Waits until every group acknowledged a write sent after the fault; returns per group
    /// how long after the fault that was (ms).
    pub fn wait_recovered(&self, c: &Cluster, limit: Duration) -> Vec<u64> {
        let s = &self.state;
        let recovered = wait_until(limit, || {
            s.first_ack_after_fault_ms
                .iter()
                .all(|t| t.load(Relaxed) != NO_TIME)
        });
        let fault = s.fault_at_ms.load(Relaxed);
        let times: Vec<u64> = s
            .first_ack_after_fault_ms
            .iter()
            .map(|t| t.load(Relaxed).saturating_sub(fault))
            .collect();
        assert!(
            recovered,
            "not every group acknowledged a write within {limit:?} of the fault \
             (per group ms, {NO_TIME} = never: {times:?})\n{}",
            c.logs(30)
        );
        times
    }

    /// Stops the threads and returns each counter's tally over all of them.
    pub fn finish(mut self) -> (Arc<Vec<Counter>>, Vec<Tally>) {
        self.state.stop.store(true, Relaxed);
        let mut total = vec![Tally::default(); self.counters.len()];
        for t in std::mem::take(&mut self.threads) {
            for (sum, part) in total.iter_mut().zip(t.join().expect("load thread")) {
                sum.merge(part);
            }
        }
        (self.counters.clone(), total)
    }
}

impl Drop for IncrLoad {
    /// A failing test's load stops with it instead of hammering the next test's machine.
    fn drop(&mut self) {
        self.state.stop.store(true, Relaxed);
    }
}

/// Checks one counter's final value against what the clients were told: every acknowledged
/// increment is in it, no refused one is, so acked <= final <= acked + unknown (<= attempts);
/// the replies are distinct (a linearizable counter never hands out the same value twice, so a
/// stale leader acknowledging from an old state would show) and none exceeds the final value.
pub fn check_counter(key: &str, t: &Tally, fin: i64, problems: &mut Vec<String>) {
    let fin = u64::try_from(fin).unwrap_or(0);
    let (acked, unknown, attempts) = (t.acked, t.unknown, t.attempts);
    if !t.failures.is_empty() {
        problems.push(format!("{key}: unexpected replies {:?}", t.failures));
    }
    if fin < acked {
        problems.push(format!(
            "{key}: final {fin} < acknowledged {acked}: acked writes lost"
        ));
    }
    if fin > attempts {
        problems.push(format!("{key}: final {fin} > attempted {attempts}"));
    }
    if fin > acked + unknown {
        problems.push(format!(
            "{key}: final {fin} > acknowledged {acked} + unknown {unknown}: a refused \
             (MOVED/TRYAGAIN) write was applied"
        ));
    }
    let distinct: BTreeSet<i64> = t.values.iter().copied().collect();
    if distinct.len() != t.values.len() {
        let mut seen = BTreeSet::new();
        let dups: BTreeSet<i64> = t
            .values
            .iter()
            .filter(|v| !seen.insert(**v))
            .copied()
            .collect();
        problems.push(format!(
            "{key}: the same value was acknowledged twice: {dups:?}"
        ));
    }
    if let Some(&max) = distinct.last()
        && max as u64 > fin
    {
        problems.push(format!("{key}: acknowledged value {max} > final {fin}"));
    }
}

/// Reads every counter from its group's leader (linearizable), checks it against its tally,
/// and checks every replica converges to it.
pub fn check_counters(c: &Cluster, counters: &[Counter], tallies: &[Tally]) {
    let mut router = Router::new(c, Duration::from_secs(5));
    let mut problems = Vec::new();
    let mut finals = BTreeMap::new();
    let mut totals = Tally::default();
    for (ctr, t) in counters.iter().zip(tallies) {
        let v = router.query(&cmd(&["GET", &ctr.key]), ctr.slot, Duration::from_secs(20));
        let fin = text(&v).map_or(0, |s| s.parse::<i64>().expect("a counter"));
        check_counter(&ctr.key, t, fin, &mut problems);
        finals.insert(ctr.key.clone(), fin);
        totals.merge(Tally {
            values: Vec::new(),
            ..t.clone()
        });
    }
    eprintln!(
        "{} counters: {} INCRs sent, {} acknowledged, {} refused, {} unknown",
        counters.len(),
        totals.attempts,
        totals.acked,
        totals.refused,
        totals.unknown
    );
    assert!(
        problems.is_empty(),
        "counter invariants violated:\n{}\n{}",
        problems.join("\n"),
        c.logs(40)
    );
    // A counter never incremented reads as nil.
    let expected = finals
        .iter()
        .map(|(k, v)| (k.clone(), (*v != 0).then(|| v.to_string())))
        .collect();
    replicas_converge(c, &expected);
}

/// One RESP reply line from a raw connection, without its CRLF; `Err` for a closed
/// connection or an I/O error (as `connection closed` / `io: ...`).
pub fn read_reply_line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err("connection closed".to_string()),
        Err(e) => Err(format!("io: {e}")),
        Ok(_) => Ok(line.trim_end().to_string()),
    }
}

/// One RESP reply line from a raw connection: `Ok(n)` for an integer, `Err(text)` for an
/// error (these tests only send INCR there).
pub fn read_incr_reply(r: &mut BufReader<TcpStream>) -> Result<i64, String> {
    let line = read_reply_line(r)?;
    if let Some(n) = line.strip_prefix(':') {
        n.parse().map_err(|_| format!("bad integer {line:?}"))
    } else if let Some(e) = line.strip_prefix('-') {
        Err(e.to_string())
    } else {
        panic!("unexpected reply to INCR: {line:?}")
    }
}

/// After a fault ends, keeps sending `incr` (a raw INCR) on the old leader's connection until
/// it redirects (or [`DEADLINE`] passes: the caller checks the last reply), filing each reply
/// in `tally`: any value acknowledged there must be newer than `newest`, the last one the new
/// leader acknowledged before — anything else is a stale acknowledgement. `who` names the
/// node in the message. Returns the replies.
pub fn probe_until_redirected(
    writer: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    incr: &str,
    newest: i64,
    tally: &mut Tally,
    who: &str,
) -> Vec<Result<i64, String>> {
    let mut replies = Vec::new();
    let mut redirected = false;
    let deadline = Instant::now() + DEADLINE;
    while !redirected && Instant::now() < deadline {
        writer.write_all(incr.as_bytes()).expect("write");
        let reply = read_incr_reply(reader);
        redirected = matches!(&reply, Err(e) if e.starts_with("MOVED"));
        if let Some(v) = record_raw(tally, reply.clone()) {
            assert!(
                v > newest,
                "the {who} acknowledged INCR = {v} though the new leader had already \
                 acknowledged {newest}: a stale acknowledgement"
            );
        }
        let failed = reply.is_err();
        replies.push(reply);
        if failed && !redirected {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    replies
}

/// A probe's replies, for the record: how many, the first and the last.
pub fn replies_summary(replies: &[Result<i64, String>]) -> String {
    match replies {
        [] => "no replies".to_string(),
        [one] => format!("1 reply: {one:?}"),
        [first, .., last] => format!("{} replies, first {first:?}, last {last:?}", replies.len()),
    }
}

/// Files a raw INCR reply in `t` the way [`Router`] classifies outcomes.
pub fn record_raw(t: &mut Tally, reply: Result<i64, String>) -> Option<i64> {
    t.attempts += 1;
    let outcome = match reply {
        Ok(n) => Outcome::Reply(Value::Int(n)),
        Err(e) if e.starts_with("MOVED") || e.starts_with("TRYAGAIN") => Outcome::Refused(e),
        Err(e)
            if e.starts_with("UNCERTAIN")
                || e.starts_with("CLUSTERDOWN")
                || e.starts_with("io:")
                || e.starts_with("connection closed") =>
        {
            Outcome::Unknown(e)
        }
        Err(e) => Outcome::Failed(e),
    };
    t.record(outcome)
}

/// SET k v, retried until acknowledged (a retry of the same SET is harmless: an unknown
/// outcome of an earlier attempt leaves the same value).
pub fn set_until_acked(router: &mut Router, k: &str, v: &str) {
    let slot = key_slot(k.as_bytes()) as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match router.send(&cmd(&["SET", k, v]), slot) {
            Outcome::Reply(Value::Okay) => return,
            other => assert!(Instant::now() < deadline, "SET {k}: {other:?}"),
        }
    }
}
