//! The state a process shares with its handles: control requests in, status out.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::exit_code::ExitCode;
use super::handle::{ProcessOutcome, ProcessStatus};
use super::listener::ProcessListener;
use super::process::Outputs;
use super::state::ProcessState;

/// Requests from handles. Kept as state, not as events, so none is lost: a resume that arrives
/// while the process is paused is still there after `play`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Control {
    pub(crate) paused: bool,
    pub(crate) kill: Option<KillRequest>,
    pub(crate) resume: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct KillRequest {
    pub(crate) message: String,
    pub(crate) force: bool,
}

struct Status {
    state: ProcessState,
    paused: bool,
    text: Option<String>,
    /// Waiting for an external resume (not for a timer or a future).
    awaiting_resume: bool,
}

pub(crate) struct ProcessShared {
    pub(crate) pid: Uuid,
    ctime: SystemTime,
    type_name: &'static str,
    pub(crate) control: watch::Sender<Control>,
    status: Mutex<Status>,
    listeners: Vec<Arc<dyn ProcessListener>>,
}

impl ProcessShared {
    pub(crate) fn new(type_name: &'static str, listeners: Vec<Arc<dyn ProcessListener>>) -> Self {
        let shared = ProcessShared {
            pid: Uuid::new_v4(),
            ctime: SystemTime::now(),
            type_name,
            control: watch::Sender::new(Control::default()),
            status: Mutex::new(Status {
                state: ProcessState::Created,
                paused: false,
                text: None,
                awaiting_resume: false,
            }),
            listeners,
        };
        shared.notify(|l, pid| l.on_state_changed(pid, None, ProcessState::Created));
        shared
    }

    pub(crate) fn state(&self) -> ProcessState {
        self.status.lock().state
    }

    pub(crate) fn awaiting_resume(&self) -> bool {
        self.status.lock().awaiting_resume
    }

    pub(crate) fn set_awaiting_resume(&self, awaiting: bool) {
        self.status.lock().awaiting_resume = awaiting;
    }

    pub(crate) fn snapshot(&self) -> ProcessStatus {
        let status = self.status.lock();
        ProcessStatus {
            pid: self.pid,
            ctime: self.ctime,
            process: self.type_name.to_owned(),
            state: status.state,
            paused: status.paused,
            status: status.text.clone(),
            awaiting_resume: status.awaiting_resume,
        }
    }

    /// Moves to `to` if the table allows it; returns whether it did.
    pub(crate) fn transition(&self, to: ProcessState) -> bool {
        let from = {
            let mut status = self.status.lock();
            let from = status.state;
            if from == to && to != ProcessState::Running {
                return true;
            }
            if let Err(error) = from.check_transition(to) {
                tracing::error!(pid = %self.pid, %error, "refused a process transition");
                return false;
            }
            status.state = to;
            from
        };
        self.notify(|l, pid| l.on_state_changed(pid, Some(from), to));
        true
    }

    pub(crate) fn set_paused(&self, paused: bool, text: Option<String>) {
        {
            let mut status = self.status.lock();
            status.paused = paused;
            if paused {
                status.text = text;
            } else {
                status.text = None;
            }
        }
        if paused {
            self.notify(|l, pid| l.on_paused(pid));
        } else {
            self.notify(|l, pid| l.on_played(pid));
        }
    }

    pub(crate) fn finish(&self, exit_code: ExitCode, outputs: Outputs) -> ProcessOutcome {
        self.end(ProcessState::Finished, exit_code.message.clone());
        ProcessOutcome::Finished { exit_code, outputs }
    }

    pub(crate) fn except(&self, message: String) -> ProcessOutcome {
        tracing::debug!(pid = %self.pid, error = %message, "process excepted");
        self.end(ProcessState::Excepted, Some(message.clone()));
        ProcessOutcome::Excepted { message }
    }

    pub(crate) fn kill(&self, message: String) -> ProcessOutcome {
        self.end(ProcessState::Killed, Some(message.clone()));
        ProcessOutcome::Killed { message }
    }

    fn end(&self, state: ProcessState, text: Option<String>) {
        {
            let mut status = self.status.lock();
            status.paused = false;
            status.awaiting_resume = false;
            status.text = text;
        }
        self.transition(state);
    }

    pub(crate) fn notify_output(&self, name: &str, value: &Value) {
        self.notify(|l, pid| l.on_output(pid, name, value));
    }

    fn notify(&self, event: impl Fn(&dyn ProcessListener, Uuid)) {
        for listener in &self.listeners {
            if catch_unwind(AssertUnwindSafe(|| event(listener.as_ref(), self.pid))).is_err() {
                tracing::error!(pid = %self.pid, "a process listener panicked; the process carries on");
            }
        }
    }
}
