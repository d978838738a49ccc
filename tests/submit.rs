//! run_threadsafe, spawn_threadsafe, submit_blocking and the handle's behaviour.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{QUICK, bounded};
use runtime_thread::{Error, RuntimeThread};

fn started() -> RuntimeThread {
    RuntimeThread::builder()
        .name("submit")
        .grace_period(Duration::from_millis(100))
        .start()
        .unwrap()
}

#[test]
fn run_threadsafe_returns_ready_and_pending_futures_results() {
    bounded(QUICK, || {
        let rt = started();
        assert_eq!(
            rt.run_threadsafe(async { "ready" }).wait().unwrap(),
            "ready"
        );
        let slept = rt.run_threadsafe(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "after a timer"
        });
        assert_eq!(slept.wait().unwrap(), "after a timer");
        let on_thread = rt
            .run_threadsafe(async { std::thread::current().name().map(str::to_owned) })
            .wait()
            .unwrap();
        assert_eq!(on_thread.as_deref(), Some("submit"));
    });
}

#[test]
fn wait_timeout_gives_up_and_leaves_the_handle_usable() {
    bounded(QUICK, || {
        let rt = started();
        let (release, gate) = tokio::sync::oneshot::channel::<u32>();
        let mut handle = rt.run_threadsafe(async move { gate.await.unwrap() + 1 });
        match handle.wait_timeout(Duration::from_millis(20)) {
            Err(Error::TimedOut(after)) => assert_eq!(after, Duration::from_millis(20)),
            other => panic!("expected TimedOut, got {other:?}"),
        }
        assert!(!handle.is_finished());
        release.send(41).unwrap();
        assert_eq!(handle.wait_timeout(QUICK).unwrap(), 42);
        assert!(matches!(
            handle.wait_timeout(QUICK),
            Err(Error::ResultTaken)
        ));
    });
}

/// Sends on a channel when dropped, so a test can see that a cancelled future was dropped.
struct DropSignal(Option<std::sync::mpsc::Sender<()>>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[test]
fn cancel_resolves_at_once_and_drops_the_future() {
    bounded(QUICK, || {
        let rt = started();
        let (dropped_tx, dropped) = std::sync::mpsc::channel();
        let (started_tx, started) = std::sync::mpsc::channel();
        let handle = rt.run_threadsafe(async move {
            let _signal = DropSignal(Some(dropped_tx));
            started_tx.send(()).unwrap();
            futures::future::pending::<()>().await;
        });
        // Cancel a future that is really running, not one still waiting in the queue.
        started.recv_timeout(QUICK).unwrap();
        let abort = handle.abort_handle();
        assert!(handle.cancel());
        assert!(handle.is_finished() && abort.is_finished());
        assert!(!abort.cancel(), "a second cancel has nothing to do");
        assert!(matches!(handle.wait(), Err(Error::Cancelled)));
        dropped
            .recv_timeout(QUICK)
            .expect("the cancelled future was dropped");
        assert!(rt.stop().unwrap().is_clean());
    });
}

#[test]
fn cancel_after_the_work_finished_changes_nothing() {
    bounded(QUICK, || {
        let rt = started();
        let mut handle = rt.run_threadsafe(async { 5 });
        while !handle.is_finished() {
            std::thread::yield_now();
        }
        assert!(!handle.cancel());
        assert_eq!(handle.wait_timeout(QUICK).unwrap(), 5);
    });
}

#[test]
fn on_done_runs_at_once_on_the_caller_when_already_done() {
    bounded(QUICK, || {
        let rt = started();
        let handle = rt.run_threadsafe(async { 9 });
        while !handle.is_finished() {
            std::thread::yield_now();
        }
        let caller = std::thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        handle.on_done(move |result| {
            tx.send((result.unwrap(), std::thread::current().id()))
                .unwrap();
        });
        // Already delivered when on_done returns: no waiting needed.
        let (value, ran_on) = rx.try_recv().expect("called before on_done returned");
        assert_eq!(value, 9);
        assert_eq!(ran_on, caller);
        assert!(rx.try_recv().is_err(), "called exactly once");
    });
}

#[test]
fn on_done_runs_exactly_once_when_the_work_finishes_later() {
    bounded(QUICK, || {
        let rt = started();
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::oneshot::channel::<u32>();
        let (tx, rx) = std::sync::mpsc::channel();
        let counter = calls.clone();
        rt.run_threadsafe(async move { gate.await.unwrap() })
            .on_done(move |result| {
                counter.fetch_add(1, SeqCst);
                tx.send(result).unwrap();
            });
        assert_eq!(calls.load(SeqCst), 0);
        release.send(3).unwrap();
        assert_eq!(rx.recv_timeout(QUICK).unwrap().unwrap(), 3);
        rt.stop().unwrap();
        assert_eq!(calls.load(SeqCst), 1);
    });
}

#[test]
fn a_handle_can_be_awaited_from_another_tokio_runtime() {
    bounded(QUICK, || {
        let rt = started();
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let value = other.block_on(async {
            let first = rt.run_threadsafe(async { 20 }).await.unwrap();
            let second = rt
                .run_threadsafe(async {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    22
                })
                .await
                .unwrap();
            first + second
        });
        assert_eq!(value, 42);
    });
}

#[test]
fn a_handle_can_be_awaited_from_futures_block_on() {
    bounded(QUICK, || {
        let rt = started();
        let handle = rt.run_threadsafe(async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            "no tokio here"
        });
        assert_eq!(
            futures::executor::block_on(handle).unwrap(),
            "no tokio here"
        );
        let blocking = rt.submit_blocking(|| 8);
        assert_eq!(futures::executor::block_on(blocking).unwrap(), 8);
    });
}

