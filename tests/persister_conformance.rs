//! The contract every checkpoint store keeps, checked the same way for each: memory, a JSON
//! directory, SQLite (each committing every save, or in groups; with leases or without) and
//! PostgreSQL (each committing every save, or in groups).
//!
//! - saves, loads, lists and deletes, with typed errors for what is missing or corrupt;
//! - what one store instance wrote (and flushed) is what the next one opened on the same place
//!   finds;
//! - a crash at every step of a five-step chain with children, then a new program continuing
//!   from the store, gives the same outputs as a run without a crash;
//! - a writer SIGKILLed at a random moment leaves the store holding the result of a prefix of
//!   its writes (for group commit, the whole point; for the others, trivially).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command as Os, Stdio};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use common::{QUICK, bounded, until};
use parking_lot::Mutex;
use runtime_thread::RuntimeThread;
use runtime_thread::engine::{
    CHECKPOINT_VERSION, Chain, ChainContext, Checkpoint, Command, Flow, InMemoryPersister,
    JsonDirPersister, Outline, PersistError, Persistent, Persister, Position, Process,
    ProcessHandle, ProcessState, Runner, StepContext, StepError, WorkChain, step, while_,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// A kind of store, and how to open one on a place.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Memory,
    JsonDir,
    #[cfg(feature = "sqlite")]
    Sqlite {
        group_commit: bool,
        leases: bool,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        group_commit: bool,
    },
}

/// Where a store keeps its checkpoints: a path, a PostgreSQL schema, or (for memory) the one
/// instance, which every "reopening" gives back.
struct Place {
    name: String,
    memory: OnceLock<Arc<InMemoryPersister>>,
}

impl Place {
    fn new(kind: Kind) -> Self {
        let name = match kind {
            #[cfg(feature = "postgres")]
            Kind::Postgres { .. } => common::postgres::unique_schema(),
            _ => std::env::temp_dir()
                .join(format!("runtime-thread-conformance-{}", Uuid::new_v4()))
                .display()
                .to_string(),
        };
        Place {
            name,
            memory: OnceLock::new(),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let path = PathBuf::from(&self.name);
        if path.is_absolute() {
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
            }
        }
    }
}

impl Kind {
    fn open(self, place: &Place) -> Arc<dyn Persister> {
        match self {
            Kind::Memory => place.memory.get_or_init(Default::default).clone(),
            Kind::JsonDir => Arc::new(JsonDirPersister::new(&place.name).unwrap()),
            #[cfg(feature = "sqlite")]
            Kind::Sqlite {
                group_commit,
                leases,
            } => Arc::new(
                runtime_thread::engine::SqlitePersister::builder(&place.name)
                    .group_commit(group_commit)
                    .leases(leases)
                    .open()
                    .unwrap(),
            ),
            #[cfg(feature = "postgres")]
            Kind::Postgres { group_commit } => {
                Arc::new(common::postgres::store(&place.name, group_commit))
            }
        }
    }

    /// As the child process names it.
    fn code(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::JsonDir => "json",
            #[cfg(feature = "sqlite")]
            Kind::Sqlite {
                group_commit,
                leases,
            } => match (group_commit, leases) {
                (false, false) => "sqlite",
                (true, false) => "sqlite-group",
                (false, true) => "sqlite-leases",
                (true, true) => "sqlite-group-leases",
            },
            #[cfg(feature = "postgres")]
            Kind::Postgres {
                group_commit: false,
            } => "postgres",
            #[cfg(feature = "postgres")]
            Kind::Postgres { group_commit: true } => "postgres-group",
        }
    }

    fn from_code(code: &str) -> Self {
        [
            Kind::Memory,
            Kind::JsonDir,
            #[cfg(feature = "sqlite")]
            Kind::Sqlite {
                group_commit: false,
                leases: false,
            },
            #[cfg(feature = "sqlite")]
            Kind::Sqlite {
                group_commit: true,
                leases: false,
            },
            #[cfg(feature = "sqlite")]
            Kind::Sqlite {
                group_commit: false,
                leases: true,
            },
            #[cfg(feature = "sqlite")]
            Kind::Sqlite {
                group_commit: true,
                leases: true,
            },
            #[cfg(feature = "postgres")]
            Kind::Postgres {
                group_commit: false,
            },
            #[cfg(feature = "postgres")]
            Kind::Postgres { group_commit: true },
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
        .unwrap()
    }
}

