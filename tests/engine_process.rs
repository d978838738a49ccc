//! The process state machine and its driver: every transition, pause/play/kill in every state,
//! and the faults plumpy has.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{QUICK, Recorder, bounded};
use parking_lot::Mutex;
use runtime_thread::engine::{
    Command, EngineError, ExitCode, Process, ProcessListener, ProcessOutcome, ProcessState, Runner,
    StepContext, StepError,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// A process scripted from a list of steps, each a closure returning its command.
type Script = Vec<(
    &'static str,
    Box<dyn FnMut(&mut StepContext) -> Result<Command, StepError> + Send>,
)>;

struct Scripted(Script);

impl Process for Scripted {
    fn first_step(&self) -> &'static str {
        self.0.first().map_or("run", |(name, _)| name)
    }
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        let (_, body) = self
            .0
            .iter_mut()
            .find(|(name, _)| *name == step)
            .ok_or_else(|| StepError::msg(format!("no step {step}")))?;
        body(ctx)
    }
}

/// A process whose single step waits for a signal before returning `then`.
struct Gated {
    gate: Option<tokio::sync::oneshot::Receiver<()>>,
    entered: std::sync::mpsc::Sender<()>,
    ran_second: Arc<Mutex<bool>>,
}

impl Process for Gated {
    async fn step(&mut self, step: &str, _ctx: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" => {
                let _ = self.entered.send(());
                if let Some(gate) = self.gate.take() {
                    let _ = gate.await;
                }
                Ok(Command::next("second"))
            }
            _ => {
                *self.ran_second.lock() = true;
                Ok(Command::finish())
            }
        }
    }
}

/// Waits for a resume, then finishes with the value it got as output.
struct WaitsForResume;

impl Process for WaitsForResume {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" => Ok(Command::wait_for_resume("resumed")),
            _ => {
                let value = ctx.take_resume_value().unwrap_or(Value::Null);
                ctx.out("value", value);
                Ok(Command::finish())
            }
        }
    }
}

/// Waits (bounded by the test watchdog) until the process reaches `state`.
fn until_state(controller: &runtime_thread::engine::ProcessController, state: ProcessState) {
    controller
        .wait_for_state(state, QUICK)
        .unwrap_or_else(|error| panic!("the process never reached {state:?}: {error}"));
}

/// Waits (bounded by the test watchdog) until no submitted work is left on the runner's thread.
fn until_idle(runner: &Runner) {
    while runner.thread().stats().in_flight > 0 {
        std::thread::yield_now();
    }
}

#[test]
fn steps_continue_emit_outputs_and_finish() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let recorder = Arc::new(Recorder::default());
        let process = Scripted(vec![
            (
                "first",
                Box::new(|ctx| {
                    ctx.out("a", json!(1));
                    Ok(Command::next("second"))
                }),
            ),
            (
                "second",
                Box::new(|ctx| {
                    ctx.out("b", json!(2));
                    Ok(Command::finish())
                }),
            ),
        ]);
        let handle = runner
            .launch(process)
            .listener(recorder.clone())
            .start()
            .unwrap();
        let outcome = handle.wait().unwrap();
        let ProcessOutcome::Finished { exit_code, outputs } = outcome else {
            panic!("expected Finished, got {outcome:?}");
        };
        assert_eq!(exit_code, ExitCode::OK);
        assert_eq!(outputs["a"], 1);
        assert_eq!(outputs["b"], 2);
        assert_eq!(
            *recorder.0.lock(),
            [
                "-->created",
                "created->running",
                "out:a",
                "running->running",
                "out:b",
                "running->finished"
            ]
        );
    });
}

