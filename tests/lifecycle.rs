//! Start, stop, join, scoped use and configuration errors.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use common::{QUICK, bounded};
use runtime_thread::{Error, Flavor, RuntimeThread, StopCause};

#[test]
fn start_returns_once_the_runtime_accepts_work() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().name("lifecycle").build().unwrap();
        assert!(!rt.is_running());
        rt.start().unwrap();
        assert!(rt.is_running());
        assert_eq!(rt.run_threadsafe(async { 7 }).wait().unwrap(), 7);
        assert!(rt.handle().is_ok());
        let report = rt.stop().unwrap();
        assert_eq!(report.cause, StopCause::Requested);
        assert!(report.is_clean(), "{report:?}");
        assert!(!rt.is_running());
    });
}

#[test]
fn starting_twice_is_an_error() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().start().unwrap();
        assert!(matches!(rt.start(), Err(Error::AlreadyStarted)));
        rt.stop().unwrap();
        assert!(matches!(rt.start(), Err(Error::AlreadyStarted)));
    });
}

#[test]
fn work_submitted_before_start_fails_with_not_started() {
    let rt = RuntimeThread::builder().build().unwrap();
    assert!(matches!(
        rt.run_threadsafe(async { 1 }).wait(),
        Err(Error::NotStarted)
    ));
    assert!(matches!(
        rt.submit_blocking(|| 1).wait(),
        Err(Error::NotStarted)
    ));
    assert!(matches!(
        rt.spawn_threadsafe(async {}),
        Err(Error::NotStarted)
    ));
    assert!(matches!(rt.handle(), Err(Error::NotStarted)));
    assert!(
        matches!(rt.join(), Err(Error::NotStarted)),
        "join must not wait forever"
    );
}

#[test]
fn stop_is_idempotent_and_later_work_fails_at_once() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().start().unwrap();
        let first = rt.stop().unwrap();
        let second = rt.stop().unwrap();
        assert_eq!(first, second);
        assert_eq!(rt.join().unwrap(), first);
        assert!(!rt.request_stop(), "already stopped");
        let late = rt.run_threadsafe(async { 1 });
        assert!(late.is_finished(), "refused before reaching the runtime");
        assert!(matches!(late.wait(), Err(Error::Stopped)));
        assert!(matches!(
            rt.submit_blocking(|| 1).wait(),
            Err(Error::Stopped)
        ));
        assert!(matches!(rt.spawn_threadsafe(async {}), Err(Error::Stopped)));
        assert!(matches!(rt.handle(), Err(Error::Stopped)));
        assert!(
            rt.register_startup_task("late", |_| async {}).is_err(),
            "a task registered after stop must be refused, not dropped"
        );
    });
}

