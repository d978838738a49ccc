//! kiwipy's envelopes: what the bodies of replies, broadcasts and tasks look like once decoded.

use serde_json::{Map, Value, json};

use crate::messaging::Broadcast;
use crate::messaging::message::tagged_uuid;

/// The routing-key prefix of RPCs (literal brackets, as kiwipy).
pub(crate) const RPC_TOPIC: &str = "[rpc]";
/// The routing key of broadcasts.
pub(crate) const BROADCAST_TOPIC: &str = "[broadcast]";

/// A reply to an RPC or a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Result(Value),
    Exception(String),
    Cancelled,
    /// The answer comes later; the correlation id stays open for the next reply.
    Pending,
}

impl Reply {
    /// kiwipy's checks, in its order: `cancelled`, `exception`, `result`, `pending`.
    pub(crate) fn parse(body: Value) -> Result<Reply, String> {
        let Value::Object(mut map) = body else {
            return Err(format!("a reply must be a mapping, not {}", kind(&body)));
        };
        if map.contains_key("cancelled") {
            return Ok(Reply::Cancelled);
        }
        if let Some(exception) = map.remove("exception") {
            return Ok(Reply::Exception(match exception {
                Value::String(text) => text,
                other => other.to_string(),
            }));
        }
        if let Some(result) = map.remove("result") {
            return Ok(Reply::Result(result));
        }
        if map.contains_key("pending") {
            return Ok(Reply::Pending);
        }
        let keys: Vec<&String> = map.keys().collect();
        Err(format!(
            "a reply needs one of cancelled, exception, result or pending; it has {keys:?}"
        ))
    }

    /// The body, with kiwipy's `host` key for task replies.
    pub(crate) fn to_body(&self, host: Option<&Value>) -> Value {
        let mut map = Map::new();
        match self {
            Reply::Result(value) => map.insert("result".into(), value.clone()),
            Reply::Exception(text) => map.insert("exception".into(), Value::String(text.clone())),
            Reply::Cancelled => map.insert("cancelled".into(), Value::Null),
            Reply::Pending => map.insert("pending".into(), Value::Null),
        };
        if let Some(host) = host {
            map.insert("host".into(), host.clone());
        }
        Value::Object(map)
    }
}

/// A broadcast's body: all four keys, always.
pub(crate) fn broadcast_body(message: &Broadcast) -> Value {
    json!({
        "body": message.body,
        "sender": message.sender,
        "subject": message.subject,
        "correlation_id": message.correlation_id,
    })
}

pub(crate) fn parse_broadcast(body: Value) -> Result<Broadcast, String> {
    let Value::Object(mut map) = body else {
        return Err(format!(
            "a broadcast must be a mapping, not {}",
            kind(&body)
        ));
    };
    if !map.contains_key("body") {
        return Err("a broadcast needs a `body` key".to_owned());
    }
    Ok(Broadcast {
        body: map.remove("body").unwrap_or(Value::Null),
        sender: text(map.remove("sender")),
        subject: text(map.remove("subject")),
        correlation_id: map.remove("correlation_id").filter(|v| !v.is_null()),
    })
}

/// A sender or subject: a string, or any other value as its JSON text (Python may send one).
fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(text),
        // A pid from plumpy (a `!uuid` scalar): its text.
        other => match tagged_uuid(&other) {
            Some(uuid) => Some(uuid.to_string()),
            None => Some(other.to_string()),
        },
    }
}

/// A task's body: `[task, no_reply]` (kiwipy writes a Python tuple, and reads a list too).
pub(crate) fn task_body(task: &Value, no_reply: bool) -> Value {
    json!([task, no_reply])
}

pub(crate) fn parse_task(body: Value) -> Result<(Value, bool), String> {
    match body {
        Value::Array(mut items) if items.len() == 2 => {
            let no_reply = match items.pop() {
                Some(Value::Bool(flag)) => flag,
                Some(Value::Null) => false,
                Some(other) => {
                    return Err(format!(
                        "a task's no_reply flag must be a boolean, not {other}"
                    ));
                }
                None => false,
            };
            Ok((items.pop().unwrap_or(Value::Null), no_reply))
        }
        other => Err(format!(
            "a task must be a pair [task, no_reply], not {}",
            kind(&other)
        )),
    }
}

/// kiwipy's `host` of task replies: this machine's name and this process's id.
pub(crate) fn host() -> Value {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    json!({"hostname": hostname, "pid": std::process::id()})
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_in_kiwipys_order_and_round_trip() {
        assert_eq!(
            Reply::parse(json!({"result": {"echo": 1}})),
            Ok(Reply::Result(json!({"echo": 1})))
        );
        assert_eq!(
            Reply::parse(json!({"exception": "boom", "result": 1})),
            Ok(Reply::Exception("boom".into()))
        );
        assert_eq!(
            Reply::parse(json!({"cancelled": null})),
            Ok(Reply::Cancelled)
        );
        assert_eq!(Reply::parse(json!({"pending": null})), Ok(Reply::Pending));
        assert!(Reply::parse(json!({"other": 1})).is_err());
        assert!(Reply::parse(json!([1])).is_err());
        let host = json!({"hostname": "h", "pid": 1});
        let body = Reply::Result(json!(42)).to_body(Some(&host));
        assert_eq!(
            body,
            json!({"result": 42, "host": {"hostname": "h", "pid": 1}})
        );
        assert_eq!(Reply::parse(body), Ok(Reply::Result(json!(42))));
        assert_eq!(Reply::Pending.to_body(None), json!({"pending": null}));
    }

    #[test]
    fn broadcasts_carry_all_four_keys() {
        let message = Broadcast::new(json!({"k": "v"})).sender("me");
        let body = broadcast_body(&message);
        assert_eq!(
            body,
            json!({"body": {"k": "v"}, "sender": "me", "subject": null, "correlation_id": null})
        );
        assert_eq!(parse_broadcast(body), Ok(message));
        assert!(parse_broadcast(json!({"sender": "x"})).is_err());
        assert_eq!(
            parse_broadcast(json!({"body": 1, "sender": 7})).map(|b| b.sender),
            Ok(Some("7".to_owned()))
        );
    }

    #[test]
    fn tasks_are_pairs() {
        assert_eq!(task_body(&json!(21), false), json!([21, false]));
        assert_eq!(parse_task(json!([21, true])), Ok((json!(21), true)));
        assert!(parse_task(json!([21])).is_err());
        assert!(parse_task(json!({"task": 1})).is_err());
        assert!(parse_task(json!([1, "yes"])).is_err());
    }
}
