//! A core's gate: how a transaction, script or command whose keys live on several cores runs
//! atomically (standalone mode).
//!
//! Dragonfly's transaction layer in its simplest form: the coordinator takes the gate of every
//! core it needs, always in ascending core order (two coordinators never wait for each other in
//! a cycle), runs its commands on those cores with its transaction id, and opens the gates
//! again. While a gate is held by a transaction, everything else that would touch that core's
//! shard waits: batches and calls from other cores are parked in arrival order and run when
//! the gate opens; the core's own connections wait before running a command; the expiry
//! cycle and the hand-over to storage wait too (storage must never hold half a transaction).
//! Messages carrying the holder's id go through.
//!
//! A transaction whose keys are all on one core needs no gate: one batch runs on its core
//! without yielding, which is atomic already (see `core`). A script that pauses (see `pause`)
//! takes its core's gate for as long as it is paused, with an id of its own.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures::channel::oneshot;

/// Identifies one gated transaction across cores.
pub type TxId = u64;

/// A fresh transaction id (unique within the process).
pub fn new_tx_id() -> TxId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

#[derive(Default)]
pub struct Gate {
    holder: Cell<Option<TxId>>,
    /// Transactions waiting for the gate, in arrival order.
    queue: RefCell<VecDeque<(TxId, oneshot::Sender<()>)>>,
    /// Work from other cores that arrived while the gate was held, in arrival order.
    parked: RefCell<VecDeque<Box<dyn FnOnce()>>>,
    /// This core's own tasks (connections, timers) waiting for the gate to open.
    waiting: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Gate {
    /// Whether work carrying `tx` (None: not part of a transaction) must wait.
    pub fn blocks(&self, tx: Option<TxId>) -> bool {
        matches!(self.holder.get(), Some(h) if Some(h) != tx)
    }

    pub fn holder(&self) -> Option<TxId> {
        self.holder.get()
    }

    /// Takes the gate for `tx`, waiting behind earlier holders.
    pub async fn acquire(&self, tx: TxId) {
        if self.holder.get().is_none() && self.queue.borrow().is_empty() {
            self.holder.set(Some(tx));
            return;
        }
        if self.holder.get() == Some(tx) {
            return;
        }
        let (done, granted) = oneshot::channel();
        self.queue.borrow_mut().push_back((tx, done));
        // The sender is dropped only by `release` handing the gate over, so an error cannot
        // happen while the core runs; treat one as granted rather than hang.
        let _ = granted.await;
    }

    /// Takes the gate for `tx` if it is open and nobody waits for it.
    pub fn take_now(&self, tx: TxId) -> bool {
        if self.holder.get().is_none() && self.queue.borrow().is_empty() {
            self.holder.set(Some(tx));
            return true;
        }
        false
    }

    /// Takes the gate under a fresh id if it is open and nobody waits for it; it opens again
    /// when the returned hold is dropped (however the holder's task ends).
    pub fn hold_now(&self) -> Option<Hold<'_>> {
        let id = new_tx_id();
        self.take_now(id).then_some(Hold { gate: self, id })
    }

    /// Opens the gate held by `tx`: runs the parked work, wakes this core's waiting tasks,
    /// then hands the gate to the next transaction in line (if any).
    pub fn release(&self, tx: TxId) {
        if self.holder.get() != Some(tx) {
            return;
        }
        self.holder.set(None);
        // Parked work may take the gate again (a script that pauses, see `pause`): what is
        // parked after it waits for that holder to release.
        while self.holder.get().is_none() {
            let next = self.parked.borrow_mut().pop_front();
            match next {
                Some(work) => work(),
                None => break,
            }
        }
        for w in self.waiting.borrow_mut().drain(..) {
            let _ = w.send(());
        }
        self.hand_over();
    }

    fn hand_over(&self) {
        while self.holder.get().is_none() {
            let Some((next, done)) = self.queue.borrow_mut().pop_front() else {
                return;
            };
            // A waiter that went away (its connection closed) is skipped.
            if done.send(()).is_ok() {
                self.holder.set(Some(next));
            }
        }
    }

    /// Parks `work` until the gate opens.
    pub fn park(&self, work: Box<dyn FnOnce()>) {
        self.parked.borrow_mut().push_back(work);
    }

    /// Waits until work carrying `tx` may run on this core.
    pub async fn wait_open(&self, tx: Option<TxId>) {
        while self.blocks(tx) {
            let (tx_open, opened) = oneshot::channel();
            self.waiting.borrow_mut().push(tx_open);
            let _ = opened.await;
        }
    }
}

/// The gate held by [`Gate::hold_now`], released on drop.
pub struct Hold<'a> {
    gate: &'a Gate,
    id: TxId,
}

impl Hold<'_> {
    pub fn id(&self) -> TxId {
        self.id
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.gate.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn holders_take_turns_and_parked_work_runs_in_order_on_release() {
        let gate = Rc::new(Gate::default());
        futures::executor::block_on(gate.acquire(1));
        assert!(gate.blocks(None));
        assert!(!gate.blocks(Some(1)));
        let ran = Rc::new(RefCell::new(Vec::new()));
        for i in 0..3 {
            let ran = ran.clone();
            gate.park(Box::new(move || ran.borrow_mut().push(i)));
        }
        let mut pool = futures::executor::LocalPool::new();
        let second = gate.clone();
        let got = Rc::new(Cell::new(false));
        let got2 = got.clone();
        use futures::task::LocalSpawnExt;
        pool.spawner()
            .spawn_local(async move {
                second.acquire(2).await;
                got2.set(true);
            })
            .unwrap();
        pool.run_until_stalled();
        assert!(!got.get());
        gate.release(1);
        assert_eq!(*ran.borrow(), vec![0, 1, 2]);
        pool.run_until_stalled();
        assert!(got.get());
        assert_eq!(gate.holder(), Some(2));
        gate.release(2);
        assert!(!gate.blocks(None));
    }
}
