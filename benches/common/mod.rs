//! What the benchmarks compare against: a runtime thread set up by hand, the way a user would
//! without this crate.
#![allow(dead_code)]

use std::thread;
use std::time::Duration;

use criterion::Criterion;

/// Short warm-up and measurement windows: the whole suite stays within a few minutes.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// A current-thread tokio runtime driven by its own thread, as a user would set it up by hand.
pub struct RawRuntimeThread {
    pub handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RawRuntimeThread {
    pub fn start() -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            ready_tx.send(rt.handle().clone()).unwrap();
            let _ = rt.block_on(stop_rx);
        });
        RawRuntimeThread {
            handle: ready_rx.recv().unwrap(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for RawRuntimeThread {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}
