//! A leader's uncommitted writes: the records it applied to its shard before they committed
//! (proposer-evaluated writes, CockroachDB's pattern), kept so that
//!
//! - a reply that depends on a key waits until the last proposal that changed the key
//!   commits (no reply ever shows a write that could still be lost);
//! - persistence stores each key as of the last commit, never a speculative value: a key an
//!   uncommitted proposal changed is stored as its image before that proposal;
//! - a leader that loses its leadership with proposals uncommitted puts every key they
//!   changed back as it was before them, and serves again from the committed state.
//!
//! One `Spec` per core: a key belongs to one slot group, and a slot group to one core. A
//! group's proposals commit in the order they were made (one Raft log), so per key the
//! images form a queue, oldest first: the front image is the key's committed state.

use std::collections::{HashMap, VecDeque};

use super::record::Builder;
use crate::cluster::types::GroupId;
use crate::shard::{Image, Journal, Shard};

/// A proposal's id: unique on this core for the life of the process, increasing.
pub type Pid = u64;

type Key = Box<[u8]>;
/// A key of a numbered database (`cluster-databases`).
pub type DbKey = (u32, Key);
type Queue = VecDeque<(Pid, Option<Image>)>;

/// One applied, uncommitted proposal of a group.
struct Pending {
    pid: Pid,
    /// The keys it changed: each has an element for this proposal in its image queue.
    keys: Vec<DbKey>,
}

/// The proposal collecting this loop pass's evaluations for a group.
struct Filling {
    pid: Pid,
    now: u64,
    builder: Builder,
}

#[derive(Default)]
struct GroupSpec {
    pending: VecDeque<Pending>,
    filling: Option<Filling>,
    /// The last of this group's proposals that committed (0: none yet).
    committed: Pid,
}

#[derive(Default)]
pub struct Spec {
    last_pid: Pid,
    /// Per key changed by a pending proposal: (that proposal, the key's state before it).
    images: HashMap<Key, Queue, ahash::RandomState>,
    /// The same for keys of databases other than 0.
    db_images: HashMap<DbKey, Queue, ahash::RandomState>,
    groups: HashMap<GroupId, GroupSpec>,
}

impl Spec {
    /// Adds what `journal` recorded for group `g` (evaluated at `now`) to the group's
    /// proposal being filled, opening one if needed. Returns that proposal's id (None when
    /// the journal recorded nothing).
    pub fn absorb(&mut self, g: GroupId, journal: Journal, now: u64) -> Option<Pid> {
        if journal.units.is_empty() {
            return None;
        }
        let gs = self.groups.entry(g).or_default();
        let pid = match &mut gs.filling {
            Some(f) => {
                f.now = f.now.max(now);
                f.pid
            }
            None => {
                self.last_pid += 1;
                let pid = self.last_pid;
                gs.filling = Some(Filling {
                    pid,
                    now,
                    builder: Builder::default(),
                });
                gs.pending.push_back(Pending {
                    pid,
                    keys: Vec::new(),
                });
                pid
            }
        };
        let filling = gs.filling.as_mut().expect("opened above");
        filling.builder.push_units(&journal.records, &journal.units);
        let pending = gs
            .pending
            .back_mut()
            .expect("the filling proposal is pending");
        for (db, key, image) in journal.images {
            let queue = match db {
                0 => self.images.entry(key.clone()).or_default(),
                _ => self.db_images.entry((db, key.clone())).or_default(),
            };
            // An earlier batch of this same proposal changed the key already: the image
            // from before the proposal is the one to keep.
            if queue.back().is_some_and(|(p, _)| *p == pid) {
                continue;
            }
            queue.push_back((pid, image));
            pending.keys.push((db, key));
        }
        Some(pid)
    }

    fn queue(&self, db: u32, key: &[u8]) -> Option<&Queue> {
        match db {
            0 => self.images.get(key),
            _ if self.db_images.is_empty() => None,
            _ => self.db_images.get(&(db, Box::from(key))),
        }
    }

    fn remove_queue(&mut self, db: u32, key: &Key) -> Option<Queue> {
        match db {
            0 => self.images.remove(key),
            _ => self.db_images.remove(&(db, key.clone())),
        }
    }