#[test]
fn failures_exceptions_panics_and_kill_commands_end_in_the_right_state() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let failed = runner.run(Scripted(vec![(
            "run",
            Box::new(|_| Ok(Command::fail(300, "bad input"))),
        )]));
        assert!(
            matches!(&failed, Err(EngineError::Failed { exit_code }) if exit_code.status == 300),
            "{failed:?}"
        );
        let excepted = runner.submit(Scripted(vec![(
            "run",
            Box::new(|_| Err(StepError::msg("disk full"))),
        )]));
        let ProcessOutcome::Excepted { message, step, .. } = excepted.wait().unwrap() else {
            panic!("not excepted")
        };
        assert_eq!(
            (message.as_str(), step.as_deref()),
            ("disk full", Some("run"))
        );
        let panicked = runner.submit(Scripted(vec![("run", Box::new(|_| panic!("step bug")))]));
        match panicked.wait().unwrap() {
            ProcessOutcome::Excepted { message, .. } => {
                assert!(message.contains("step bug"), "{message}")
            }
            other => panic!("expected Excepted, got {other:?}"),
        }
        let killed = runner.submit(Scripted(vec![(
            "run",
            Box::new(|_| Ok(Command::Kill("enough".into()))),
        )]));
        assert_eq!(
            killed.wait().unwrap(),
            ProcessOutcome::Killed {
                message: "enough".into()
            }
        );
        let unknown = runner.run(Scripted(vec![(
            "run",
            Box::new(|_| Ok(Command::next("nowhere"))),
        )]));
        assert!(
            matches!(unknown, Err(EngineError::Excepted { message, .. }) if message.contains("nowhere"))
        );
    });
}

#[test]
fn waiting_for_a_resume_a_timer_and_a_future() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handle = runner.submit(WaitsForResume);
        let controller = handle.controller();
        until_state(&controller, ProcessState::Waiting);
        controller.resume(json!("hello")).unwrap();
        let outputs = handle.wait().unwrap().into_outputs().unwrap();
        assert_eq!(outputs["value"], "hello");

        let timer = runner.run(Scripted(vec![
            (
                "run",
                Box::new(|_| Ok(Command::sleep("after", Duration::from_millis(5)))),
            ),
            (
                "after",
                Box::new(|ctx| {
                    ctx.out("woke", json!(true));
                    Ok(Command::finish())
                }),
            ),
        ]));
        assert_eq!(timer.unwrap()["woke"], true);

        let future = runner.run(Scripted(vec![
            (
                "run",
                Box::new(|_| Ok(Command::wait_on("after", async { Ok(json!(7)) }))),
            ),
            (
                "after",
                Box::new(|ctx| {
                    let v = ctx.take_resume_value().unwrap_or_default();
                    ctx.out("got", v);
                    Ok(Command::finish())
                }),
            ),
        ]));
        assert_eq!(future.unwrap()["got"], 7);
        let failing = runner.run(Scripted(vec![(
            "run",
            Box::new(|_| {
                Ok(Command::wait_on("after", async {
                    Err("upstream failed".to_owned())
                }))
            }),
        )]));
        assert!(
            matches!(failing, Err(EngineError::Excepted { message, .. }) if message == "upstream failed")
        );
    });
}

#[test]
fn resume_outside_waiting_is_a_typed_error() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        // Waiting, but on a timer: a resume is refused, not stored for later.
        let sleeper = runner.submit(Scripted(vec![
            (
                "run",
                Box::new(|_| Ok(Command::sleep("next", Duration::from_secs(3600)))),
            ),
            ("next", Box::new(|_| Ok(Command::finish()))),
        ]));
        until_state(&sleeper.controller(), ProcessState::Waiting);
        assert!(matches!(
            sleeper.resume(json!(1)),
            Err(EngineError::InvalidState {
                state: ProcessState::Waiting,
                ..
            })
        ));
        sleeper.kill("done");
        let handle = runner.submit(Scripted(vec![("run", Box::new(|_| Ok(Command::finish())))]));
        let controller = handle.controller();
        handle.wait().unwrap();
        assert!(matches!(
            controller.resume(json!(1)),
            Err(EngineError::InvalidState {
                state: ProcessState::Finished,
                ..
            })
        ));
        // Terminal: nothing to pause, play or kill.
        assert!(!controller.pause() && !controller.play() && !controller.kill("late"));
    });
}

