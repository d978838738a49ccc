//! plumpy 0.26's control messages, as data: what a controller sends and what a process or a
//! launcher answers, in the shapes plumpy's `MessageBuilder`, `ProcessLauncher` and status
//! reply use, so that Python and Rust peers read each other's messages.
//!
//! | message | shape |
//! |---|---|
//! | RPC to a process (subscriber id: the pid as text) | `{"intent": "play" \| "pause" \| "kill" \| "status", "message": text or null}`, and `"force_kill": bool` for `kill` |
//! | its reply to `play` / `pause` / `kill` | `true` or `false` once the action has taken effect |
//! | its reply to `status` | `{"ctime": seconds, "paused": bool, "process_string": "<Type> (ProcessState.WAITING)", "state": "ProcessState.WAITING"}` |
//! | broadcast on entering a state | subject `state_changed.<from>.<to>` (`None` for the first), sender the pid, body null |
//! | broadcast to every process | subject `pause`, `play` or `kill`; body the message |
//! | task to a launcher | `{"task": "launch" \| "create" \| "continue", "args": {...}}` (see [`LauncherTask`]) |
//!
//! ```
//! use runtime_thread::control::wire::Intent;
//! use serde_json::json;
//!
//! let kill = Intent::Kill { message: Some("enough".into()), force: false };
//! let sent = kill.to_message();
//! assert_eq!(sent, json!({"intent": "kill", "message": "enough", "force_kill": false}));
//! assert_eq!(Intent::from_message(&sent)?, kill);
//! # Ok::<(), runtime_thread::control::wire::WireError>(())
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::engine::{ProcessState, ProcessStatus, Uuid};
use crate::messaging::{as_uuid, uuid_value};

/// A control message that does not fit plumpy's shapes; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// An RPC intent that plumpy does not define (plumpy answers `Unknown intent`).
    #[error("Unknown intent: {intent} (plumpy's intents are play, pause, kill and status)")]
    UnknownIntent {
        /// The intent as received.
        intent: String,
    },
    /// A launcher task type that plumpy does not define.
    #[error("unknown task type: {task} (plumpy's are launch, create and continue)")]
    UnknownTask {
        /// The task type as received.
        task: String,
    },
    /// A message that is not the right shape: a missing or mistyped field.
    #[error("malformed control message: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
}

/// An RPC intent addressed to one process, as plumpy's `MessageBuilder` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Play a paused process.
    Play {
        /// A message (plumpy sends `None`).
        message: Option<String>,
    },
    /// Pause the process.
    Pause {
        /// The pause message, kept as the process's status text.
        message: Option<String>,
    },
    /// Kill the process (gracefully, or at once with `force`).
    Kill {
        /// The kill message.
        message: Option<String>,
        /// Drop a running step at once instead of after it (`force_kill`).
        force: bool,
    },
    /// Ask for the status mapping ([`status_reply`]).
    Status {
        /// A message (plumpy sends `None`).
        message: Option<String>,
    },
}

impl Intent {
    /// The RPC body plumpy's `MessageBuilder` would send.
    pub fn to_message(&self) -> Value {
        let (intent, message) = match self {
            Intent::Play { message } => ("play", message),
            Intent::Pause { message } => ("pause", message),
            Intent::Kill { message, .. } => ("kill", message),
            Intent::Status { message } => ("status", message),
        };
        let mut body = json!({"intent": intent, "message": message});
        if let Intent::Kill { force, .. } = self {
            body["force_kill"] = Value::Bool(*force);
        }
        body
    }

    /// Reads an RPC body as plumpy's process does: `message` and `force_kill` default when
    /// absent.
    ///
    /// # Errors
    ///
    /// [`WireError::UnknownIntent`] for an intent plumpy does not define;
    /// [`WireError::Malformed`] for a body that is not a mapping with a text `intent`, or whose
    /// `message` is not text or null, or whose `force_kill` is not a boolean.
    pub fn from_message(body: &Value) -> Result<Intent, WireError> {
        let body = mapping(body, "an RPC intent")?;
        let intent = text(body, "intent")?.ok_or_else(|| malformed("no 'intent'"))?;
        let message = text(body, "message")?;
        Ok(match intent.as_str() {
            "play" => Intent::Play { message },
            "pause" => Intent::Pause { message },
            "status" => Intent::Status { message },
            "kill" => Intent::Kill {
                message,
                force: match body.get("force_kill") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(force)) => *force,
                    Some(other) => return Err(malformed(format!("'force_kill' is {other}"))),
                },
            },
            _ => return Err(WireError::UnknownIntent { intent }),
        })
    }
}

/// The subject of the broadcast a process sends on entering `to`: `state_changed.<from>.<to>`,
/// with the states' [names](ProcessState::as_str) and `None` for the first state, as plumpy
/// writes it.
pub fn state_changed_subject(from: Option<ProcessState>, to: ProcessState) -> String {
    let from = from.map_or("None", ProcessState::as_str);
    format!("state_changed.{from}.{to}")
}

