//! Clients blocked on keys of this shard (BLPOP, BZPOPMIN, BLMOVE...): who to wake when a key
//! may have received data.
//!
//! A blocked client holds one wake-up for all its keys (on any core); the shard keeps a weak
//! reference per key. A record that may add data to a key (a push, an insert, a ZADD, a
//! restored or renamed value) wakes every client blocked on it; each then retries its command
//! the normal way and blocks again if another got there first. A client that timed out or
//! went away leaves a dead reference, dropped on the next wake of the key or its unblock.

use std::sync::{Arc, Mutex, Weak};

use ahash::AHashMap;
use futures::channel::oneshot;

/// The fire-once sender behind a wake-up.
type Fire = Mutex<Option<oneshot::Sender<()>>>;

/// A blocked client's wake-up: fired at most once.
pub type Wakeup = Arc<Fire>;

#[derive(Default)]
pub struct Blocked {
    keys: AHashMap<Box<[u8]>, Vec<Weak<Fire>>>,
}

impl Blocked {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys at least one client is blocked on.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn add(&mut self, key: &[u8], wakeup: &Wakeup) {
        let list = self.keys.entry(key.into()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(wakeup));
    }

    /// Drops the dead references of `key` (its clients were served, timed out or left).
    pub fn sweep(&mut self, key: &[u8]) {
        if let Some(list) = self.keys.get_mut(key) {
            list.retain(|w| w.strong_count() > 0);
            if list.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Wakes every client blocked on `key`.
    pub fn wake(&mut self, key: &[u8]) {
        if let Some(list) = self.keys.remove(key) {
            for w in list {
                if let Some(wakeup) = w.upgrade()
                    && let Some(tx) = wakeup.lock().unwrap_or_else(|e| e.into_inner()).take()
                {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Wakes the clients blocked on every key `has_data` holds true for (SWAPDB).
    pub fn wake_where(&mut self, mut has_data: impl FnMut(&[u8]) -> bool) {
        let keys: Vec<Box<[u8]>> = self.keys.keys().filter(|k| has_data(k)).cloned().collect();
        for k in keys {
            self.wake(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_fires_each_live_client_once() {
        let mut b = Blocked::default();
        let (tx, mut rx) = oneshot::channel();
        let w: Wakeup = Arc::new(Mutex::new(Some(tx)));
        b.add(b"k", &w);
        b.add(b"j", &w);
        let (tx2, _rx2) = oneshot::channel();
        let gone: Wakeup = Arc::new(Mutex::new(Some(tx2)));
        b.add(b"k", &gone);
        drop(gone);
        b.wake(b"k");
        assert_eq!(rx.try_recv(), Ok(Some(())));
        // Its other key's entry is spent too: waking it again sends nothing.
        b.wake(b"j");
        assert!(b.is_empty());
    }
}
