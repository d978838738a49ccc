//! Checkpoints: everything needed to continue a process, as plain data.
//!
//! A checkpoint holds no code and no in-memory future: the process's own fields (serde), its
//! position (the step to run next, or what it waits on, as data: a resume, a deadline, child
//! pids), its inputs and outputs. Loading needs the process type registered by name, so nothing
//! in a checkpoint can choose what code runs.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::outcome::{Outputs, ProcessOutcome};
use super::state::ProcessState;

/// The checkpoint format's version; a checkpoint of another version is refused with a clear error.
pub const CHECKPOINT_VERSION: u32 = 1;

/// A saved process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The registered [`Persistent::TYPE_NAME`](super::Persistent::TYPE_NAME).
    pub type_name: String,
    /// The process id (kept across reloads).
    pub pid: Uuid,
    /// The parent that launched it, if any.
    pub parent: Option<Uuid>,
    /// When it was first created.
    pub ctime: SystemTime,
    /// Its state when saved.
    pub state: ProcessState,
    /// Whether it was paused.
    pub paused: bool,
    /// Its status text.
    pub status: Option<String>,
    /// The validated inputs, for a process launched from inputs.
    pub inputs: Option<Value>,
    /// The outputs emitted so far.
    pub outputs: Outputs,
    /// The process's own fields (a work chain's include its `ctx` and outline position).
    pub process: Value,
    /// What it does next.
    pub position: Position,
    /// A value that ended its last wait and that the next step has not taken yet.
    pub resumed: Option<Value>,
    /// Children it launched as persistent processes, by pid.
    pub children: Vec<Uuid>,
    /// For a terminal checkpoint: how it ended.
    pub outcome: Option<ProcessOutcome>,
}

/// What ended a wait, for the next step. Children's outcomes stay typed until a checkpoint
/// needs them as JSON.
#[derive(Debug)]
pub(crate) enum Resumed {
    /// A resume value, a future's value, or anything read back from a checkpoint.
    Value(Value),
    /// The outcomes of the awaited children, by key.
    Children(BTreeMap<String, ProcessOutcome>),
}

/// As a checkpoint holds it: the value, or the children's outcomes as a map by key.
impl serde::Serialize for Resumed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Resumed::Value(value) => value.serialize(serializer),
            Resumed::Children(outcomes) => outcomes.serialize(serializer),
        }
    }
}

impl Resumed {
    pub(crate) fn into_value(self) -> Value {
        match self {
            Resumed::Value(value) => value,
            Resumed::Children(outcomes) => children_to_value(&outcomes),
        }
    }
}

fn children_to_value(outcomes: &BTreeMap<String, ProcessOutcome>) -> Value {
    // An outcome is plain data (strings, numbers, maps of JSON values): it always serialises.
    serde_json::to_value(outcomes).unwrap_or(Value::Null)
}

/// A live process's checkpoint, borrowed rather than copied and encoded straight to the same
/// JSON as [`Checkpoint`] (the fields must stay the same: a test checks it).
#[derive(Serialize)]
pub(crate) struct CheckpointRef<'a, P> {
    pub(crate) version: u32,
    pub(crate) type_name: &'a str,
    pub(crate) pid: Uuid,
    pub(crate) parent: Option<Uuid>,
    pub(crate) ctime: SystemTime,
    pub(crate) state: ProcessState,
    pub(crate) paused: bool,
    pub(crate) status: Option<String>,
    pub(crate) inputs: Option<&'a Value>,
    pub(crate) outputs: &'a Outputs,
    pub(crate) process: &'a P,
    pub(crate) position: &'a Position,
    pub(crate) resumed: Option<&'a Resumed>,
    pub(crate) children: Vec<Uuid>,
    pub(crate) outcome: Option<&'a ProcessOutcome>,
}

/// Encodes a live process's checkpoint as the JSON bytes a [`Checkpoint`] decodes from.
pub(crate) fn encode<P: Serialize>(
    checkpoint: &CheckpointRef<'_, P>,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(checkpoint)
}

