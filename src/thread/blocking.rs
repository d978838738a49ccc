//! Bookkeeping for blocking jobs, which tokio can neither cancel nor abort: the ones still running
//! at stop are left detached, and their handles are resolved with `Stopped` so nobody waits on them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::completion::Resolve;

#[derive(Default)]
pub(crate) struct BlockingRegistry {
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    next_id: u64,
    jobs: HashMap<u64, Arc<dyn Resolve>>,
}

impl BlockingRegistry {
    /// Records a job that has started running; returns its ticket.
    pub(crate) fn enter(&self, job: Arc<dyn Resolve>) -> u64 {
        let mut running = self.running.lock();
        running.next_id += 1;
        let id = running.next_id;
        running.jobs.insert(id, job);
        id
    }

    /// Records that the job finished; false if it had been abandoned at stop meanwhile.
    pub(crate) fn leave(&self, id: u64) -> bool {
        self.running.lock().jobs.remove(&id).is_some()
    }

    pub(crate) fn running(&self) -> usize {
        self.running.lock().jobs.len()
    }

    /// Resolves every still-running job's handle with `Stopped`; returns how many there were.
    pub(crate) fn abandon_all(&self) -> usize {
        let jobs: Vec<_> = self
            .running
            .lock()
            .jobs
            .drain()
            .map(|(_, job)| job)
            .collect();
        for job in &jobs {
            job.abandon();
        }
        jobs.len()
    }
}
