//! The thread that fdatasyncs a log's segments, so the core thread that owns the log never
//! waits for the disk (an fdatasync takes 0.3–10 ms; a loop pass should take microseconds).
//!
//! The core hands over "everything written through sequence N, in these files" and a oneshot
//! sender; the thread takes every request queued while it was busy as one round (group
//! commit: one fdatasync per file for all of them), syncs the files oldest first and the
//! directory when a segment was created, then completes the round's requests. A oneshot
//! completed from a foreign thread wakes a glommio task (glommio wakes foreign wakers through
//! its eventfd). The thread also unlinks dead segments, after the round, off the core too.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use futures::channel::oneshot;

use super::WalError;

/// A segment file, shared with the syncer so a sync can outlive the segment on the core.
#[derive(Debug)]
pub struct SegmentFile {
    pub file: File,
    pub path: PathBuf,
}

/// What the core and the syncer thread share.
pub struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Every write with a sequence number up to this one is on disk.
    synced: AtomicU64,
    /// The first failed fdatasync: after one the kernel may have dropped the dirty pages, so
    /// no later sync can vouch for them (the "fsyncgate" lesson). Set once, never cleared.
    failed: OnceLock<WalError>,
    dir: PathBuf,
    pub rounds: AtomicU64,
    pub fdatasyncs: AtomicU64,
    pub sync_us_total: AtomicU64,
    pub sync_us_max: AtomicU64,
    pub sync_us_last: AtomicU64,
    pub unlinked: AtomicU64,
}

type Waiter = (u64, oneshot::Sender<Result<(), WalError>>);

#[derive(Default)]
struct Queue {
    /// Files with writes not yet synced, oldest first (a file may appear more than once).
    files: Vec<Arc<SegmentFile>>,
    /// A segment was created since the last round: its directory entry needs an fsync.
    dir_dirty: bool,
    waiters: Vec<Waiter>,
    unlink: Vec<PathBuf>,
    /// The thread is (about to be) parked on the condvar: only then is a notify needed.
    idle: bool,
    closed: bool,
}

