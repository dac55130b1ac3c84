//! A FIFO of tasks waiting for a resource (a slot in a bounded channel, the mutex).
//!
//! Each waiter keeps a `slot` (its ticket, `None` until it first waits). The owner of the
//! resource wakes one waiter at a time with [`WaitList::pop_front`]; a woken waiter that finds
//! the resource taken again (another task got there first) goes back to the *front*, so it
//! keeps its turn. A waiter that gives up after being woken must pass the wake-up on, or the
//! next waiter would sleep with the resource free: [`WaitList::remove`] tells it whether it
//! had been woken.

use std::collections::VecDeque;
use std::task::Waker;

#[derive(Default)]
pub(crate) struct WaitList {
    next_ticket: u64,
    waiters: VecDeque<(u64, Waker)>,
}

impl WaitList {
    /// Queues the waiter, or refreshes its waker if it is already queued.
    pub(crate) fn register(&mut self, slot: &mut Option<u64>, waker: &Waker) {
        if let Some(ticket) = *slot {
            if let Some((_, queued)) = self.waiters.iter_mut().find(|(t, _)| *t == ticket) {
                queued.clone_from(waker);
                return;
            }
            // Woken but beaten to the resource: keep its turn.
            self.waiters.push_front((ticket, waker.clone()));
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        *slot = Some(ticket);
        self.waiters.push_back((ticket, waker.clone()));
    }

    /// Takes the waiter whose turn it is. The caller wakes it after releasing its own borrow of
    /// the shared state, so the woken task never finds that state borrowed.
    pub(crate) fn pop_front(&mut self) -> Option<Waker> {
        self.waiters.pop_front().map(|(_, waker)| waker)
    }

    /// Forgets the waiter. Returns true if it had been woken (taken off the list) and so owes
    /// the wake-up to the next waiter if it does not use the resource.
    pub(crate) fn remove(&mut self, slot: &mut Option<u64>) -> bool {
        let Some(ticket) = slot.take() else {
            return false;
        };
        match self.waiters.iter().position(|(t, _)| *t == ticket) {
            Some(at) => {
                self.waiters.remove(at);
                false
            }
            None => true,
        }
    }

    /// Takes every waiter: the resource is gone for good (the receiver was dropped).
    pub(crate) fn take_all(&mut self) -> VecDeque<(u64, Waker)> {
        std::mem::take(&mut self.waiters)
    }
}
