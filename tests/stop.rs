//! Graceful, bounded stop: grace periods, aborts, detached blocking jobs, startup-task outcomes,
//! and submissions racing with stop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use runtime_thread::{Error, RuntimeThread, StartupOutcome};

/// What "bounded" means for a stop on a loaded 2-core CI machine: the grace period plus this.
const STOP_BOUND: Duration = Duration::from_secs(3);

#[test]
fn a_task_that_ignores_cancellation_is_aborted_after_the_grace_period() {
    bounded(QUICK, || {
        let grace = Duration::from_millis(200);
        let rt = RuntimeThread::builder()
            .grace_period(grace)
            .start()
            .unwrap();
        let stubborn = rt.run_threadsafe(futures::future::pending::<()>());
        let started = Instant::now();
        let report = rt.stop().unwrap();
        let took = started.elapsed();
        assert!(took >= grace, "the grace period was given ({took:?})");
        assert!(took < grace + STOP_BOUND, "stop took {took:?}");
        assert!(report.grace_expired);
        assert_eq!(report.tasks_aborted, 1);
        assert!(matches!(stubborn.wait(), Err(Error::Stopped)));
    });
}

#[test]
fn a_blocking_job_that_never_returns_is_detached_within_the_bound() {
    bounded(QUICK, || {
        let grace = Duration::from_millis(100);
        let rt = RuntimeThread::builder()
            .grace_period(grace)
            .start()
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let stuck = rt.submit_blocking(move || {
            entered_tx.send(()).unwrap();
            let _ = gate.recv();
            "finished much later"
        });
        entered.recv_timeout(QUICK).unwrap();
        let started = Instant::now();
        let report = rt.stop().unwrap();
        assert!(
            started.elapsed() < grace + STOP_BOUND,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(report.blocking_detached, 1);
        assert!(matches!(stuck.wait(), Err(Error::Stopped)));
        // Let the detached OS thread finish; its late result goes nowhere.
        release.send(()).unwrap();
    });
}

#[test]
fn every_handle_pending_at_stop_resolves() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder()
            .grace_period(Duration::from_millis(50))
            .start()
            .unwrap();
        let sleepers: Vec<_> = (0..20)
            .map(|_| {
                rt.run_threadsafe(async { tokio::time::sleep(Duration::from_secs(3600)).await })
            })
            .collect();
        let (tx, callbacks) = std::sync::mpsc::channel();
        for _ in 0..5 {
            let tx = tx.clone();
            rt.run_threadsafe(futures::future::pending::<u8>())
                .on_done(move |result| tx.send(result).unwrap());
        }
        let report = rt.stop().unwrap();
        assert_eq!(report.tasks_aborted, 25);
        for sleeper in sleepers {
            assert!(matches!(sleeper.wait(), Err(Error::Stopped)));
        }
        for _ in 0..5 {
            let result = callbacks.recv_timeout(QUICK).unwrap();
            assert!(matches!(result, Err(Error::Stopped)));
        }
    });
}

#[test]
fn cooperative_work_finishes_within_the_grace_period_with_its_value() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().start().unwrap();
        let token = rt.shutdown_token();
        let cooperative = rt.run_threadsafe(async move {
            token.cancelled().await;
            "cleaned up"
        });
        let report = rt.stop().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(cooperative.wait().unwrap(), "cleaned up");
    });
}

#[test]
fn a_zero_grace_stop_aborts_at_once() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder()
            .grace_period(Duration::from_secs(3600))
            .start()
            .unwrap();
        let stubborn = rt.run_threadsafe(futures::future::pending::<()>());
        let report = rt.stop_with_grace(Duration::ZERO).unwrap();
        assert_eq!(report.tasks_aborted, 1);
        assert!(matches!(stubborn.wait(), Err(Error::Stopped)));
    });
}

/// Waits (the caller's watchdog bounds it) until the named startup tasks are no longer running.
fn until_ended(rt: &RuntimeThread, names: &[&str]) {
    while rt
        .startup_tasks()
        .iter()
        .any(|t| names.contains(&t.name.as_str()) && t.outcome == StartupOutcome::Running)
    {
        std::thread::yield_now();
    }
}

