//! One-shot channel for tasks of one thread (`Rc<RefCell<_>>`, see `mpsc` for the borrow rules).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Context;
use std::task::Poll;
use std::task::Waker;

use openraft_rt::Oneshot;
use openraft_rt::OneshotSender;

/// [`Oneshot`] for one glommio thread.
pub struct LocalOneshot;

struct Shared<T> {
    value: Option<T>,
    sender_alive: bool,
    receiver_alive: bool,
    receiver_waker: Option<Waker>,
}

/// Sending half; dropped unsent, the receiver gets [`RecvError`].
pub struct Sender<T> {
    shared: Rc<RefCell<Shared<T>>>,
}

/// Receiving half, a future of the value.
pub struct Receiver<T> {
    shared: Rc<RefCell<Shared<T>>>,
}

/// The sender was dropped without sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot sender dropped without sending")
    }
}

impl std::error::Error for RecvError {}

impl Oneshot for LocalOneshot {
    type Sender<T> = Sender<T>;
    type Receiver<T> = Receiver<T>;
    type ReceiverError = RecvError;

    fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let shared = Rc::new(RefCell::new(Shared {
            value: None,
            sender_alive: true,
            receiver_alive: true,
            receiver_waker: None,
        }));
        (
            Sender {
                shared: shared.clone(),
            },
            Receiver { shared },
        )
    }
}

impl<T> OneshotSender<T> for Sender<T> {
    fn send(self, value: T) -> Result<(), T> {
        let mut shared = self.shared.borrow_mut();
        if !shared.receiver_alive {
            return Err(value);
        }
        shared.value = Some(value);
        // The receiver is woken by this sender's drop, right after.
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut shared = self.shared.borrow_mut();
            shared.sender_alive = false;
            shared.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut shared = self.shared.borrow_mut();
        if let Some(value) = shared.value.take() {
            return Poll::Ready(Ok(value));
        }
        if !shared.sender_alive {
            return Poll::Ready(Err(RecvError));
        }
        match &mut shared.receiver_waker {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let unread = {
            let mut shared = self.shared.borrow_mut();
            shared.receiver_alive = false;
            shared.value.take()
        };
        // Dropped outside the borrow: the value may own handles to this very channel's peers.
        drop(unread);
    }
}