#[test]
fn pause_and_kill_in_created_act_before_the_first_step() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let inner = runner.clone();
        // Submitting from a task on the runtime thread: the driver cannot run before we yield.
        let (paused, killed) = runner
            .thread()
            .run_threadsafe(async move {
                let paused = inner.submit(WaitsForResume);
                paused.pause();
                let killed = inner.submit(WaitsForResume);
                killed.kill("never started");
                (paused, killed)
            })
            .wait()
            .unwrap();
        let controller = paused.controller();
        while !controller.status().paused {
            std::thread::yield_now();
        }
        assert_eq!(controller.status().state, ProcessState::Created);
        assert_eq!(
            killed.wait().unwrap(),
            ProcessOutcome::Killed {
                message: "never started".into()
            }
        );
        controller.play();
        until_state(&controller, ProcessState::Waiting);
        controller.resume(json!(1)).unwrap();
        assert!(paused.wait().unwrap().into_outputs().is_ok());
    });
}

fn gated(
    runner: &Runner,
) -> (
    runtime_thread::engine::ProcessHandle,
    tokio::sync::oneshot::Sender<()>,
    Arc<Mutex<bool>>,
) {
    let (release, gate) = tokio::sync::oneshot::channel();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let ran_second = Arc::new(Mutex::new(false));
    let handle = runner.submit(Gated {
        gate: Some(gate),
        entered: entered_tx,
        ran_second: ran_second.clone(),
    });
    entered.recv_timeout(QUICK).unwrap();
    (handle, release, ran_second)
}

#[test]
fn pause_during_a_step_takes_effect_when_the_step_returns() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let (handle, release, ran_second) = gated(&runner);
        let controller = handle.controller();
        assert!(controller.pause());
        assert_eq!(controller.status().state, ProcessState::Running);
        release.send(()).unwrap();
        while !controller.status().paused {
            std::thread::yield_now();
        }
        assert!(!*ran_second.lock(), "paused before the next step");
        controller.play();
        assert!(handle.wait().unwrap().into_outputs().is_ok());
        assert!(*ran_second.lock());
    });
}

#[test]
fn a_graceful_kill_during_a_step_discards_its_command() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let (handle, release, ran_second) = gated(&runner);
        assert!(handle.kill("stop after this step"));
        release.send(()).unwrap();
        assert_eq!(
            handle.wait().unwrap(),
            ProcessOutcome::Killed {
                message: "stop after this step".into()
            }
        );
        assert!(!*ran_second.lock(), "the step's Continue was discarded");
    });
}

#[test]
fn a_force_kill_drops_a_running_step_at_once() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let (handle, release, _) = gated(&runner);
        assert!(handle.force_kill("now"));
        assert_eq!(
            handle.wait().unwrap(),
            ProcessOutcome::Killed {
                message: "now".into()
            }
        );
        // The step's future was dropped, so the gate's receiver is gone.
        assert!(release.send(()).is_err());
    });
}

#[test]
fn force_kill_while_waiting_ends_killed_and_releases_the_driver() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handle = runner.submit(WaitsForResume);
        until_state(&handle.controller(), ProcessState::Waiting);
        handle.force_kill("abandon");
        assert_eq!(
            handle.wait().unwrap(),
            ProcessOutcome::Killed {
                message: "abandon".into()
            }
        );
        // Nothing is left running on the thread (a leaked driver would hang this loop and trip
        // the watchdog; the count settles just after the handle resolves).
        until_idle(&runner);
    });
}

#[test]
fn kill_while_paused_ends_killed_and_releases_the_driver() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handle = runner.submit(WaitsForResume);
        let controller = handle.controller();
        until_state(&controller, ProcessState::Waiting);
        controller.pause();
        while !controller.status().paused {
            std::thread::yield_now();
        }
        controller.kill("while paused");
        assert_eq!(
            handle.wait().unwrap(),
            ProcessOutcome::Killed {
                message: "while paused".into()
            }
        );
        until_idle(&runner);
    });
}