/// Reads a `state_changed.<from>.<to>` subject back; `None` for any other subject.
pub fn parse_state_changed(subject: &str) -> Option<(Option<ProcessState>, ProcessState)> {
    let rest = subject.strip_prefix("state_changed.")?;
    let (from, to) = rest.split_once('.')?;
    let from = match from {
        "None" => None,
        from => Some(ProcessState::from_name(from)?),
    };
    Some((from, ProcessState::from_name(to)?))
}

/// The reply to a `status` intent, as plumpy's `get_status_info` gives it: the creation time in
/// seconds since the epoch, the pause flag, and the state as Python prints the enum
/// (`ProcessState.WAITING`, also inside `process_string`). Pausing does not change `state`.
pub fn status_reply(status: &ProcessStatus) -> Value {
    let ctime = status
        .ctime
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let state = format!(
        "ProcessState.{}",
        status.state.as_str().to_ascii_uppercase()
    );
    json!({
        "ctime": ctime,
        "paused": status.paused,
        "process_string": format!("<{}> ({state})", status.process),
        "state": state,
    })
}

/// A `status` reply as a controller reads it: what [`status_reply`] writes, from a Rust or a
/// Python process.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteStatus {
    /// When the process was created.
    pub ctime: SystemTime,
    /// Whether it is paused (its `state` stays what it was).
    pub paused: bool,
    /// Its type and state, as plumpy prints them: `<Add> (ProcessState.WAITING)`.
    pub process_string: String,
    /// Its state.
    pub state: ProcessState,
}

impl RemoteStatus {
    /// Reads a `status` reply.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] when a field is missing or mistyped, or the state is not one
    /// of plumpy's.
    pub fn from_message(body: &Value) -> Result<RemoteStatus, WireError> {
        let map = mapping(body, "a status reply")?;
        let seconds = map
            .get("ctime")
            .and_then(Value::as_f64)
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .ok_or_else(|| malformed("the status reply's 'ctime' must be seconds"))?;
        let state =
            text(map, "state")?.ok_or_else(|| malformed("the status reply has no 'state'"))?;
        let name = state.strip_prefix("ProcessState.").unwrap_or(&state);
        Ok(RemoteStatus {
            ctime: UNIX_EPOCH + Duration::from_secs_f64(seconds),
            paused: flag(map, "paused")?,
            process_string: text(map, "process_string")?.unwrap_or_default(),
            state: ProcessState::from_name(&name.to_ascii_lowercase())
                .ok_or_else(|| malformed(format!("{state:?} is not a process state")))?,
        })
    }
}

/// A task for a launcher (plumpy's `ProcessLauncher`), on a task queue any worker may take.
#[derive(Debug, Clone, PartialEq)]
pub enum LauncherTask {
    /// Build a process of a type, optionally save it, and run it: reply with its pid at once
    /// (`nowait`) or with its outputs when it ends.
    Launch {
        /// The type's identifier (plumpy: `module:Class`).
        process_class: String,
        /// Checkpoint it.
        persist: bool,
        /// Reply with the pid instead of the outputs.
        nowait: bool,
        /// Positional arguments of the constructor (plumpy; unused by Rust types).
        init_args: Vec<Value>,
        /// Keyword arguments of the constructor: the inputs travel here, under `inputs`.
        init_kwargs: Map<String, Value>,
    },
    /// Build a process, optionally save it, and reply with its pid without running it.
    Create {
        /// As for `Launch`.
        process_class: String,
        /// As for `Launch`.
        persist: bool,
        /// As for `Launch`.
        init_args: Vec<Value>,
        /// As for `Launch`.
        init_kwargs: Map<String, Value>,
    },
    /// Load a saved process and run it on: reply with its pid (`nowait`) or its outputs.
    Continue {
        /// The process to continue.
        pid: Uuid,
        /// As for `Launch`.
        nowait: bool,
        /// Which checkpoint (plumpy's tag; `None` for the latest).
        tag: Option<String>,
    },
}

impl LauncherTask {
    /// The task body plumpy's `create_launch_body` / `create_create_body` /
    /// `create_continue_body` would write.
    pub fn to_message(&self) -> Value {
        match self {
            LauncherTask::Launch {
                process_class,
                persist,
                nowait,
                init_args,
                init_kwargs,
            } => json!({"task": "launch", "args": {
                "process_class": process_class, "persist": persist, "nowait": nowait,
                "init_args": init_args, "init_kwargs": init_kwargs,
            }}),
            LauncherTask::Create {
                process_class,
                persist,
                init_args,
                init_kwargs,
            } => json!({"task": "create", "args": {
                "process_class": process_class, "persist": persist,
                "init_args": init_args, "init_kwargs": init_kwargs,
            }}),
            LauncherTask::Continue { pid, nowait, tag } => json!({"task": "continue", "args": {
                "pid": uuid_value(*pid), "nowait": nowait, "tag": tag,
            }}),
        }
    }

