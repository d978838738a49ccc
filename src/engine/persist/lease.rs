//! The leases one program holds in a store it shares with others (SQLite between OS processes,
//! PostgreSQL between machines): what each save is fenced with, and what was lost.
//!
//! The store itself keeps the truth (an owner row renewed all at once, a lease row per process
//! with its fencing token); this is the program's side of it, so that a save of a process whose
//! lease is lost, or may be, is refused before the database is asked.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::PersistError;

/// How long a program's leases last unless it renews them, by default.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The shortest lease a store accepts: it is renewed every third of its time, and a renewal
/// must fit between a busy program's other work (a lease of nothing would renew in a loop).
pub(crate) const SHORTEST_LEASE: Duration = Duration::from_millis(300);

/// Refuses a lease too short to be renewed reliably.
pub(crate) fn check_lease(lease_for: Duration) -> Result<(), PersistError> {
    if lease_for < SHORTEST_LEASE {
        return Err(PersistError::store_failed(format!(
            "a lease of {lease_for:?} is too short to renew reliably; give at least {SHORTEST_LEASE:?}"
        )));
    }
    Ok(())
}

/// This machine's name, as owners name themselves by default.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// `host:pid`: how a program names itself to others that find its processes held.
pub(crate) fn default_owner_name() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// The leases this program holds, as one owner that renews them all at once.
#[derive(Debug)]
pub(crate) struct Leases {
    /// This program's identity in the store's owners; a new one after it expired.
    owner: Uuid,
    /// The processes it holds, with their fencing tokens (0: made here, its first save takes
    /// the lease).
    held: HashMap<Uuid, i64>,
    /// The processes whose lease it lost, until the engine gives them up.
    lost: HashSet<Uuid>,
    /// Until when its leases are surely its own: the start of its last renewal plus the lease
    /// time (the store's clock gives them at least that long).
    deadline: Instant,
}

impl Leases {
    pub(crate) fn new(owner: Uuid, deadline: Instant) -> Self {
        Leases {
            owner,
            held: HashMap::new(),
            lost: HashSet::new(),
            deadline,
        }
    }

    pub(crate) fn owner(&self) -> Uuid {
        self.owner
    }

    /// The token a delete of `pid` is fenced with (`None`: not held here, the delete is not
    /// fenced); `LeaseLost` if the lease is lost, or may be (the deadline passed: the program
    /// stalled, or could not renew).
    pub(crate) fn token(&mut self, pid: Uuid) -> Result<Option<i64>, PersistError> {
        // One clock read per save: this is on every save's path.
        if Instant::now() >= self.deadline {
            self.lose_all();
            return Err(PersistError::LeaseLost { pid });
        }
        if self.lost.contains(&pid) {
            return Err(PersistError::LeaseLost { pid });
        }
        Ok(self.held.get(&pid).copied())
    }

    /// The token a save of `pid` is fenced with: a process not held is one made here, whose
    /// first save takes its lease (token 0).
    pub(crate) fn save_token(&mut self, pid: Uuid) -> Result<i64, PersistError> {
        match self.token(pid)? {
            Some(token) => Ok(token),
            None => Ok(*self.held.entry(pid).or_insert(0)),
        }
    }

    /// This program now holds `pid`, with `token`.
    pub(crate) fn holding(&mut self, pid: Uuid, token: i64) {
        self.lost.remove(&pid);
        self.held.insert(pid, token);
    }

    /// Gives `pid` up here; its token, if it was held.
    pub(crate) fn release(&mut self, pid: Uuid) -> Option<i64> {
        self.lost.remove(&pid);
        self.held.remove(&pid)
    }

    /// The store refused a change of `pid` made under `token`: the lease is lost, unless it was
    /// taken again since (with another token).
    pub(crate) fn refused(&mut self, pid: Uuid, token: i64) {
        if self.held.get(&pid) == Some(&token) {
            self.held.remove(&pid);
            self.lost.insert(pid);
        }
    }

    /// The leases were renewed: they are this program's until `deadline`.
    pub(crate) fn renewed(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// The leases ran out before they were renewed: every process held is lost, and the
    /// program goes on as `owner`, until `deadline`. Returns how many were lost.
    pub(crate) fn expired(&mut self, owner: Uuid, deadline: Instant) -> usize {
        let lost = self.held.len();
        self.lose_all();
        self.owner = owner;
        self.deadline = deadline;
        lost
    }

    fn lose_all(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.lost.extend(held.into_keys());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_save_loses_the_lease_only_under_its_own_token() {
        let mut leases = Leases::new(Uuid::new_v4(), Instant::now() + Duration::from_secs(60));
        let pid = Uuid::new_v4();
        assert_eq!(leases.save_token(pid).unwrap(), 0);
        leases.holding(pid, 7);
        // A save queued before the lease was taken again is refused: the new lease stands.
        leases.refused(pid, 0);
        assert_eq!(leases.save_token(pid).unwrap(), 7);
        leases.refused(pid, 7);
        assert!(matches!(
            leases.save_token(pid),
            Err(PersistError::LeaseLost { .. })
        ));
        // Given up here, it can be made or taken afresh.
        assert_eq!(leases.release(pid), None);
        assert_eq!(leases.token(pid).unwrap(), None);
    }

    #[test]
    fn a_lease_too_short_to_renew_is_refused() {
        assert!(check_lease(SHORTEST_LEASE).is_ok());
        let refused = check_lease(Duration::ZERO).unwrap_err();
        assert!(refused.to_string().contains("too short"), "{refused}");
    }

    #[test]
    fn past_the_deadline_every_lease_is_lost_at_once() {
        let mut leases = Leases::new(Uuid::new_v4(), Instant::now());
        let pid = Uuid::new_v4();
        assert!(matches!(
            leases.save_token(pid),
            Err(PersistError::LeaseLost { .. })
        ));
        let owner = Uuid::new_v4();
        leases.holding(pid, 3);
        assert_eq!(
            leases.expired(owner, Instant::now() + Duration::from_secs(60)),
            1
        );
        assert_eq!(leases.owner(), owner);
        assert!(leases.token(pid).is_err());
    }
}