    /// Group `g`'s proposal being filled, as a log entry payload, to hand to Raft now; it
    /// stays pending until it commits or is undone.
    pub fn take_filling(&mut self, g: GroupId) -> Option<(Pid, Vec<u8>)> {
        let f = self.groups.get_mut(&g)?.filling.take()?;
        Some((f.pid, f.builder.finish(f.now, f.pid)))
    }

    /// Groups with a proposal being filled.
    pub fn filling_groups(&self) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, gs)| gs.filling.is_some())
            .map(|(g, _)| *g)
            .collect()
    }

    /// The last pending proposal that changed `key` of database `db`.
    #[inline]
    pub fn last_pid(&self, db: u32, key: &[u8]) -> Option<Pid> {
        if self.images.is_empty() && self.db_images.is_empty() {
            return None;
        }
        self.queue(db, key)?.back().map(|(p, _)| *p)
    }

    /// The last pending proposal of group `g`.
    pub fn group_last(&self, g: GroupId) -> Option<Pid> {
        self.groups.get(&g)?.pending.back().map(|p| p.pid)
    }

    /// The oldest pending proposal of group `g`: the next of its entries to commit.
    pub fn front(&self, g: GroupId) -> Option<Pid> {
        self.groups.get(&g)?.pending.front().map(|p| p.pid)
    }

    /// The last proposal of group `g` that committed.
    pub fn committed(&self, g: GroupId) -> Pid {
        self.groups.get(&g).map_or(0, |gs| gs.committed)
    }

    /// Whether group `g` has nothing pending.
    pub fn is_clear(&self, g: GroupId) -> bool {
        self.groups.get(&g).is_none_or(|gs| gs.pending.is_empty())
    }

    /// `key`'s state as of the last commit, when a pending proposal changed it since
    /// (Some(None): the key did not exist then). None: the shard's state is committed.
    pub fn committed_image(&self, db: u32, key: &[u8]) -> Option<&Option<Image>> {
        if self.images.is_empty() && self.db_images.is_empty() {
            return None;
        }
        self.queue(db, key)?.front().map(|(_, img)| img)
    }

    /// Group `g`'s oldest pending proposal committed; it must be `pid`. Returns the keys it
    /// changed (to persist now, as of their committed state), or None if `pid` is not the
    /// group's oldest pending proposal.
    pub fn commit(&mut self, g: GroupId, pid: Pid) -> Option<Vec<DbKey>> {
        let gs = self.groups.get_mut(&g)?;
        if gs.pending.front()?.pid != pid {
            return None;
        }
        let done = gs.pending.pop_front().expect("checked above");
        gs.committed = pid;
        if gs.filling.as_ref().is_some_and(|f| f.pid == pid) {
            // Committed while still filling cannot happen (it was never proposed); keep the
            // queues consistent anyway.
            gs.filling = None;
        }
        for (db, key) in &done.keys {
            let queue = match db {
                0 => self.images.get_mut(key),
                _ => self.db_images.get_mut(&(*db, key.clone())),
            };
            if let Some(queue) = queue {
                if queue.front().is_some_and(|(p, _)| *p == pid) {
                    queue.pop_front();
                }
                if queue.is_empty() {
                    self.remove_queue(*db, key);
                }
            }
        }
        Some(done.keys)
    }

    /// Undoes every pending proposal of group `g` on `shard`: each key they changed goes
    /// back to its committed state. Returns the ids undone, oldest first.
    pub fn rollback(&mut self, g: GroupId, shard: &mut Shard) -> Vec<Pid> {
        let Some(gs) = self.groups.get_mut(&g) else {
            return Vec::new();
        };
        gs.filling = None;
        let pending = std::mem::take(&mut gs.pending);
        let mut undone = Vec::with_capacity(pending.len());
        for p in pending {
            undone.push(p.pid);
            for (db, key) in p.keys {
                // The first proposal (oldest) that changed a key holds its committed image;
                // later ones find the key gone from the index already.
                if let Some(mut queue) = self.remove_queue(db, &key)
                    && let Some((_, image)) = queue.pop_front()
                {
                    shard.select(db as usize);
                    shard.restore_image(&key, image);
                }
            }
        }
        shard.select(0);
        undone
    }

    /// Whether anything at all is pending on this core.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
            && self.db_images.is_empty()
            && self.groups.values().all(|g| g.pending.is_empty())
    }
}