    /// Reads a task body as plumpy's launcher does: `init_args` and `init_kwargs` may be null,
    /// `persist` and `nowait` default to false, and a pid may come as text or as a UUID value
    /// (plumpy's `!uuid` scalar, see [`UUID_KEY`](crate::messaging::UUID_KEY)), which is also
    /// how [`to_message`](Self::to_message) writes it.
    ///
    /// # Errors
    ///
    /// [`WireError::UnknownTask`] for a task type plumpy does not define (plumpy's launcher
    /// rejects it, so that another worker may take it); [`WireError::Malformed`] for a body
    /// without `task` or `args`, a missing `process_class` or `pid`, a pid that is not a UUID,
    /// or a field of the wrong type.
    pub fn from_message(body: &Value) -> Result<LauncherTask, WireError> {
        let body = mapping(body, "a launcher task")?;
        let task = text(body, "task")?.ok_or_else(|| malformed("no 'task'"))?;
        let args = mapping(
            body.get("args").ok_or_else(|| malformed("no 'args'"))?,
            "the task's 'args'",
        )?;
        let process_class =
            || text(args, "process_class")?.ok_or_else(|| malformed("no 'process_class'"));
        Ok(match task.as_str() {
            "launch" => LauncherTask::Launch {
                process_class: process_class()?,
                persist: flag(args, "persist")?,
                nowait: flag(args, "nowait")?,
                init_args: list(args, "init_args")?,
                init_kwargs: keywords(args)?,
            },
            "create" => LauncherTask::Create {
                process_class: process_class()?,
                persist: flag(args, "persist")?,
                init_args: list(args, "init_args")?,
                init_kwargs: keywords(args)?,
            },
            "continue" => {
                let pid = args.get("pid").ok_or_else(|| malformed("no 'pid'"))?;
                LauncherTask::Continue {
                    pid: as_uuid(pid)
                        .ok_or_else(|| malformed(format!("the pid {pid} is not a UUID")))?,
                    nowait: flag(args, "nowait")?,
                    tag: text(args, "tag")?,
                }
            }
            _ => return Err(WireError::UnknownTask { task }),
        })
    }
}

fn malformed(reason: impl Into<String>) -> WireError {
    WireError::Malformed {
        reason: reason.into(),
    }
}

fn mapping<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, WireError> {
    value
        .as_object()
        .ok_or_else(|| malformed(format!("{what} must be a mapping, not {value}")))
}

/// A text field; `None` when absent or null.
fn text(map: &Map<String, Value>, field: &str) -> Result<Option<String>, WireError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(malformed(format!("'{field}' must be text, not {other}"))),
    }
}

/// A boolean field; false when absent or null.
fn flag(map: &Map<String, Value>, field: &str) -> Result<bool, WireError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(malformed(format!(
            "'{field}' must be a boolean, not {other}"
        ))),
    }
}

fn list(map: &Map<String, Value>, field: &str) -> Result<Vec<Value>, WireError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(other) => Err(malformed(format!("'{field}' must be a list, not {other}"))),
    }
}

