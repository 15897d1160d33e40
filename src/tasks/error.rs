//! Error type shared by every task helper, so callers match one enum whatever failed.

use std::time::Duration;

/// Why a tracked task did not produce its value.
///
/// One enum for all spawn/timeout/supervision paths lets callers decide on restart
/// or escalation without knowing which helper ran the future.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The future panicked; the payload message is kept for diagnosis.
    #[error("task panicked: {0}")]
    Panic(String),
    /// The future ran past its deadline and was dropped.
    #[error("task timed out after {0:?}")]
    Timeout(Duration),
    /// The task was cancelled through its handle, a supervisor or a shutdown.
    #[error("task cancelled")]
    Cancelled,
    /// The future finished with an application error (rendered as text).
    #[error("task failed: {0}")]
    Failed(String),
}

impl TaskError {
    /// True for outcomes that count as abnormal exits (everything but `Cancelled`),
    /// which is what transient restarts and error counters key on.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, TaskError::Cancelled)
    }
}

/// Turns a `catch_unwind` payload into a readable message, since panics carry
/// either `&'static str` or `String` and anything else is opaque.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_handles_str_and_string() {
        let a: Box<dyn std::any::Any + Send> = Box::new("boom");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        let c: Box<dyn std::any::Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(a.as_ref()), "boom");
        assert_eq!(panic_message(b.as_ref()), "bang");
        assert_eq!(panic_message(c.as_ref()), "unknown panic payload");
    }

    #[test]
    fn cancelled_is_not_abnormal() {
        assert!(!TaskError::Cancelled.is_abnormal());
        assert!(TaskError::Failed("x".into()).is_abnormal());
        assert!(TaskError::Panic("x".into()).is_abnormal());
    }
}
