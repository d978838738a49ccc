//! Blocking waits issued from the runtime's own threads: they either work or say to `.await`,
//! and never hang or panic inside tokio.

mod common;

use std::sync::Arc;

use common::{QUICK, bounded};
use runtime_thread::{Error, Flavor, RuntimeThread};

#[test]
fn a_blocking_wait_on_a_current_thread_runtime_says_to_await_instead() {
    bounded(QUICK, || {
        let rt = Arc::new(RuntimeThread::builder().start().unwrap());
        let inner = rt.clone();
        let (blocked, awaited) = rt
            .run_threadsafe(async move {
                let mut nested = inner.run_threadsafe(async { 1 });
                let blocked = nested.wait_timeout(QUICK).err();
                // The same handle, awaited instead, completes.
                (blocked, nested.await)
            })
            .wait()
            .unwrap();
        assert!(matches!(blocked, Some(Error::WouldDeadlock)), "{blocked:?}");
        assert_eq!(awaited.unwrap(), 1);
        let blocking_inner = rt.clone();
        let waited = rt
            .run_threadsafe(async move { blocking_inner.submit_blocking(|| 2).wait() })
            .wait()
            .unwrap();
        assert!(matches!(waited, Err(Error::WouldDeadlock)));
    });
}

#[test]
fn a_wait_on_an_already_finished_handle_works_even_on_the_runtime_thread() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().start().unwrap();
        let never_started = RuntimeThread::builder().build().unwrap();
        let resolved = never_started.run_threadsafe(async { 0 });
        let outcome = rt
            .run_threadsafe(async move { resolved.wait() })
            .wait()
            .unwrap();
        assert!(matches!(outcome, Err(Error::NotStarted)), "{outcome:?}");
    });
}

#[test]
fn a_blocking_wait_inside_a_multi_thread_runtime_task_works() {
    bounded(QUICK, || {
        let rt = Arc::new(
            RuntimeThread::builder()
                .flavor(Flavor::MultiThread { workers: 2 })
                .start()
                .unwrap(),
        );
        let inner = rt.clone();
        let value = rt
            .run_threadsafe(async move {
                let nested = inner.run_threadsafe(async {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    40
                });
                nested.wait().unwrap() + 2
            })
            .wait()
            .unwrap();
        assert_eq!(value, 42);
    });
}

#[test]
fn a_blocking_wait_inside_a_blocking_job_works() {
    bounded(QUICK, || {
        let rt = Arc::new(RuntimeThread::builder().start().unwrap());
        let inner = rt.clone();
        let value = rt
            .submit_blocking(move || inner.run_threadsafe(async { 6 }).wait().unwrap() * 7)
            .wait()
            .unwrap();
        assert_eq!(value, 42);
    });
}

#[test]
fn a_blocking_wait_from_an_unrelated_runtime_works() {
    bounded(QUICK, || {
        let rt = RuntimeThread::builder().start().unwrap();
        for flavor in ["current", "multi"] {
            let mut builder = match flavor {
                "current" => tokio::runtime::Builder::new_current_thread(),
                _ => tokio::runtime::Builder::new_multi_thread(),
            };
            let other = builder.enable_all().build().unwrap();
            let value = other.block_on(async { rt.run_threadsafe(async { 5 }).wait().unwrap() });
            assert_eq!(value, 5, "{flavor}");
            let spawned = other.block_on(async {
                let rt_value = rt.run_threadsafe(async { 6 });
                tokio::spawn(async move { rt_value.wait().unwrap() })
                    .await
                    .unwrap()
            });
            assert_eq!(spawned, 6, "{flavor}");
        }
    });
}
