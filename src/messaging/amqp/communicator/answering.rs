//! [`Answering`]: the final answers being sent, so that a close lets them go out.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Final answers on their way out (a task's acknowledgement and reply, an RPC's reply). A
/// close waits for them, up to a bound, rather than cut them off: a task acknowledged whose
/// reply was cut would leave its sender waiting for an answer that never comes. An answer
/// that would start once the close has begun is not sent at all: its task, unacknowledged,
/// goes back to the queue with the connection, for another worker.
#[derive(Default)]
pub(super) struct Answering {
    state: Mutex<State>,
    /// Told when the last answer in flight is out, while draining.
    out: Notify,
}

#[derive(Default)]
struct State {
    draining: bool,
    in_flight: usize,
}

/// One answer in flight; dropping it counts it out.
pub(super) struct Answer<'a>(&'a Answering);

impl Answering {
    /// Counts one answer in, unless a close has begun.
    pub(super) fn begin(&self) -> Option<Answer<'_>> {
        let mut state = self.state.lock();
        if state.draining {
            return None;
        }
        state.in_flight += 1;
        Some(Answer(self))
    }

    /// Lets no answer start any more, and waits up to `limit` for those in flight.
    pub(super) async fn drain(&self, limit: Duration) {
        let all_out = async {
            loop {
                let out = self.out.notified();
                tokio::pin!(out);
                // Registered before the count is read, so that the last answer is heard.
                out.as_mut().enable();
                {
                    let mut state = self.state.lock();
                    state.draining = true;
                    if state.in_flight == 0 {
                        return;
                    }
                }
                out.await;
            }
        };
        if tokio::time::timeout(limit, all_out).await.is_err() {
            tracing::warn!(
                ?limit,
                "answers still in flight when the communicator closed"
            );
        }
    }
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 && state.draining {
            self.0.out.notify_waiters();
        }
    }
}
