//! A long script pauses so its core's other tasks run: above all the Raft traffic of the slot
//! groups the core hosts (heartbeats, votes, appends to a log), which must not wait 5 s for a
//! script and depose the leader running it.
//!
//! A batch holding a script command runs on a stack of its own (a corosensei coroutine, one
//! kept per core) instead of the core thread's. The script's Lua hook calls [`point`], which,
//! once the batch has run for a [`SLICE`], switches back to the core's stack. The engine then
//! takes the core's gate (see `gate`) and lets the core's tasks run for a moment before it
//! resumes the batch. Holding the gate keeps the batch atomic: until it ends nothing else
//! touches the shard (other connections wait, or get -BUSY past `busy-reply-threshold`;
//! other cores' batches are parked; storage, the expiry cycle and the groups' state machines
//! wait), while Raft's own work, which needs no shard, goes on. Most scripts end within their
//! first slice and never pause.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::core::Core;
use super::gate::{TxId, new_tx_id};

/// How long a batch runs before it pauses, and between pauses. Far below Raft's election
/// timeout, far above what a pause costs (a few microseconds when nothing else is ready).
pub const SLICE: Duration = Duration::from_millis(2);

/// How many times a pause lets the core's ready tasks run. A heartbeat is a chain of them
/// (timer, Raft core, replication, socket write, the reply read back, ...), each step made
/// ready by the one before: on a loaded machine, one round per slice delays the chain by
/// many slices.
const ROUNDS: usize = 8;

/// The coroutine's stack: reserved, not committed, so its size costs address space only.
/// Lua's own recursion limits keep scripts far inside it.
const STACK_BYTES: usize = 8 << 20;

type Co = Coroutine<(), (), (), DefaultStack>;

thread_local! {
    /// The yielder of the batch running on this thread's coroutine (null: none, or the code
    /// running is not on it).
    static YIELDER: Cell<*const Yielder<(), ()>> = const { Cell::new(std::ptr::null()) };
    /// When the running batch last started or resumed.
    static RESUMED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// `redis.call`s since the clock was last read (see [`between_calls`]).
    static CALLS: Cell<u32> = const { Cell::new(0) };
    /// A stack kept for the next batch.
    static SPARE: RefCell<Option<DefaultStack>> = const { RefCell::new(None) };
    /// Set while a batch is run out without pausing (see [`Paused::run_out`]).
    static NO_PAUSE: Cell<bool> = const { Cell::new(false) };
}

/// Called by a running script's hook: pauses the batch if it runs on its own stack and has
/// run for a slice. Returns when the engine resumes it.
pub fn point() {
    let y = YIELDER.with(Cell::get);
    if y.is_null()
        || NO_PAUSE.with(Cell::get)
        || RESUMED.with(Cell::get).is_some_and(|t| t.elapsed() < SLICE)
    {
        return;
    }
    // While paused, a hook on this thread (there should be none: the gate is held) must not
    // find a yielder that is not its own.
    YIELDER.with(|c| c.set(std::ptr::null()));
    // SAFETY: `y` is the yielder of the coroutine this code runs on (set by `start` on entry,
    // cleared here while suspended and when the batch ends).
    unsafe { &*y }.suspend(());
    YIELDER.with(|c| c.set(y));
    RESUMED.with(|c| c.set(Some(Instant::now())));
}

/// [`point`] for a script's `redis.call`s: reads the clock (~20 ns) at every 8th call only,
/// since a short script makes a few calls and most scripts are short.
pub fn between_calls() {
    let n = CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    if n % 8 == 0 {
        point();
    }
}

fn take_stack() -> Option<DefaultStack> {
    SPARE
        .with(|s| s.borrow_mut().take())
        .or_else(|| DefaultStack::new(STACK_BYTES).ok())
}

fn keep_stack(co: Co) {
    SPARE.with(|s| *s.borrow_mut() = Some(co.into_stack()));
}

/// Clears the yielder when the batch ends, even by a panic.
struct Clear;

impl Drop for Clear {
    fn drop(&mut self) {
        YIELDER.with(|c| c.set(std::ptr::null()));
        RESUMED.with(|c| c.set(None));
    }
}

/// A batch that paused, holding its core's gate: [`Paused::finish`] runs it to its end.
pub struct Paused {
    co: Option<Co>,
    core: Rc<Core>,
    /// The gate this pause took (None: a transaction running the batch holds it already).
    tx: Option<TxId>,
}

/// Runs `batch` (which executes ops against `core`'s shard) until it ends, returning None,
/// or until its script pauses: then takes the core's gate (unless `held`, the gated
/// transaction the batch belongs to, holds it) and returns the paused batch. The caller must
/// have checked that the gate is open to it, with no yield since.
pub fn start(
    core: &Rc<Core>,
    held: Option<TxId>,
    batch: impl FnOnce() + 'static,
) -> Option<Paused> {
    let Some(stack) = take_stack() else {
        // No memory for a stack: run it here, without pausing.
        batch();
        return None;
    };
    let mut co: Co = Coroutine::with_stack(stack, move |y: &Yielder<(), ()>, ()| {
        let _clear = Clear;
        YIELDER.with(|c| c.set(y));
        RESUMED.with(|c| c.set(Some(Instant::now())));
        batch();
    });
    match co.resume(()) {
        CoroutineResult::Return(()) => {
            keep_stack(co);
            None
        }
        CoroutineResult::Yield(()) => {
            let mut paused = Paused {
                co: Some(co),
                core: core.clone(),
                tx: None,
            };
            if !(held.is_some() && core.gate.holder() == held) {
                let tx = new_tx_id();
                if core.gate.take_now(tx) {
                    paused.tx = Some(tx);
                } else {
                    // Cannot happen when the caller checked the gate; stay atomic anyway.
                    paused.run_out();
                    return None;
                }
            }
            Some(paused)
        }
    }
}

impl Paused {
    /// Lets the core's other tasks run between slices of the batch, until it ends; then
    /// opens the gate.
    pub async fn finish(mut self) {
        loop {
            // A timer, not a plain yield: glommio polls for I/O and timers between tasks only
            // now and then, and the Raft tasks wait on both.
            for _ in 0..ROUNDS {
                glommio::timer::sleep(Duration::from_micros(1)).await;
            }
            let Some(co) = self.co.as_mut() else { break };
            if let CoroutineResult::Return(()) = co.resume(()) {
                break;
            }
        }
        self.end();
    }

    /// Runs the batch to its end here, without pausing again.
    fn run_out(&mut self) {
        if let Some(co) = self.co.as_mut() {
            NO_PAUSE.with(|f| f.set(true));
            while !co.done() {
                let _ = co.resume(());
            }
            NO_PAUSE.with(|f| f.set(false));
        }
    }

    fn end(&mut self) {
        if let Some(co) = self.co.take() {
            if co.done() {
                keep_stack(co);
            }
        }
        if let Some(tx) = self.tx.take() {
            self.core.gate.release(tx);
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // The task driving it went away (its connection closed): finish the batch now rather
        // than leave its effects half applied (and a suspended stack cannot be dropped
        // safely: unwinding it would cross the Lua interpreter's C frames).
        self.run_out();
        self.end();
    }
}
