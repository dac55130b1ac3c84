//! The untimed preload: every card blob (`SET card:{c<c>}`) and merchant profile
//! (`HSET mprof:{m<m>} mcc .. country .. risk ..`), each primary its own keys over
//! PRELOAD_CONNS connections of PRELOAD_BATCH-deep pipelines.
//!
//! Deep pipelines are exactly what a cluster may refuse for a while (tallykv answers
//! `CLUSTERDOWN ... no quorum` when a leader's followers fall more than a node timeout behind,
//! `TRYAGAIN` during an election): such keys are sent again after a pause, and counted. A
//! `MOVED` means the slot map changed under the preload: it starts over on the new map (the
//! writes are idempotent), at most PASSES times.

use std::cell::Cell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::resp::{Conn, Encoded, Reply, bulk, bulk_int, key, tag};
use crate::{Route, mix};

/// Connections per primary, and commands per pipeline on each.
const PRELOAD_CONNS: usize = 4;
const PRELOAD_BATCH: usize = 256;

/// Pause before sending refused keys again, and how long refusals may go on without a single
/// key getting through before the preload gives up.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// How long a pipeline's replies may take: a write that is never answered fails the preload
/// instead of hanging it.
const NO_REPLY_AFTER: Duration = Duration::from_secs(30);

/// Passes over all keys at most (a pass ends early on MOVED).
const PASSES: u64 = 3;

/// What the preload went through, for the output line.
#[derive(Default)]
pub struct Preloaded {
    pub seconds: f64,
    /// Keys sent again after a refusal.
    pub retries: u64,
    /// Passes started over on a new slot map.
    pub restarts: u64,
    /// The first refusal or MOVED, if any.
    pub first_refusal: Option<String>,
}

/// Why a pass stopped.
enum PassError {
    /// The slot map changed: start over on the new one.
    Moved(String),
    /// Anything else: the preload fails.
    Failed(String),
}

/// Writes all keys; fails on an error reply that is not a refusal, or after GIVE_UP_AFTER of
/// refusals only, or after PASSES slot-map changes.
pub async fn preload(seed_port: u16, cards: u64, merchants: u64) -> Result<Preloaded, String> {
    let t0 = Instant::now();
    let stats = Rc::new(PreloadStats::default());
    let mut restarts = 0;
    loop {
        let route = Route::new(seed_port).await?;
        match pass(&route, cards, merchants, &stats).await {
            Ok(()) => break,
            Err(PassError::Moved(e)) if restarts + 1 < PASSES => {
                stats.refused(&e, 0);
                restarts += 1;
                // Let the new leaders settle before reading the map again.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(PassError::Moved(e)) => {
                return Err(format!("preload: the slot map changed {PASSES} times: {e}"));
            }
            Err(PassError::Failed(e)) => return Err(format!("preload: {e}")),
        }
    }
    Ok(Preloaded {
        seconds: t0.elapsed().as_secs_f64(),
        retries: stats.retries.get(),
        restarts,
        first_refusal: stats.first_refusal.take(),
    })
}

/// Counts shared by one pass's connections.
#[derive(Default)]
struct PreloadStats {
    retries: Cell<u64>,
    first_refusal: Cell<Option<String>>,
}

impl PreloadStats {
    fn refused(&self, e: &str, keys: u64) {
        self.retries.set(self.retries.get() + keys);
        let first = self.first_refusal.take();
        self.first_refusal
            .set(Some(first.unwrap_or_else(|| e.to_string())));
    }
}

