//! Messages: JSON-like values, and a broadcast's envelope.

use serde::Serialize;
use serde::de::DeserializeOwned;
pub use serde_json::Value;

use super::error::Error;

/// A broadcast: a body and optional sender, subject and correlation id, as kiwipy sends them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Broadcast {
    /// The payload.
    pub body: Value,
    /// Who sent it (filters can match on it).
    pub sender: Option<String>,
    /// What it is about (filters can match on it).
    pub subject: Option<String>,
    /// Links it to a request or conversation.
    pub correlation_id: Option<Value>,
}

impl Broadcast {
    /// A broadcast with only a body.
    pub fn new(body: impl Into<Value>) -> Self {
        Broadcast {
            body: body.into(),
            ..Broadcast::default()
        }
    }

    /// Sets the sender.
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.sender = Some(sender.into());
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<Value>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// The key of a UUID in a message: `{"$uuid": "<canonical text>"}`, the form MongoDB's
/// extended JSON gives one. JSON has no UUID type, while Python peers have one: plumpy sends its
/// pids as YAML `!uuid` scalars and expects them back as such. Over RabbitMQ such a mapping is
/// written as a `!uuid` scalar (so Python reads a `uuid.UUID`), and a `!uuid` scalar is read as
/// such a mapping; in process it is passed as it is. Make one with [`uuid_value`], read one
/// (or a UUID as plain text) with [`as_uuid`].
pub const UUID_KEY: &str = "$uuid";

/// `uuid` as a message value that Python peers read as a `uuid.UUID` (see [`UUID_KEY`]).
///
/// ```
/// use runtime_thread::engine::Uuid;
/// use runtime_thread::messaging::{as_uuid, uuid_value};
///
/// let pid = Uuid::new_v4();
/// let value = uuid_value(pid);
/// assert_eq!(value["$uuid"], pid.to_string());
/// assert_eq!(as_uuid(&value), Some(pid));
/// assert_eq!(as_uuid(&pid.to_string().into()), Some(pid));
/// ```
pub fn uuid_value(uuid: uuid::Uuid) -> Value {
    let mut map = serde_json::Map::with_capacity(1);
    map.insert(UUID_KEY.to_owned(), Value::String(uuid.to_string()));
    Value::Object(map)
}

/// The UUID in `value`: one made by [`uuid_value`] (or read from a `!uuid` scalar), or a
/// UUID written as text; `None` for anything else.
pub fn as_uuid(value: &Value) -> Option<uuid::Uuid> {
    match value {
        Value::String(text) => uuid::Uuid::parse_str(text).ok(),
        Value::Object(_) => tagged_uuid(value),
        _ => None,
    }
}

/// The UUID of a `{"$uuid": text}` mapping (exactly that one key, holding a UUID).
pub(crate) fn tagged_uuid(value: &Value) -> Option<uuid::Uuid> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    uuid::Uuid::parse_str(map.get(UUID_KEY)?.as_str()?).ok()
}

/// Encodes a typed value as a message body.
///
/// # Errors
///
/// `Error::Decode`, naming the type, when it cannot be represented as JSON (a map with non-string
/// keys, say).
pub fn to_value<T: Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Decode {
        what: std::any::type_name::<T>().to_owned(),
        reason: e.to_string(),
    })
}

/// Decodes a message body into a typed value; the error names the type and the reason.
///
/// # Errors
///
/// `Error::Decode`, naming the type and the reason, when the body does not fit `T`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::Decode {
        what: std::any::type_name::<T>().to_owned(),
        reason: e.to_string(),
    })
}
