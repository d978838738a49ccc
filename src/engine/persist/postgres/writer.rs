//! The writer: a thread of the store's own, with a small tokio runtime, that owns the connection,
//! commits what the callers queue, and reconnects after the database went away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::queue::{Body, Entry, Queue};
use super::schema::{self, Refused};
use super::{Settings, store_error};
use crate::engine::error::PersistError;

/// The first wait before reconnecting, doubled after each failed attempt up to
/// [`MOST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MOST_BACKOFF: Duration = Duration::from_secs(2);

/// How long group commit lets writes gather after the first one of a group: the most a crash
/// can lose beyond the group being committed.
const GROUP_LINGER: Duration = Duration::from_millis(1);

/// The statement that applies one group of changes: deletes and saves of distinct pids, in one
/// statement, so in one transaction and one round trip.
fn apply_statement(schema: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM {schema}.checkpoints WHERE pid = ANY($1)) \
         INSERT INTO {schema}.checkpoints (pid, body) \
         SELECT * FROM UNNEST($2::uuid[], $3::bytea[]) \
         ON CONFLICT (pid) DO UPDATE SET body = EXCLUDED.body"
    )
}

/// A live connection, with the statement prepared on it.
pub(super) struct Connection {
    client: Arc<Client>,
    apply: Statement,
    /// Drives the connection; aborted when the connection is given up.
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    pub(super) fn client(&self) -> Arc<Client> {
        self.client.clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why the connection was left.
enum Left {
    /// The store is closing and everything queued is committed.
    Closed,
    /// The database went away (or stopped answering).
    Lost(String),
}

/// Connects (creating or migrating the schema) and prepares the statement.
pub(super) async fn connect(settings: &Settings) -> Result<Connection, PersistError> {
    let unreachable = |e: tokio_postgres::Error| {
        PersistError::unavailable(
            format!("cannot connect to {}", settings.shown),
            Some(Arc::new(e)),
        )
    };
    let connecting = settings.config.connect(NoTls);
    let (mut client, connection) = match tokio::time::timeout(settings.timeout, connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) if is_refusal(&error) => {
            return Err(PersistError::store(
                format!("{} refused the connection", settings.shown),
                error,
            ));
        }
        Ok(Err(error)) => return Err(unreachable(error)),
        Err(_) => {
            return Err(PersistError::unavailable(
                format!(
                    "no answer from {} in {:?}",
                    settings.shown, settings.timeout
                ),
                None,
            ));
        }
    };
    let driver = tokio::runtime::Handle::current().spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a PostgreSQL connection ended");
        }
    });
    let ready = async {
        schema::migrate(&mut client, &settings.schema).await?;
        Ok::<_, Refused>(client.prepare(&apply_statement(&settings.schema)).await?)
    };
    let apply = match tokio::time::timeout(settings.timeout, ready).await {
        Ok(Ok(apply)) => apply,
        Ok(Err(Refused::Newer(found))) => {
            driver.abort();
            return Err(PersistError::store_failed(format!(
                "the tables in schema {} of {} are at version {found}, newer than this build \
                 knows ({}): run a newer build of the program",
                settings.schema,
                settings.shown,
                schema::VERSION
            )));
        }
        Ok(Err(Refused::Database(error))) if is_connection_error(&error) => {
            driver.abort();
            return Err(unreachable(error));
        }
        Ok(Err(Refused::Database(error))) => {
            driver.abort();
            return Err(store_error(
                &settings.shown,
                "cannot set up the tables",
                error,
            ));
        }
        Err(_) => {
            driver.abort();
            return Err(PersistError::unavailable(
                format!(
                    "no answer from {} in {:?}",
                    settings.shown, settings.timeout
                ),
                None,
            ));
        }
    };
    Ok(Connection {
        client: Arc::new(client),
        apply,
        driver,
    })
}

