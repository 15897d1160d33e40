//! Topics: the NATS-style subject every message carries (`orders.eu.created`).
//!
//! Every node relays every topic (the cluster is one broadcast domain); topics exist so
//! that subscribers can filter. A topic is checked once, where it enters the node (an
//! application, an admin request, a datagram), and is then a cheap handle on shared
//! bytes: the decoder slices it out of the datagram without copying.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use bytes::Bytes;
use thiserror::Error;

/// Longest topic, in bytes (it travels behind a `u8` length on the wire).
pub const MAX_TOPIC_LEN: usize = 255;

/// The topic of a message published without one, and of every message from a node
/// that predates topics (wire version 1).
pub const DEFAULT_TOPIC: &str = "default";

/// Why a string is not a topic.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The string has no bytes at all.
    #[error("topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("topic of {len} bytes exceeds {MAX_TOPIC_LEN}")]
    TooLong {
        /// The rejected string's length, in bytes.
        len: usize,
    },
    /// The bytes (from a datagram) are not UTF-8.
    #[error("topic is not UTF-8")]
    NotUtf8,
    /// A dot at either end, or two in a row.
    #[error("topic has an empty token (leading, trailing or double dot)")]
    EmptyToken,
    /// Whitespace or a control character, which the NATS text protocol cannot carry.
    #[error("topic contains whitespace or a control character")]
    BadChar,
    /// A `*` or `>` token: those only make sense in a subscription filter.
    #[error("topic contains the wildcard token `{0}`; wildcards are for subscriptions")]
    Wildcard(char),
}

impl TopicError {
    /// Short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicError::Empty => "empty",
            TopicError::TooLong { .. } => "too_long",
            TopicError::NotUtf8 => "not_utf8",
            TopicError::EmptyToken => "empty_token",
            TopicError::BadChar => "bad_char",
            TopicError::Wildcard(_) => "wildcard",
        }
    }
}

/// A valid publish subject: 1..=255 bytes of UTF-8, dot-separated non-empty tokens,
/// no whitespace or control characters, and no wildcard token (`*` or `>` alone).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Bytes);

impl Topic {
    /// The `default` topic.
    pub fn default_topic() -> Topic {
        Topic(Bytes::from_static(DEFAULT_TOPIC.as_bytes()))
    }

    /// Checks `s` and copies it into a topic.
    pub fn new(s: &str) -> Result<Topic, TopicError> {
        check(s.as_bytes())?;
        if s == DEFAULT_TOPIC {
            return Ok(Topic::default_topic());
        }
        Ok(Topic(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// Checks `b` (bytes off the wire) and keeps them without copying.
    pub fn from_bytes(b: Bytes) -> Result<Topic, TopicError> {
        check(&b)?;
        Ok(Topic(b))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 on construction.
        std::str::from_utf8(&self.0).unwrap_or(DEFAULT_TOPIC)
    }

    /// The topic's bytes (what the wire carries).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes, at most [`MAX_TOPIC_LEN`].
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a topic has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this is the `default` topic.
    pub fn is_default(&self) -> bool {
        &self.0[..] == DEFAULT_TOPIC.as_bytes()
    }
}

impl Default for Topic {
    fn default() -> Self {
        Topic::default_topic()
    }
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topic({})", self.as_str())
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Topic, TopicError> {
        Topic::new(s)
    }
}

/// The publish-subject rules, on bytes.
fn check(b: &[u8]) -> Result<(), TopicError> {
    if b.is_empty() {
        return Err(TopicError::Empty);
    }
    if b.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: b.len() });
    }
    let s = std::str::from_utf8(b).map_err(|_| TopicError::NotUtf8)?;
    for token in s.split('.') {
        match token {
            "" => return Err(TopicError::EmptyToken),
            "*" => return Err(TopicError::Wildcard('*')),
            ">" => return Err(TopicError::Wildcard('>')),
            _ => {}
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TopicError::BadChar);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topics_are_kept_as_given() {
        for s in [
            "default",
            "orders",
            "orders.eu.created",
            "a-b_c.d$e",
            "a*.b>",
            "ü.ß",
        ] {
            assert_eq!(Topic::new(s).unwrap().as_str(), s);
        }
        assert!(Topic::new("default").unwrap().is_default());
        assert_eq!(Topic::default().as_str(), DEFAULT_TOPIC);
    }

    #[test]
    fn invalid_topics_say_why() {
        let long = "a".repeat(256);
        let cases: [(&str, TopicError); 8] = [
            ("", TopicError::Empty),
            (&long, TopicError::TooLong { len: 256 }),
            (".a", TopicError::EmptyToken),
            ("a.", TopicError::EmptyToken),
            ("a..b", TopicError::EmptyToken),
            ("a b", TopicError::BadChar),
            ("a.*", TopicError::Wildcard('*')),
            ("a.>", TopicError::Wildcard('>')),
        ];
        for (s, want) in cases {
            assert_eq!(Topic::new(s), Err(want), "{s:?}");
        }
        assert_eq!(
            Topic::from_bytes(Bytes::from_static(b"\xff")),
            Err(TopicError::NotUtf8)
        );
        assert_eq!(Topic::new(&"a".repeat(255)).unwrap().len(), 255);
    }
}
