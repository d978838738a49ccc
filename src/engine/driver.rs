//! The loop that drives one process through its states.
//!
//! Between steps it honours a kill (at once) and a pause (it parks until played or killed).
//! During a step, pause and kill wait for the step to return (a graceful kill then discards the
//! step's command); a force-kill drops the step at once. In `Waiting`, pause and kill interrupt
//! the wait at once; a paused wait stays armed and continues after `play`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::Value;
use tokio::sync::watch;

use super::exit_code::ExitCode;
use super::handle::ProcessOutcome;
use super::process::{Command, Context, Outputs, Process, WaitOn};
use super::runner::Runner;
use super::shared::{Control, ProcessShared};
use super::state::ProcessState;
use crate::thread::panic_message;

enum Next {
    Step(String),
    Wait(String, Armed),
}

/// A wait in progress; it survives pauses.
enum Armed {
    Resume,
    Timer(std::pin::Pin<Box<tokio::time::Sleep>>),
    Future(futures::future::BoxFuture<'static, Result<Value, String>>),
}

impl Armed {
    fn arm(on: WaitOn, shared: &ProcessShared) -> Self {
        match on {
            WaitOn::Resume => {
                // A value left over from an earlier wait must not end this one.
                shared.control.send_modify(|c| c.resume = None);
                shared.set_awaiting_resume(true);
                Armed::Resume
            }
            WaitOn::Timer(delay) => Armed::Timer(Box::pin(tokio::time::sleep(delay))),
            WaitOn::Future(future) => Armed::Future(future),
        }
    }

    async fn ready(&mut self, shared: &ProcessShared) -> Result<Value, String> {
        match self {
            Armed::Resume => {
                let mut control = shared.control.subscribe();
                let _ = control.wait_for(|c| c.resume.is_some()).await;
                let mut value = None;
                shared.control.send_modify(|c| value = c.resume.take());
                Ok(value.unwrap_or(Value::Null))
            }
            Armed::Timer(sleep) => {
                sleep.as_mut().await;
                Ok(Value::Null)
            }
            Armed::Future(future) => future.as_mut().await,
        }
    }
}

/// Marks the process killed if its driver is dropped before the end (its runtime stopped).
struct DropGuard(Arc<ProcessShared>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.0.state().is_terminal() {
            self.0
                .kill("the runtime driving the process stopped".to_owned());
        }
    }
}

pub(crate) async fn drive<P: Process>(
    mut process: P,
    shared: Arc<ProcessShared>,
    runner: Runner,
    inputs: Option<Value>,
) -> ProcessOutcome {
    let _guard = DropGuard(shared.clone());
    let mut control = shared.control.subscribe();
    let mut ctx = Context::new(shared.clone(), runner, P::spec(), inputs);
    let mut next = Next::Step(process.first_step().to_owned());
    loop {
        if let Some(killed) = gate(&shared, &mut control).await {
            return killed;
        }
        next = match next {
            Next::Step(name) => {
                shared.transition(ProcessState::Running);
                let step = AssertUnwindSafe(process.step(&name, &mut ctx)).catch_unwind();
                let result = tokio::select! {
                    biased;
                    message = force_kill(&mut control) => return shared.kill(message),
                    result = step => result,
                };
                // A kill asked for during the step wins over what the step decided.
                if let Some(kill) = control.borrow_and_update().kill.clone() {
                    return shared.kill(kill.message);
                }
                // An output that failed its port's checks ends the process, as a raised error would.
                if let Some(invalid) = ctx.invalid_output.take() {
                    return shared.except(invalid.to_string());
                }
                match result {
                    Err(payload) => {
                        return shared
                            .except(format!("a step panicked: {}", panic_message(&*payload)));
                    }
                    Ok(Err(error)) => return shared.except(error.0),
                    Ok(Ok(Command::Continue(step))) => Next::Step(step),
                    Ok(Ok(Command::Stop(code))) => {
                        return finish::<P>(&shared, code, std::mem::take(&mut ctx.outputs));
                    }
                    Ok(Ok(Command::Kill(message))) => return shared.kill(message),
                    Ok(Ok(Command::Wait { then, on })) => {
                        // Arm first: whoever sees `Waiting` must find a resume wait ready.
                        let armed = Armed::arm(on, &shared);
                        shared.transition(ProcessState::Waiting);
                        Next::Wait(then, armed)
                    }
                }
            }
            Next::Wait(then, mut armed) => {
                let woke = tokio::select! {
                    biased;
                    _ = control.wait_for(|c| c.paused || c.kill.is_some()) => None,
                    value = armed.ready(&shared) => Some(value),
                };
                match woke {
                    // Paused or killed: the gate above deals with it; the wait stays armed.
                    None => Next::Wait(then, armed),
                    Some(Ok(value)) => {
                        shared.set_awaiting_resume(false);
                        ctx.resumed = Some(value);
                        Next::Step(then)
                    }
                    Some(Err(error)) => return shared.except(error),
                }
            }
        };
    }
}

/// Finishes; a successful finish must have every required output, or it becomes a failure with
/// exit code 11 (AiiDA's "missing output") naming the port.
fn finish<P: Process>(shared: &ProcessShared, code: ExitCode, outputs: Outputs) -> ProcessOutcome {
    if !code.is_success() {
        return shared.finish(code, outputs);
    }
    let mut checked = Value::Object(outputs.into_iter().collect());
    let outcome = P::spec().validate_outputs(&mut checked);
    let outputs: Outputs = match checked {
        Value::Object(map) => map.into_iter().collect(),
        _ => Outputs::new(),
    };
    match outcome {
        Ok(()) => shared.finish(code, outputs),
        Err(missing) => shared.finish(ExitCode::new(MISSING_OUTPUT, missing.to_string()), outputs),
    }
}

/// The exit status of a process that finished without a required output (as in AiiDA).
pub(crate) const MISSING_OUTPUT: u32 = 11;

/// Between steps: a kill ends the process now; a pause parks it until played (or killed).
async fn gate(
    shared: &ProcessShared,
    control: &mut watch::Receiver<Control>,
) -> Option<ProcessOutcome> {
    let mut parked = false;
    loop {
        let (kill, paused) = {
            let c = control.borrow_and_update();
            (c.kill.clone(), c.paused)
        };
        if let Some(kill) = kill {
            return Some(shared.kill(kill.message));
        }
        if !paused {
            if parked {
                shared.set_paused(false, None);
            }
            return None;
        }
        if !parked {
            parked = true;
            shared.set_paused(true, Some("paused".to_owned()));
        }
        if control.changed().await.is_err() {
            // The sender lives in `shared`, which outlives this loop: unreachable in practice.
            return Some(shared.kill("the process's controls went away".to_owned()));
        }
    }
}

async fn force_kill(control: &mut watch::Receiver<Control>) -> String {
    let message = control
        .wait_for(|c| c.kill.as_ref().is_some_and(|k| k.force))
        .await
        .map(|c| {
            c.kill
                .as_ref()
                .map(|k| k.message.clone())
                .unwrap_or_default()
        });
    match message {
        Ok(message) => message,
        // The sender lives as long as the process: never in practice.
        Err(_) => std::future::pending().await,
    }
}