#[test]
fn a_thread_stopped_before_start_stays_closed() {
    let rt = RuntimeThread::builder().build().unwrap();
    let report = rt.stop().unwrap();
    assert_eq!(report.cause, StopCause::NeverStarted);
    assert!(matches!(rt.start(), Err(Error::Stopped)));
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let cases = [
        RuntimeThread::builder()
            .flavor(Flavor::MultiThread { workers: 0 })
            .build(),
        RuntimeThread::builder().max_blocking_threads(0).build(),
        RuntimeThread::builder().name("bad\0name").build(),
        RuntimeThread::builder()
            .stop_on_signals([libc::SIGKILL])
            .build(),
    ];
    for case in cases {
        match case {
            Err(Error::InvalidConfig(message)) => assert!(!message.is_empty()),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn a_failure_to_start_comes_back_from_start() {
    bounded(QUICK, || {
        // Not a signal number: signal-hook refuses it on the runtime thread during set-up.
        let rt = RuntimeThread::builder()
            .stop_on_signals([4242])
            .build()
            .unwrap();
        match rt.start() {
            Err(Error::StartFailed(source)) => assert!(!source.to_string().is_empty()),
            other => panic!("expected StartFailed, got {other:?}"),
        }
        assert!(!rt.is_running());
        assert!(matches!(
            rt.run_threadsafe(async { 1 }).wait(),
            Err(Error::Stopped)
        ));
    });
}

#[test]
fn request_stop_works_from_a_task_on_the_thread_itself() {
    bounded(QUICK, || {
        let rt = Arc::new(RuntimeThread::builder().start().unwrap());
        let inner = rt.clone();
        let requested = rt.run_threadsafe(async move { inner.request_stop() });
        assert!(requested.wait().unwrap());
        let report = rt.join().unwrap();
        assert_eq!(report.cause, StopCause::Requested);
    });
}

#[test]
fn stop_on_the_thread_itself_requests_the_stop_and_says_it_cannot_join() {
    bounded(QUICK, || {
        let rt = Arc::new(RuntimeThread::builder().start().unwrap());
        let inner = rt.clone();
        let outcome = rt
            .run_threadsafe(async move { inner.stop().err() })
            .wait()
            .unwrap();
        let Some(error) = outcome else {
            panic!("stop() on the thread itself succeeded")
        };
        assert!(matches!(error, Error::WouldJoinItself), "{error:?}");
        assert!(error.to_string().contains("request_stop()"), "{error}");
        rt.join().unwrap();
        assert!(!rt.is_running());
    });
}

#[test]
fn join_waits_for_a_stop_requested_elsewhere() {
    bounded(QUICK, || {
        let rt = Arc::new(RuntimeThread::builder().start().unwrap());
        let waiter = {
            let rt = rt.clone();
            std::thread::spawn(move || rt.join())
        };
        let submitter = rt.clone();
        std::thread::spawn(move || submitter.request_stop())
            .join()
            .unwrap();
        let report = waiter.join().unwrap().unwrap();
        assert_eq!(report.cause, StopCause::Requested);
    });
}

#[test]
fn the_guard_stops_on_drop() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder()
            .grace_period(Duration::from_millis(50))
            .build()
            .unwrap();
        let pending;
        {
            let running = rt.start_guard().unwrap();
            assert!(running.is_running());
            pending = running.run_threadsafe(futures::future::pending::<()>());
        }
        assert!(!rt.is_running());
        assert!(matches!(pending.wait(), Err(Error::Stopped)));
    });
}

#[test]
fn the_guard_can_hand_back_the_report() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().build().unwrap();
        let guard = rt.start_guard().unwrap();
        let report = guard.stop().unwrap();
        assert_eq!(report.cause, StopCause::Requested);
    });
}

#[test]
fn the_scoped_form_stops_when_the_body_panics() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().build().unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            rt.scope(|rt| {
                assert!(rt.is_running());
                panic!("the body fails");
            })
        }));
        assert!(outcome.is_err(), "the panic continues after the stop");
        assert!(!rt.is_running());
        assert!(rt.join().is_ok());
    });
}

#[test]
fn dropping_a_running_thread_stops_it_and_resolves_its_handles() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder()
            .grace_period(Duration::from_millis(50))
            .start()
            .unwrap();
        let pending = rt.run_threadsafe(futures::future::pending::<()>());
        drop(rt);
        assert!(matches!(pending.wait(), Err(Error::Stopped)));
    });
}

#[test]
fn the_multi_thread_flavour_runs_work_on_its_workers() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder()
            .name("multi")
            .flavor(Flavor::MultiThread { workers: 2 })
            .start()
            .unwrap();
        let handles: Vec<_> = (0..100u64)
            .map(|i| {
                rt.run_threadsafe(async move {
                    tokio::task::yield_now().await;
                    i * 2
                })
            })
            .collect();
        let sum: u64 = handles.into_iter().map(|h| h.wait().unwrap()).sum();
        assert_eq!(sum, 2 * (0..100).sum::<u64>());
        let worker = rt
            .run_threadsafe(async { std::thread::current().name().map(str::to_owned) })
            .wait()
            .unwrap();
        assert_eq!(worker.as_deref(), Some("multi-pool"));
        assert!(rt.stop().unwrap().is_clean());
    });
}

#[test]
fn a_guard_is_given_for_a_thread_started_before_and_refused_for_a_stopped_one() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().start().unwrap();
        {
            let running = rt.start_guard().unwrap();
            assert_eq!(running.run_threadsafe(async { 3 }).wait().unwrap(), 3);
        }
        assert!(!rt.is_running(), "the guard stopped the thread");
        assert!(matches!(rt.start_guard(), Err(Error::Stopped)));
        assert!(matches!(rt.scope(|_| ()), Err(Error::Stopped)));
    });
}
