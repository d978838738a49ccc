//! [`ProcessWatcher`]: how a layer above the engine reaches every process a runner runs.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::handle::ProcessController;
use super::listener::ProcessListener;

/// Sees every process that a runner starts or loads, children included, before its first step:
/// the hook through which the control layer makes processes reachable over messaging. Given
/// to the runner with [`RunnerBuilder::watcher`](super::RunnerBuilder::watcher).
///
/// The process has already entered its first state when the watcher sees it, so a listener it
/// attaches hears every change after that one.
pub trait ProcessWatcher: Send + Sync + 'static {
    /// `process` was created or loaded: say what to attach to it. Called on the thread that
    /// starts the process: keep it short, and put what must be waited for in
    /// [`Watch::hold_until`].
    fn on_process(&self, process: &ProcessController) -> Watch;
}

/// What a [`ProcessWatcher`] does with one process: a listener to attach for its life, and
/// something its first step waits for.
#[derive(Default)]
#[must_use = "a watch does nothing until returned to the runner"]
pub struct Watch {
    pub(crate) listener: Option<Arc<dyn ProcessListener>>,
    pub(crate) hold: Option<BoxFuture<'static, ()>>,
}

impl Watch {
    /// Attaches nothing.
    pub fn nothing() -> Self {
        Watch::default()
    }

    /// Attaches `listener` to the process.
    pub fn listener(mut self, listener: Arc<dyn ProcessListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Holds the process's first step until `ready` completes (the process stays `Created`
    /// meanwhile; requests to it wait): for a subscription over the network, so that a process
    /// is reachable before it does anything. Cheap when unused: only a held process pays for
    /// the hold.
    pub fn hold_until(mut self, ready: impl Future<Output = ()> + Send + 'static) -> Self {
        self.hold = Some(Box::pin(ready));
        self
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("listener", &self.listener.is_some())
            .field("hold", &self.hold.is_some())
            .finish()
    }
}
