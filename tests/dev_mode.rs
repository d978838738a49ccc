//! The development mode: slow polls named, stalls reported while they last, failures nobody
//! read, and silence when the mode is off.

mod common;

use std::sync::{Arc, LazyLock, mpsc};
use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use parking_lot::{Condvar, Mutex};
use runtime_thread::RuntimeThread;
use runtime_thread::engine::{Command, Process, Runner, StepContext, StepError};
use runtime_thread::messaging::{
    Communicator, Handler, LocalCommunicator, SyncCommunicator, Value,
};

/// Every event logged in this test binary, one formatted line each. Each test runs its own
/// runtime thread, named after the test, and looks only at the lines that name it.
static EVENTS: LazyLock<Events> = LazyLock::new(|| {
    let events = Events::default();
    let sink = events.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .init();
    events
});

#[derive(Clone, Default)]
struct Events(Arc<(Mutex<Vec<String>>, Condvar)>);

impl std::io::Write for Events {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (lines, added) = &*self.0;
        lines.lock().push(String::from_utf8_lossy(buf).into_owned());
        added.notify_all();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Events {
    /// The lines that contain every one of `needles`.
    fn matching(&self, needles: &[&str]) -> Vec<String> {
        let lines = self.0.0.lock();
        lines
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .cloned()
            .collect()
    }

    /// Waits (up to 10 s) for a line that contains every one of `needles`.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (lines, added) = &*self.0;
        let mut lines = lines.lock();
        loop {
            if let Some(line) = lines
                .iter()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return line.clone();
            }
            if added.wait_until(&mut lines, deadline).timed_out() {
                panic!("no event containing {needles:?}");
            }
        }
    }
}

fn dev_thread(name: &str) -> RuntimeThread {
    LazyLock::force(&EVENTS);
    RuntimeThread::builder()
        .name(name)
        .dev_mode(true)
        .start()
        .unwrap()
}

#[test]
fn a_future_that_blocks_the_thread_gives_one_warning_naming_it_and_the_time() {
    bounded(QUICK, || {
        let rt = dev_thread("dev-blocking");
        let line = line!() + 1;
        rt.run_threadsafe(async { std::thread::sleep(Duration::from_millis(150)) })
            .wait()
            .unwrap();
        let report = rt.stop().unwrap();

        let place = format!("tests/dev_mode.rs:{line}");
        let warnings = EVENTS.matching(&["slow poll", "dev-blocking"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&place), "{}", warnings[0]);
        assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
        // 150 ms is a slow poll, not a stall: the watchdog said nothing.
        assert!(EVENTS.matching(&["stall:", "dev-blocking"]).is_empty());

        let seen = report.dev.expect("the mode was on");
        assert_eq!(seen.slow_polls, 1);
        assert!(seen.slowest[0].work.contains(&place), "{seen:?}");
        // Timed on a coarse clock (a few ms), which thresholds of 100 ms do not need finer.
        assert!(
            seen.slowest[0].held >= Duration::from_millis(140),
            "{seen:?}"
        );
        assert!(seen.stalls.is_empty(), "{seen:?}");
    });
}

#[test]
fn a_stall_is_reported_by_the_watchdog_while_it_lasts() {
    bounded(QUICK, || {
        let rt = dev_thread("dev-stall");
        let (release, released) = mpsc::channel::<()>();
        let stuck = rt.named("the stuck job").run_threadsafe(async move {
            // Blocks the runtime thread until the test has seen the watchdog's report (or 5 s).
            let _ = released.recv_timeout(Duration::from_secs(5));
        });
        let started = Instant::now();
        let stall = EVENTS.wait_for(&["stall:", "dev-stall"]);
        let seen_after = started.elapsed();
        // Seen while the job still held the thread: it only ends when released below.
        assert!(!stuck.is_finished());
        assert!(stall.contains("the stuck job"), "{stall}");
        assert!(seen_after < Duration::from_secs(4), "{seen_after:?}");
        assert!(
            thread_names()
                .iter()
                .any(|name| name.starts_with("dev-stall-watch"))
        );
        release.send(()).unwrap();
        stuck.wait().unwrap();
        let seen = rt.stop().unwrap().dev.unwrap();
        assert_eq!(seen.stalls.len(), 1, "{seen:?}");
        assert_eq!(seen.stalls[0].work, "the stuck job");
        assert!(
            seen.stalls[0].running_for >= Duration::from_millis(250),
            "{seen:?}"
        );
    });
}

struct Crunch;

impl Process for Crunch {
    async fn step(&mut self, step: &str, _: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" => Ok(Command::next("crunch")),
            _ => {
                std::thread::sleep(Duration::from_millis(150));
                Ok(Command::finish())
            }
        }
    }
}

#[test]
fn an_engine_step_that_blocks_is_named_by_process_type_pid_and_step() {
    bounded(QUICK, || {
        let rt = Arc::new(dev_thread("dev-engine"));
        let runner = Runner::builder().thread(rt.clone()).start().unwrap();
        let handle = runner.submit(Crunch);
        let pid = handle.pid();
        handle.wait().unwrap();
        let warning = EVENTS.wait_for(&["slow poll", "dev-engine"]);
        assert!(
            warning.contains(&format!("process Crunch {pid} in step 'crunch'")),
            "{warning}"
        );
        drop(runner);
        rt.stop().unwrap();
    });
}

