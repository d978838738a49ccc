//! Checkpoints in PostgreSQL (feature `postgres`), for workers on several machines sharing one
//! database: a writer thread of the store's own commits them, each save on its own or in groups.

mod queue;
mod schema;
mod writer;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::config::Host;
use uuid::Uuid;

use self::queue::Queue;
use super::{Committed, PersistError, Persister, decode, encode, with_pending};
use crate::engine::checkpoint::Checkpoint;

/// One row per process in `<schema>.checkpoints(pid uuid PRIMARY KEY, body bytea)`, in a
/// database that workers on several machines can share.
///
/// **The runtime thread never waits on the network to save.** Saves and deletes are queued, in
/// the order they are made, for a writer thread of the store's own that owns the connection
/// and commits them in that order; reads see queued changes at once. Two ways to commit:
/// - **One commit per save** (the default): each save (or [`save_all`](Persister::save_all))
///   is a transaction of its own, sent without waiting for the one before (pipelined). The
///   engine saves a step's checkpoint through [`save_committed`](Persister::save_committed)
///   and awaits it, so **no step runs before its checkpoint is committed**; meanwhile the
///   runtime thread serves other processes. A crash of the program loses nothing that a step
///   was started on.
/// - **Group commit** ([`PostgresBuilder::group_commit`]): whatever is queued while a commit
///   is in flight is committed next, in one transaction (the latest change of each pid wins),
///   and nobody waits. The table is always the result of a prefix of the changes, so a crash
///   is like a crash a moment earlier: the changes of the last commit or two are lost, and
///   their processes continue from the checkpoints before them (their steps run again, as the
///   at-least-once rule allows).
///
/// [`flush`](Persister::flush) waits until everything queued is committed; dropping the store
/// flushes too.
///
/// **When the database goes away** (restarted, or out of reach), the writer reconnects, at
/// growing intervals up to 2 s. Changes queued before the loss are committed once it is back;
/// saves made while it is down fail at once with [`PersistError::Unavailable`], and the engine
/// stops such a process where its last kept checkpoint is (abandoned, not failed), for this
/// worker or another to continue later. If the database stays away longer than
/// [`retry_for`](PostgresBuilder::retry_for), the queued changes are given up, and the waits
/// on them fail likewise. A failure that reconnecting does not mend (a refused login, a
/// statement the database rejects) makes every later call fail with it.
///
/// **Leases: one worker per process.** Several programs may share the database; a process
/// runs in at most one of them at a time. Each program is an *owner* whose leases last
/// [`lease_for`](PostgresBuilder::lease_for) (10 s) unless renewed, which its writer does for
/// all of them at once every third of that. [`acquire`](Persister::acquire) (the engine's
/// `load`) takes a process's lease with a new *fencing token* if it is free, already this
/// program's, or its owner's leases have run out; otherwise it fails with
/// [`PersistError::Held`], naming the holder. A process made here takes its lease with its
/// first save, in the same statement, and every save or delete of a held process checks, in
/// its statement, that the lease is still this program's with that token: a save that finds
/// it taken over lands nowhere and later saves of that process fail with
/// [`PersistError::LeaseLost`], as do all saves once the program may have outlived its lease
/// (it stalled, or could not renew), so the engine stops those processes where they are.
/// Leases are released when a process ends or stops here, and all at once when the store is
/// dropped; a program that dies holds its processes until its leases run out.
///
/// **The tables** are made on first use in their own schema (`runtime_thread` unless
/// [`schema`](PostgresBuilder::schema) says otherwise), with a version number, and migrated
/// in order, under a lock, by the first worker of a newer build; a build refuses a database
/// that a newer one has migrated. The URL's password never appears in errors, logs or `Debug`.
///
/// ```no_run
/// use runtime_thread::engine::{Persister, PostgresPersister};
///
/// let store = PostgresPersister::builder("postgres://worker:secret@db.example:5432/workflows")
///     .group_commit(true)
///     .connect()?;
/// println!("{store:?}"); // PostgresPersister { at: "postgres://worker@db.example:5432/workflows", .. }
/// assert!(store.list()?.is_empty());
/// # Ok::<(), runtime_thread::engine::PersistError>(())
/// ```
pub struct PostgresPersister {
    queue: Arc<Queue>,
    settings: Arc<Settings>,
    /// The writer thread's runtime, where reads run.
    runtime: tokio::runtime::Handle,
    writer: Option<JoinHandle<()>>,
}

