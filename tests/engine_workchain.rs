//! Work chains: outline constructs run exactly the expected steps, ctx, children into ctx,
//! failed and killed children, kill passed on to children, return codes, nesting.

mod common;

use std::sync::LazyLock;

use common::{QUICK, bounded, until};
use runtime_thread::engine::{
    Chain, ChainContext, ChainCtx, Command, EngineError, ExitCode, Flow, Namespace, Outline, Port,
    Process, ProcessOutcome, ProcessSpec, ProcessState, Runner, StepContext, StepError, ValueType,
    WorkChain, if_, return_, return_code, step, while_,
};
use serde_json::{Value, json};

/// Records every step it runs in `ctx.trace`, counts loop rounds in `self.rounds`.
struct Branchy {
    pick: i64,
    rounds: u32,
}

static BRANCHY: LazyLock<Outline<Branchy>> = LazyLock::new(|| {
    Outline::new([
        step("start"),
        if_("is_zero", |b: &Branchy, _| b.pick == 0, [step("zero")])
            .elif_("is_one", |b: &Branchy, _| b.pick == 1, [step("one")])
            .else_([
                step("other"),
                if_("big", |b: &Branchy, _| b.pick > 100, [return_()]),
            ]),
        while_(
            "fewer_than_three",
            |b: &Branchy, _| b.rounds < 3,
            [
                step("round"),
                if_(
                    "second",
                    |b: &Branchy, ctx: &ChainCtx| b.rounds == 2 && ctx.contains_key("stop_early"),
                    [return_code(ExitCode::new(7, "stopped in round two"))],
                ),
            ],
        ),
        step("end"),
    ])
});

impl WorkChain for Branchy {
    const TYPE_NAME: &'static str = "tests.Branchy";
    fn outline() -> &'static Outline<Self> {
        &BRANCHY
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        let trace = wc
            .ctx_mut()
            .entry("trace")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .ok_or_else(|| StepError::msg("trace is not a list"))?;
        trace.push(step.into());
        if step == "round" {
            self.rounds += 1;
        }
        if step == "start" && self.pick == -1 {
            wc.ctx_mut().insert("stop_early".into(), true.into());
        }
        if step == "end" {
            let trace = wc.ctx()["trace"].clone();
            wc.out("trace", trace);
        }
        Ok(Flow::Next)
    }
}

fn trace_of(outcome: ProcessOutcome) -> (u32, Vec<String>) {
    match outcome {
        ProcessOutcome::Finished { exit_code, outputs } => (
            exit_code.status,
            outputs
                .get("trace")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        other => panic!("not finished: {other:?}"),
    }
}

#[test]
fn if_elif_else_and_while_run_exactly_the_expected_steps() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let run = |pick| {
            trace_of(
                runner
                    .submit(Chain::new(Branchy { pick, rounds: 0 }))
                    .wait()
                    .unwrap(),
            )
        };
        let rounds = ["round", "round", "round", "end"];
        let expect = |branch: &[&str]| {
            let mut all = vec!["start"];
            all.extend_from_slice(branch);
            all.extend_from_slice(&rounds);
            (0, all.into_iter().map(str::to_owned).collect::<Vec<_>>())
        };
        assert_eq!(run(0), expect(&["zero"]));
        assert_eq!(run(1), expect(&["one"]));
        assert_eq!(run(5), expect(&["other"]));
    });
}

#[test]
fn return_in_the_outline_stops_the_chain_with_its_exit_code() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        // `return_()` inside the else branch: success, and no later step ran.
        let outcome = runner
            .submit(Chain::new(Branchy {
                pick: 500,
                rounds: 0,
            }))
            .wait()
            .unwrap();
        assert_eq!(
            outcome,
            ProcessOutcome::Finished {
                exit_code: ExitCode::OK,
                outputs: Default::default()
            }
        );
        // `return_code(7)` inside the while body, in the second round.
        let outcome = runner
            .submit(Chain::new(Branchy {
                pick: -1,
                rounds: 0,
            }))
            .wait()
            .unwrap();
        let ProcessOutcome::Finished { exit_code, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(exit_code, ExitCode::new(7, "stopped in round two"));
    });
}

/// A trivial child: outputs `y = 2x`; `x < 0` makes it except, `x == 0` fail with code 3,
/// `x == 1000` wait for a resume.
#[derive(serde::Serialize, serde::Deserialize)]
struct Double {
    x: i64,
}

impl Process for Double {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match (step, self.x) {
            ("run", 1000) => Ok(Command::wait_for_resume("done")),
            ("run", x) if x < 0 => Err(StepError::msg(format!("negative input {x}"))),
            ("run", 0) => Ok(Command::fail(3, "zero is not allowed")),
            _ => {
                ctx.out("y", (self.x * 2).into());
                Ok(Command::finish())
            }
        }
    }
}

