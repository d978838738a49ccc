//! 18 · A daemon: a pool of worker processes that run your processes in the background.
//!
//! Example 17 ran one worker by hand. A real deployment, like AiiDA's `verdi daemon`, keeps a
//! pool of workers alive and steers it from the command line. With the `cli` feature, a few
//! lines give your program that command line; the same binary is the command line, the
//! supervisor and every worker, so the process types registered here are the ones the
//! workers run:
//!
//! ```text
//! squares daemon start 2                       # a supervisor in the background, 2 workers
//! squares daemon status                        # pids, CPU, memory, uptime, restarts
//! squares process submit squares.Sum --inputs '{"n": 4}'          # prints the pid
//! squares process submit squares.Sum --inputs '{"n": 4}' --wait   # prints the outputs
//! squares process list                         # what the checkpoint store holds
//! squares daemon incr                          # a third worker
//! squares daemon logs                          # what the workers printed
//! squares daemon stop                          # steps end, workers exit, nothing is left
//! ```
//!
//! The workers need RabbitMQ (the project's own node: `export SQUARES_BROKER_URL=$(scripts/rabbitmq
//! start)`); without one, `daemon start` says so. The settings (broker, store, queue, workers,
//! slots, files) come from `--config FILE`, `$SQUARES_CONFIG` or `~/.config/squares/daemon.json`,
//! and `SQUARES_*` variables: see `DaemonConfig`; `SQUARES_STORE_URL=postgres://...` puts the
//! checkpoints in PostgreSQL, for workers on several machines. `SQUARES_TRACE=1` adds the
//! library's own events to the log.
//!
//! `cargo run --features cli --example 18_daemon -- daemon start 2`

use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::Duration;

use runtime_thread::daemon::cli::Cli;
use runtime_thread::engine::{
    ChainContext, Command, Flow, Outline, Persistent, Process, StepContext, StepError, WorkChain,
    step,
};

/// Squares `x`, after `delay_ms` of waiting (a stand-in for real work that takes time).
#[derive(serde::Serialize, serde::Deserialize)]
struct Square {
    x: i64,
    #[serde(default)]
    delay_ms: u64,
}

impl Process for Square {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            // A timer wait is saved in the checkpoint: a worker that continues the process
            // after a crash waits only for what is left.
            return Ok(Command::sleep("done", Duration::from_millis(self.delay_ms)));
        }
        ctx.out("y", (self.x * self.x).into());
        Ok(Command::finish())
    }
}

impl Persistent for Square {
    const TYPE_NAME: &'static str = "squares.Square";
}

/// Sums the squares of 1..=n, each computed by a child process, all waited on at once.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sum {
    n: i64,
    #[serde(default = "default_delay")]
    delay_ms: u64,
}

fn default_delay() -> u64 {
    200
}

static SUM: LazyLock<Outline<Sum>> = LazyLock::new(|| Outline::new([step("launch"), step("add")]));

impl WorkChain for Sum {
    const TYPE_NAME: &'static str = "squares.Sum";

    fn outline() -> &'static Outline<Self> {
        &SUM
    }

    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        if step == "launch" {
            for x in 1..=self.n {
                let square = Square {
                    x,
                    delay_ms: self.delay_ms,
                };
                // Saved with the chain: whoever continues the chain continues its children.
                let child = wc
                    .launch_persisted(square)
                    .map_err(|e| StepError::msg(e.to_string()))?;
                wc.to_context(format!("square{x}"), &child);
            }
            // Waits for every child in the context before the next step.
            return Ok(Flow::Next);
        }
        let sum: i64 = wc.ctx().values().filter_map(|out| out["y"].as_i64()).sum();
        wc.out("sum", sum.into());
        Ok(Flow::Next)
    }
}

fn main() -> ExitCode {
    // `SQUARES_TRACE=1`: the library's events (warnings of a store or broker that went away,
    // and the like) go to stderr, which the daemon's log keeps for its workers.
    if std::env::var_os("SQUARES_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_target(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
    Cli::new("squares")
        .about("Sums squares in the background: the runtime-thread daemon example")
        .launcher(|launcher| launcher.process::<Square>().chain::<Sum>())
        .run()
}
