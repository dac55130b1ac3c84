//! Spawned tasks with tokio's handle semantics on top of glommio's.
//!
//! glommio cancels a task when its `Task` is dropped; openraft drops most of the handles it
//! gets from `spawn` (a replication stream, the tick loop) and expects the task to go on, as it
//! does under tokio. So every task is detached at once, and the handle is the detached
//! `glommio::task::JoinHandle`: dropping it leaves the task running, awaiting it yields the
//! output.
//!
//! A panic in a task is caught and returned to the handle as [`JoinError::Panicked`], again
//! as tokio does. Left alone, glommio would unwind it through `LocalExecutor::run`, taking down
//! every task of the thread (every Raft group of the core) instead of the one that failed.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;

use futures_util::FutureExt;

/// Why a task's handle has no output.
pub enum JoinError {
    /// The task panicked; the payload is the panic's.
    Panicked(Box<dyn Any>),
    /// The task was cancelled: the executor dropped it before it finished (only when the
    /// executor itself goes away, since the handles never cancel).
    Cancelled,
}

impl JoinError {
    fn panic_message(&self) -> Option<&str> {
        let JoinError::Panicked(payload) = self else {
            return None;
        };
        payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message())
                .finish(),
            JoinError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => match self.panic_message() {
                Some(message) => write!(f, "task panicked: {message}"),
                None => f.write_str("task panicked"),
            },
            JoinError::Cancelled => f.write_str("task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Handle to a task started by [`spawn`]. Dropping it detaches the task.
pub struct JoinHandle<T> {
    inner: glommio::task::JoinHandle<std::thread::Result<T>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|finished| match finished {
                Some(Ok(output)) => Ok(output),
                Some(Err(payload)) => Err(JoinError::Panicked(payload)),
                None => Err(JoinError::Cancelled),
            })
    }
}

/// Starts `future` on the current thread's glommio executor (panics outside one, as
/// `glommio::spawn_local` does).
pub(crate) fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    // AssertUnwindSafe: after a panic the task's state is dropped, never observed again; what
    // it shared with others is what tokio's spawn would leave in the same state.
    let task = glommio::spawn_local(AssertUnwindSafe(future).catch_unwind());
    JoinHandle {
        inner: task.detach(),
    }
}
