//! This program's leases in a shared SQLite file: who it is, what it holds, and the thread that
//! renews them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use super::db::Db;
use crate::engine::PersistError;
use crate::engine::persist::lease::Leases;

/// This program as an owner of leases.
pub(super) struct Ownership {
    pub(super) leases: Mutex<Leases>,
    /// How it names itself to programs that find its processes held.
    pub(super) name: String,
    /// How long its leases last unless renewed.
    pub(super) lease_for: Duration,
}

impl Ownership {
    /// Registers a new owner in `db`, its leases its own from now for `lease_for`.
    pub(super) fn register(
        db: &Db,
        name: String,
        lease_for: Duration,
    ) -> Result<Self, PersistError> {
        let started = Instant::now();
        let owner = Uuid::new_v4();
        db.register(owner, &name, lease_for)?;
        Ok(Ownership {
            leases: Mutex::new(Leases::new(owner, started + lease_for)),
            name,
            lease_for,
        })
    }

    pub(super) fn owner(&self) -> Uuid {
        self.leases.lock().owner()
    }

    /// Renews the leases; after they ran out (the program stalled, or could not write in
    /// time), every process held is lost and the program goes on as a new owner.
    fn renew(&self, db: &Db) {
        let started = Instant::now();
        let deadline = started + self.lease_for;
        match db.renew(self.owner(), self.lease_for) {
            Ok(true) => self.leases.lock().renewed(deadline),
            Ok(false) => {
                let owner = Uuid::new_v4();
                match db.register(owner, &self.name, self.lease_for) {
                    Ok(()) => {
                        let lost = self.leases.lock().expired(owner, deadline);
                        tracing::warn!(
                            lost,
                            "this program's leases ran out before they were renewed: its processes stop, for others to continue"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, "this program's leases ran out, and it could not register again; it retries");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the leases could not be renewed; saves are refused once they may have run out");
            }
        }
    }
}

/// The thread that renews the leases every third of their time, until the store is dropped.
pub(super) struct Keeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    pub(super) fn start(db: Arc<Db>, ownership: Arc<Ownership>) -> Result<Self, PersistError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let every = ownership.lease_for / 3;
        let thread = std::thread::Builder::new()
            .name("sqlite-leases".into())
            .spawn(move || {
                let (flag, wake) = &*stopped;
                let mut next = Instant::now() + every;
                loop {
                    {
                        let mut stopping = flag.lock();
                        // A timer: renewal is due at a time, not on an event.
                        while !*stopping && Instant::now() < next {
                            wake.wait_until(&mut stopping, next);
                        }
                        if *stopping {
                            return;
                        }
                    }
                    next = Instant::now() + every;
                    ownership.renew(&db);
                }
            })
            .map_err(|e| PersistError::store("cannot start the lease thread", e))?;
        Ok(Keeper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
