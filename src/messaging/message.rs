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
