//! Failures of fire-and-forget work are reported through `tracing`, never lost.

mod common;

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use runtime_thread::RuntimeThread;

struct LineWriter(Sender<String>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || LineWriter(tx.clone()))
        .init();
    rx
}

fn wait_for(events: &Receiver<String>, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no event containing {needles:?}"));
        if needles.iter().all(|n| event.contains(n)) {
            return event;
        }
    }
}

#[test]
fn spawned_failures_panics_and_lifecycle_are_logged() {
    let events = capture();
    bounded(QUICK, move || {
        let rt = RuntimeThread::builder().name("traced").start().unwrap();
        wait_for(&events, &["runtime thread started", "traced"]);
        rt.spawn_threadsafe(async { Err::<(), _>("the broker went away") })
            .unwrap();
        let failed = wait_for(&events, &["the broker went away"]);
        assert!(failed.contains("ERROR"), "{failed}");
        rt.spawn_threadsafe(async {
            tokio::task::yield_now().await;
            if true {
                panic!("fire-and-forget boom")
            }
        })
        .unwrap();
        let panicked = wait_for(&events, &["fire-and-forget boom"]);
        assert!(
            panicked.contains("ERROR") && panicked.contains("panicked"),
            "{panicked}"
        );
        rt.stop().unwrap();
        wait_for(&events, &["runtime thread stopped", "traced"]);
    });
}
