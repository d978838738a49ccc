//! 14 · Pause, play and kill a process from another thread.
//!
//! Pausing is a flag, not a state: a running step always finishes, and the process stops before
//! its next step; a waiting process pauses at once and its wait stays armed. A kill ends the
//! process (a force-kill even drops a running step). A value sent to a waiting process while it
//! is paused is kept for when it is played.
//!
//! Run it: `cargo run --example 14_pause_play_kill`

use std::time::Duration;

use runtime_thread::engine::{
    Command, EngineError, Process, ProcessState, Runner, StepContext, StepError,
};
use serde_json::json;

/// Counts ticks until it is told to stop waiting.
struct Ticker {
    ticks: u32,
}

impl Process for Ticker {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" | "tick" => {
                self.ticks += 1;
                ctx.out("ticks", json!(self.ticks));
                if self.ticks < 5 {
                    Ok(Command::sleep("tick", Duration::from_millis(20)))
                } else {
                    Ok(Command::wait_for_resume("done"))
                }
            }
            "done" => {
                let note = ctx.take_resume_value().unwrap_or_default();
                ctx.out("note", note);
                Ok(Command::finish())
            }
            other => Err(StepError::msg(format!("unknown step {other}"))),
        }
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    // Polling a status snapshot is fine in an example; programs would use a listener.
    while !condition() {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("{what}");
}

fn main() -> Result<(), EngineError> {
    let runner = Runner::start()?;
    let handle = runner.submit(Ticker { ticks: 0 });
    let control = handle.controller();

    // Another thread controls it while this one waits for the outcome.
    let controller = std::thread::spawn(move || {
        control.pause();
        wait_until("paused", || control.status().paused);
        std::thread::sleep(Duration::from_millis(50));
        println!("still {} while paused", control.status().state);
        control.play();
        // A resume is refused (with a typed error) until the process waits for one.
        match control.resume(json!("resumed at once")) {
            Ok(()) => println!("it was already waiting for a resume"),
            Err(error) => {
                println!("resume refused: {error}");
                wait_until("waiting for a resume", || control.status().awaiting_resume);
                // Pause, resume, play in quick succession: the value is kept until played.
                control.pause();
                control.resume(json!("resumed while paused")).ok();
                control.play();
            }
        }
    });
    let outcome = handle.wait()?;
    controller.join().ok();
    println!("outcome: {:?}", outcome.into_outputs()?);

    // Killing: a waiting process dies at once.
    let doomed = runner.submit(Ticker { ticks: 4 });
    let control = doomed.controller();
    wait_until("second process waiting", || {
        control.status().state == ProcessState::Waiting
    });
    control.kill("no longer needed");
    println!("second process: {:?}", doomed.wait()?);
    Ok(())
}
