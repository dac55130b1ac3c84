//! Sleep and timeout on glommio's timers. The clock is `std::time::Instant`, which is also the
//! clock glommio's timers read, so a deadline means the same thing to both.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;

use glommio::timer::Timer;
use pin_project_lite::pin_project;

/// A glommio [`Timer`] with the `()` output openraft wants (the timer yields its deadline).
///
/// Must be created on a glommio executor thread: the timer registers with that executor's
/// reactor.
#[derive(Debug)]
pub struct Sleep {
    timer: Timer,
}

impl Sleep {
    pub(crate) fn after(duration: Duration) -> Self {
        Sleep {
            timer: Timer::new(duration),
        }
    }

    pub(crate) fn until(deadline: Instant) -> Self {
        // A deadline already passed gives a zero timer, ready on its first poll.
        Self::after(deadline.saturating_duration_since(Instant::now()))
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.timer).poll(cx).map(|_deadline| ())
    }
}

/// The deadline of a [`Timeout`] passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project! {
    /// Runs a future against a deadline. The future is polled first, so one that is ready at
    /// the deadline still counts as finished in time (as with tokio's timeout).
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

impl<F> Timeout<F> {
    pub(crate) fn new(future: F, sleep: Sleep) -> Self {
        Timeout { future, sleep }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}