/// What the store and its writer go by.
pub(crate) struct Settings {
    config: tokio_postgres::Config,
    /// The database, as errors and logs show it: without the password.
    shown: String,
    schema: String,
    group_commit: bool,
    /// How long one connection attempt, commit or read may take.
    timeout: Duration,
    /// How long queued changes wait for a database that went away.
    retry_for: Duration,
    /// How long this program's leases last unless renewed.
    lease_for: Duration,
    /// How this program names itself to other programs that find its leases.
    owner_name: String,
}

impl std::fmt::Debug for PostgresPersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPersister")
            .field("at", &self.settings.shown)
            .field("schema", &self.settings.schema)
            .field("group_commit", &self.settings.group_commit)
            .finish_non_exhaustive()
    }
}

/// Configures a [`PostgresPersister`]: see [`PostgresPersister::builder`].
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresBuilder {
    url: String,
    schema: String,
    group_commit: bool,
    timeout: Duration,
    retry_for: Duration,
    lease_for: Duration,
    owner_name: Option<String>,
}

impl std::fmt::Debug for PostgresBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBuilder")
            .field("url", &crate::messaging::shown_url::shown_url(&self.url))
            .field("schema", &self.schema)
            .field("group_commit", &self.group_commit)
            .field("timeout", &self.timeout)
            .field("retry_for", &self.retry_for)
            .field("lease_for", &self.lease_for)
            .field("owner_name", &self.owner_name)
            .finish()
    }
}

impl PostgresBuilder {
    /// The schema of the store's tables (default `runtime_thread`): lower-case letters, digits
    /// and `_`. Stores in different schemas of one database are independent.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Commits in groups rather than each save on its own (see [`PostgresPersister`]).
    pub fn group_commit(mut self, group_commit: bool) -> Self {
        self.group_commit = group_commit;
        self
    }

    /// How long one connection attempt, commit or read may take before the connection is
    /// given up as lost (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long changes queued before the database went away wait for it to come back before
    /// they are given up (default 10 s).
    pub fn retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// How long this program's leases last unless it renews them (default 10 s, at least
    /// 300 ms; renewed every third of that). A worker that dies, or stalls, this long loses its
    /// processes to the others; a shorter time hands them over sooner, and asks more of a busy
    /// program's renewals.
    pub fn lease_for(mut self, lease_for: Duration) -> Self {
        self.lease_for = lease_for;
        self
    }

    /// How this program names itself to a program that finds one of its processes held
    /// (default `host:pid`).
    pub fn owner_name(mut self, name: impl Into<String>) -> Self {
        self.owner_name = Some(name.into());
        self
    }

    /// Connects, makes or migrates the tables, and starts the writer thread.
    ///
    /// # Errors
    ///
    /// - `PersistError::Store` for a URL that does not parse, a bad schema name, a lease shorter
    ///   than 300 ms, a refused login, a database migrated by a newer build, or a writer thread
    ///   that cannot start;
    /// - `PersistError::Unavailable` when the database cannot be reached.
    pub fn connect(self) -> Result<PostgresPersister, PersistError> {
        schema::check_name(&self.schema)?;
        super::lease::check_lease(self.lease_for)?;
        let shown_url = crate::messaging::shown_url::shown_url(&self.url);
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|_| {
            PersistError::store_failed(format!(
                "{shown_url} is not a PostgreSQL URL (postgres://user:password@host:port/database) \
                 or key=value connection string"
            ))
        })?;
        if config.get_options().is_none() {
            // PostgreSQL's notices ("schema ... already exists, skipping") are not news.
            config.options("-c client_min_messages=warning");
        }
        config
            .application_name("runtime-thread")
            .connect_timeout(self.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let settings = Arc::new(Settings {
            shown: shown(&config),
            config,
            schema: self.schema,
            group_commit: self.group_commit,
            timeout: self.timeout,
            retry_for: self.retry_for,
            lease_for: self.lease_for,
            owner_name: self
                .owner_name
                .unwrap_or_else(super::lease::default_owner_name),
        });
        PostgresPersister::start(settings)
    }
}