#[test]
fn pause_then_resume_in_quick_succession_is_not_lost() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        for round in 0..200 {
            let handle = runner.submit(WaitsForResume);
            let controller = handle.controller();
            until_state(&controller, ProcessState::Waiting);
            controller.pause();
            controller.resume(json!(round)).unwrap();
            controller.play();
            let outputs = handle.wait().unwrap().into_outputs().unwrap();
            assert_eq!(outputs["value"], round, "the resume was lost");
        }
    });
}

#[test]
fn cancelling_the_handle_ends_killed_not_excepted() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handle = runner.submit(WaitsForResume);
        until_state(&handle.controller(), ProcessState::Waiting);
        assert!(handle.cancel());
        let outcome = handle.wait().unwrap();
        assert_eq!(outcome.state(), ProcessState::Killed, "{outcome:?}");
    });
}

#[test]
fn paused_waiting_process_keeps_its_wait_armed_across_play() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let recorder = Arc::new(Recorder::default());
        let handle = runner
            .launch(WaitsForResume)
            .listener(recorder.clone())
            .start()
            .unwrap();
        let controller = handle.controller();
        until_state(&controller, ProcessState::Waiting);
        controller.pause();
        while !controller.status().paused {
            std::thread::yield_now();
        }
        assert_eq!(controller.status().state, ProcessState::Waiting);
        controller.play();
        while controller.status().paused {
            std::thread::yield_now();
        }
        controller.resume(json!("after play")).unwrap();
        let outputs = handle.wait().unwrap().into_outputs().unwrap();
        assert_eq!(outputs["value"], "after play");
        let events = recorder.0.lock().clone();
        assert!(
            events.contains(&"paused".to_owned()) && events.contains(&"played".to_owned()),
            "{events:?}"
        );
    });
}

struct Parent;

struct Child(i64);

impl Process for Child {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        tokio::task::yield_now().await;
        ctx.out("square", json!(self.0 * self.0));
        Ok(Command::finish())
    }
}

impl Process for Parent {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        // Run children to completion from inside a step: just await them.
        let children: Vec<_> = (1..=3).map(|i| ctx.launch(Child(i))).collect();
        let mut total = 0;
        for child in children {
            let outputs = child
                .await
                .map_err(|e| StepError::msg(e.to_string()))?
                .into_outputs();
            total += outputs.map_err(|e| StepError::msg(e.to_string()))?["square"]
                .as_i64()
                .unwrap_or(0);
        }
        ctx.out("sum_of_squares", json!(total));
        Ok(Command::finish())
    }
}

#[test]
fn a_step_runs_children_to_completion_by_awaiting_them() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let outputs = runner.run(Parent).unwrap();
        assert_eq!(outputs["sum_of_squares"], 14);
    });
}

#[test]
fn ten_thousand_processes_wait_at_once_on_one_thread() {
    bounded(Duration::from_secs(60), || {
        const N: usize = 10_000;
        let runner = Runner::start().unwrap();
        let handles: Vec<_> = (0..N).map(|_| runner.submit(WaitsForResume)).collect();
        for handle in &handles {
            until_state(&handle.controller(), ProcessState::Waiting);
        }
        for (i, handle) in handles.iter().enumerate() {
            handle.resume(json!(i)).unwrap();
        }
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.wait().unwrap().into_outputs().unwrap()["value"], i);
        }
    });
}

#[test]
fn a_stopped_runtime_ends_waiting_processes_killed() {
    bounded(QUICK, || {
        let thread = Arc::new(
            runtime_thread::RuntimeThread::builder()
                .grace_period(Duration::from_millis(10))
                .start()
                .unwrap(),
        );
        let runner = Runner::builder().thread(thread.clone()).start().unwrap();
        let handle = runner.submit(WaitsForResume);
        let controller = handle.controller();
        until_state(&controller, ProcessState::Waiting);
        thread.stop().unwrap();
        assert!(matches!(
            handle.wait(),
            Err(EngineError::Thread(runtime_thread::Error::Stopped))
        ));
        assert_eq!(controller.status().state, ProcessState::Killed);
    });
}