#[test]
fn a_message_handler_that_blocks_is_named_by_its_subscriber() {
    bounded(QUICK, || {
        let rt = Arc::new(dev_thread("dev-messaging"));
        let comm = SyncCommunicator::new(LocalCommunicator::new(), rt.clone());
        let slow = Handler::sync(|value: Value| {
            std::thread::sleep(Duration::from_millis(150));
            value
        });
        comm.add_rpc_subscriber("slow-echo", slow).wait().unwrap();
        assert_eq!(comm.rpc_send("slow-echo", 7.into()).wait().unwrap(), 7);
        let warning = EVENTS.wait_for(&["slow poll", "dev-messaging"]);
        assert!(warning.contains("rpc subscriber 'slow-echo'"), "{warning}");
        comm.close();
        let seen = rt.stop().unwrap().dev.unwrap();
        assert_eq!(seen.slow_polls, 1, "{seen:?}");
    });
}

#[test]
fn a_dropped_handle_whose_work_panicked_is_reported_and_a_successful_one_is_not() {
    bounded(QUICK, || {
        let rt = dev_thread("dev-unread");
        // Dropped before the work ran: reported when it panics.
        let early = line!() + 1;
        drop(rt.run_threadsafe(async {
            tokio::task::yield_now().await;
            panic!("nobody reads this")
        }));
        // Dropped after the work panicked: reported at the drop.
        let late = line!() + 1;
        let finished = rt.run_threadsafe(async { panic!("nor this") });
        while !finished.is_finished() {
            std::thread::yield_now();
        }
        drop(finished);
        // Successful work, and a failure whose handle was read: nothing to report.
        let fine = line!() + 1;
        drop(rt.run_threadsafe(async { 1 }));
        let read = line!() + 1;
        let read_handle = rt.run_threadsafe(async { panic!("this one is read") });
        assert!(read_handle.wait().is_err());

        let at = |line: u32| format!("tests/dev_mode.rs:{line}:");
        let first = EVENTS.wait_for(&["unread failure", &at(early)]);
        assert!(first.contains("nobody reads this"), "{first}");
        let second = EVENTS.wait_for(&["unread failure", &at(late)]);
        assert!(second.contains("nor this"), "{second}");
        rt.stop().unwrap();
        assert!(EVENTS.matching(&["unread failure", &at(fine)]).is_empty());
        assert!(EVENTS.matching(&["unread failure", &at(read)]).is_empty());
    });
}

#[test]
fn with_the_mode_off_nothing_is_timed_or_reported() {
    bounded(QUICK, || {
        LazyLock::force(&EVENTS);
        let rt = RuntimeThread::builder()
            .name("dev-off")
            .dev_mode(false)
            .start()
            .unwrap();
        rt.run_threadsafe(async { std::thread::sleep(Duration::from_millis(150)) })
            .wait()
            .unwrap();
        drop(rt.run_threadsafe(async { panic!("unreported") }));
        let report = rt.stop().unwrap();
        assert!(report.dev.is_none());
        assert!(
            EVENTS
                .matching(&["runtime_thread::dev", "dev-off"])
                .is_empty()
        );
        // No watchdog thread was started either.
        // (Linux shows 15 bytes of a thread's name.)
        assert!(
            !thread_names()
                .iter()
                .any(|name| name.starts_with("dev-off-watch"))
        );
    });
}

#[test]
fn zero_thresholds_are_refused() {
    let refused = RuntimeThread::builder()
        .dev_mode(true)
        .slow_poll_threshold(Duration::ZERO)
        .build();
    assert!(matches!(
        refused,
        Err(runtime_thread::Error::InvalidConfig(_))
    ));
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

struct Fails;

impl Process for Fails {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        tokio::task::yield_now().await;
        Err(StepError::msg("the input file is missing"))
    }
}

struct Succeeds;

impl Process for Succeeds {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Ok(Command::finish())
    }
}

#[test]
fn a_dropped_process_handle_whose_process_excepted_is_reported() {
    bounded(QUICK, || {
        let rt = Arc::new(dev_thread("dev-process-unread"));
        let runner = Runner::builder().thread(rt.clone()).start().unwrap();
        let failed = runner.submit(Fails);
        let pid = failed.pid();
        drop(failed);
        let fine = runner.submit(Succeeds);
        let fine_pid = fine.pid();
        drop(fine);
        let read = runner.submit(Fails);
        let read_pid = read.pid();
        assert!(read.wait().unwrap().into_outputs().is_err());

        let report = EVENTS.wait_for(&["unread failure", &pid.to_string()]);
        assert!(report.contains("the input file is missing"), "{report}");
        assert!(report.contains("process Fails"), "{report}");
        drop(runner);
        rt.stop().unwrap();
        assert!(
            EVENTS
                .matching(&["unread failure", &fine_pid.to_string()])
                .is_empty()
        );
        assert!(
            EVENTS
                .matching(&["unread failure", &read_pid.to_string()])
                .is_empty()
        );
    });
}

#[test]
fn a_dropped_reply_whose_operation_failed_is_reported() {
    bounded(QUICK, || {
        let rt = Arc::new(dev_thread("dev-reply-unread"));
        let comm = SyncCommunicator::new(LocalCommunicator::new(), rt.clone());
        let unrouted = line!() + 1;
        drop(comm.rpc_send("nobody-serves-this", 1.into()));
        comm.add_rpc_subscriber("echo-for-unread", Handler::sync(|v: Value| v))
            .wait()
            .unwrap();
        let routed = line!() + 1;
        drop(comm.rpc_send("echo-for-unread", 2.into()));

        let at = |line: u32| format!("tests/dev_mode.rs:{line}:");
        let report = EVENTS.wait_for(&["unread failure", &at(unrouted)]);
        assert!(report.contains("nobody-serves-this"), "{report}");
        comm.close();
        rt.stop().unwrap();
        assert!(EVENTS.matching(&["unread failure", &at(routed)]).is_empty());
    });
}