/// `postgres://user@host:port/database`: where the store is, never with the password.
fn shown(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = (config.get_hosts().iter())
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let database = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{database}", hosts.join(","))
}

/// A failure of the database while doing `what`, naming it without the password.
pub(crate) fn store_error(shown: &str, what: &str, error: tokio_postgres::Error) -> PersistError {
    PersistError::store(format!("{what} in {shown}"), error)
}

impl PostgresPersister {
    /// A store at `url` (`postgres://user:password@host:port/database`, or PostgreSQL's
    /// `key=value` form), configured by the builder.
    pub fn builder(url: impl Into<String>) -> PostgresBuilder {
        PostgresBuilder {
            url: url.into(),
            schema: "runtime_thread".to_owned(),
            group_commit: false,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(10),
            lease_for: super::lease::DEFAULT_LEASE,
            owner_name: None,
        }
    }

    /// A store at `url` with the defaults: one commit per save, schema `runtime_thread`.
    ///
    /// # Errors
    ///
    /// As [`PostgresBuilder::connect`].
    pub fn connect(url: impl Into<String>) -> Result<Self, PersistError> {
        Self::builder(url).connect()
    }

    /// Starts the writer thread, which connects first and says whether it could.
    fn start(settings: Arc<Settings>) -> Result<Self, PersistError> {
        let queue = Arc::new(Queue::new(
            Uuid::new_v4(),
            std::time::Instant::now() + settings.lease_for,
        ));
        let (started, outcome) = std::sync::mpsc::sync_channel(1);
        let (writer_queue, writer_settings) = (queue.clone(), settings.clone());
        let writer = std::thread::Builder::new()
            .name("postgres-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(PersistError::store(
                            "cannot start the PostgreSQL store's runtime",
                            error,
                        )));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let connected = match writer::connect(&writer_settings).await {
                        Ok(first) => {
                            writer::register(&writer_settings, &first, writer_queue.owner())
                                .await
                                .map(|()| first)
                                .map_err(|e| {
                                    store_error(
                                        &writer_settings.shown,
                                        "cannot register this program's leases",
                                        e,
                                    )
                                })
                        }
                        Err(error) => Err(error),
                    };
                    match connected {
                        Ok(first) => {
                            // Reads go through it from the moment `connect` returns.
                            writer_queue.up(first.client());
                            let _ = started.send(Ok(tokio::runtime::Handle::current()));
                            writer::run(writer_queue, writer_settings, first).await;
                        }
                        Err(error) => {
                            let _ = started.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|e| PersistError::store("cannot start the PostgreSQL writer thread", e))?;
        let runtime = outcome.recv().unwrap_or_else(|_| {
            Err(PersistError::store_failed(
                "the PostgreSQL writer thread ended before it connected",
            ))
        });
        match runtime {
            Ok(runtime) => Ok(PostgresPersister {
                queue,
                settings,
                runtime,
                writer: Some(writer),
            }),
            Err(error) => {
                let _ = writer.join();
                Err(error)
            }
        }
    }

    /// The database, as the store shows it: `postgres://user@host:port/database`, without the
    /// password.
    pub fn shown_url(&self) -> &str {
        &self.settings.shown
    }

    fn read_body(&self, pid: Uuid) -> Result<Option<Vec<u8>>, PersistError> {
        let client = self.queue.client(&self.settings.shown)?;
        let sql = format!(
            "SELECT body FROM {}.checkpoints WHERE pid = $1",
            self.settings.schema
        );
        writer::read(
            &self.runtime,
            &self.settings,
            Box::pin(async move {
                let row = client.query_opt(&sql, &[&pid]).await?;
                Ok(row.map(|row| row.get(0)))
            }),
        )
    }

    fn read_pids(&self) -> Result<Vec<Uuid>, PersistError> {
        let client = self.queue.client(&self.settings.shown)?;
        let sql = format!("SELECT pid FROM {}.checkpoints", self.settings.schema);
        writer::read(
            &self.runtime,
            &self.settings,
            Box::pin(async move {
                let rows = client.query(&sql, &[]).await?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            }),
        )
    }
}