/// One pass over all keys on the slot map `route`.
async fn pass(
    route: &Route,
    cards: u64,
    merchants: u64,
    stats: &Rc<PreloadStats>,
) -> Result<(), PassError> {
    let mut per_node: Vec<Vec<Item>> = vec![Vec::new(); route.ports.len()];
    let mut scratch = Vec::new();
    for c in 0..cards {
        tag(&mut scratch, b'c', c);
        per_node[route.node(&scratch)].push(Item::Card(c));
    }
    for m in 0..merchants {
        tag(&mut scratch, b'm', m);
        per_node[route.node(&scratch)].push(Item::Merchant(m));
    }
    let enc = Rc::new(Encoded::new());
    let mut tasks = Vec::new();
    for (node, items) in per_node.into_iter().enumerate() {
        let items: Rc<[Item]> = items.into();
        let next = Rc::new(Cell::new(0));
        for _ in 0..PRELOAD_CONNS {
            let conn = Conn::open(route.ports[node])
                .await
                .map_err(PassError::Failed)?;
            tasks.push(tokio::task::spawn_local(connection(
                conn,
                items.clone(),
                next.clone(),
                enc.clone(),
                stats.clone(),
            )));
        }
    }
    // Every task runs to its end (a task's error does not stop the others), the first error
    // is the pass's.
    let mut outcome = Ok(());
    for task in tasks {
        let result = task
            .await
            .unwrap_or_else(|e| Err(PassError::Failed(format!("task failed: {e}"))));
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// A key to preload.
#[derive(Clone, Copy)]
enum Item {
    Card(u64),
    Merchant(u64),
}

/// One preload connection: takes the next PRELOAD_BATCH items of its primary until none are
/// left; refused items go again after RETRY_PAUSE.
async fn connection(
    mut conn: Conn,
    items: Rc<[Item]>,
    next: Rc<Cell<usize>>,
    enc: Rc<Encoded>,
    stats: Rc<PreloadStats>,
) -> Result<(), PassError> {
    let mut scratch = Vec::new();
    let mut value = String::new();
    let mut batch = Vec::with_capacity(PRELOAD_BATCH);
    let mut refused = Vec::with_capacity(PRELOAD_BATCH);
    let mut last_progress = Instant::now();
    loop {
        if batch.is_empty() {
            let from = next.get();
            if from >= items.len() {
                return Ok(());
            }
            let to = (from + PRELOAD_BATCH).min(items.len());
            next.set(to);
            batch.extend_from_slice(&items[from..to]);
        }
        for &item in &batch {
            encode(&mut conn.out, item, &enc, &mut scratch, &mut value);
        }
        conn.send().await.map_err(PassError::Failed)?;
        let deadline = tokio::time::Instant::now() + NO_REPLY_AFTER;
        let mut first_refusal = None;
        for &item in &batch {
            let reply = tokio::time::timeout_at(deadline, conn.replies.next(&mut conn.stream))
                .await
                .map_err(|_| {
                    PassError::Failed(format!(
                        "a pipeline of {} writes got no complete reply in {NO_REPLY_AFTER:?}",
                        batch.len()
                    ))
                })?
                .map_err(PassError::Failed)?;
            match reply {
                Reply::Simple | Reply::Int(_) => {}
                Reply::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => {
                    return Err(PassError::Moved(e));
                }
                Reply::Error(e) if is_refusal(&e) => {
                    refused.push(item);
                    first_refusal.get_or_insert(e);
                }
                Reply::Error(e) => return Err(PassError::Failed(e)),
                _ => return Err(PassError::Failed("unexpected reply to SET/HSET".into())),
            }
        }
        if refused.len() < batch.len() {
            last_progress = Instant::now();
        }
        batch.clear();
        if let Some(e) = first_refusal {
            if last_progress.elapsed() > GIVE_UP_AFTER {
                return Err(PassError::Failed(format!(
                    "still refused after {GIVE_UP_AFTER:?}: {e}"
                )));
            }
            stats.refused(&e, refused.len() as u64);
            std::mem::swap(&mut batch, &mut refused);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// An error reply that says "not now" rather than "never": worth sending the key again.
fn is_refusal(e: &str) -> bool {
    ["CLUSTERDOWN", "TRYAGAIN", "UNCERTAIN", "LOADING"]
        .iter()
        .any(|p| e.starts_with(p))
}

/// Appends the command that preloads `item`.
fn encode(out: &mut Vec<u8>, item: Item, enc: &Encoded, scratch: &mut Vec<u8>, value: &mut String) {
    match item {
        Item::Card(c) => {
            tag(scratch, b'c', c);
            out.extend_from_slice(&enc.set_value);
            key(out, b"card:", scratch, b"");
            card_blob(value, c);
            bulk(out, value.as_bytes());
        }
        Item::Merchant(m) => {
            tag(scratch, b'm', m);
            let h = mix(m ^ 0x6d65_7263);
            out.extend_from_slice(&enc.hset);
            key(out, b"mprof:", scratch, b"");
            bulk(out, b"mcc");
            bulk_int(out, 1000 + h % 9000);
            bulk(out, b"country");
            bulk(
                out,
                &[b'A' + (h >> 20) as u8 % 26, b'A' + (h >> 28) as u8 % 26],
            );
            bulk(out, b"risk");
            bulk_int(out, (h >> 36) % 100);
        }
    }
}

/// A card's cached blob, ~100 bytes, the same for the same card in every run.
fn card_blob(out: &mut String, card: u64) {
    let h = mix(card);
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{{\"card\":{card},\"pan\":\"4{:05}******{:04}\",\"exp\":\"{:02}/{}\",\"status\":\"active\",\
         \"limit\":{},\"issuer\":{}}}",
        h % 100_000,
        (h >> 17) % 10_000,
        1 + (h >> 31) % 12,
        27 + (h >> 35) % 5,
        100_000 * (1 + (h >> 38) % 50),
        (h >> 45) % 500,
    );
}
