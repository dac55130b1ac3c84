//! Bounded multi-producer, single-consumer channel for tasks of one thread.
//!
//! The state is an `Rc<RefCell<_>>`: every handle lives on the executor thread that made it
//! (openraft's `single-threaded` feature drops the `Send` bounds, and these types are `!Send`
//! so the compiler keeps it that way). Rules kept throughout: a waker is woken, and a message
//! is dropped, only after the borrow of the state is released, because either may run code
//! that touches this same channel (a message can hold one of its senders).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::rc::Weak;
use std::task::Context;
use std::task::Poll;
use std::task::Waker;

use openraft_rt::Mpsc;
use openraft_rt::MpscReceiver;
use openraft_rt::MpscSender;
use openraft_rt::MpscWeakSender;
use openraft_rt::SendError;
use openraft_rt::TryRecvError;

use crate::wait_list::WaitList;

/// [`Mpsc`] for one glommio thread.
pub struct LocalMpsc;

struct Chan<T> {
    queue: VecDeque<T>,
    capacity: usize,
    /// Strong senders; weak ones do not keep the channel open.
    senders: usize,
    receiver_alive: bool,
    receiver_waker: Option<Waker>,
    /// Senders waiting for a free slot.
    send_waiters: WaitList,
}

impl<T> Chan<T> {
    fn has_room(&self) -> bool {
        self.queue.len() < self.capacity
    }
}

/// Sending half; the channel stays open while one is alive.
pub struct Sender<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

/// Sender that does not keep the channel open; `upgrade` fails once the last sender is gone.
pub struct WeakSender<T> {
    chan: Weak<RefCell<Chan<T>>>,
}

/// Receiving half; dropping it closes the channel and drops what is queued.
pub struct Receiver<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

impl Mpsc for LocalMpsc {
    type Sender<T> = Sender<T>;
    type Receiver<T> = Receiver<T>;
    type WeakSender<T> = WeakSender<T>;

    fn channel<T>(buffer: usize) -> (Sender<T>, Receiver<T>) {
        let chan = Rc::new(RefCell::new(Chan {
            queue: VecDeque::new(),
            // A zero-slot channel could never take a message (tokio panics on 0 instead).
            capacity: buffer.max(1),
            senders: 1,
            receiver_alive: true,
            receiver_waker: None,
            send_waiters: WaitList::default(),
        }));
        (Sender { chan: chan.clone() }, Receiver { chan })
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.borrow_mut().senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut chan = self.chan.borrow_mut();
            chan.senders -= 1;
            if chan.senders > 0 {
                return;
            }
            chan.receiver_waker.take()
        };
        // The last sender is gone: a receiver waiting on an empty queue must see the end.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> MpscSender<LocalMpsc, T> for Sender<T> {
    fn send(&self, msg: T) -> impl Future<Output = Result<(), SendError<T>>> {
        Send {
            chan: &self.chan,
            msg: Some(msg),
            slot: None,
        }
    }

    fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            chan: Rc::downgrade(&self.chan),
        }
    }
}

/// Future of [`Sender::send`]: waits for a free slot, in turn with the other waiting senders.
struct Send<'a, T> {
    chan: &'a RefCell<Chan<T>>,
    msg: Option<T>,
    slot: Option<u64>,
}

// The message is moved, never pinned, so the future can be Unpin whatever `T` is.
impl<T> Unpin for Send<'_, T> {}

impl<T> Future for Send<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut chan = this.chan.borrow_mut();
        if !chan.receiver_alive {
            chan.send_waiters.remove(&mut this.slot);
            let msg = this.msg.take().expect("Send polled after it completed");
            return Poll::Ready(Err(SendError(msg)));
        }
        if !chan.has_room() {
            chan.send_waiters.register(&mut this.slot, cx.waker());
            return Poll::Pending;
        }
        chan.send_waiters.remove(&mut this.slot);
        let msg = this.msg.take().expect("Send polled after it completed");
        chan.queue.push_back(msg);
        let waker = chan.receiver_waker.take();
        drop(chan);
        if let Some(waker) = waker {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Drop for Send<'_, T> {
    fn drop(&mut self) {
        if self.slot.is_none() {
            return;
        }
        let next = {
            let mut chan = self.chan.borrow_mut();
            let was_woken = chan.send_waiters.remove(&mut self.slot);
            if was_woken && chan.has_room() {
                chan.send_waiters.pop_front()
            } else {
                None
            }
        };
        // Cancelled after being given a free slot: the slot goes to the next sender.
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

impl<T> Clone for WeakSender<T> {
    fn clone(&self) -> Self {
        WeakSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> MpscWeakSender<LocalMpsc, T> for WeakSender<T> {
    fn upgrade(&self) -> Option<Sender<T>> {
        let chan = self.chan.upgrade()?;
        {
            let mut state = chan.borrow_mut();
            // Once the last strong sender is gone the channel is closed for good, even though
            // the receiver still keeps the state alive.
            if state.senders == 0 {
                return None;
            }
            state.senders += 1;
        }
        Some(Sender { chan })
    }
}

impl<T> Receiver<T> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut chan = self.chan.borrow_mut();
        if let Some(msg) = chan.queue.pop_front() {
            let waker = chan.send_waiters.pop_front();
            drop(chan);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Some(msg));
        }
        if chan.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut chan.receiver_waker {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> MpscReceiver<T> for Receiver<T> {
    // Cancel-safe: the future holds no state, a message leaves the queue only in the poll that
    // returns it.
    fn recv(&mut self) -> impl Future<Output = Option<T>> {
        poll_fn(|cx| self.poll_recv(cx))
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut chan = self.chan.borrow_mut();
        if let Some(msg) = chan.queue.pop_front() {
            let waker = chan.send_waiters.pop_front();
            drop(chan);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Ok(msg);
        }
        if chan.senders == 0 {
            Err(TryRecvError::Disconnected)
        } else {
            Err(TryRecvError::Empty)
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (queued, waiters) = {
            let mut chan = self.chan.borrow_mut();
            chan.receiver_alive = false;
            (
                std::mem::take(&mut chan.queue),
                chan.send_waiters.take_all(),
            )
        };
        // Waiting senders learn the channel is closed; queued messages are dropped now (as
        // tokio does), so a reply channel inside one tells its waiter at once.
        for (_, waker) in waiters {
            waker.wake();
        }
        drop(queued);
    }
}