fn keywords(map: &Map<String, Value>) -> Result<Map<String, Value>, WireError> {
    match map.get("init_kwargs") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(keywords)) => Ok(keywords.clone()),
        Some(other) => Err(malformed(format!(
            "'init_kwargs' must be a mapping, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn intents_read_as_plumpy_writes_them_and_write_back_the_same() {
        let sent = [
            json!({"intent": "play", "message": null}),
            json!({"intent": "pause", "message": "for the night"}),
            json!({"intent": "kill", "message": null, "force_kill": true}),
            json!({"intent": "status", "message": null}),
        ];
        for body in sent {
            let intent = Intent::from_message(&body).unwrap();
            assert_eq!(intent.to_message(), body);
        }
        // Fields plumpy's process leaves to their defaults when absent.
        assert_eq!(
            Intent::from_message(&json!({"intent": "kill"})).unwrap(),
            Intent::Kill {
                message: None,
                force: false
            }
        );
    }

    #[test]
    fn a_bad_intent_is_a_clear_error() {
        let unknown = Intent::from_message(&json!({"intent": "launch"})).unwrap_err();
        assert_eq!(
            unknown,
            WireError::UnknownIntent {
                intent: "launch".into()
            }
        );
        // The text plumpy's callers look for.
        assert!(unknown.to_string().contains("Unknown intent"), "{unknown}");
        for body in [
            json!("play"),
            json!({"message": "no intent"}),
            json!({"intent": 3}),
            json!({"intent": "pause", "message": ["not text"]}),
            json!({"intent": "kill", "force_kill": "yes"}),
        ] {
            let error = Intent::from_message(&body).unwrap_err();
            assert!(
                matches!(error, WireError::Malformed { .. }),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn state_broadcast_subjects_are_plumpys() {
        use ProcessState::*;
        let finishing = [
            (None, Created),
            (Some(Created), Running),
            (Some(Running), Finished),
        ];
        let subjects: Vec<_> = finishing
            .iter()
            .map(|(from, to)| state_changed_subject(*from, *to))
            .collect();
        assert_eq!(
            subjects,
            [
                "state_changed.None.created",
                "state_changed.created.running",
                "state_changed.running.finished"
            ]
        );
        for (from, to) in finishing {
            let subject = state_changed_subject(from, to);
            assert_eq!(parse_state_changed(&subject), Some((from, to)));
        }
        assert_eq!(parse_state_changed("pause"), None);
        assert_eq!(parse_state_changed("state_changed.running.asleep"), None);
    }

    #[test]
    fn the_status_reply_has_plumpys_shape() {
        let status = ProcessStatus {
            pid: Uuid::nil(),
            parent: None,
            ctime: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            process: "Crunch".into(),
            state: ProcessState::Waiting,
            paused: true,
            status: Some("paused for the night".into()),
            awaiting_resume: false,
        };
        assert_eq!(
            status_reply(&status),
            json!({
                "ctime": 1_700_000_000.25,
                "paused": true,
                "process_string": "<Crunch> (ProcessState.WAITING)",
                "state": "ProcessState.WAITING",
            })
        );
    }

    #[test]
    fn a_status_reply_reads_back() {
        let status = ProcessStatus {
            pid: Uuid::new_v4(),
            parent: None,
            ctime: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            process: "Crunch".into(),
            state: ProcessState::Waiting,
            paused: true,
            status: None,
            awaiting_resume: false,
        };
        let read = RemoteStatus::from_message(&status_reply(&status)).unwrap();
        assert_eq!(read.ctime, status.ctime);
        assert!(read.paused);
        assert_eq!(read.state, ProcessState::Waiting);
        assert_eq!(read.process_string, "<Crunch> (ProcessState.WAITING)");
        for bad in [
            json!(1),
            json!({"ctime": 1.0}),
            json!({"ctime": 1.0, "state": "ProcessState.ASLEEP"}),
        ] {
            assert!(RemoteStatus::from_message(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn launcher_tasks_read_as_plumpy_writes_them_and_write_back_the_same() {
        let pid = Uuid::new_v4();
        let tasks = [
            LauncherTask::Launch {
                process_class: "tests.workflows:Sum".into(),
                persist: true,
                nowait: false,
                init_args: vec![],
                init_kwargs: json!({"inputs": {"a": 1}}).as_object().unwrap().clone(),
            },
            LauncherTask::Create {
                process_class: "tests.workflows:Sum".into(),
                persist: true,
                init_args: vec![json!(1)],
                init_kwargs: Map::new(),
            },
            LauncherTask::Continue {
                pid,
                nowait: true,
                tag: None,
            },
        ];
        for task in tasks {
            assert_eq!(
                LauncherTask::from_message(&task.to_message()).unwrap(),
                task
            );
        }
        // A pid as text is read too.
        let as_text = json!({"task": "continue", "args": {"pid": pid.to_string()}});
        assert!(matches!(
            LauncherTask::from_message(&as_text),
            Ok(LauncherTask::Continue { pid: read, .. }) if read == pid
        ));
        // As plumpy sends them: null arguments, flags absent.
        let from_python = json!({"task": "launch", "args": {
            "process_class": "m:C", "init_args": null, "init_kwargs": null,
        }});
        assert_eq!(
            LauncherTask::from_message(&from_python).unwrap(),
            LauncherTask::Launch {
                process_class: "m:C".into(),
                persist: false,
                nowait: false,
                init_args: vec![],
                init_kwargs: Map::new(),
            }
        );
    }

    #[test]
    fn a_bad_launcher_task_is_a_clear_error() {
        let unknown = json!({"task": "destroy", "args": {}});
        assert!(matches!(
            LauncherTask::from_message(&unknown),
            Err(WireError::UnknownTask { .. })
        ));
        for body in [
            json!({"task": "launch"}),
            json!({"task": "launch", "args": {}}),
            json!({"task": "continue", "args": {"pid": "not a uuid"}}),
            json!({"task": "launch", "args": {"process_class": "m:C", "persist": "yes"}}),
            json!({"task": "create", "args": {"process_class": "m:C", "init_kwargs": [1]}}),
        ] {
            let error = LauncherTask::from_message(&body).unwrap_err();
            assert!(
                matches!(error, WireError::Malformed { .. }),
                "{body}: {error}"
            );
        }
    }
}
