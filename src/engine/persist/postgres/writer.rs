//! The writer: a thread of the store's own, with a small tokio runtime, that owns the connection,
//! commits what the callers queue, and reconnects after the database went away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::queue::{Body, Change, Entry, Queue};
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

/// The statement that applies one group of changes: saves, deletes and lease releases of
/// distinct pids, in one statement, so in one transaction and one round trip. Every save and
/// every fenced delete checks the lease it was made under (the fencing token): this program
/// still an owner whose leases have not run out, and the process's lease its own with that
/// token, or no lease at all for a process made here (token 0: the save takes the lease).
/// Returns the pids whose saves landed.
///
/// $1 owner; $2, $3, $4 saves (pid, token, body); $5, $6 deletes (pid, token or null for an
/// unfenced one); $7, $8 releases (pid, token).
fn apply_statement(schema: &str) -> String {
    format!(
        "WITH me AS (SELECT 1 FROM {schema}.owners WHERE owner = $1 AND expires > now()), \
         saves AS ( \
             SELECT c.pid, c.body, l.pid IS NULL AS fresh \
             FROM unnest($2::uuid[], $3::int8[], $4::bytea[]) AS c(pid, token, body) \
             LEFT JOIN {schema}.leases l ON l.pid = c.pid \
             WHERE EXISTS (SELECT 1 FROM me) \
               AND ((l.pid IS NULL AND c.token = 0) OR (l.owner = $1 AND l.token = c.token))), \
         taken AS ( \
             INSERT INTO {schema}.leases (pid, owner, token) \
             SELECT pid, $1, 0 FROM saves WHERE fresh AND pid <> ALL($7::uuid[]) \
             ON CONFLICT (pid) DO NOTHING), \
         deletes AS ( \
             SELECT d.pid FROM unnest($5::uuid[], $6::int8[]) AS d(pid, token) \
             LEFT JOIN {schema}.leases l ON l.pid = d.pid \
             WHERE d.token IS NULL \
                OR (EXISTS (SELECT 1 FROM me) \
                    AND ((l.pid IS NULL AND d.token = 0) \
                         OR (l.owner = $1 AND l.token = d.token)))), \
         gone AS (DELETE FROM {schema}.checkpoints WHERE pid IN (SELECT pid FROM deletes)), \
         freed AS ( \
             DELETE FROM {schema}.leases l USING unnest($7::uuid[], $8::int8[]) AS r(pid, token) \
             WHERE l.pid = r.pid AND l.owner = $1 AND l.token = r.token) \
         INSERT INTO {schema}.checkpoints (pid, body) SELECT pid, body FROM saves \
         ON CONFLICT (pid) DO UPDATE SET body = EXCLUDED.body \
         RETURNING pid"
    )
}

/// Renews every lease of an owner at once, if they have not run out: $1 owner, $2 seconds.
fn renew_statement(schema: &str) -> String {
    format!(
        "UPDATE {schema}.owners SET expires = now() + make_interval(secs => $2) \
         WHERE owner = $1 AND expires > now()"
    )
}

/// Takes the lease of a process whose checkpoint exists, if the lease is free, this program's
/// own, or its owner's have run out, with a new fencing token: $1 owner, $2 pid. No row:
/// another program holds it, there is no such checkpoint, or this program's own leases have
/// run out. (A process's first checkpoint and its lease are made by the same statement, so a
/// process just made elsewhere cannot be taken before its maker holds it.)
fn acquire_statement(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.leases AS l (pid, owner, token) \
         SELECT $2, $1, nextval('{schema}.lease_tokens') \
         WHERE EXISTS (SELECT 1 FROM {schema}.owners WHERE owner = $1 AND expires > now()) \
           AND EXISTS (SELECT 1 FROM {schema}.checkpoints WHERE pid = $2) \
         ON CONFLICT (pid) DO UPDATE SET owner = EXCLUDED.owner, token = EXCLUDED.token \
         WHERE l.owner = $1 OR NOT EXISTS ( \
             SELECT 1 FROM {schema}.owners o WHERE o.owner = l.owner AND o.expires > now()) \
         RETURNING token"
    )
}

