//! Watch channel for tasks of one thread: one value, a version counter, and the receivers that
//! wait for the version to move.
//!
//! The value sits in its own `RefCell`, apart from the bookkeeping, so a receiver may borrow it
//! while the channel wakes others. A borrow held while the same thread sends is a bug in the
//! caller (tokio's watch would deadlock there; this one panics with "already borrowed").

use std::cell::Ref;
use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::task::Waker;

use openraft_rt::RecvError;
use openraft_rt::Watch;
use openraft_rt::WatchReceiver;
use openraft_rt::WatchSender;
use openraft_rt::watch::SendError;

/// [`Watch`] for one glommio thread.
pub struct LocalWatch;

struct Shared<T> {
    value: RefCell<T>,
    state: RefCell<State>,
}

struct State {
    /// Bumped by every send; a receiver has seen the value once its `seen` equals this.
    version: u64,
    senders: usize,
    receivers: usize,
    next_receiver_id: u64,
    /// At most one waker per receiver (keyed by its id), so a receiver polled in a loop of
    /// `select`s does not pile up wakers.
    waiters: Vec<(u64, Waker)>,
}

impl State {
    fn new_receiver_id(&mut self) -> u64 {
        self.receivers += 1;
        self.next_receiver_id += 1;
        self.next_receiver_id
    }
}

/// Publishes new values; `changed` errs once every sender is gone.
pub struct Sender<T> {
    shared: Rc<Shared<T>>,
}

/// Reads the latest value and waits for the next one.
pub struct Receiver<T> {
    shared: Rc<Shared<T>>,
    id: u64,
    seen: u64,
}

impl Watch for LocalWatch {
    type Sender<T> = Sender<T>;
    type Receiver<T> = Receiver<T>;
    type Ref<'a, T: 'a> = Ref<'a, T>;

    fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
        let mut state = State {
            version: 0,
            senders: 1,
            receivers: 0,
            next_receiver_id: 0,
            waiters: Vec::new(),
        };
        let id = state.new_receiver_id();
        let shared = Rc::new(Shared {
            value: RefCell::new(init),
            state: RefCell::new(state),
        });
        (
            Sender {
                shared: shared.clone(),
            },
            Receiver {
                shared,
                id,
                seen: 0,
            },
        )
    }
}

impl<T> Shared<T> {
    /// Marks a new version and wakes every waiting receiver.
    fn publish(&self) {
        let waiters = {
            let mut state = self.state.borrow_mut();
            state.version += 1;
            std::mem::take(&mut state.waiters)
        };
        for (_, waker) in waiters {
            waker.wake();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.state.borrow_mut().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waiters = {
            let mut state = self.shared.state.borrow_mut();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            std::mem::take(&mut state.waiters)
        };
        // The last sender is gone: waiting receivers must return the error.
        for (_, waker) in waiters {
            waker.wake();
        }
    }
}

impl<T> WatchSender<LocalWatch, T> for Sender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.shared.state.borrow().receivers == 0 {
            return Err(SendError(value));
        }
        let old = self.shared.value.replace(value);
        self.shared.publish();
        // The old value is dropped only now, with nothing borrowed.
        drop(old);
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = modify(&mut self.shared.value.borrow_mut());
        if modified {
            self.shared.publish();
        }
        modified
    }

    fn borrow_watched(&self) -> Ref<'_, T> {
        self.shared.value.borrow()
    }

    fn subscribe(&self) -> Receiver<T> {
        let mut state = self.shared.state.borrow_mut();
        let id = state.new_receiver_id();
        Receiver {
            shared: self.shared.clone(),
            id,
            // Only values sent after subscribing count as changes.
            seen: state.version,
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        let id = self.shared.state.borrow_mut().new_receiver_id();
        Receiver {
            shared: self.shared.clone(),
            id,
            seen: self.seen,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.borrow_mut();
        state.receivers -= 1;
        state.waiters.retain(|(id, _)| *id != self.id);
    }
}

impl<T> WatchReceiver<LocalWatch, T> for Receiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            if state.version != self.seen {
                self.seen = state.version;
                return Poll::Ready(Ok(()));
            }
            if state.senders == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            let id = self.id;
            match state.waiters.iter_mut().find(|(waiter, _)| *waiter == id) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => state.waiters.push((id, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    fn borrow_watched(&self) -> Ref<'_, T> {
        self.shared.value.borrow()
    }

    fn borrow_and_update(&mut self) -> Ref<'_, T> {
        self.seen = self.shared.state.borrow().version;
        self.shared.value.borrow()
    }
}