/// A checkpoint of `pid` whose status says `mark`.
fn checkpoint(pid: Uuid, mark: &str) -> Checkpoint {
    Checkpoint {
        version: CHECKPOINT_VERSION,
        type_name: "tests.Marked".to_owned(),
        pid,
        parent: None,
        ctime: SystemTime::UNIX_EPOCH,
        state: ProcessState::Running,
        paused: false,
        status: Some(mark.to_owned()),
        inputs: None,
        outputs: Default::default(),
        process: json!({}),
        position: Position::Step {
            step: "run".to_owned(),
        },
        resumed: None,
        children: Vec::new(),
        outcome: None,
    }
}

fn mark(store: &dyn Persister, pid: Uuid) -> String {
    store.load(pid).unwrap().status.unwrap()
}

fn sorted(mut pids: Vec<Uuid>) -> Vec<Uuid> {
    pids.sort();
    pids
}

fn round_trip(kind: Kind) {
    let place = Place::new(kind);
    let store = kind.open(&place);
    let (a, b, absent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert!(store.list().unwrap().is_empty());
    store.save(&checkpoint(a, "a1")).unwrap();
    store.save(&checkpoint(b, "b1")).unwrap();
    assert_eq!(mark(&*store, a), "a1");
    assert_eq!(store.load(b).unwrap(), checkpoint(b, "b1"));
    store
        .save_bytes(a, checkpoint(a, "a2").to_bytes().unwrap())
        .unwrap();
    assert_eq!(mark(&*store, a), "a2", "a save replaces the last");
    assert_eq!(sorted(store.list().unwrap()), sorted(vec![a, b]));

    store.delete(b).unwrap();
    store.delete(absent).unwrap();
    assert!(matches!(store.load(b), Err(PersistError::NotFound { pid }) if pid == b));
    assert!(matches!(
        store.load(absent),
        Err(PersistError::NotFound { .. })
    ));
    assert_eq!(store.list().unwrap(), vec![a]);

    // Bytes that are not a checkpoint, or the checkpoint of another process.
    store.save_bytes(b, b"{ not json".to_vec()).unwrap();
    assert!(matches!(store.load(b), Err(PersistError::Corrupt { pid, .. }) if pid == b));
    store
        .save_bytes(b, checkpoint(a, "a in b's place").to_bytes().unwrap())
        .unwrap();
    let error = store.load(b).unwrap_err();
    assert!(error.to_string().contains(&a.to_string()), "{error}");
    store.flush().unwrap();
}

fn reopened_store_finds_what_was_flushed(kind: Kind) {
    let place = Place::new(kind);
    let pids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    {
        let store = kind.open(&place);
        let all = pids
            .iter()
            .map(|pid| (*pid, checkpoint(*pid, "first").to_bytes().unwrap()))
            .collect();
        store.save_all(all).unwrap();
        for pid in &pids[..10] {
            store.save(&checkpoint(*pid, "second")).unwrap();
        }
        for pid in &pids[40..] {
            store.delete(*pid).unwrap();
        }
        store.flush().unwrap();
        // The committed result is visible through a fresh handle right away.
        let other = kind.open(&place);
        assert_eq!(sorted(other.list().unwrap()), sorted(pids[..40].to_vec()));
    }
    let store = kind.open(&place);
    assert_eq!(sorted(store.list().unwrap()), sorted(pids[..40].to_vec()));
    for (n, pid) in pids[..40].iter().enumerate() {
        let expected = if n < 10 { "second" } else { "first" };
        assert_eq!(mark(&*store, *pid), expected);
    }
}

/// A save made through `save_committed` is kept once its answer is ready: a fresh handle
/// finds it without a flush.
fn a_committed_save_is_kept_when_answered(kind: Kind) {
    let place = Place::new(kind);
    let store = kind.open(&place);
    let pid = Uuid::new_v4();
    let committed = store
        .save_committed(pid, checkpoint(pid, "kept").to_bytes().unwrap())
        .unwrap();
    futures::executor::block_on(committed).unwrap();
    let group_commit = match kind {
        #[cfg(feature = "sqlite")]
        Kind::Sqlite { group_commit, .. } => group_commit,
        #[cfg(feature = "postgres")]
        Kind::Postgres { group_commit } => group_commit,
        _ => false,
    };
    if !group_commit {
        assert_eq!(mark(&*kind.open(&place), pid), "kept");
    }
    store.flush().unwrap();
    assert_eq!(mark(&*kind.open(&place), pid), "kept");
}

// ---- A crash at every step -------------------------------------------------------------------

/// A leaf process: outputs `y = 3x`.
#[derive(Serialize, Deserialize)]
struct Leaf {
    x: i64,
}

impl Process for Leaf {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("y", (self.x * 3).into());
        Ok(Command::finish())
    }
}

