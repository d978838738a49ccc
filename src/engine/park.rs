//! The runner's parked processes: drivers kept as data (not as suspended tasks) while their
//! processes wait only on control requests, so that a stopping runtime can still drop them.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use uuid::Uuid;

use super::shared::{Control, Parked, ProcessShared};

/// The processes of one runner whose drivers are parked.
#[derive(Default)]
pub(crate) struct ParkedProcesses(Mutex<ParkedSet>);

#[derive(Default)]
struct ParkedSet {
    /// Set when the runtime stops (or could not be watched): no driver parks any more.
    closed: bool,
    processes: HashMap<Uuid, Weak<ProcessShared>>,
}

impl ParkedProcesses {
    /// A set that refuses every driver: for a runtime that nothing could watch.
    pub(crate) fn closed() -> Self {
        ParkedProcesses(Mutex::new(ParkedSet {
            closed: true,
            processes: HashMap::new(),
        }))
    }

    /// Parks `driver` in its process unless `stays` no longer holds or the set is closed;
    /// false hands the driver back to keep running.
    pub(crate) fn park<D: Parked + 'static>(
        &self,
        shared: &Arc<ProcessShared>,
        stays: impl FnOnce(&Control) -> bool,
        driver: &mut Option<D>,
    ) -> bool {
        let mut set = self.0.lock();
        if set.closed || !shared.park(stays, driver) {
            return false;
        }
        set.processes
            .insert(shared.identity.pid, Arc::downgrade(shared));
        true
    }

    /// Forgets a parked process that has been woken.
    pub(crate) fn unpark(&self, pid: Uuid) {
        self.0.lock().processes.remove(&pid);
    }

    /// Drops every parked driver (each marks its process abandoned) and lets no more park.
    pub(crate) fn close(&self) {
        let parked: Vec<Weak<ProcessShared>> = {
            let mut set = self.0.lock();
            set.closed = true;
            set.processes.drain().map(|(_, shared)| shared).collect()
        };
        for shared in parked.iter().filter_map(Weak::upgrade) {
            drop(shared.take_parked());
        }
    }
}