impl runtime_thread::engine::Persistent for Double {
    const TYPE_NAME: &'static str = "tests.Double";
}

/// Launches one child per input in `step("launch")`, sums their `y` in `step("sum")`.
struct Parent {
    inputs: Vec<i64>,
    tolerate_failures: bool,
}

static PARENT: LazyLock<Outline<Parent>> =
    LazyLock::new(|| Outline::new([step("launch"), step("sum")]));

impl WorkChain for Parent {
    const TYPE_NAME: &'static str = "tests.Parent";
    fn outline() -> &'static Outline<Self> {
        &PARENT
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "launch" => {
                for (i, x) in self.inputs.iter().enumerate() {
                    let child = wc.launch(Double { x: *x });
                    wc.to_context(format!("child{i}"), &child);
                }
                wc.out("launched", self.inputs.len().into());
            }
            _ => {
                let sum: i64 = wc
                    .ctx()
                    .values()
                    .filter_map(|outputs| outputs["y"].as_i64())
                    .sum();
                wc.out("sum", sum.into());
            }
        }
        Ok(Flow::Next)
    }
    fn on_child_ended(
        &mut self,
        key: &str,
        outcome: ProcessOutcome,
        ctx: &mut ChainCtx,
    ) -> Result<(), StepError> {
        if self.tolerate_failures && outcome.clone().into_outputs().is_err() {
            ctx.insert(key.to_owned(), json!({"y": 0}));
            return Ok(());
        }
        runtime_thread::engine::store_child_result(key, outcome, ctx)
    }
}

fn parent(inputs: &[i64]) -> Chain<Parent> {
    Chain::new(Parent {
        inputs: inputs.to_vec(),
        tolerate_failures: false,
    })
}

#[test]
fn children_results_land_in_ctx_and_the_next_step_reads_them() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let outputs = runner.run(parent(&[1, 2, 3, 4])).unwrap();
        assert_eq!(outputs["sum"], 20);
        assert_eq!(outputs["launched"], 4);
    });
}

#[test]
fn a_failed_or_excepted_child_fails_the_parent_before_its_next_step() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        for (inputs, expected) in [
            (
                vec![1, -5],
                "the child 'child1' (Double) excepted in step 'run': \
                 negative input -5",
            ),
            (
                vec![0, 2],
                "the child 'child0' failed with exit code 3 (zero is not allowed)",
            ),
        ] {
            let error = runner.run(parent(&inputs)).unwrap_err();
            // The parent names itself and the step that launched the failed child.
            assert_eq!(
                error.to_string(),
                format!("tests.Parent excepted in step 'launch': {expected}")
            );
            let EngineError::Excepted { message, step, .. } = error else {
                panic!("{error:?}")
            };
            assert_eq!(message, expected);
            assert_eq!(step.as_deref(), Some("launch"));
        }
    });
}

#[test]
fn a_chain_may_tolerate_failed_children() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let outputs = runner
            .run(Chain::new(Parent {
                inputs: vec![5, -1, 0],
                tolerate_failures: true,
            }))
            .unwrap();
        assert_eq!(outputs["sum"], 10);
    });
}

#[test]
fn a_killed_child_is_reported_to_its_parent() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let parent = runner.submit(parent(&[1000]));
        until(|| parent.status().state == ProcessState::Waiting);
        // The only child waits for a resume: kill it alone.
        let child = parent.children();
        assert_eq!(child.len(), 1);
        until(|| child[0].status().state == ProcessState::Waiting);
        assert!(child[0].kill("no longer needed"));
        let outcome = parent.wait().unwrap();
        let ProcessOutcome::Excepted { message, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(message, "the child 'child0' was killed: no longer needed");
    });
}

#[test]
fn killing_a_parent_kills_its_children() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let parent = runner.submit(parent(&[1000, 1000, 1000]));
        until(|| parent.status().state == ProcessState::Waiting);
        let children = parent.children();
        assert_eq!(children.len(), 3);
        let pid = parent.pid();
        assert!(parent.kill("stop everything"));
        assert!(matches!(
            parent.wait().unwrap(),
            ProcessOutcome::Killed { .. }
        ));
        for child in children {
            until(|| child.status().state.is_terminal());
            let status = child.status();
            assert_eq!(status.state, ProcessState::Killed);
            assert_eq!(status.parent, Some(pid));
            assert_eq!(
                status.status.unwrap(),
                format!("its parent {pid} was killed: stop everything")
            );
        }
    });
}

/// Like `Parent`, but its children outlive a kill.
struct Lenient;