impl Persistent for Leaf {
    const TYPE_NAME: &'static str = "conformance.Leaf";
}

/// Crash points armed by the test: token -> (step number, who to tell). A step that finds its
/// number here removes the entry, tells the test, and never returns.
type CrashPoints = HashMap<u64, (u32, SyncSender<()>)>;

static CRASH_AT: LazyLock<Mutex<CrashPoints>> = LazyLock::new(Default::default);

fn arm_crash(token: u64, step: u32) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::sync_channel(1);
    CRASH_AT.lock().insert(token, (step, tx));
    rx
}

async fn maybe_crash(token: u64, step: u32) {
    let armed = {
        let mut armed = CRASH_AT.lock();
        match armed.get(&token) {
            Some((at, _)) if *at == step => armed.remove(&token),
            _ => None,
        }
    };
    if let Some((_, crashed)) = armed {
        let _ = crashed.send(());
        std::future::pending::<()>().await;
    }
}

/// Five steps: s1, then s2 twice in a while loop, s3 launches two persisted children and
/// waits for them, s4 folds their results in, s5 emits. Each step folds its number into `acc`
/// (order-sensitive), so a skipped, repeated-with-effect or reordered step changes the output.
#[derive(Serialize, Deserialize)]
struct Five {
    token: u64,
    acc: i64,
    loops: u32,
}

static FIVE: LazyLock<Outline<Five>> = LazyLock::new(|| {
    Outline::new([
        step("s1"),
        while_("twice", |f: &Five, _| f.loops < 2, [step("s2")]),
        step("s3"),
        step("s4"),
        step("s5"),
    ])
});

impl WorkChain for Five {
    const TYPE_NAME: &'static str = "conformance.Five";
    fn outline() -> &'static Outline<Self> {
        &FIVE
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        let number: u32 = step[1..].parse()?;
        maybe_crash(self.token, number).await;
        self.acc = self.acc * 10 + i64::from(number);
        match step {
            "s2" => self.loops += 1,
            "s3" => {
                for (key, x) in [("a", 1), ("b", 2)] {
                    let child = wc
                        .launch_persisted(Leaf { x })
                        .map_err(|e| StepError::msg(e.to_string()))?;
                    wc.to_context(key, &child);
                }
            }
            "s4" => {
                let a = wc.ctx()["a"]["y"].as_i64().unwrap_or(-1000);
                let b = wc.ctx()["b"]["y"].as_i64().unwrap_or(-1000);
                self.acc += a * 100 + b;
            }
            _ => wc.out("acc", self.acc.into()),
        }
        Ok(Flow::Next)
    }
}

fn runner_on(store: Arc<dyn Persister>) -> Runner {
    let thread = RuntimeThread::builder()
        .name("conformance")
        .start()
        .unwrap();
    let runner = Runner::builder()
        .thread(Arc::new(thread))
        .persister(store)
        .start()
        .unwrap();
    runner.register::<Chain<Five>>();
    runner.register::<Leaf>();
    runner
}

