//! The PostgreSQL cluster the `postgres` tests run against: the project's own, which
//! `scripts/test` starts (`scripts/postgres start`: 127.0.0.1 only, a free port, data under
//! `target/`) and names in `RUNTIME_THREAD_POSTGRES_URL`. No test touches any other server.
//!
//! Every test that needs it is `#[ignore]`d, so that a plain `cargo test` counts it as ignored,
//! never as passed; `scripts/test` runs them with `--include-ignored`. Each test keeps its
//! tables in a schema of its own.

use runtime_thread::engine::{PostgresBuilder, PostgresPersister};

/// The variable `scripts/test` sets to the cluster's URL.
const URL_VARIABLE: &str = "RUNTIME_THREAD_POSTGRES_URL";

/// The cluster's URL (with a password, which no message may show).
pub fn url() -> String {
    std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{URL_VARIABLE} is not set: these tests need the project's PostgreSQL cluster. Run \
             them through scripts/test, or start it with `scripts/postgres start` and export \
             {URL_VARIABLE}=$(scripts/postgres url)"
        )
    })
}

/// The password in [`url`], to check that it is never shown.
pub fn password() -> String {
    let url = url();
    let (credentials, _) = url
        .trim_start_matches("postgres://")
        .rsplit_once('@')
        .unwrap();
    credentials.split_once(':').unwrap().1.to_owned()
}

/// The cluster's URL with another password.
pub fn url_with_password(password: &str) -> String {
    url().replacen(&self::password(), password, 1)
}

/// A schema name of one test's own.
pub fn unique_schema() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// A builder for a store in `schema`, answering within a few seconds.
pub fn builder(schema: &str) -> PostgresBuilder {
    PostgresPersister::builder(url())
        .schema(schema)
        .timeout(std::time::Duration::from_secs(5))
}

/// A store in `schema`, committing in groups or each save on its own.
pub fn store(schema: &str, group_commit: bool) -> PostgresPersister {
    builder(schema)
        .group_commit(group_commit)
        .connect()
        .unwrap()
}

/// `scripts/postgres restart`: every connection drops and the server comes back.
pub fn restart() {
    postgres("restart");
}

/// The server goes down (its data stays).
pub fn down() {
    postgres("down");
}

/// The server comes back, accepting connections.
pub fn up() {
    postgres("up");
}

/// Runs SQL through psql against the cluster's database; its output.
pub fn psql(sql: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");
    let output = std::process::Command::new(script)
        .args(["psql", "-At", "-c", sql])
        .output()
        .expect("run scripts/postgres psql");
    assert!(
        output.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `scripts/postgres <command>` on the cluster `scripts/test` started (the script finds it
/// through `RUNTIME_THREAD_POSTGRES_DIR`, which this process inherits).
fn postgres(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");
    let status = std::process::Command::new(script)
        .arg(command)
        .status()
        .expect("run scripts/postgres");
    assert!(status.success(), "scripts/postgres {command} failed");
}
