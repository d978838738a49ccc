//! What the RabbitMQ transport shows through `tracing`: each event at the level it deserves,
//! and never a message body. An unroutable RPC is the caller's error, already returned to it;
//! a failed connect is the caller's error too. Neither may come out as a WARN or an ERROR of
//! lapin's, let alone one carrying the message. One test: the subscriber is process-wide.
#![cfg(feature = "amqp")]

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{Communicator, Error};
use serde_json::json;

mod common;
use common::broker::runtime;
use common::{bounded, broker};

/// Every line the subscriber writes, and a signal for each.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (lines, written) = &*self.0;
        let line = String::from_utf8_lossy(buf).into_owned();
        lines.lock().unwrap().push(line);
        written.notify_all();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Every line written so far, once `complete` holds for them or `limit` has passed.
    fn take_once(&self, complete: impl Fn(&[String]) -> bool, limit: Duration) -> Vec<String> {
        let (lines, written) = &*self.0;
        let guard = lines.lock().unwrap();
        let (mut guard, _) = written
            .wait_timeout_while(guard, limit, |lines| !complete(lines))
            .unwrap();
        std::mem::take(&mut *guard)
    }
}

const BODY: &str = "a-body-that-must-not-be-logged";

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn unroutable_rpcs_and_failed_connects_log_no_warnings_and_no_bodies() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_thread_names(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();
    bounded(Duration::from_secs(60), move || {
        runtime().block_on(async {
            let comm = AmqpCommunicator::connect(broker::config()).await.unwrap();
            for _ in 0..3 {
                let sent = comm.rpc_send("nobody", json!({ "secret": BODY })).await;
                assert!(matches!(sent, Err(Error::Unroutable { .. })), "{sent:?}");
            }
            comm.close().await;
            let nowhere = broker::config()
                .url("amqp://guest:guest@127.0.0.1:1/%2f")
                .connect_timeout(Duration::from_secs(5));
            assert!(AmqpCommunicator::connect(nowhere).await.is_err());
            let refused = broker::config().url(broker::url_as("guest", "wrong"));
            assert!(AmqpCommunicator::connect(refused).await.is_err());
        });
        // lapin's I/O thread reports the refused login last: the lines are complete once it
        // has.
        let refusal_shown = |shown: &[String]| {
            shown
                .iter()
                .any(|l| l.contains(" DEBUG ") && l.contains("ACCESS_REFUSED"))
        };
        let shown = lines.take_once(refusal_shown, Duration::from_secs(5));
        for line in &shown {
            eprint!("{line}");
        }
        let loud: Vec<&String> = shown
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(
            loud.is_empty(),
            "warnings or errors for the caller's own errors: {loud:#?}"
        );
        assert!(
            !shown.iter().any(|l| l.contains(BODY)),
            "a message body was logged"
        );
        // lapin's report of the refused login is still there for whoever asks for DEBUG.
        assert!(
            refusal_shown(&shown),
            "lapin's own report of the refused login was lost"
        );
    });
}