/// The writer thread's body: commits until the store closes, reconnecting while it is open.
/// `first` is the connection the store opened with.
pub(super) async fn run(queue: Arc<Queue>, settings: Arc<Settings>, first: Connection) {
    let mut connection = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(mut live) = connection.take() {
            queue.up(live.client.clone());
            match commit_until_left(&queue, &settings, &mut live).await {
                Left::Closed => return,
                Left::Lost(why) => {
                    tracing::warn!(store = %settings.shown, %why, "the PostgreSQL store lost its connection; reconnecting");
                    queue.down(why);
                }
            }
            backoff = FIRST_BACKOFF;
        }
        let closing = queue.is_closing();
        match connect(&settings).await {
            Ok(live) => {
                tracing::info!(store = %settings.shown, "the PostgreSQL store reconnected");
                connection = Some(live);
                continue;
            }
            Err(error) if !error.is_transient() => {
                tracing::error!(%error, "the PostgreSQL store cannot reconnect");
                queue.fail(error);
                return;
            }
            Err(error) => {
                let since = queue.down(error.to_string());
                if closing || since.elapsed() >= settings.retry_for {
                    let lost = queue.give_up(&settings.shown);
                    if lost > 0 {
                        tracing::error!(store = %settings.shown, lost, "checkpoint changes were given up: the database stayed out of reach");
                    }
                    if closing {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MOST_BACKOFF);
    }
}

/// Commits what is queued, entry by entry or in groups, until the store closes or the
/// connection is lost (then what was not committed goes back to the queue). A connection that
/// the server closes is noticed at once, not at the next commit, so that saves are refused
/// from then on rather than queued for a database that is gone.
async fn commit_until_left(
    queue: &Queue,
    settings: &Settings,
    connection: &mut Connection,
) -> Left {
    loop {
        let taken = tokio::select! {
            taken = queue.take() => taken,
            _ = &mut connection.driver => {
                return Left::Lost("the server closed the connection".to_owned());
            }
        };
        let Some(mut entries) = taken else {
            return Left::Closed;
        };
        if settings.group_commit {
            // Let a group gather, as the SQLite store does: a commit per handful of writes
            // would cost the database (and a CPU shared with the runtime thread) a commit and
            // a WAL flush each.
            tokio::time::sleep(GROUP_LINGER).await;
            entries.extend(queue.take_now());
        }
        let (committed, left) = if settings.group_commit {
            commit_group(settings, connection, entries).await
        } else {
            commit_each(settings, connection, entries).await
        };
        queue.committed(committed);
        match left {
            Ok(()) => {}
            Err(Failed::Lost(why, rest)) => {
                queue.put_back(rest);
                return Left::Lost(why);
            }
            Err(Failed::Broken(error)) => {
                tracing::error!(%error, "the PostgreSQL store failed to commit");
                queue.fail(error);
                return Left::Closed;
            }
        }
    }
}

/// Why entries could not be committed.
enum Failed {
    /// The connection went away: these entries go back to the queue.
    Lost(String, Vec<Entry>),
    /// The database refused them: the store cannot go on.
    Broken(PersistError),
}

/// Group commit: every entry taken, in one statement (the latest change of each pid wins).
async fn commit_group(
    settings: &Settings,
    connection: &Connection,
    entries: Vec<Entry>,
) -> (Vec<Entry>, Result<(), Failed>) {
    let mut latest: HashMap<Uuid, &Option<Body>> = HashMap::new();
    for entry in &entries {
        for (pid, body) in &entry.changes {
            latest.insert(*pid, body);
        }
    }
    let result = apply(settings, connection, latest.into_iter()).await;
    match result {
        Ok(()) => (entries, Ok(())),
        Err(error) => (Vec::new(), Err(failed(settings, error, entries))),
    }
}

/// One transaction per entry, sent one after another without waiting for the answers
/// (pipelined on the connection), so committed in order.
async fn commit_each(
    settings: &Settings,
    connection: &Connection,
    entries: Vec<Entry>,
) -> (Vec<Entry>, Result<(), Failed>) {
    let results = futures::future::join_all(entries.iter().map(|entry| {
        let latest: HashMap<Uuid, &Option<Body>> = entry
            .changes
            .iter()
            .map(|(pid, body)| (*pid, body))
            .collect();
        apply(settings, connection, latest.into_iter())
    }))
    .await;
    let mut committed = Vec::with_capacity(entries.len());
    let mut entries = entries.into_iter();
    for result in results {
        let Some(entry) = entries.next() else { break };
        match result {
            Ok(()) => committed.push(entry),
            Err(error) => {
                let rest = std::iter::once(entry).chain(entries).collect();
                return (committed, Err(failed(settings, error, rest)));
            }
        }
    }
    (committed, Ok(()))
}

async fn apply<'a>(
    settings: &Settings,
    connection: &Connection,
    latest: impl Iterator<Item = (Uuid, &'a Option<Body>)>,
) -> Result<(), Apply> {
    let mut deleted: Vec<Uuid> = Vec::new();
    let mut saved: Vec<Uuid> = Vec::new();
    let mut bodies: Vec<&[u8]> = Vec::new();
    for (pid, body) in latest {
        match body {
            Some(body) => {
                saved.push(pid);
                bodies.push(body.as_slice());
            }
            None => deleted.push(pid),
        }
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&deleted, &saved, &bodies];
    let statement = connection.client.execute(&connection.apply, &params);
    match tokio::time::timeout(settings.timeout, statement).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(Apply::Error(error)),
        Err(_) => Err(Apply::NoAnswer),
    }
}

enum Apply {
    Error(tokio_postgres::Error),
    /// No answer within the store's timeout: the connection is given up.
    NoAnswer,
}

fn failed(settings: &Settings, error: Apply, rest: Vec<Entry>) -> Failed {
    match error {
        Apply::NoAnswer => Failed::Lost(format!("no answer in {:?}", settings.timeout), rest),
        Apply::Error(error) if is_connection_error(&error) => Failed::Lost(error.to_string(), rest),
        Apply::Error(error) => {
            let failure = store_error(&settings.shown, "cannot commit checkpoints", error);
            for entry in rest {
                entry.settle(Err(failure.clone()));
            }
            Failed::Broken(failure)
        }
    }
}

/// A failure of the connection rather than of the statement: the server went away, is shutting
/// down or starting, or the socket failed. Reconnecting mends it.
pub(super) fn is_connection_error(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => error.as_db_error().is_none(),
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(code)
        }
    }
}

