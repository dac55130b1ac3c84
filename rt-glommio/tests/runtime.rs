//! Behaviour the conformance suite does not pin down but openraft relies on: handles detach on
//! drop (glommio's own cancel), a panic reaches the handle instead of the executor, and a waiter
//! that gives up after being woken passes its turn on.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures_util::task::noop_waker;
use openraft_rt::AsyncRuntime;
use openraft_rt::Mpsc;
use openraft_rt::MpscReceiver;
use openraft_rt::MpscSender;
use openraft_rt::Mutex;
use openraft_rt::Oneshot;
use openraft_rt::OneshotSender;
use tallykv_rt_glommio::GlommioRuntime as Rt;
use tallykv_rt_glommio::JoinError;

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let waker = noop_waker();
    future.poll(&mut Context::from_waker(&waker))
}

#[test]
fn dropped_handle_detaches_the_task() {
    Rt::new(1).block_on(async {
        let (tx, rx) = <Rt as AsyncRuntime>::Oneshot::channel::<u32>();
        let handle = Rt::spawn(async move {
            // Suspends, so the handle is dropped while the task is still running.
            Rt::sleep(Duration::from_millis(20)).await;
            tx.send(7).ok();
        });
        drop(handle);
        assert_eq!(
            rx.await,
            Ok(7),
            "the task ran to the end after its handle was dropped"
        );
    });
}

#[test]
fn awaited_handle_yields_the_output_of_a_suspended_task() {
    Rt::new(1).block_on(async {
        let handle = Rt::spawn(async {
            Rt::sleep(Duration::from_millis(10)).await;
            "done"
        });
        assert_eq!(handle.await.ok(), Some("done"));
    });
}

#[test]
fn a_panic_reaches_the_handle_and_the_executor_goes_on() {
    Rt::new(1).block_on(async {
        let handle = Rt::spawn(async {
            Rt::sleep(Duration::from_millis(1)).await;
            panic!("raft core invariant broken");
        });
        let err = match handle.await {
            Ok(()) => panic!("the task panicked, its handle must say so"),
            Err(err) => err,
        };
        assert!(Rt::is_panic(&err));
        assert!(matches!(err, JoinError::Panicked(_)));
        assert_eq!(err.to_string(), "task panicked: raft core invariant broken");

        let after = Rt::spawn(async { 1 + 1 });
        assert_eq!(after.await.ok(), Some(2));
    });
}

#[test]
fn a_woken_sender_that_gives_up_passes_the_slot_on() {
    Rt::new(1).block_on(async {
        let (tx, mut rx) = <Rt as AsyncRuntime>::Mpsc::channel::<u32>(1);
        tx.send(1).await.ok();

        // First in line for the slot, then cancelled after the slot is given to it.
        let mut first = Box::pin(tx.send(2));
        assert!(poll_once(first.as_mut()).is_pending());

        let sent = Rc::new(Cell::new(false));
        let second = Rt::spawn({
            let (tx, sent) = (tx.clone(), sent.clone());
            async move {
                tx.send(3).await.ok();
                sent.set(true);
            }
        });
        Rt::sleep(Duration::from_millis(5)).await;
        assert!(!sent.get(), "the channel is full");

        assert_eq!(rx.recv().await, Some(1));
        drop(first);

        Rt::timeout(Duration::from_secs(1), second)
            .await
            .expect("the second sender got the slot the first one gave up")
            .ok();
        assert!(sent.get());
        assert_eq!(rx.recv().await, Some(3));
    });
}

#[test]
fn a_woken_locker_that_gives_up_passes_the_lock_on() {
    Rt::new(1).block_on(async {
        let mutex = Rc::new(<Rt as AsyncRuntime>::Mutex::new(0_u32));
        let guard = mutex.lock().await;

        let mut first = Box::pin(mutex.lock());
        assert!(poll_once(first.as_mut()).is_pending());

        let second = Rt::spawn({
            let mutex = mutex.clone();
            async move { *mutex.lock().await += 1 }
        });
        Rt::sleep(Duration::from_millis(5)).await;

        drop(guard);
        // `first` was woken by the unlock; cancelling it must wake `second`.
        drop(first);

        Rt::timeout(Duration::from_secs(1), second)
            .await
            .expect("the second locker got the lock the first one gave up")
            .ok();
        assert_eq!(*mutex.lock().await, 1);
    });
}

#[test]
fn dropping_the_receiver_drops_queued_messages() {
    Rt::new(1).block_on(async {
        // openraft sends requests with a reply channel inside; when the receiving loop ends, the
        // requester must hear about it at once, not hang.
        let (tx, rx) = <Rt as AsyncRuntime>::Mpsc::channel(4);
        let (reply_tx, reply_rx) = <Rt as AsyncRuntime>::Oneshot::channel::<u32>();
        tx.send(reply_tx).await.ok();
        drop(rx);
        assert!(reply_rx.await.is_err());
        assert!(
            tx.send(<Rt as AsyncRuntime>::Oneshot::channel().0)
                .await
                .is_err()
        );
    });
}
