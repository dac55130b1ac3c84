//! openraft's async runtime on a glommio executor: each Raft group lives on one glommio core
//! thread, with openraft built with its `single-threaded` feature (no `Send` bounds, no tokio).
//!
//! A type config names it as its runtime: `AsyncRuntime = tallykv_rt_glommio::GlommioRuntime`.
//!
//! What this room may not touch: it knows nothing of Raft or of tallykv's data; it only maps
//! openraft-rt's traits onto glommio (tasks, timers) and onto channels made for one thread.
//!
//! Every type here is `!Send`: handles must stay on the executor thread that made them, which
//! the compiler enforces. Timers and `spawn` need a running glommio executor on the thread.

use std::fmt;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use glommio::LocalExecutor;
use glommio::LocalExecutorBuilder;
use glommio::Placement;
use openraft_rt::AsyncRuntime;

pub mod mpsc;
pub mod mutex;
pub mod oneshot;
mod task;
mod time;
mod wait_list;
pub mod watch;

pub use mpsc::LocalMpsc;
pub use mutex::LocalMutex;
pub use oneshot::LocalOneshot;
pub use task::JoinError;
pub use task::JoinHandle;
pub use time::Elapsed;
pub use time::Sleep;
pub use time::Timeout;
pub use watch::LocalWatch;

/// Memory glommio registers with io_uring for storage I/O. openraft does no I/O of its own and
/// the registered buffer is locked memory (`ulimit -l`, often 8 MiB on CI), so keep it small.
const IO_MEMORY: usize = 512 * 1024;

/// Depth of each of the executor's io_uring rings; small for the same reason.
const RING_DEPTH: usize = 64;

/// [`AsyncRuntime`] for openraft on glommio.
///
/// As a value it owns a `LocalExecutor`, for tests and tools ([`AsyncRuntime::new`],
/// [`AsyncRuntime::block_on`]); a server runs Raft inside its own executors and only names the
/// type in its `RaftTypeConfig`.
pub struct GlommioRuntime {
    executor: LocalExecutor,
}

impl GlommioRuntime {
    /// The executor settings `new` uses: unbound, small io memory and rings. A server with its
    /// own executors configures them itself.
    pub fn executor_builder() -> LocalExecutorBuilder {
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("openraft-glommio")
            .io_memory(IO_MEMORY)
            .ring_depth(RING_DEPTH)
    }
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime")
            .field("executor", &self.executor.id())
            .finish()
    }
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, F: Future<Output = R>> = Timeout<F>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<F>(future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        task::spawn(future)
    }

    fn sleep(duration: Duration) -> Sleep {
        Sleep::after(duration)
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep::until(deadline)
    }

    fn timeout<R, F: Future<Output = R>>(duration: Duration, future: F) -> Timeout<F> {
        Timeout::new(future, Sleep::after(duration))
    }

    fn timeout_at<R, F: Future<Output = R>>(deadline: Instant, future: F) -> Timeout<F> {
        Timeout::new(future, Sleep::until(deadline))
    }

    fn is_panic(join_error: &JoinError) -> bool {
        matches!(join_error, JoinError::Panicked(_))
    }

    fn thread_rng() -> rand::rngs::ThreadRng {
        rand::rng()
    }

    type Mpsc = LocalMpsc;
    type Watch = LocalWatch;
    type Oneshot = LocalOneshot;
    type Mutex<T: 'static> = LocalMutex<T>;

    /// A new glommio executor on this thread; `threads` is ignored (one executor is one thread).
    ///
    /// Panics if glommio cannot set the executor up (io_uring unavailable, locked-memory limit):
    /// the trait gives no way to return the error.
    fn new(_threads: usize) -> Self {
        let executor = Self::executor_builder()
            .make()
            .unwrap_or_else(|err| panic!("cannot create a glommio executor: {err}"));
        GlommioRuntime { executor }
    }

    /// Runs `future` on this runtime's executor. Panics if a glommio executor is already running
    /// on this thread (glommio allows one at a time).
    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}