#[test]
fn startup_task_outcomes_are_reported() {
    bounded(QUICK, || {
        let (ran_tx, ran) = std::sync::mpsc::channel();
        let rt = RuntimeThread::builder()
            .grace_period(Duration::from_millis(200))
            .startup_task("finishes", |_| async {})
            .startup_task("cooperates", |token| async move { token.cancelled().await })
            .startup_task("fails", |_| async { Err::<(), _>("no broker") })
            .startup_task("panics", |_| async {
                if true {
                    panic!("startup boom")
                }
            })
            .startup_task("ignores the token", |_| futures::future::pending::<()>())
            .build()
            .unwrap();
        let before_start = ran_tx.clone();
        rt.register_startup_task("registered before start", move |_| async move {
            before_start.send("before").unwrap();
        })
        .unwrap();
        rt.start().unwrap();
        assert_eq!(ran.recv_timeout(QUICK).unwrap(), "before");
        rt.register_startup_task("registered after start", move |token| async move {
            ran_tx.send("after").unwrap();
            token.cancelled().await;
        })
        .unwrap();
        assert_eq!(ran.recv_timeout(QUICK).unwrap(), "after", "started at once");
        // Let the three short tasks end on their own before stopping.
        until_ended(
            &rt,
            &["finishes", "fails", "panics", "registered before start"],
        );
        let report = rt.stop().unwrap();
        let outcome = |name: &str| {
            report
                .startup_tasks
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.outcome.clone())
                .unwrap_or_else(|| panic!("{name} missing from {report:?}"))
        };
        assert_eq!(outcome("finishes"), StartupOutcome::Finished);
        assert_eq!(outcome("cooperates"), StartupOutcome::Cancelled);
        assert_eq!(
            outcome("fails"),
            StartupOutcome::Failed {
                message: "no broker".into()
            }
        );
        assert_eq!(
            outcome("panics"),
            StartupOutcome::Panicked {
                message: "startup boom".into()
            }
        );
        assert_eq!(outcome("ignores the token"), StartupOutcome::Aborted);
        assert_eq!(outcome("registered after start"), StartupOutcome::Cancelled);
        assert_eq!(report.aborted(), 1);
        assert_eq!(report.cancelled(), 2);
        assert_eq!(report.finished(), 2, "finishes and registered before start");
        assert!(report.grace_expired);
        assert!(!report.is_clean());
        assert_eq!(report.startup_tasks.len(), 7);
    });
}

#[test]
fn a_startup_task_that_returns_before_stop_is_reported_finished() {
    bounded(QUICK, || {
        let (done_tx, done) = std::sync::mpsc::channel();
        let rt = RuntimeThread::builder()
            .startup_task(
                "one-shot",
                move |_| async move { done_tx.send(()).unwrap() },
            )
            .start()
            .unwrap();
        done.recv_timeout(QUICK).unwrap();
        until_ended(&rt, &["one-shot"]);
        let report = rt.stop().unwrap();
        assert_eq!(report.finished(), 1, "{report:?}");
        assert!(report.is_clean());
    });
}

#[test]
fn submissions_racing_with_stop_all_resolve_and_no_result_is_lost() {
    bounded(Duration::from_secs(120), || {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 25_000;
        let rt = RuntimeThread::builder()
            .grace_period(Duration::from_millis(20))
            .start()
            .unwrap();
        let executed = Arc::new(AtomicUsize::new(0));
        let submitted = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(std::sync::Barrier::new(THREADS + 1));
        let stop_done = Arc::new(AtomicBool::new(false));
        let per_thread: Vec<Vec<(usize, runtime_thread::TaskHandle<usize>)>> =
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let (rt, executed, submitted, go) =
                            (&rt, executed.clone(), submitted.clone(), go.clone());
                        scope.spawn(move || {
                            go.wait();
                            (0..PER_THREAD)
                                .map(|i| {
                                    let value = t * PER_THREAD + i;
                                    let executed = executed.clone();
                                    let handle = rt.run_threadsafe(async move {
                                        if value.is_multiple_of(5) {
                                            // Some of the work goes through the spawned path.
                                            tokio::task::yield_now().await;
                                        }
                                        executed.fetch_add(1, SeqCst);
                                        value
                                    });
                                    submitted.fetch_add(1, SeqCst);
                                    (value, handle)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                go.wait();
                // Stop in the middle of the storm.
                while submitted.load(SeqCst) < THREADS * PER_THREAD / 4 {
                    std::thread::yield_now();
                }
                rt.stop().unwrap();
                stop_done.store(true, SeqCst);
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
        assert!(stop_done.load(SeqCst));
        let (mut ok, mut stopped) = (0, 0);
        for (value, handle) in per_thread.into_iter().flatten() {
            match handle.wait() {
                Ok(got) => {
                    assert_eq!(got, value, "a result went to the wrong handle");
                    ok += 1;
                }
                Err(Error::Stopped) => stopped += 1,
                Err(other) => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(ok + stopped, THREADS * PER_THREAD, "every handle resolved");
        assert_eq!(
            ok,
            executed.load(SeqCst),
            "a future ran but its result was lost"
        );
        assert!(
            ok > 0 && stopped > 0,
            "the stop really raced: ok={ok} stopped={stopped}"
        );
        let stats = rt.stats();
        assert_eq!(stats.submitted, stats.completed, "{stats:?}");
    });
}