static LENIENT: LazyLock<Outline<Lenient>> = LazyLock::new(|| Outline::new([step("launch")]));

impl WorkChain for Lenient {
    const TYPE_NAME: &'static str = "tests.Lenient";
    fn outline() -> &'static Outline<Self> {
        &LENIENT
    }
    async fn step(&mut self, _: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        let child = wc.launch(Double { x: 1000 });
        wc.to_context("child", &child);
        Ok(Flow::Next)
    }
    fn kills_children(&self) -> bool {
        false
    }
}

#[test]
fn kill_propagation_can_be_turned_off() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let parent = runner.submit(Chain::new(Lenient));
        until(|| parent.status().state == ProcessState::Waiting);
        let child = parent.children().remove(0);
        until(|| child.status().awaiting_resume);
        assert!(parent.kill("only me"));
        parent.wait().unwrap();
        // A passed-on kill would have been asked for before the parent's outcome was ready,
        // so the child would end Killed, never Finished.
        child.resume(Value::Null).unwrap();
        until(|| child.status().state.is_terminal());
        assert_eq!(child.status().state, ProcessState::Finished);
    });
}

/// A chain whose single step runs a nested work chain to completion inside the step (no
/// nested event loop), and one that waits for it through ctx.
struct Grandparent {
    inline: bool,
}

static GRANDPARENT: LazyLock<Outline<Grandparent>> =
    LazyLock::new(|| Outline::new([step("go"), step("report")]));

impl WorkChain for Grandparent {
    const TYPE_NAME: &'static str = "tests.Grandparent";
    fn outline() -> &'static Outline<Self> {
        &GRANDPARENT
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match (step, self.inline) {
            ("go", true) => {
                let outcome = wc.launch(parent(&[10, 20])).await?;
                let outputs = outcome.into_outputs()?;
                wc.ctx_mut().insert("nested".into(), json!(outputs));
            }
            ("go", false) => {
                let child = wc.launch(parent(&[10, 20]));
                wc.to_context("nested", &child);
            }
            _ => {
                let sum = wc.ctx()["nested"]["sum"].clone();
                wc.out("sum", sum);
            }
        }
        Ok(Flow::Next)
    }
}

#[test]
fn a_nested_work_chain_runs_as_a_child_both_awaited_inline_and_through_ctx() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        for inline in [true, false] {
            let outputs = runner.run(Chain::new(Grandparent { inline })).unwrap();
            assert_eq!(outputs["sum"], 60, "inline = {inline}");
        }
    });
}

/// Returns a code from a step; its outline has an invalid `else_` when asked.
struct Stopper;

static STOPPER: LazyLock<Outline<Stopper>> =
    LazyLock::new(|| Outline::new([step("stop"), step("never")]));

impl WorkChain for Stopper {
    const TYPE_NAME: &'static str = "tests.Stopper";
    fn outline() -> &'static Outline<Self> {
        &STOPPER
    }
    async fn step(&mut self, step: &str, _: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "stop" => Ok(Flow::Return(ExitCode::new(400, "enough"))),
            _ => Err(StepError::msg("a step after a return ran")),
        }
    }
}

struct Malformed;

static MALFORMED: LazyLock<Outline<Malformed>> =
    LazyLock::new(|| Outline::new([step("a"), step("b").else_([step("c")])]));

impl WorkChain for Malformed {
    const TYPE_NAME: &'static str = "tests.Malformed";
    fn outline() -> &'static Outline<Self> {
        &MALFORMED
    }
    async fn step(&mut self, _: &str, _: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        Err(StepError::msg("a step of a malformed outline ran"))
    }
}

#[test]
fn a_step_can_return_an_exit_code_and_a_malformed_outline_never_runs() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let error = runner.run(Chain::new(Stopper)).unwrap_err();
        let EngineError::Failed { exit_code } = error else {
            panic!("{error:?}")
        };
        assert_eq!(exit_code, ExitCode::new(400, "enough"));
        let error = runner.run(Chain::new(Malformed)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tests.Malformed excepted: invalid outline: else_ after step b"
        );
    });
}

#[test]
fn a_later_step_may_overwrite_a_ctx_key() {
    struct Twice;
    static TWICE: LazyLock<Outline<Twice>> =
        LazyLock::new(|| Outline::new([step("first"), step("second"), step("read")]));
    impl WorkChain for Twice {
        const TYPE_NAME: &'static str = "tests.Twice";
        fn outline() -> &'static Outline<Self> {
            &TWICE
        }
        async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
            match step {
                "first" | "second" => {
                    let x = if step == "first" { 1 } else { 2 };
                    let child = wc.launch(Double { x });
                    wc.to_context("result", &child);
                }
                _ => {
                    let y = wc.ctx()["result"]["y"].clone();
                    wc.out("y", y);
                }
            }
            Ok(Flow::Next)
        }
    }
    bounded(QUICK, || {
        let outputs = Runner::start().unwrap().run(Chain::new(Twice)).unwrap();
        assert_eq!(outputs["y"], 4);
    });
}