#[test]
fn a_panicking_task_gives_panicked_and_the_thread_keeps_serving() {
    bounded(QUICK, || {
        let rt = started();
        let failed = rt.run_threadsafe(async {
            if true {
                panic!("boom in a future");
            }
        });
        match failed.wait() {
            Err(Error::Panicked { message }) => assert_eq!(message, "boom in a future"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        let later = rt.run_threadsafe(async {
            tokio::task::yield_now().await;
            panic!("boom after a yield {}", 2)
        });
        match later.wait() {
            Err(Error::Panicked { message }) => assert_eq!(message, "boom after a yield 2"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        match rt
            .submit_blocking(|| -> u8 { panic!("boom in a blocking job") })
            .wait()
        {
            Err(Error::Panicked { message }) => assert_eq!(message, "boom in a blocking job"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(rt.run_threadsafe(async { 1 }).wait().unwrap(), 1);
        assert_eq!(rt.submit_blocking(|| 2).wait().unwrap(), 2);
        assert!(rt.stop().unwrap().is_clean());
    });
}

#[test]
fn submit_blocking_runs_on_the_blocking_pool() {
    bounded(QUICK, || {
        let rt = started();
        let name = rt
            .submit_blocking(|| std::thread::current().name().map(str::to_owned))
            .wait()
            .unwrap();
        assert_eq!(name.as_deref(), Some("submit-pool"));
        // Blocking for a while there does not hold up async work on the runtime thread.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let stuck = rt.submit_blocking(move || gate.recv().is_ok());
        assert_eq!(rt.run_threadsafe(async { 3 }).wait().unwrap(), 3);
        release.send(()).unwrap();
        assert!(stuck.wait().unwrap());
    });
}

#[test]
fn a_blocking_job_cancelled_before_it_starts_never_runs() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder()
            .max_blocking_threads(1)
            .start()
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let occupying = rt.submit_blocking(move || gate.recv().is_ok());
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let queued = rt.submit_blocking(move || counter.fetch_add(1, SeqCst));
        assert!(queued.cancel());
        release.send(()).unwrap();
        assert!(occupying.wait().unwrap());
        // The pool has one thread, so the cancelled job would have run before this one.
        assert_eq!(rt.submit_blocking(|| 0).wait().unwrap(), 0);
        assert!(matches!(queued.wait(), Err(Error::Cancelled)));
        assert_eq!(ran.load(SeqCst), 0);
    });
}

#[test]
fn stats_count_submitted_completed_and_in_flight() {
    bounded(QUICK, || {
        let rt = started();
        for i in 0..10 {
            assert_eq!(rt.run_threadsafe(async move { i }).wait().unwrap(), i);
        }
        assert_eq!(rt.submit_blocking(|| 1).wait().unwrap(), 1);
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let pending = rt.run_threadsafe(gate);
        let stats = rt.stats();
        assert_eq!(stats.submitted, 12);
        assert_eq!(stats.in_flight + stats.completed, 12);
        assert!(stats.in_flight >= 1, "{stats:?}");
        release.send(()).unwrap();
        pending.wait().unwrap().unwrap();
        rt.stop().unwrap();
        let stats = rt.stats();
        assert_eq!(
            (stats.submitted, stats.completed, stats.in_flight),
            (12, 12, 0)
        );
    });
}

#[test]
fn many_concurrent_tasks_from_several_threads_all_run() {
    bounded(QUICK, || {
        const PER_THREAD: usize = 5_000;
        let rt = started();
        let done = Arc::new(AtomicUsize::new(0));
        let (all_done_tx, all_done) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (rt, done, all_done_tx) = (&rt, done.clone(), all_done_tx.clone());
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        let (done, all_done_tx) = (done.clone(), all_done_tx.clone());
                        rt.spawn_threadsafe(async move {
                            if i.is_multiple_of(7) {
                                tokio::task::yield_now().await;
                            }
                            if done.fetch_add(1, SeqCst) + 1 == 4 * PER_THREAD {
                                all_done_tx.send(()).unwrap();
                            }
                        })
                        .unwrap();
                    }
                });
            }
        });
        all_done
            .recv_timeout(QUICK)
            .expect("every spawned task ran");
        assert_eq!(done.load(SeqCst), 4 * PER_THREAD);
    });
}