/// The syncer thread of one log; dropping it lets the thread finish what was queued and joins
/// it.
pub struct Syncer {
    pub shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn start(dir: &Path) -> Result<Syncer, WalError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            synced: AtomicU64::new(0),
            failed: OnceLock::new(),
            dir: dir.to_path_buf(),
            rounds: AtomicU64::new(0),
            fdatasyncs: AtomicU64::new(0),
            sync_us_total: AtomicU64::new(0),
            sync_us_max: AtomicU64::new(0),
            sync_us_last: AtomicU64::new(0),
            unlinked: AtomicU64::new(0),
        });
        let me = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tallykv-walsync".into())
            .spawn(move || me.run())
            .map_err(|e| WalError::io("starting the sync thread for", dir, e))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // A panic on the thread has already been reported by the panic hook.
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds plain data, valid even if a holder panicked.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn synced(&self) -> u64 {
        self.synced.load(Relaxed)
    }

    pub fn failure(&self) -> Option<&WalError> {
        self.failed.get()
    }

    /// Queues a request to sync `files` (written through `through`) and returns the future
    /// that completes with it.
    pub fn request(
        &self,
        through: u64,
        files: Vec<Arc<SegmentFile>>,
        dir_dirty: bool,
    ) -> SyncFuture {
        let (tx, rx) = oneshot::channel();
        let mut q = self.lock();
        q.files.extend(files);
        q.dir_dirty |= dir_dirty;
        q.waiters.push((through, tx));
        self.notify(q);
        SyncFuture(Inner::Waiting(rx))
    }

    /// Queues dead segments to unlink, with no one waiting for it.
    pub fn unlink(&self, paths: Vec<PathBuf>) {
        let mut q = self.lock();
        q.unlink.extend(paths);
        self.notify(q);
    }

    fn notify(&self, q: MutexGuard<'_, Queue>) {
        // A busy thread looks at the queue again before it parks: waking it costs a futex
        // call for nothing.
        let idle = q.idle;
        drop(q);
        if idle {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        loop {
            let (files, dir_dirty, waiters, unlink) = {
                let mut q = self.lock();
                while q.waiters.is_empty() && q.unlink.is_empty() && !q.closed {
                    q.idle = true;
                    q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                q.idle = false;
                if q.closed && q.waiters.is_empty() && q.unlink.is_empty() {
                    return;
                }
                (
                    std::mem::take(&mut q.files),
                    std::mem::take(&mut q.dir_dirty),
                    std::mem::take(&mut q.waiters),
                    std::mem::take(&mut q.unlink),
                )
            };
            if !waiters.is_empty() {
                let through = waiters.iter().map(|w| w.0).max().unwrap_or(0);
                let result = self.sync_round(&files, dir_dirty, through);
                for (_, tx) in waiters {
                    // A dropped future no longer cares.
                    let _ = tx.send(result.clone());
                }
            }
            for path in unlink {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        self.unlinked.fetch_add(1, Relaxed);
                    }
                    // Harmless: a dead segment left behind is replayed and deleted next open.
                    Err(e) => tracing::warn!("deleting {}: {e}", path.display()),
                }
            }
        }
    }

    fn sync_round(
        &self,
        files: &[Arc<SegmentFile>],
        dir_dirty: bool,
        through: u64,
    ) -> Result<(), WalError> {
        if let Some(e) = self.failed.get() {
            return Err(WalError::Failed(Arc::new(e.clone())));
        }
        if files.is_empty() && !dir_dirty {
            // Everything these requests cover was synced by an earlier round (the core hands
            // each written file to the first request after the write).
            self.synced.fetch_max(through, Relaxed);
            return Ok(());
        }
        let started = Instant::now();
        let mut done: Vec<&Arc<SegmentFile>> = Vec::with_capacity(files.len());
        // Oldest first: a sync never vouches for a new segment while the one before it may
        // still be in the page cache.
        for f in files {
            if done.iter().any(|d| Arc::ptr_eq(d, f)) {
                continue;
            }
            if let Err(e) = f.file.sync_data() {
                return Err(self.fail(WalError::io("syncing", &f.path, e)));
            }
            self.fdatasyncs.fetch_add(1, Relaxed);
            done.push(f);
        }
        if dir_dirty {
            let r = File::open(&self.dir).and_then(|d| d.sync_all());
            if let Err(e) = r {
                return Err(self.fail(WalError::io("syncing the directory", &self.dir, e)));
            }
        }
        let us = started.elapsed().as_micros() as u64;
        self.rounds.fetch_add(1, Relaxed);
        self.sync_us_total.fetch_add(us, Relaxed);
        self.sync_us_max.fetch_max(us, Relaxed);
        self.sync_us_last.store(us, Relaxed);
        self.synced.fetch_max(through, Relaxed);
        Ok(())
    }

    fn fail(&self, e: WalError) -> WalError {
        tracing::error!("{e}; the write-ahead log accepts no more writes");
        let _ = self.failed.set(e.clone());
        e
    }
}

/// Resolves once everything written before [`super::Wal::sync`] was called is on disk.
#[must_use = "a sync future does nothing unless awaited"]
pub struct SyncFuture(Inner);

enum Inner {
    Ready(Option<Result<(), WalError>>),
    Waiting(oneshot::Receiver<Result<(), WalError>>),
}

impl SyncFuture {
    pub fn ready(r: Result<(), WalError>) -> SyncFuture {
        SyncFuture(Inner::Ready(Some(r)))
    }
}

impl Future for SyncFuture {
    type Output = Result<(), WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Ready(r) => Poll::Ready(
                r.take()
                    .expect("a SyncFuture polled again after it completed"),
            ),
            Inner::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| {
                // The sender is dropped unanswered only if the syncer thread died (it
                // panicked): nothing can vouch for the write.
                r.unwrap_or_else(|_| {
                    Err(WalError::io(
                        "syncing",
                        Path::new("(write-ahead log)"),
                        std::io::Error::other("the sync thread stopped"),
                    ))
                })
            }),
        }
    }
}
