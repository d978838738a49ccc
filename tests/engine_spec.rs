//! Specs and ports: checks at the boundaries of a process, with errors that name the full port.

mod common;

use std::sync::LazyLock;

use common::{QUICK, bounded};
use runtime_thread::engine::{
    Command, EngineError, Namespace, Port, Process, ProcessOutcome, ProcessSpec, Runner,
    StepContext, StepError, ValueType,
};
use serde_json::{Value, json};

fn check(spec: &ProcessSpec, mut inputs: Value) -> Result<Value, String> {
    spec.validate_inputs(&mut inputs)
        .map_err(|e| e.to_string())?;
    Ok(inputs)
}

fn inputs(namespace: Namespace) -> ProcessSpec {
    ProcessSpec::new(namespace, Namespace::new())
}

#[test]
fn types_required_defaults_and_optional_ports() {
    let spec = inputs(
        Namespace::new()
            .port("count", Port::new().types(&[ValueType::Integer]))
            .port(
                "ratio",
                Port::new()
                    .types(&[ValueType::Number])
                    .default_value(json!(0.5)),
            )
            .port(
                "label",
                Port::new()
                    .types(&[ValueType::String, ValueType::Null])
                    .optional(),
            ),
    );
    assert_eq!(
        check(&spec, json!({"count": 3})).unwrap(),
        json!({"count": 3, "ratio": 0.5})
    );
    assert_eq!(
        check(&spec, json!({"count": 3, "ratio": 2, "label": null})).unwrap(),
        json!({"count": 3, "ratio": 2, "label": null}),
        "an integer is a number; several types are alternatives"
    );
    let wrong_type = check(&spec, json!({"count": 1.5})).unwrap_err();
    assert!(
        wrong_type.starts_with("inputs.count: expected [Integer]"),
        "{wrong_type}"
    );
    assert_eq!(
        check(&spec, json!({})).unwrap_err(),
        "inputs.count: required, but not given"
    );
    assert!(
        check(&spec, json!({"count": 1, "label": 5}))
            .unwrap_err()
            .starts_with("inputs.label:")
    );
    assert!(
        check(&spec, json!([1, 2]))
            .unwrap_err()
            .starts_with("inputs: expected a map")
    );
}

#[test]
fn validators_report_their_message_after_the_path() {
    let positive = |v: &Value| match v.as_f64() {
        Some(x) if x > 0.0 => Ok(()),
        _ => Err("must be positive".to_owned()),
    };
    let spec = inputs(
        Namespace::new()
            .port("x", Port::new().validator(positive))
            .validator(|all| {
                if all.get("x") == Some(&json!(13)) {
                    Err("13 is not allowed here".to_owned())
                } else {
                    Ok(())
                }
            }),
    );
    assert!(check(&spec, json!({"x": 2})).is_ok());
    assert_eq!(
        check(&spec, json!({"x": -1})).unwrap_err(),
        "inputs.x: must be positive"
    );
    assert_eq!(
        check(&spec, json!({"x": 13})).unwrap_err(),
        "inputs: 13 is not allowed here"
    );
}

#[test]
fn nested_and_dynamic_namespaces_name_the_full_path() {
    let spec = inputs(
        Namespace::new()
            .namespace(
                "ns",
                Namespace::new()
                    .port("a", Port::new().default_value(json!("A")))
                    .port("b", Port::new().types(&[ValueType::Integer])),
            )
            .namespace("extras", Namespace::new().dynamic())
            .namespace("maybe", Namespace::new().port("z", Port::new()).optional()),
    );
    assert_eq!(
        check(
            &spec,
            json!({"ns": {"b": 1}, "extras": {"anything": [1, 2]}})
        )
        .unwrap(),
        json!({"ns": {"a": "A", "b": 1}, "extras": {"anything": [1, 2]}})
    );
    assert!(
        check(&spec, json!({"ns": {"b": "x"}}))
            .unwrap_err()
            .starts_with("inputs.ns.b: expected"),
    );
    assert_eq!(
        check(&spec, json!({})).unwrap_err(),
        "inputs.ns.b: required, but not given",
        "a left-out namespace is checked as empty"
    );
    assert_eq!(
        check(&spec, json!({"ns": {"b": 1, "c": 2}})).unwrap_err(),
        "inputs.ns.c: no such port (the namespace is not dynamic)"
    );
    assert!(
        check(&spec, json!({"ns": {"b": 1}, "maybe": {}}))
            .unwrap_err()
            .starts_with("inputs.maybe.z:"),
        "an optional namespace that is given is checked"
    );
}

