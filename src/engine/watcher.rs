//! [`ProcessWatcher`]: how a layer above the engine reaches every process a runner runs.

use std::sync::Arc;

use super::handle::ProcessController;
use super::listener::ProcessListener;

/// Sees every process that a runner starts or loads, children included, before its first step:
/// the hook through which the control layer makes processes reachable over messaging. Given
/// to the runner with [`RunnerBuilder::watcher`](super::RunnerBuilder::watcher).
///
/// The process has already entered its first state when the watcher sees it, so a listener it
/// returns hears every change after that one.
pub trait ProcessWatcher: Send + Sync + 'static {
    /// `process` was created or loaded; a listener returned is attached to it for its life.
    /// Called on the thread that starts the process: keep it short.
    fn on_process(&self, process: &ProcessController) -> Option<Arc<dyn ProcessListener>>;
}
