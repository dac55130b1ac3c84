//! Blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP).
//!
//! A blocking command's handler is its non-blocking attempt: it pops when there is data and
//! answers a null otherwise. The dispatcher runs it like any command; on a null it blocks
//! the connection: it registers one wake-up on every key's core (the shard fires it when a
//! record may give the key data, see `shard::blocked`), tries once more (a push may have
//! landed before the registration), and waits for the wake-up or the timeout, then tries
//! again. Registering before the second attempt means no push is missed. Inside MULTI, or
//! with the timeout already reached, the null is the answer, as in Valkey.
//!
//! While it waits, the connection reads nothing, so the blocked loop also looks at the socket
//! every so often: a client that hung up stops waiting before it could be handed an element
//! nobody would receive.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{Either, select};

use super::core::Core;
use super::dispatch::Dispatcher;
use crate::cluster::key_slot;
use crate::command::CommandDef;
use crate::command::connection::Client;
use crate::shard::Wakeup;

/// How often a blocked connection checks that its client is still there.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

/// Where a blocking command's timeout argument is.
fn timeout_arg<'a>(def: &CommandDef, args: &'a [Bytes]) -> &'a [u8] {
    match def.name {
        "blmpop" | "bzmpop" => &args[1],
        _ => &args[args.len() - 1],
    }
}

/// Whether an encoded reply is a null (nil bulk, nil array, RESP3 null): nothing was there.
fn is_null(reply: &[u8]) -> bool {
    reply.starts_with(b"$-1\r\n") || reply.starts_with(b"*-1\r\n") || reply.starts_with(b"_\r\n")
}

/// Whether the client hung up (its socket reads end-of-file).
fn hung_up(fd: i32) -> bool {
    let mut byte = 0u8;
    // SAFETY: a 1-byte peek into a valid buffer on the connection's own descriptor, which
    // stays open while the connection task (our caller) runs.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// A blocked client, as INFO counts it: counted while it lives; when it goes, the shards drop
/// the client's dead wake-ups (and recount the keys clients are blocked on).
struct Blocked {
    core: Rc<Core>,
    keys: Vec<Bytes>,
    timeout: bool,
    /// The database of the keys.
    db: u32,
}

impl Blocked {
    fn new(core: &Rc<Core>, keys: Vec<Bytes>, timeout: bool, db: u32) -> Blocked {
        core.shared.blocked_clients.fetch_add(1, Relaxed);
        if timeout {
            core.shared.blocked_with_timeout.fetch_add(1, Relaxed);
        }
        Blocked {
            core: core.clone(),
            keys,
            timeout,
            db,
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let shared = &self.core.shared;
        shared.blocked_clients.fetch_sub(1, Relaxed);
        if self.timeout {
            shared.blocked_with_timeout.fetch_sub(1, Relaxed);
        }
        let db = self.db as usize;
        for key in self.keys.drain(..) {
            let owner = self.core.owner(key_slot(&key) as usize);
            self.core.spawn_on(owner, move |cc| {
                Box::pin(async move {
                    // Not while a script paused there (see `pause`).
                    cc.gate.wait_open(None).await;
                    let mut shard = cc.shard.borrow_mut();
                    shard.select(db);
                    shard.blocked.sweep(&key);
                    shard.select(0);
                    shard.sync_waiting_counts();
                })
            });
        }
    }
}

impl Dispatcher {
    /// Runs blocking command `args`, blocking the connection until it is served or times out;
    /// the reply goes to the local buffer.
    pub(super) async fn run_blocking(
        &mut self,
        core: &Rc<Core>,
        client: &mut Client,
        def: &'static CommandDef,
        args: Vec<Bytes>,
    ) {
        let timeout = match crate::command::parse_timeout(timeout_arg(def, &args)) {
            Ok(t) => t,
            Err(e) => {
                self.local.error(e);
                return;
            }
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let keys: Vec<Bytes> = def.keys.positions(&args).map(|p| args[p].clone()).collect();
        let mut registered = false;
        let mut _gauge: Option<Blocked> = None;
        loop {
            let reply = attempt(core, client, args.clone()).await;
            if !is_null(&reply) {
                self.local.raw(&reply);
                return;
            }
            if registered {
                // Woken (or timed out) and still nothing.
                if deadline.is_some_and(|d| Instant::now() >= d) || client.closing {
                    // Valkey's timeout reply is a null array for every blocking command.
                    self.local.nil_array();
                    return;
                }
            }
            // (Re-)arm: a fresh wake-up registered on every key's core, then one more
            // attempt before waiting, so a push in between is not missed.
            let (tx, mut rx) = oneshot::channel();
            let w: Wakeup = Arc::new(Mutex::new(Some(tx)));
            // The database as the command was sent: a blocked client cannot SELECT.
            let db = client.db;
            for key in &keys {
                let owner = core.owner(key_slot(key) as usize);
                let (k, w2) = (key.clone(), w.clone());
                core.call(owner, move |cc| {
                    let mut shard = cc.shard.borrow_mut();
                    shard.select(db as usize);
                    shard.blocked.add(&k, &w2);
                    shard.select(0);
                    shard.sync_waiting_counts();
                })
                .await;
            }
            if _gauge.is_none() {
                _gauge = Some(Blocked::new(core, keys.clone(), deadline.is_some(), db));
            }
            let again = attempt(core, client, args.clone()).await;
            if !is_null(&again) {
                self.local.raw(&again);
                return;
            }
            registered = true;
            // Wait for the wake-up, the deadline, or the client leaving.
            loop {
                let tick = match deadline {
                    Some(d) => d
                        .saturating_duration_since(Instant::now())
                        .min(LIVENESS_CHECK),
                    None => LIVENESS_CHECK,
                };
                match select(&mut rx, Box::pin(glommio::timer::sleep(tick))).await {
                    Either::Left(_) => break,
                    Either::Right(_) => {
                        if hung_up(client.info.fd) {
                            client.closing = true;
                            self.local.nil_array();
                            return;
                        }
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            self.local.nil_array();
                            return;
                        }
                    }
                }
            }
            // Our wake-up is spent or abandoned: the shards drop their references to it.
            drop(w);
        }
    }
}

/// One non-blocking attempt of the command, through the normal path (its own dispatcher, so
/// it runs where its keys live, through the slot group in a cluster).
async fn attempt(core: &Rc<Core>, client: &mut Client, args: Vec<Bytes>) -> Vec<u8> {
    let mut d = Dispatcher::new(core.cores());
    d.no_block = true;
    d.redispatch = true;
    let mut wbuf = Vec::new();
    Box::pin(d.run(core, client, vec![args], &mut wbuf)).await;
    wbuf
}
