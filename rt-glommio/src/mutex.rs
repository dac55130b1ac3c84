//! Async mutex for tasks of one thread.
//!
//! The `RefCell`'s own borrow flag is the lock: `try_borrow_mut` succeeds exactly when nobody
//! holds a guard, so no unsafe code is needed. Tasks that find it held queue in FIFO order.

use std::cell::RefCell;
use std::cell::RefMut;
use std::future::Future;
use std::ops::Deref;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;

use crate::wait_list::WaitList;

/// [`openraft_rt::Mutex`] for one glommio thread.
pub struct LocalMutex<T> {
    value: RefCell<T>,
    waiters: RefCell<WaitList>,
}

/// Holds the lock; dropping it hands the lock to the next waiter.
pub struct Guard<'a, T> {
    /// `Some` for the guard's whole life; taken in `drop` to unlock before waking the next task.
    value: Option<RefMut<'a, T>>,
    waiters: &'a RefCell<WaitList>,
}

impl<T: 'static> openraft_rt::Mutex<T> for LocalMutex<T> {
    type Guard<'a> = Guard<'a, T>;

    fn new(value: T) -> Self {
        LocalMutex {
            value: RefCell::new(value),
            waiters: RefCell::new(WaitList::default()),
        }
    }

    fn lock(&self) -> impl Future<Output = Guard<'_, T>> {
        Lock {
            mutex: self,
            slot: None,
        }
    }
}

struct Lock<'a, T> {
    mutex: &'a LocalMutex<T>,
    slot: Option<u64>,
}

impl<'a, T> Future for Lock<'a, T> {
    type Output = Guard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Guard<'a, T>> {
        let this = self.get_mut();
        let mut waiters = this.mutex.waiters.borrow_mut();
        match this.mutex.value.try_borrow_mut() {
            Ok(value) => {
                waiters.remove(&mut this.slot);
                Poll::Ready(Guard {
                    value: Some(value),
                    waiters: &this.mutex.waiters,
                })
            }
            Err(_held) => {
                waiters.register(&mut this.slot, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Lock<'_, T> {
    fn drop(&mut self) {
        if self.slot.is_none() {
            return;
        }
        let next = {
            let mut waiters = self.mutex.waiters.borrow_mut();
            let was_woken = waiters.remove(&mut self.slot);
            let unlocked = self.mutex.value.try_borrow_mut().is_ok();
            if was_woken && unlocked {
                waiters.pop_front()
            } else {
                None
            }
        };
        // Cancelled after its turn came: the turn goes to the next waiter.
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
            .as_deref()
            .expect("the guard holds the value until it is dropped")
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
            .as_deref_mut()
            .expect("the guard holds the value until it is dropped")
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Unlock first, so the task woken next finds the lock free.
        drop(self.value.take());
        let next = self.waiters.borrow_mut().pop_front();
        if let Some(waker) = next {
            waker.wake();
        }
    }
}