fn top_level(handles: Vec<ProcessHandle>) -> ProcessHandle {
    let mut top: Vec<_> = handles
        .into_iter()
        .filter(|h| h.status().parent.is_none())
        .collect();
    assert_eq!(top.len(), 1, "one top-level process was saved");
    top.remove(0)
}

static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn a_crash_at_every_step_then_a_new_program_gives_the_same_outputs(kind: Kind) {
    let chain = |token| {
        Chain::new(Five {
            token,
            acc: 0,
            loops: 0,
        })
    };
    // s1, s2, s2, s3 fold to 1223; s4 folds 4 and adds a = 3 * 1 and b = 3 * 2; s5 folds 5.
    let expected = json!(((12_234 + 306) * 10) + 5);
    for crash_step in 1..=5 {
        let place = Place::new(kind);
        let token = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let crashed = arm_crash(token, crash_step);
        let store = kind.open(&place);
        let first = runner_on(store.clone());
        let handle = first.launch(chain(token)).persisted().start().unwrap();
        crashed.recv_timeout(QUICK).unwrap();
        // Stops the runner's thread at once, as a crash would: the running step is dropped
        // and nothing more is saved.
        first.thread().stop_with_grace(Duration::ZERO).unwrap();
        assert!(handle.wait().is_err(), "the crashed run did not finish");
        // Everything the crashed program wrote is committed. (In a real crash, group commit
        // may also lose the last group: the store is then as it was a moment earlier, a
        // prefix of the writes, which the SIGKILL test below checks.)
        store.flush().unwrap();
        drop((first, store));

        // A new program: a new runner, a new connection to the same place.
        let second = runner_on(kind.open(&place));
        let outputs = top_level(second.load_all().unwrap())
            .wait()
            .unwrap()
            .into_outputs()
            .unwrap();
        assert_eq!(outputs["acc"], expected, "crash at step {crash_step}");
        until(|| second.persister().unwrap().list().unwrap().is_empty());
    }
}

// ---- A writer killed at a random moment -------------------------------------------------------

const PREFIX_KIND: &str = "RUNTIME_THREAD_PREFIX_KIND";
const PREFIX_PLACE: &str = "RUNTIME_THREAD_PREFIX_PLACE";
const PIDS: usize = 8;
const WRITES: u64 = 4000;

/// The writes of the prefix test, the same in the writer and the test: `(pid index, mark)`,
/// a save of `mark`, or a delete for `None`.
fn writes(pids: &[Uuid]) -> impl Iterator<Item = (Uuid, Option<String>)> + '_ {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    (0..WRITES).map(move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pid = pids[(seed % PIDS as u64) as usize];
        let saved = !(seed >> 8).is_multiple_of(4);
        (pid, saved.then(|| n.to_string()))
    })
}

/// The pids of the prefix test, fixed by the place so that both processes know them.
fn prefix_pids(place: &str) -> Vec<Uuid> {
    let hash = place.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..PIDS as u128)
        .map(|n| Uuid::from_u128((u128::from(hash) << 64) | n))
        .collect()
}

/// The writer process: says it is ready, makes every write, and waits to be killed.
#[test]
#[ignore = "the writer process that the prefix test starts"]
fn child_process_prefix_writer() {
    let kind = Kind::from_code(&std::env::var(PREFIX_KIND).unwrap());
    let place = Place {
        name: std::env::var(PREFIX_PLACE).unwrap(),
        memory: OnceLock::new(),
    };
    let store = kind.open(&place);
    println!("ready");
    let pids = prefix_pids(&place.name);
    for (n, (pid, saved)) in writes(&pids).enumerate() {
        match saved {
            Some(mark) => store.save(&checkpoint(pid, &mark)).unwrap(),
            None => store.delete(pid).unwrap(),
        }
        if n % 64 == 0 {
            std::thread::yield_now();
        }
    }
    println!("done");
    // Not a return: the place must not be removed, nor the store flushed, by drops.
    loop {
        std::thread::park();
    }
}