/// A live connection, with the statement prepared on it.
pub(super) struct Connection {
    client: Arc<Client>,
    apply: Statement,
    renew: Statement,
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
        let apply = client.prepare(&apply_statement(&settings.schema)).await?;
        let renew = client.prepare(&renew_statement(&settings.schema)).await?;
        Ok::<_, Refused>((apply, renew))
    };
    let (apply, renew) = match tokio::time::timeout(settings.timeout, ready).await {
        Ok(Ok(statements)) => statements,
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
        renew,
        driver,
    })
}

/// Registers `owner` (a program holding leases), named `name`, its leases its own for the
/// store's lease time; forgets owners dead for a day, and their leases.
pub(super) async fn register(
    settings: &Settings,
    connection: &Connection,
    owner: Uuid,
) -> Result<(), tokio_postgres::Error> {
    let schema = &settings.schema;
    let client = &connection.client;
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.owners (owner, name, expires) \
                 VALUES ($1, $2, now() + make_interval(secs => $3))"
            ),
            &[
                &owner,
                &settings.owner_name,
                &settings.lease_for.as_secs_f64(),
            ],
        )
        .await?;
    client
        .batch_execute(&format!(
            "DELETE FROM {schema}.owners WHERE expires < now() - interval '1 day'; \
             DELETE FROM {schema}.leases l WHERE NOT EXISTS \
                 (SELECT 1 FROM {schema}.owners o WHERE o.owner = l.owner);"
        ))
        .await
}

/// Renews this program's leases; after they ran out (it stalled, or could not reach the
/// database in time), every process it held is lost and it goes on as a new owner.
async fn renew(queue: &Queue, settings: &Settings, connection: &Connection) -> Result<(), Apply> {
    let started = Instant::now();
    let owner = queue.owner();
    let seconds = settings.lease_for.as_secs_f64();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&owner, &seconds];
    let renewing = connection.client.execute(&connection.renew, &params);
    match tokio::time::timeout(settings.timeout, renewing).await {
        Ok(Ok(1)) => {
            queue.renewed(started + settings.lease_for);
            Ok(())
        }
        Ok(Ok(_)) => {
            let owner = Uuid::new_v4();
            let registering = register(settings, connection, owner);
            match tokio::time::timeout(settings.timeout, registering).await {
                Ok(Ok(())) => {
                    let lost = queue.expired(owner, started + settings.lease_for);
                    tracing::warn!(store = %settings.shown, lost, "this program's leases ran out before they were renewed: its processes stop, for others to continue");
                    Ok(())
                }
                Ok(Err(error)) => Err(Apply::Error(error)),
                Err(_) => Err(Apply::NoAnswer),
            }
        }
        Ok(Err(error)) => Err(Apply::Error(error)),
        Err(_) => Err(Apply::NoAnswer),
    }
}

/// Gives up every lease of this program at once, as it closes: its processes are free for
/// others at once rather than when the leases run out.
async fn retire(queue: &Queue, settings: &Settings, connection: &Connection) {
    let schema = &settings.schema;
    let owner = queue.owner();
    let sql = format!("DELETE FROM {schema}.owners WHERE owner = $1");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&owner];
    let retiring = connection.client.execute(&sql, &params);
    match tokio::time::timeout(settings.timeout, retiring).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(store = %settings.shown, %error, "the leases could not be given up; they end when they run out");
        }
        Err(_) => {
            tracing::warn!(store = %settings.shown, "the leases could not be given up in time; they end when they run out");
        }
    }
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