#[test]
fn exposing_another_namespace_copies_its_ports() {
    let child_inputs = Namespace::new()
        .port("x", Port::new().types(&[ValueType::Integer]))
        .port("y", Port::new().default_value(json!(0)))
        .port("secret", Port::new());
    let spec = inputs(
        Namespace::new()
            .port("own", Port::new().optional())
            .expose(&child_inputs, Some("child"), Some(&["x", "y"]))
            .expose(&child_inputs, None, Some(&["x"])),
    );
    assert_eq!(
        check(&spec, json!({"x": 1, "child": {"x": 2}})).unwrap(),
        json!({"x": 1, "child": {"x": 2, "y": 0}})
    );
    assert_eq!(
        check(&spec, json!({"x": 1, "child": {"x": 2, "secret": 1}})).unwrap_err(),
        "inputs.child.secret: no such port (the namespace is not dynamic)",
        "ports left out of `include` are not exposed"
    );
}

/// A process whose fields are its inputs.
#[derive(serde::Deserialize)]
struct Scale {
    x: i64,
    factor: i64,
    #[serde(default)]
    emit: Option<String>,
}

impl Process for Scale {
    fn spec() -> &'static ProcessSpec {
        static SPEC: LazyLock<ProcessSpec> = LazyLock::new(|| {
            ProcessSpec::new(
                Namespace::new()
                    .port("x", Port::new().types(&[ValueType::Integer]))
                    .port(
                        "factor",
                        Port::new()
                            .types(&[ValueType::Integer])
                            .default_value(json!(2)),
                    )
                    .port("emit", Port::new().types(&[ValueType::String]).optional()),
                Namespace::new()
                    .port("result", Port::new().types(&[ValueType::Integer]))
                    .port("note", Port::new().optional()),
            )
        });
        &SPEC
    }

    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match self.emit.as_deref() {
            Some("wrong-type") => ctx.out("result", json!("not a number")),
            Some("undeclared") => ctx.out("surprise", json!(1)),
            Some("nothing") => {}
            Some("fail-without-output") => return Ok(Command::fail(7, "gave up")),
            _ => ctx.out("result", json!(self.x * self.factor)),
        }
        assert_eq!(
            ctx.inputs().and_then(|i| i.get("factor")),
            Some(&json!(self.factor))
        );
        Ok(Command::finish())
    }
}

#[test]
fn launching_validates_inputs_and_builds_the_process_from_them() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let outputs = runner
            .launch_from_inputs::<Scale>(json!({"x": 21}))
            .start()
            .unwrap()
            .wait()
            .unwrap()
            .into_outputs()
            .unwrap();
        assert_eq!(outputs["result"], 42, "the default factor was filled in");
        match runner
            .launch_from_inputs::<Scale>(json!({"x": "21"}))
            .start()
        {
            Err(EngineError::InvalidInputs(error)) => {
                assert_eq!(error.path, "inputs.x");
            }
            other => panic!("expected InvalidInputs, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn outputs_are_checked_when_emitted_and_required_ones_at_finish() {
    bounded(QUICK, || {
        let runner = Runner::start().unwrap();
        let run = |emit: &str| {
            runner
                .launch_from_inputs::<Scale>(json!({"x": 1, "emit": emit}))
                .start()
                .unwrap()
                .wait()
                .unwrap()
        };
        match run("wrong-type") {
            ProcessOutcome::Excepted { message, .. } => {
                assert!(
                    message.starts_with("outputs.result: expected [Integer]"),
                    "{message}"
                )
            }
            other => panic!("expected Excepted, got {other:?}"),
        }
        match run("undeclared") {
            ProcessOutcome::Excepted { message, .. } => assert_eq!(
                message,
                "outputs.surprise: no such output (the namespace is not dynamic)"
            ),
            other => panic!("expected Excepted, got {other:?}"),
        }
        match run("nothing") {
            ProcessOutcome::Finished { exit_code, .. } => {
                assert_eq!(exit_code.status, 11, "AiiDA's missing-output status");
                assert_eq!(
                    exit_code.message.as_deref(),
                    Some("outputs.result: required, but not given")
                );
            }
            other => panic!("expected a failed finish, got {other:?}"),
        }
        match run("fail-without-output") {
            ProcessOutcome::Finished { exit_code, .. } => {
                assert_eq!(exit_code.status, 7, "a failure keeps its own exit code");
            }
            other => panic!("expected a failed finish, got {other:?}"),
        }
    });
}