/// The server answered and refused (a wrong password, an unknown database or role): retrying
/// does not mend it.
fn is_refusal(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        code.code().starts_with("28") || *code == SqlState::INVALID_CATALOG_NAME
    })
}

/// Runs a read on the writer's runtime and waits for it here, at most the store's timeout (the
/// callers are synchronous: the engine reads when it loads a process, not per step).
pub(super) fn read<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    settings: &Settings,
    read: futures::future::BoxFuture<'static, Result<T, tokio_postgres::Error>>,
) -> Result<T, PersistError> {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let timeout = settings.timeout;
    runtime.spawn(async move {
        let _ = answer.send(tokio::time::timeout(timeout, read).await);
    });
    match answered.recv() {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) if is_connection_error(&error) => Err(PersistError::unavailable(
            format!("cannot read from {}", settings.shown),
            Some(Arc::new(error)),
        )),
        Ok(Ok(Err(error))) => Err(store_error(
            &settings.shown,
            "cannot read checkpoints",
            error,
        )),
        Ok(Err(_)) => Err(PersistError::unavailable(
            format!("no answer from {} in {timeout:?}", settings.shown),
            None,
        )),
        // The writer's runtime is gone: the store failed for good.
        Err(_) => Err(PersistError::store_failed(format!(
            "the store of {} has stopped",
            settings.shown
        ))),
    }
}
