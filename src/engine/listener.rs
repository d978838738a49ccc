//! Listeners: observers of a process's life.

use serde_json::Value;
use uuid::Uuid;

use super::state::ProcessState;

/// Observes a process. Every method has an empty default; a listener that panics is logged and
/// the process carries on.
pub trait ProcessListener: Send + Sync + 'static {
    /// The process entered `to` (from `from`; `None` for the first state, `Created`).
    fn on_state_changed(&self, _pid: Uuid, _from: Option<ProcessState>, _to: ProcessState) {}
    /// The process paused (between steps, or interrupting a wait).
    fn on_paused(&self, _pid: Uuid) {}
    /// The process was played again.
    fn on_played(&self, _pid: Uuid) {}
    /// The process emitted an output.
    fn on_output(&self, _pid: Uuid, _name: &str, _value: &Value) {}
    /// The process stopped here without ending: its runner closed
    /// ([`Runner::close`](super::Runner::close)) or its runtime stopped. Its state reads
    /// `Killed` here, but its last checkpoint stays for a runner elsewhere to continue it, so
    /// this is not announced as a kill.
    fn on_abandoned(&self, _pid: Uuid) {}
}
