//! Exit codes: zero means success, anything else a failure (AiiDA's convention).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a finished process ended.
///
/// ```
/// use runtime_thread::engine::ExitCode;
///
/// assert!(ExitCode::OK.is_success());
/// let failed = ExitCode::new(300, "the input structure is not relaxed");
/// assert!(!failed.is_success());
/// assert_eq!(failed.to_string(), "300 (the input structure is not relaxed)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitCode {
    /// Zero for success.
    pub status: u32,
    /// Why, for a failure.
    pub message: Option<String>,
}

impl ExitCode {
    /// Success.
    pub const OK: ExitCode = ExitCode {
        status: 0,
        message: None,
    };

    /// An exit code with a message.
    pub fn new(status: u32, message: impl Into<String>) -> Self {
        ExitCode {
            status,
            message: Some(message.into()),
        }
    }

    /// True for status zero.
    pub fn is_success(&self) -> bool {
        self.status == 0
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{} ({message})", self.status),
            None => write!(f, "{}", self.status),
        }
    }
}
