//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(feature = "amqp")]
pub mod broker;
#[cfg(unix)]
pub mod os;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod processes;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Runs `body` on its own thread and fails the test if it takes longer than `limit`: every test
/// that could hang goes through this watchdog so CI never stalls.
pub fn bounded<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name("bounded-test".into())
        .spawn(move || {
            let _ = tx.send(body());
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("test thread");
            value
        }
        Err(RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?}: it hangs"),
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body returned without sending"),
        },
    }
}

/// A runner on a runtime thread of its own named `name`, keeping its checkpoints in `store`;
/// the test registers its process types.
pub fn runner_on(
    store: std::sync::Arc<dyn runtime_thread::engine::Persister>,
    name: &str,
) -> runtime_thread::engine::Runner {
    let thread = runtime_thread::RuntimeThread::builder()
        .name(name)
        .start()
        .unwrap();
    runtime_thread::engine::Runner::builder()
        .thread(std::sync::Arc::new(thread))
        .persister(store)
        .start()
        .unwrap()
}

/// The default bound for tests that should take well under a second.
pub const QUICK: Duration = Duration::from_secs(20);

/// Spins (yielding) until `condition` holds; call it inside [`bounded`], which ends a wait that
/// never comes. For state observed through snapshots, where no notification exists.
pub fn until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        std::thread::yield_now();
    }
}

/// A process listener that records what it hears, one line per event: `from->to` (`-` for the
/// first state), `paused`, `played`, `out:<name>`, `abandoned`.
#[derive(Default)]
pub struct Recorder(pub parking_lot::Mutex<Vec<String>>);

impl runtime_thread::engine::ProcessListener for Recorder {
    fn on_state_changed(
        &self,
        _: uuid::Uuid,
        from: Option<runtime_thread::engine::ProcessState>,
        to: runtime_thread::engine::ProcessState,
    ) {
        let from = from.map_or("-".to_owned(), |f| f.to_string());
        self.0.lock().push(format!("{from}->{to}"));
    }
    fn on_paused(&self, _: uuid::Uuid) {
        self.0.lock().push("paused".into());
    }
    fn on_played(&self, _: uuid::Uuid) {
        self.0.lock().push("played".into());
    }
    fn on_output(&self, _: uuid::Uuid, name: &str, _: &serde_json::Value) {
        self.0.lock().push(format!("out:{name}"));
    }
    fn on_abandoned(&self, _: uuid::Uuid) {
        self.0.lock().push("abandoned".into());
    }
}