fn a_writer_killed_at_any_moment_leaves_a_prefix_of_its_writes(kind: Kind) {
    let mut seed = u64::from(std::process::id()) | 1;
    for round in 0..6 {
        let place = Place::new(kind);
        let mut writer = Os::new(std::env::current_exe().unwrap())
            .args([
                "child_process_prefix_writer",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(PREFIX_KIND, kind.code())
            .env(PREFIX_PLACE, &place.name)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
        assert!(
            // (after the harness's `test ... ` on one CPU, where it runs one test at a time)
            lines.any(|line| line.is_ok_and(|l| l.ends_with("ready"))),
            "the writer did not start"
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 60_000));
        writer.kill().unwrap();
        writer.wait().unwrap();

        let store = kind.open(&place);
        let found: HashMap<Uuid, String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|pid| (pid, mark(&*store, pid)))
            .collect();
        let pids = prefix_pids(&place.name);
        let mut state: HashMap<Uuid, String> = HashMap::new();
        let mut prefix = (state == found).then_some(0);
        for (n, (pid, saved)) in writes(&pids).enumerate() {
            match saved {
                Some(mark) => state.insert(pid, mark),
                None => state.remove(&pid),
            };
            if state == found {
                prefix = Some(n + 1);
            }
        }
        assert!(
            prefix.is_some(),
            "round {round}: the store is not the result of a prefix of the writes: {found:?}"
        );
    }
}

macro_rules! conformance {
    ($module:ident, $kind:expr $(, #[$attr:meta])*) => {
        mod $module {
            use super::*;

            $(#[$attr])*
            #[test]
            fn round_trip() {
                bounded(QUICK, || super::round_trip($kind));
            }

            $(#[$attr])*
            #[test]
            fn reopened_store_finds_what_was_flushed() {
                bounded(QUICK, || super::reopened_store_finds_what_was_flushed($kind));
            }

            $(#[$attr])*
            #[test]
            fn a_committed_save_is_kept_when_answered() {
                bounded(QUICK, || super::a_committed_save_is_kept_when_answered($kind));
            }

            $(#[$attr])*
            #[test]
            fn a_crash_at_every_step_then_a_new_program_gives_the_same_outputs() {
                bounded(Duration::from_secs(60), || {
                    super::a_crash_at_every_step_then_a_new_program_gives_the_same_outputs($kind)
                });
            }
        }
    };
}

/// The SIGKILL test, for the stores whose checkpoints outlive the writer's process.
macro_rules! killed_writer {
    ($module:ident, $kind:expr $(, #[$attr:meta])*) => {
        mod $module {
            use super::*;

            $(#[$attr])*
            #[test]
            fn a_writer_killed_at_any_moment_leaves_a_prefix_of_its_writes() {
                bounded(Duration::from_secs(120), || {
                    super::a_writer_killed_at_any_moment_leaves_a_prefix_of_its_writes($kind)
                });
            }
        }
    };
}

conformance!(memory, Kind::Memory);
conformance!(json_dir, Kind::JsonDir);
killed_writer!(json_dir_killed, Kind::JsonDir);

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    const EACH: Kind = Kind::Sqlite {
        group_commit: false,
        leases: false,
    };
    const GROUP: Kind = Kind::Sqlite {
        group_commit: true,
        leases: false,
    };
    const EACH_LEASED: Kind = Kind::Sqlite {
        group_commit: false,
        leases: true,
    };
    const GROUP_LEASED: Kind = Kind::Sqlite {
        group_commit: true,
        leases: true,
    };
    conformance!(each, EACH);
    killed_writer!(each_killed, EACH);
    conformance!(group, GROUP);
    killed_writer!(group_killed, GROUP);
    conformance!(each_leased, EACH_LEASED);
    killed_writer!(each_leased_killed, EACH_LEASED);
    conformance!(group_leased, GROUP_LEASED);
    killed_writer!(group_leased_killed, GROUP_LEASED);
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    const EACH: Kind = Kind::Postgres {
        group_commit: false,
    };
    const GROUP: Kind = Kind::Postgres { group_commit: true };
    conformance!(each, EACH, #[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]);
    killed_writer!(each_killed, EACH, #[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]);
    conformance!(group, GROUP, #[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]);
    killed_writer!(group_killed, GROUP, #[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]);
}