struct Panicky;
impl ProcessListener for Panicky {
    fn on_state_changed(&self, _: Uuid, _: Option<ProcessState>, _: ProcessState) {
        panic!("listener bug");
    }
}

#[test]
fn a_panicking_listener_is_not_fatal() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handle = runner
            .launch(Scripted(vec![("run", Box::new(|_| Ok(Command::finish())))]))
            .listener(Arc::new(Panicky))
            .start()
            .unwrap();
        assert!(handle.wait().unwrap().into_outputs().is_ok());
    });
}

#[test]
fn on_finish_callbacks_run_once_sync_or_async_and_a_panicking_one_is_not_fatal() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();

        // Registered before the end: runs on the runner's thread when the process ends.
        let waiting = runner.submit(WaitsForResume);
        let controller = waiting.controller();
        let sync_tx = tx.clone();
        waiting.on_finish(move |outcome| {
            let _ = sync_tx.send(("sync", outcome.map(|o| o.state()).ok()));
        });
        until_state(&controller, ProcessState::Waiting);
        controller.resume(json!(1)).unwrap();
        assert_eq!(
            rx.recv_timeout(QUICK).unwrap(),
            ("sync", Some(ProcessState::Finished))
        );

        // An async callback, registered after the end: still runs, once.
        let ended = runner.submit(WaitsForResume);
        let controller = ended.controller();
        until_state(&controller, ProcessState::Waiting);
        controller.kill("enough");
        until_state(&controller, ProcessState::Killed);
        let async_tx = tx.clone();
        ended.on_finish_async(move |outcome| async move {
            tokio::task::yield_now().await;
            let _ = async_tx.send(("async", outcome.map(|o| o.state()).ok()));
        });
        assert_eq!(
            rx.recv_timeout(QUICK).unwrap(),
            ("async", Some(ProcessState::Killed))
        );

        // A panicking callback is contained; the runner keeps working.
        let panicky = runner.submit(WaitsForResume);
        let controller = panicky.controller();
        panicky.on_finish(|_| panic!("a callback that fails"));
        until_state(&controller, ProcessState::Waiting);
        controller.resume(json!(2)).unwrap();
        until_state(&controller, ProcessState::Finished);
        assert!(runner.run(FinishesAtOnce).is_ok());
        assert!(rx.try_recv().is_err(), "each callback ran exactly once");
    });
}

/// Finishes at once.
struct FinishesAtOnce;

impl Process for FinishesAtOnce {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Ok(Command::finish())
    }
}