/// Where a saved process is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// Run this step next (a process saved on entering `Running`: the step runs on reload,
    /// so a step interrupted by a crash runs again: at least once).
    Step {
        /// The step's name.
        step: String,
    },
    /// Waiting; continue with `then` when the wait ends.
    Waiting {
        /// The step after the wait.
        then: String,
        /// What it waits on.
        on: SavedWait,
    },
    /// Ended (see [`Checkpoint::outcome`]).
    Ended,
}

/// A wait, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum SavedWait {
    /// An external resume (with the value, if one arrived while paused).
    Resume {
        /// A resume value not yet taken.
        value: Option<Value>,
    },
    /// A timer that fires at this wall-clock time (at once on reload if it has passed).
    Timer {
        /// When.
        deadline: SystemTime,
    },
    /// Children, each result to be stored under its key.
    Children {
        /// The awaited children.
        children: Vec<ChildRef>,
    },
    /// An in-memory future cannot be saved: on reload the step that returned it runs again.
    Future {
        /// The step that created the wait.
        rerun: String,
    },
}

/// An awaited child: its pid and the key its result goes under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRef {
    /// Where the result goes.
    pub key: String,
    /// The child's pid.
    pub pid: Uuid,
}

impl Checkpoint {
    /// Encodes as JSON bytes.
    ///
    /// # Errors
    ///
    /// The JSON encoder's, which a checkpoint (plain JSON data) does not meet in practice.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Decodes JSON bytes, checking the format version; the error says what is wrong.
    ///
    /// # Errors
    ///
    /// What is wrong, as text: not JSON, another format version, or JSON that is not a checkpoint.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let version = value.get("version").and_then(Value::as_u64);
        if version != Some(u64::from(CHECKPOINT_VERSION)) {
            return Err(format!(
                "checkpoint format version {} (this build reads version {CHECKPOINT_VERSION})",
                version.map_or_else(|| "missing".to_owned(), |v| v.to_string())
            ));
        }
        serde_json::from_value(value).map_err(|e| format!("not a checkpoint: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::engine::exit_code::ExitCode;

    /// The engine writes checkpoints through `CheckpointRef`, stores and readers use
    /// `Checkpoint`: both must be the same JSON, field for field.
    #[test]
    fn a_borrowed_checkpoint_encodes_as_the_owned_one() {
        let finished = ProcessOutcome::Finished {
            exit_code: ExitCode::OK,
            outputs: [("y".to_owned(), json!(1.5))].into_iter().collect(),
        };
        let resumed = Resumed::Children(BTreeMap::from([("child".to_owned(), finished.clone())]));
        let (inputs, outputs) = (json!({"x": [1, "two"]}), [("z".to_owned(), json!(null))]);
        let outputs: Outputs = outputs.into_iter().collect();
        let process = json!({"ctx": {"a": true}, "stepper": {"frames": []}});
        let position = Position::Waiting {
            then: "next".into(),
            on: SavedWait::Children {
                children: vec![ChildRef {
                    key: "child".into(),
                    pid: Uuid::from_u128(7),
                }],
            },
        };
        let borrowed = CheckpointRef {
            version: CHECKPOINT_VERSION,
            type_name: "test.Type",
            pid: Uuid::from_u128(1),
            parent: Some(Uuid::from_u128(2)),
            ctime: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_234_567),
            state: ProcessState::Waiting,
            paused: true,
            status: Some("paused".into()),
            inputs: Some(&inputs),
            outputs: &outputs,
            process: &process,
            position: &position,
            resumed: Some(&resumed),
            children: vec![Uuid::from_u128(7)],
            outcome: Some(&finished),
        };
        let bytes = serde_json::to_vec(&borrowed).unwrap();
        let owned = Checkpoint::from_bytes(&bytes).unwrap();
        let as_json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
        assert_eq!(as_json(&owned.to_bytes().unwrap()), as_json(&bytes));
        assert_eq!(owned.process, process);
        assert_eq!(owned.position, position);
        assert_eq!(owned.outcome, Some(finished.clone()));
        assert_eq!(owned.resumed, Some(json!({"child": finished})));
    }
}