/// A chain built from an inputs mapping: `n` (an integer, default 2) rounds of `add`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counter {
    n: i64,
    #[serde(default)]
    done: i64,
}

static COUNTER: LazyLock<Outline<Counter>> = LazyLock::new(|| {
    Outline::new([
        while_("more", |c: &Counter, _| c.done < c.n, [step("add")]),
        step("report"),
    ])
});

static COUNTER_SPEC: LazyLock<ProcessSpec> = LazyLock::new(|| {
    ProcessSpec::new(
        Namespace::new().port(
            "n",
            Port::new()
                .types(&[ValueType::Integer])
                .default_value(json!(2)),
        ),
        Namespace::new().port("total", Port::new().types(&[ValueType::Integer])),
    )
});

impl WorkChain for Counter {
    const TYPE_NAME: &'static str = "tests.Counter";
    fn spec() -> &'static ProcessSpec {
        &COUNTER_SPEC
    }
    fn outline() -> &'static Outline<Self> {
        &COUNTER
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        if step == "add" {
            self.done += 1;
        } else {
            wc.out("total", json!(self.done));
        }
        Ok(Flow::Next)
    }
}

#[test]
fn a_work_chain_launches_from_an_inputs_mapping_checked_against_its_spec() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let outputs = runner
            .launch_chain_from_inputs::<Counter>(json!({"n": 3}))
            .start()
            .unwrap()
            .wait()
            .unwrap()
            .into_outputs()
            .unwrap();
        assert_eq!(outputs["total"], 3);
        // The default fills in a missing input; the handle's status shows the chain's type.
        let handle = runner
            .launch_chain_from_inputs::<Counter>(json!({}))
            .start()
            .unwrap();
        assert_eq!(handle.wait().unwrap().into_outputs().unwrap()["total"], 2);
        // A wrong input is refused before anything runs, with its port's path.
        let error = runner
            .launch_chain_from_inputs::<Counter>(json!({"n": "three"}))
            .start()
            .unwrap_err()
            .to_string();
        assert!(error.contains("inputs.n"), "{error}");
        // Persisted: the inputs go into its checkpoints.
        let store = std::sync::Arc::new(Recording::default());
        let thread = std::sync::Arc::new(runtime_thread::RuntimeThread::builder().start().unwrap());
        let persisted = Runner::builder()
            .thread(thread)
            .persister(store.clone())
            .start()
            .unwrap();
        let handle = persisted
            .launch_chain_from_inputs::<Counter>(json!({"n": 1}))
            .persisted()
            .start()
            .unwrap();
        let first = store
            .saved
            .lock()
            .first()
            .cloned()
            .expect("saved before it starts");
        let first = runtime_thread::engine::Checkpoint::from_bytes(&first).unwrap();
        assert_eq!(first.inputs, Some(json!({"n": 1})));
        assert_eq!(first.type_name, "tests.Counter");
        assert_eq!(handle.wait().unwrap().into_outputs().unwrap()["total"], 1);
    });
}

/// Keeps the bytes of every save, in order (and nothing to load).
#[derive(Default)]
struct Recording {
    saved: parking_lot::Mutex<Vec<Vec<u8>>>,
}

impl runtime_thread::engine::Persister for Recording {
    fn save(
        &self,
        checkpoint: &runtime_thread::engine::Checkpoint,
    ) -> Result<(), runtime_thread::engine::PersistError> {
        self.saved.lock().push(checkpoint.to_bytes().unwrap());
        Ok(())
    }
    fn save_bytes(
        &self,
        _pid: uuid::Uuid,
        bytes: Vec<u8>,
    ) -> Result<(), runtime_thread::engine::PersistError> {
        self.saved.lock().push(bytes);
        Ok(())
    }
    fn load(
        &self,
        pid: uuid::Uuid,
    ) -> Result<runtime_thread::engine::Checkpoint, runtime_thread::engine::PersistError> {
        Err(runtime_thread::engine::PersistError::NotFound { pid })
    }
    fn list(&self) -> Result<Vec<uuid::Uuid>, runtime_thread::engine::PersistError> {
        Ok(Vec::new())
    }
    fn delete(&self, _pid: uuid::Uuid) -> Result<(), runtime_thread::engine::PersistError> {
        Ok(())
    }
}
