//! No OS thread outlives a stopped runtime thread, nor a runner the user has dropped. Thread
//! counts are per process, so the scenarios run in turn in one test, and each allows the count
//! to fall below where it started (a thread of the harness may end meanwhile), never to stay
//! above it.

mod common;

use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use runtime_thread::engine::{
    Command, EngineError, Process, ProcessState, Runner, StepContext, StepError,
};
use runtime_thread::{Error, Flavor, RuntimeThread};

/// The counts are the whole process's, so nothing else may start or end a thread meanwhile:
/// the test harness starts a test's thread when another test ends, so the scenarios are not
/// tests of their own but run one after another in this binary's only test.
#[test]
fn no_os_thread_outlives_what_started_it() {
    bounded(Duration::from_secs(60), || {
        no_os_threads_are_left_after_a_guard_drops();
        dropping_the_last_runner_stops_its_thread_and_abandons_its_processes();
        a_runtime_thread_that_drops_its_own_last_handle_at_shutdown_ends_cleanly();
    });
}

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux /proc")
        .count()
}

/// The kernel drops a thread's /proc entry a moment after the joiner is woken, and nothing
/// notifies that moment, so poll it, briefly and with a bound.
fn settles_to_at_most(most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = os_threads();
        if now <= most || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn no_os_threads_are_left_after_a_guard_drops() {
    let before = os_threads();
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread { workers: 2 }] {
        let rt = RuntimeThread::builder().flavor(flavor).build().unwrap();
        {
            let running = rt.start_guard().unwrap();
            // Bring up the blocking pool too.
            let blocking: Vec<_> = (0..4).map(|i| running.submit_blocking(move || i)).collect();
            for job in blocking {
                job.wait().unwrap();
            }
            assert_eq!(running.run_threadsafe(async { 1 }).wait().unwrap(), 1);
            assert!(os_threads() > before, "{flavor:?} started threads");
        }
        let after = settles_to_at_most(before);
        assert!(
            after <= before,
            "{flavor:?} left threads behind: {after} > {before}"
        );
    }
}

/// Waits for a resume that never comes (its driver parks, as data).
struct WaitsForResume;

impl Process for WaitsForResume {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Ok(Command::wait_for_resume("never"))
    }
}

/// Sleeps an hour (its driver stays a task, on a timer).
struct Sleeps;

impl Process for Sleeps {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Ok(Command::sleep("never", Duration::from_secs(3600)))
    }
}

fn until_waiting(handle: &runtime_thread::engine::ProcessHandle) {
    handle
        .wait_for_state(ProcessState::Waiting, QUICK)
        .expect("the process reaches Waiting");
}

fn dropping_the_last_runner_stops_its_thread_and_abandons_its_processes() {
    let before = os_threads();
    let runner = Runner::start().unwrap();
    let clone = runner.clone();
    let parked = runner.submit(WaitsForResume);
    let sleeping = runner.submit(Sleeps);
    until_waiting(&parked);
    until_waiting(&sleeping);
    assert!(os_threads() > before, "the runner started its thread");
    drop(runner);
    assert!(os_threads() > before, "a clone still holds the runner");
    drop(clone);
    // The handles outlive the runner and say what became of their processes.
    for handle in [parked, sleeping] {
        assert!(matches!(
            handle.wait(),
            Err(EngineError::Thread(Error::Stopped))
        ));
    }
    let after = settles_to_at_most(before);
    assert!(
        after <= before,
        "the engine thread outlived its runner: {after} > {before}"
    );
}

fn a_runtime_thread_that_drops_its_own_last_handle_at_shutdown_ends_cleanly() {
    // A panic on the runtime thread (a thread joining itself) is counted here.
    let panics = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("self-held") {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        previous(info);
    }));
    let before = os_threads();
    let rt = std::sync::Arc::new(
        RuntimeThread::builder()
            .name("self-held")
            .grace_period(Duration::from_millis(10))
            .start()
            .unwrap(),
    );
    // The only other handle lives in a task that never ends: the stop drops it, on the
    // runtime thread, as the last one.
    let held = rt.clone();
    rt.spawn_threadsafe(async move {
        let _held = held;
        std::future::pending::<()>().await;
    })
    .unwrap();
    rt.request_stop();
    drop(rt);
    let after = settles_to_at_most(before);
    let _ = std::panic::take_hook();
    assert_eq!(
        panics.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the thread panicked"
    );
    assert!(
        after <= before,
        "the runtime thread never ended: {after} > {before}"
    );
}