#[test]
fn parked_waiting_processes_wake_for_control_from_many_threads_at_once() {
    // A process waiting for a resume is parked as data, not as a task: every control change
    // must wake it, whichever thread sends it, and none may be lost between park and wake.
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handles: Vec<_> = (0..2000).map(|_| runner.submit(WaitsForResume)).collect();
        let controllers: Vec<_> = handles.iter().map(|h| h.controller()).collect();
        for controller in &controllers {
            until_state(controller, ProcessState::Waiting);
        }
        let controllers = Arc::new(controllers);
        let senders: Vec<_> = (0..4)
            .map(|lane| {
                let controllers = controllers.clone();
                std::thread::spawn(move || {
                    for (i, controller) in controllers.iter().enumerate() {
                        if i % 4 != lane {
                            continue;
                        }
                        // Pause and play race the park of a driver woken by the previous
                        // request; the resume sent while paused must survive the play.
                        controller.pause();
                        controller.resume(json!(i)).unwrap();
                        controller.play();
                        if i % 10 == 0 {
                            controller.kill("chosen");
                        }
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.wait().unwrap() {
                ProcessOutcome::Finished { outputs, .. } => assert_eq!(outputs["value"], i),
                ProcessOutcome::Killed { .. } => assert_eq!(i % 10, 0, "process {i} was killed"),
                other => panic!("process {i}: {other:?}"),
            }
        }
    });
}

#[test]
fn a_runner_on_a_thread_never_started_says_so() {
    bounded(QUICK, || {
        let thread = Arc::new(runtime_thread::RuntimeThread::builder().build().unwrap());
        let runner = Runner::builder().thread(thread).start().unwrap();
        let error = runner.submit(WaitsForResume).wait().unwrap_err();
        assert!(
            matches!(
                error,
                EngineError::Thread(runtime_thread::Error::NotStarted)
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("not been started"), "{error}");
    });
}

#[test]
fn waiting_for_a_state_returns_when_it_is_reached_and_says_when_it_never_will_be() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let waiting = runner.submit(WaitsForResume);
        let status = waiting
            .wait_for_state(ProcessState::Waiting, QUICK)
            .unwrap();
        assert_eq!(status.state, ProcessState::Waiting);
        // Not paused, so it stays Waiting: a bounded wait for `Finished` times out.
        assert!(matches!(
            waiting.wait_for_state(ProcessState::Finished, Duration::from_millis(20)),
            Err(EngineError::Thread(runtime_thread::Error::TimedOut(_)))
        ));
        assert!(waiting.kill("enough"));
        // Killed: it will never be Finished.
        assert!(matches!(
            waiting.wait_for_state(ProcessState::Finished, QUICK),
            Err(EngineError::InvalidState {
                state: ProcessState::Killed,
                ..
            })
        ));
    });
}

#[test]
fn several_handles_share_one_deadline() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let mut handles: Vec<_> = (0..3).map(|_| runner.submit(WaitsForResume)).collect();
        let deadline = std::time::Instant::now() + Duration::from_millis(30);
        for handle in &mut handles {
            assert!(matches!(
                handle.wait_until(deadline),
                Err(EngineError::Thread(runtime_thread::Error::TimedOut(_)))
            ));
        }
        for (i, handle) in handles.into_iter().enumerate() {
            handle.wait_for_state(ProcessState::Waiting, QUICK).unwrap();
            handle.resume(json!(i)).unwrap();
            assert_eq!(handle.wait().unwrap().into_outputs().unwrap()["value"], i);
        }
    });
}

/// Sleeps `left` times for a millisecond: two state changes (`Waiting`, `Running`) each time.
struct Naps {
    left: u32,
}

impl Process for Naps {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        if self.left == 0 {
            return Ok(Command::finish());
        }
        self.left -= 1;
        Ok(Command::sleep("run", Duration::from_millis(1)))
    }
}

/// How often the calling thread has gone to sleep (given the CPU up) so far.
#[cfg(target_os = "linux")]
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("a voluntary_ctxt_switches line")
}

/// A blocking `wait` sleeps until the outcome: the state changes on the way do not wake it.
/// Each wake-up would take the CPU from the runtime thread for nothing, which on one CPU made
/// `execute` cost 10 µs instead of 6.
#[cfg(target_os = "linux")]
#[test]
fn a_blocking_wait_is_not_woken_by_state_changes() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let naps = runner.submit(Naps { left: 20 });
        let before = voluntary_switches();
        let outcome = naps.wait().unwrap();
        let slept = voluntary_switches() - before;
        assert!(matches!(outcome, ProcessOutcome::Finished { .. }));
        // Once for the outcome, and now and then a page fault or a lock on the way: not the
        // forty state changes.
        assert!(
            slept < 10,
            "the waiter went to sleep {slept} times for 40 state changes"
        );
    });
}

#[test]
fn a_status_names_the_process_by_its_type_without_the_module_path() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let handle = runner.submit(WaitsForResume);
        let controller = handle.controller();
        until_state(&controller, ProcessState::Waiting);
        assert_eq!(controller.status().process, "WaitsForResume");
        controller.kill("done");
        assert!(matches!(
            handle.wait().unwrap(),
            ProcessOutcome::Killed { .. }
        ));
    });
}
