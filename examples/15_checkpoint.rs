//! 15 · Checkpoints: stop the program, continue from the checkpoint in a new run.
//!
//! A persisted process is saved at every state it enters. Here an order goes through a work
//! chain: it is priced, then it waits for an approval that comes from outside. The first run
//! starts it and, while it waits, ends the program abruptly (`std::process::exit`, nothing is
//! shut down). A second run, a new OS process, loads the checkpoint from the directory, sends
//! the approval, and the chain finishes from where it stood: the pricing step does not run
//! again, and its result comes back from the checkpoint.
//!
//! Run it: `cargo run --example 15_checkpoint` (runs both phases as child processes), or by
//! hand: `... -- first DIR`, then `... -- second DIR`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use runtime_thread::RuntimeThread;
use runtime_thread::engine::{
    Chain, ChainContext, Command, EngineError, Flow, JsonDirPersister, Outline, Persistent,
    Process, ProcessState, Runner, StepContext, StepError, WorkChain, step,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A child that waits for an approval (an external `resume`) and reports who gave it.
#[derive(Serialize, Deserialize)]
struct Approval;

impl Process for Approval {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" => Ok(Command::wait_for_resume("approved")),
            _ => {
                let by = ctx.take_resume_value().unwrap_or(json!("nobody"));
                ctx.out("by", by);
                Ok(Command::finish())
            }
        }
    }
}

impl Persistent for Approval {
    const TYPE_NAME: &'static str = "examples.Approval";
}

/// The order: price it, wait for approval, ship it. Its fields are saved with it.
#[derive(Serialize, Deserialize)]
struct Order {
    items: u32,
    price: Option<f64>,
    priced_in_pid: Option<u32>,
}

static OUTLINE: LazyLock<Outline<Order>> =
    LazyLock::new(|| Outline::new([step("price"), step("approve"), step("ship")]));

impl WorkChain for Order {
    const TYPE_NAME: &'static str = "examples.Order";

    fn outline() -> &'static Outline<Self> {
        &OUTLINE
    }

    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "price" => {
                self.price = Some(f64::from(self.items) * 9.5);
                self.priced_in_pid = Some(std::process::id());
            }
            "approve" => {
                // A persisted child, so that the reloaded order finds it again.
                let approval = wc
                    .launch_persisted(Approval)
                    .map_err(|e| StepError::msg(e.to_string()))?;
                wc.to_context("approval", &approval);
            }
            _ => {
                wc.out("price", json!(self.price));
                wc.out("priced_in_pid", json!(self.priced_in_pid));
                wc.out("approved_by", wc.ctx()["approval"]["by"].clone());
            }
        }
        Ok(Flow::Next)
    }
}

fn runner(dir: &Path) -> Result<Runner, EngineError> {
    let thread = Arc::new(RuntimeThread::builder().name("orders").start()?);
    let runner = Runner::builder()
        .thread(thread)
        .persister(Arc::new(JsonDirPersister::new(dir)?))
        .start()?;
    // Loading finds types by these names only: a checkpoint never names code to run.
    runner.register::<Chain<Order>>();
    runner.register::<Approval>();
    Ok(runner)
}

fn first_run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let runner = runner(dir)?;
    let order = runner
        .launch(Chain::new(Order {
            items: 4,
            price: None,
            priced_in_pid: None,
        }))
        .persisted()
        .start()?;
    // Wait until both show `Waiting`: a process is saved before it shows a new state, so both
    // checkpoints now hold their waits (the order's: for its child, by pid).
    let waiting = |state: ProcessState| state == ProcessState::Waiting;
    while !(waiting(order.status().state)
        && order.children().iter().any(|c| waiting(c.status().state)))
    {
        std::thread::yield_now();
    }
    println!(
        "[run 1, pid {}] order {} is waiting for approval",
        std::process::id(),
        order.pid()
    );
    for file in std::fs::read_dir(dir)?.flatten() {
        println!("[run 1] saved: {}", file.file_name().to_string_lossy());
    }
    println!("[run 1] exiting abruptly");
    std::process::exit(0);
}

fn second_run(dir: &Path) -> Result<(), EngineError> {
    let runner = runner(dir)?;
    // The top-level processes come back; their children run under them.
    let orders = runner.load_all()?;
    println!(
        "[run 2, pid {}] loaded {} order(s)",
        std::process::id(),
        orders.len()
    );
    for order in orders {
        for approval in order.children() {
            approval.resume(json!("the manager"))?;
        }
        // Taking the outcome hands it over: only now does the order's checkpoint go.
        let outputs = order.wait()?.into_outputs()?;
        println!("[run 2] order finished: {}", json!(outputs));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [phase, dir] if phase == "first" => first_run(Path::new(dir))?,
        [phase, dir] if phase == "second" => second_run(Path::new(dir))?,
        _ => {
            let dir: PathBuf = std::env::temp_dir()
                .join(format!("runtime-thread-example-14-{}", std::process::id()));
            let me = std::env::current_exe()?;
            for phase in ["first", "second"] {
                let status = std::process::Command::new(&me)
                    .arg(phase)
                    .arg(&dir)
                    .status()?;
                if !status.success() {
                    return Err(format!("the {phase} run failed: {status}").into());
                }
            }
            let left = std::fs::read_dir(&dir)?.count();
            println!("checkpoints left after the order finished: {left}");
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}
