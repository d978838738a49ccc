//! f. The tail latency of a checkpoint commit in SQLite: `SqlitePersister` (one commit per
//! save; the write-ahead log checkpointed by a thread of its own) against raw rusqlite in the
//! same WAL mode with SQLite's automatic checkpoint (which runs inside the commit that crosses
//! a thousand pages, with an fsync), in the same run. Also the group-commit store's `flush`
//! after each save. A tail is what a crash window and a stalled step are made of, so this has
//! its own small harness: percentiles of every save, not criterion's mean.

use std::time::{Duration, Instant};

use runtime_thread::engine::{Persister, SqlitePersister};
use uuid::Uuid;

/// Saves per measurement: the log crosses its checkpoint size many times over.
const SAVES: usize = 20_000;
/// Processes the saves go to (each save replaces one's checkpoint).
const PROCESSES: usize = 200;
/// A checkpoint's size.
const BODY: usize = 2_048;

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "  {name:<44} p50 {:>9.1?}  p99 {:>9.1?}  p99.9 {:>9.1?}  max {:>9.1?}",
        at(0.5),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    );
}

fn body(n: usize) -> Vec<u8> {
    // A checkpoint is JSON; any bytes do for the store.
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(BODY)).into_bytes()
}

/// The baseline: the same table and writes, committed by rusqlite with SQLite's defaults for
/// WAL (the automatic checkpoint at a thousand pages, in the committing connection).
fn raw_sqlite(path: &std::path::Path, pids: &[Uuid]) -> Vec<Duration> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let _mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    connection
        .execute_batch(
            "PRAGMA synchronous = NORMAL;
             CREATE TABLE checkpoints (pid TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
    let mut insert = connection
        .prepare_cached("INSERT OR REPLACE INTO checkpoints (pid, body) VALUES (?1, ?2)")
        .unwrap();
    (0..SAVES)
        .map(|n| {
            let (pid, body) = (pids[n % PROCESSES].to_string(), body(n));
            let start = Instant::now();
            insert.execute(rusqlite::params![pid, body]).unwrap();
            start.elapsed()
        })
        .collect()
}

fn ours(store: &SqlitePersister, pids: &[Uuid], flush: bool) -> Vec<Duration> {
    (0..SAVES)
        .map(|n| {
            let body = body(n);
            let start = Instant::now();
            store.save_bytes(pids[n % PROCESSES], body).unwrap();
            if flush {
                store.flush().unwrap();
            }
            start.elapsed()
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that run short.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sqlite_commit: skipped outside `cargo bench`");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sqlite-commit-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pids: Vec<Uuid> = (0..PROCESSES).map(|_| Uuid::new_v4()).collect();
    println!("f_sqlite_commit ({SAVES} saves of {BODY} B over {PROCESSES} processes)");
    percentiles(
        "baseline: rusqlite, checkpoint in the commit",
        raw_sqlite(&dir.join("raw.sqlite"), &pids),
    );
    let each = SqlitePersister::open(dir.join("each.sqlite")).unwrap();
    percentiles("SqlitePersister::open, save", ours(&each, &pids, false));
    drop(each);
    let batched = SqlitePersister::open_batched(dir.join("batched.sqlite")).unwrap();
    percentiles(
        "SqlitePersister::open_batched, save + flush",
        ours(&batched, &pids, true),
    );
    drop(batched);
    let _ = std::fs::remove_dir_all(&dir);
}