/// Commits what is queued, entry by entry or in groups, and renews the leases, until the store
/// closes or the connection is lost (then what was not committed goes back to the queue). A
/// connection that the server closes is noticed at once, not at the next commit, so that saves
/// are refused from then on rather than queued for a database that is gone.
async fn commit_until_left(
    queue: &Queue,
    settings: &Settings,
    connection: &mut Connection,
) -> Left {
    // Renewed at once: after a reconnection, the leases may have run out meanwhile.
    let mut next_renewal = tokio::time::Instant::now();
    loop {
        let taken = tokio::select! {
            biased;
            _ = &mut connection.driver => {
                return Left::Lost("the server closed the connection".to_owned());
            }
            () = tokio::time::sleep_until(next_renewal) => {
                next_renewal = tokio::time::Instant::now() + settings.lease_for / 3;
                match renew(queue, settings, connection).await {
                    Ok(()) => continue,
                    Err(error) => match failed(settings, error, Vec::new()) {
                        Failed::Lost(why, _) => return Left::Lost(why),
                        Failed::Broken(error) => {
                            queue.fail(error);
                            return Left::Closed;
                        }
                    },
                }
            }
            taken = queue.take() => taken,
        };
        let Some(mut entries) = taken else {
            retire(queue, settings, connection).await;
            return Left::Closed;
        };
        if settings.group_commit {
            // Let a group gather, as the SQLite store does: a commit per handful of writes
            // would cost the database (and a CPU shared with the runtime thread) a commit and
            // a WAL flush each.
            tokio::time::sleep(GROUP_LINGER).await;
            entries.extend(queue.take_now());
        }
        let owner = queue.owner();
        let (committed, refused, left) = if settings.group_commit {
            commit_group(settings, connection, owner, entries).await
        } else {
            commit_each(settings, connection, owner, entries).await
        };
        queue.committed(committed, &refused);
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

/// What a commit did: the entries committed, the pids whose saves the leases refused, and
/// what could not be committed.
type Committing = (Vec<Entry>, HashSet<Uuid>, Result<(), Failed>);

/// Group commit: every entry taken, in one statement (the latest save or delete of each pid
/// wins).
async fn commit_group(
    settings: &Settings,
    connection: &Connection,
    owner: Uuid,
    entries: Vec<Entry>,
) -> Committing {
    let mut group = Group::default();
    for entry in &entries {
        for change in &entry.changes {
            group.add(change);
        }
    }
    if group.latest.is_empty() && group.released.is_empty() {
        return (entries, HashSet::new(), Ok(()));
    }
    match apply(settings, connection, owner, &group).await {
        Ok(refused) => (entries, refused, Ok(())),
        Err(error) => (
            Vec::new(),
            HashSet::new(),
            Err(failed(settings, error, entries)),
        ),
    }
}

/// One transaction per entry, sent one after another without waiting for the answers
/// (pipelined on the connection), so committed in order.
async fn commit_each(
    settings: &Settings,
    connection: &Connection,
    owner: Uuid,
    entries: Vec<Entry>,
) -> Committing {
    // An entry without changes (a flush's mark) needs no statement: it is committed once the
    // entries before it are.
    let groups: Vec<Group> = (entries.iter())
        .map(|entry| {
            let mut group = Group::default();
            for change in &entry.changes {
                group.add(change);
            }
            group
        })
        .collect();
    let results = futures::future::join_all((groups.iter()).map(|group| async move {
        if group.latest.is_empty() && group.released.is_empty() {
            return Ok(HashSet::new());
        }
        apply(settings, connection, owner, group).await
    }))
    .await;
    let mut committed = Vec::with_capacity(entries.len());
    let mut refused = HashSet::new();
    let mut entries = entries.into_iter();
    for result in results {
        let Some(entry) = entries.next() else { break };
        match result {
            Ok(entry_refused) => {
                refused.extend(entry_refused);
                committed.push(entry);
            }
            Err(error) => {
                let rest = std::iter::once(entry).chain(entries).collect();
                return (committed, refused, Err(failed(settings, error, rest)));
            }
        }
    }
    (committed, refused, Ok(()))
}

/// The latest change of each pid of a group, as the statement's arrays.
#[derive(Default)]
struct Group {
    latest: HashMap<Uuid, Latest>,
    released: HashMap<Uuid, i64>,
}

enum Latest {
    Save(Body, i64),
    Delete(Option<i64>),
}

impl Group {
    fn add(&mut self, change: &Change) {
        match change {
            Change::Save { pid, body, token } => {
                self.latest.insert(*pid, Latest::Save(body.clone(), *token));
            }
            Change::Delete { pid, token } => {
                self.latest.insert(*pid, Latest::Delete(*token));
            }
            Change::Release { pid, token } => {
                self.released.insert(*pid, *token);
            }
        }
    }
}

/// Applies a group; the pids whose saves the leases refused.
async fn apply(
    settings: &Settings,
    connection: &Connection,
    owner: Uuid,
    group: &Group,
) -> Result<HashSet<Uuid>, Apply> {
    let (mut saved, mut save_tokens, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut deleted, mut delete_tokens) = (Vec::new(), Vec::new());
    for (pid, latest) in &group.latest {
        match latest {
            Latest::Save(body, token) => {
                saved.push(*pid);
                save_tokens.push(*token);
                bodies.push(body.as_slice());
            }
            Latest::Delete(token) => {
                deleted.push(*pid);
                delete_tokens.push(*token);
            }
        }
    }
    let released: Vec<Uuid> = group.released.keys().copied().collect();
    let release_tokens: Vec<i64> = group.released.values().copied().collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &owner,
        &saved,
        &save_tokens,
        &bodies,
        &deleted,
        &delete_tokens,
        &released,
        &release_tokens,
    ];
    let statement = connection.client.query(&connection.apply, &params);
    match tokio::time::timeout(settings.timeout, statement).await {
        Ok(Ok(rows)) => {
            let landed: HashSet<Uuid> = rows.iter().map(|row| row.get(0)).collect();
            Ok(saved
                .into_iter()
                .filter(|pid| !landed.contains(pid))
                .collect())
        }
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

/// Takes the lease of `pid` (on the writer's runtime, from a caller's thread): its token.
pub(super) async fn acquire(
    client: &Client,
    schema: &str,
    owner: Uuid,
    pid: Uuid,
) -> Result<Result<i64, PersistError>, tokio_postgres::Error> {
    let take = acquire_statement(schema);
    let why_not = format!(
        "SELECT o.name, GREATEST(EXTRACT(EPOCH FROM o.expires - now()), 0)::float8 \
         FROM {schema}.leases l JOIN {schema}.owners o ON o.owner = l.owner \
         WHERE l.pid = $1 AND o.owner <> $2 AND o.expires > now()"
    );
    let facts = format!(
        "SELECT EXISTS (SELECT 1 FROM {schema}.checkpoints WHERE pid = $1), \
                EXISTS (SELECT 1 FROM {schema}.owners WHERE owner = $2 AND expires > now())"
    );
    // Again if the holder let go between the two looks (its process ended or stopped).
    for _ in 0..3 {
        if let Some(row) = client.query_opt(&take, &[&owner, &pid]).await? {
            return Ok(Ok(row.get(0)));
        }
        if let Some(row) = client.query_opt(&why_not, &[&pid, &owner]).await? {
            return Ok(Err(PersistError::Held {
                pid,
                owner: row.get(0),
                ends_in: Duration::from_secs_f64(row.get::<_, f64>(1)),
            }));
        }
        let row = client.query_one(&facts, &[&pid, &owner]).await?;
        let (exists, alive): (bool, bool) = (row.get(0), row.get(1));
        if !exists {
            return Ok(Err(PersistError::NotFound { pid }));
        }
        if !alive {
            return Ok(Err(PersistError::LeaseLost { pid }));
        }
    }
    Ok(Err(PersistError::Unavailable {
        what: format!("the lease of process {pid} changed hands three times while it was taken"),
        source: None,
    }))
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