#[test]
fn dropping_a_handle_detaches_the_work_without_cancelling_it() {
    bounded(QUICK, || {
        let rt = started();
        let (tx, rx) = std::sync::mpsc::channel();
        drop(rt.run_threadsafe(async move {
            tokio::task::yield_now().await;
            tx.send("still ran").unwrap();
        }));
        assert_eq!(rx.recv_timeout(QUICK).unwrap(), "still ran");
    });
}

#[test]
fn a_panicking_on_done_callback_does_not_take_the_thread_down() {
    bounded(QUICK, || {
        let rt = started();
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        rt.run_threadsafe(gate)
            .on_done(|_| panic!("a buggy callback"));
        release.send(()).unwrap();
        // Later work, both inline-ready and spawned, is still served.
        for _ in 0..3 {
            assert_eq!(rt.run_threadsafe(async { 1 }).wait().unwrap(), 1);
            let yielded = rt.run_threadsafe(async {
                tokio::task::yield_now().await;
                2
            });
            assert_eq!(yielded.wait().unwrap(), 2);
        }
        assert!(rt.stop().unwrap().is_clean());
    });
}

/// Panics when dropped: user code the runtime thread must survive.
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a buggy Drop impl");
    }
}

#[test]
fn a_future_whose_drop_panics_does_not_take_the_thread_down() {
    bounded(QUICK, || {
        let rt = started();
        let finished = rt.run_threadsafe(async {
            let _bomb = PanicOnDrop;
            5
        });
        // An async block drops its locals inside its last poll, so this panic is the poll's.
        match finished.wait() {
            Err(Error::Panicked { message }) => assert_eq!(message, "a buggy Drop impl"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        let cancelled = rt.run_threadsafe(async {
            let _bomb = PanicOnDrop;
            futures::future::pending::<()>().await;
        });
        // This one is dropped by the wrapper after the cancel, outside any poll of the user's.
        assert!(cancelled.cancel());
        for _ in 0..3 {
            assert_eq!(rt.run_threadsafe(async { 1 }).wait().unwrap(), 1);
        }
        rt.stop().unwrap();
    });
}

#[test]
fn several_task_handles_share_one_deadline_and_stay_usable() {
    bounded(QUICK, || {
        let rt = runtime_thread::RuntimeThread::builder().start().unwrap();
        let (release, gate) = tokio::sync::oneshot::channel::<u32>();
        let mut slow = rt.run_threadsafe(async move { gate.await.unwrap_or(0) });
        let mut quick = rt.run_threadsafe(async { 1u32 });
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(quick.wait_until(deadline).unwrap(), 1);
        assert!(matches!(
            slow.wait_until(deadline),
            Err(runtime_thread::Error::TimedOut(_))
        ));
        release.send(7).unwrap();
        assert_eq!(slow.wait().unwrap(), 7);
        rt.stop().unwrap();
    });
}
