//! What the pool's actor is asked: the one queue through which the handle and the control
//! socket change the pool.

use tokio::sync::oneshot;

use super::status::PoolStatus;

/// A change of the pool's size.
pub(super) enum Resize {
    By(isize),
    To(usize),
}

/// What the pool's actor is asked to do, in order (from the handle or the control socket).
pub(super) enum Request {
    /// Resize; answers the new target.
    Resize(Resize, oneshot::Sender<usize>),
    /// Replace every worker (each is stopped as in a stop and replaced at once); answers how
    /// many were told to stop.
    Restart(oneshot::Sender<usize>),
    /// Stop every worker (then every service) and end; answers the last status once all
    /// have exited.
    Quit(oneshot::Sender<PoolStatus>),
    /// A service's status changed: publish the pool's again.
    Refresh,
}