impl Persister for PostgresPersister {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.save_bytes(checkpoint.pid, encode(checkpoint)?)
    }

    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        let shown = &self.settings.shown;
        self.queue.save(vec![(pid, Arc::new(bytes))], None, shown)
    }

    /// With one commit per save, ready when this save is committed; with group commit, at once.
    fn save_committed(&self, pid: Uuid, bytes: Vec<u8>) -> Result<Committed, PersistError> {
        if self.settings.group_commit {
            self.save_bytes(pid, bytes)?;
            return Ok(Committed::now());
        }
        let (done, committed) = oneshot::channel();
        let shown = &self.settings.shown;
        (self.queue).save(vec![(pid, Arc::new(bytes))], Some(done), shown)?;
        let shown = self.settings.shown.clone();
        Ok(Committed::later(async move {
            committed.await.unwrap_or_else(|_| {
                Err(PersistError::unavailable(
                    format!("the store of {shown} closed before the save was committed"),
                    None,
                ))
            })
        }))
    }

    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError> {
        let body = match self.queue.pending(pid) {
            Some(pending) => pending.map(|body| body.to_vec()),
            None => self.read_body(pid)?,
        };
        decode(pid, &body.ok_or(PersistError::NotFound { pid })?)
    }

    fn list(&self) -> Result<Vec<Uuid>, PersistError> {
        let pending = self.queue.overlay();
        Ok(with_pending(self.read_pids()?, pending))
    }

    fn delete(&self, pid: Uuid) -> Result<(), PersistError> {
        self.queue.delete(pid, &self.settings.shown)
    }

    /// One transaction.
    fn save_all(&self, checkpoints: Vec<(Uuid, Vec<u8>)>) -> Result<(), PersistError> {
        let checkpoints = (checkpoints.into_iter())
            .map(|(pid, bytes)| (pid, Arc::new(bytes)))
            .collect();
        self.queue.save(checkpoints, None, &self.settings.shown)
    }

    /// Ready once everything queued before it is committed; the caller's thread does not wait.
    fn until_flushed(&self) -> Committed {
        let (done, committed) = oneshot::channel();
        if let Err(error) = self.queue.mark(done, &self.settings.shown) {
            return Committed::later(async move { Err(error) });
        }
        let shown = self.settings.shown.clone();
        Committed::later(async move {
            committed.await.unwrap_or_else(|_| {
                Err(PersistError::unavailable(
                    format!("the store of {shown} closed before it was flushed"),
                    None,
                ))
            })
        })
    }

    /// Takes the lease of `pid` in the database (one round trip): see the type's docs.
    fn acquire(&self, pid: Uuid) -> Result<(), PersistError> {
        let client = self.queue.client(&self.settings.shown)?;
        let (schema, owner) = (self.settings.schema.clone(), self.queue.owner());
        let token = writer::read(
            &self.runtime,
            &self.settings,
            Box::pin(async move { writer::acquire(&client, &schema, owner, pid).await }),
        )??;
        self.queue.holding(pid, token);
        Ok(())
    }

    /// Queued after the changes made before it.
    fn release(&self, pid: Uuid) {
        self.queue.release(pid);
    }

    /// Waits until every save and delete made so far is committed; an error if one of them
    /// was given up (the database stayed away) or the store failed.
    fn flush(&self) -> Result<(), PersistError> {
        self.queue.flush(&self.settings.shown)
    }
}

impl Drop for PostgresPersister {
    /// Commits what is queued (or gives it up, if the database stays away for the store's
    /// `retry_for`), then stops the writer.
    fn drop(&mut self) {
        self.queue.close();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
