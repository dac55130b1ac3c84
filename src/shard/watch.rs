//! WATCH: which clients watch which keys of this shard, and marking them when a key changes.
//!
//! A client's WATCH session is one flag shared by every key it watches (on any core); the
//! shard holds a weak reference per watched key, so a client that went away leaves only dead
//! entries, which the next change of the key or its UNWATCH sweeps out. Any applied record that
//! names the key marks its watchers — a write, a delete, an expiry or eviction deletion, a
//! FLUSHALL — which is exactly Valkey's "touched" rule (touchWatchedKey / touchAllWatchedKeys).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use ahash::AHashMap;

/// A client's WATCH session: set once any watched key changed (EXEC then fails).
pub type WatchFlag = Arc<AtomicBool>;

/// The id of the client (connection) a watch belongs to.
pub type ClientId = u64;

/// One client's watch on a key: its id and its session's flag.
type Watcher = (ClientId, Weak<AtomicBool>);

#[derive(Default)]
pub struct Watches {
    keys: AHashMap<Box<[u8]>, Vec<Watcher>>,
}

impl Watches {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys watched by at least one client.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Registers `client`'s session `flag` on `key` (replacing an older session's entry).
    pub fn add(&mut self, key: &[u8], client: ClientId, flag: &WatchFlag) {
        let list = self.keys.entry(key.into()).or_default();
        list.retain(|(c, w)| *c != client && w.strong_count() > 0);
        list.push((client, Arc::downgrade(flag)));
    }

    /// Whether `client` still watches `key` untouched: its entry is there (a change of the key
    /// removes every entry) and its session is alive.
    pub fn untouched(&self, key: &[u8], client: ClientId) -> bool {
        self.keys.get(key).is_some_and(|list| {
            list.iter()
                .any(|(c, w)| *c == client && w.upgrade().is_some_and(|f| !f.load(Relaxed)))
        })
    }

    /// Drops `client`'s entry for `key` and any dead ones (UNWATCH, EXEC, a closed client).
    pub fn remove(&mut self, key: &[u8], client: ClientId) {
        if let Some(list) = self.keys.get_mut(key) {
            list.retain(|(c, w)| *c != client && w.strong_count() > 0);
            if list.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Marks every live watcher of `key` and forgets them all (a marked session stays marked
    /// until its client unwatches, so there is nothing more to tell it).
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(list) = self.keys.remove(key) {
            for (_, w) in list {
                if let Some(flag) = w.upgrade() {
                    flag.store(true, Relaxed);
                }
            }
        }
    }

    /// Marks the watchers of every key `in_scope` says is affected (FLUSHALL, a slot flush).
    pub fn touch_where(&mut self, mut in_scope: impl FnMut(&[u8]) -> bool) {
        let keys: Vec<Box<[u8]>> = self.keys.keys().filter(|k| in_scope(k)).cloned().collect();
        for k in keys {
            self.touch(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_marks_live_watchers_only_once_and_sweeps_dead_ones() {
        let mut w = Watches::default();
        let a: WatchFlag = Arc::default();
        let b: WatchFlag = Arc::default();
        w.add(b"k", 1, &a);
        w.add(b"k", 1, &a);
        w.add(b"k", 2, &b);
        w.add(b"other", 2, &b);
        assert!(w.untouched(b"k", 1) && w.untouched(b"other", 2));
        drop(b);
        assert!(!w.untouched(b"other", 2));
        w.touch(b"k");
        assert!(a.load(Relaxed));
        assert!(!w.untouched(b"k", 1));
        w.remove(b"other", 2);
        assert!(w.is_empty());
        let c: WatchFlag = Arc::default();
        w.add(b"x", 3, &c);
        w.touch_where(|k| k == b"y");
        assert!(!c.load(Relaxed));
        w.touch_where(|_| true);
        assert!(c.load(Relaxed));
    }
}
