//! The store's tables: created on first use in a schema of their own, versioned, and brought up
//! to date by migrations run in order under a lock, so that workers starting at once do not
//! race each other.

use tokio_postgres::Client;

use super::super::PersistError;

/// The migrations, in order: the database is at version `n` once the first `n` have run.
/// `{schema}` stands for the store's schema. A new version adds a migration at the end, never
/// changes one that shipped.
const MIGRATIONS: &[&str] = &[
    // 1: one row per process, its latest checkpoint.
    "CREATE TABLE {schema}.checkpoints (pid uuid PRIMARY KEY, body bytea NOT NULL)",
    // 2: leases. A program holding leases (an owner) renews them all at once by moving its
    // expiry; a process's lease names its owner and a fencing token, new at every take.
    "CREATE TABLE {schema}.owners (owner uuid PRIMARY KEY, name text NOT NULL, \
         expires timestamptz NOT NULL); \
     CREATE TABLE {schema}.leases (pid uuid PRIMARY KEY, owner uuid NOT NULL, \
         token bigint NOT NULL); \
     CREATE INDEX ON {schema}.leases (owner); \
     CREATE SEQUENCE {schema}.lease_tokens START 1;",
];

/// The version this build brings a database to.
#[expect(clippy::cast_possible_truncation, reason = "a handful of migrations")]
pub(crate) const VERSION: i32 = MIGRATIONS.len() as i32;

/// A schema name the store can put into its statements as it is: lower-case letters, digits and
/// `_`, not starting with a digit, at most 63 bytes (PostgreSQL's limit).
pub(crate) fn check_name(schema: &str) -> Result<(), PersistError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(PersistError::store_failed(format!(
            "{schema:?} is not a schema name the PostgreSQL store accepts: use lower-case \
             letters, digits and _, not starting with a digit, at most 63 bytes"
        )))
    }
}

/// Why a database could not be brought to [`VERSION`].
#[derive(Debug)]
pub(crate) enum Refused {
    /// The database failed (or could not be reached).
    Database(tokio_postgres::Error),
    /// A newer build migrated it past this one: nothing was changed.
    Newer(i32),
}

impl From<tokio_postgres::Error> for Refused {
    fn from(error: tokio_postgres::Error) -> Self {
        Refused::Database(error)
    }
}

/// Creates the schema and its tables, or migrates them to [`VERSION`]; refuses a database
/// that a newer build has migrated past this one.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), Refused> {
    let transaction = client.transaction().await?;
    // Held until the commit: one migrating worker at a time for this schema.
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL);"
        ))
        .await?;
    let found: Option<i32> = transaction
        .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await?
        .map(|row| row.get(0));
    let at = found.unwrap_or(0);
    if at > VERSION {
        // Rolled back with the transaction: nothing is changed.
        return Err(Refused::Newer(at));
    }
    for migration in &MIGRATIONS[usize::try_from(at).unwrap_or(0)..] {
        transaction
            .batch_execute(&migration.replace("{schema}", schema))
            .await?;
    }
    let record = match found {
        Some(_) => format!("UPDATE {schema}.schema_version SET version = $1"),
        None => format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
    };
    transaction.execute(&record, &[&VERSION]).await?;
    Ok(transaction.commit().await?)
}

/// The advisory lock of a schema's migrations: a fixed hash of its name (FNV-1a), the same in
/// every build and on every machine.
fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_schema_names_are_accepted() {
        assert!(check_name("runtime_thread").is_ok());
        assert!(check_name("t_2").is_ok());
        for bad in ["", "2t", "Upper", "a;drop", "a b", &"x".repeat(64)] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("lower-case letters"), "{bad:?}: {error}");
        }
    }
}
