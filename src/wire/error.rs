//! Why a datagram was rejected.

use thiserror::Error;

/// A datagram that cannot be decoded. Every byte string decodes to either a
/// [`Datagram`](super::Datagram) or one of these, so a hostile or corrupted packet
/// costs a counter increment, never a panic.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// Shorter than the fixed header.
    #[error("datagram of {len} bytes is shorter than the header")]
    TooShort {
        /// The datagram's length, in bytes.
        len: usize,
    },
    /// Not a plumcore datagram (stray traffic on the port).
    #[error("bad magic")]
    BadMagic,
    /// A plumcore datagram of a wire version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// A frame's prefix or body runs past the end of the datagram. `needed` is the
    /// prefix length (when the prefix itself is cut) or the body length the prefix
    /// announced; `have` is how many of those bytes are present.
    #[error("frame 0x{tag:02x} truncated: needs {needed} bytes, {have} left")]
    Truncated {
        /// The frame's tag.
        tag: u8,
        /// Bytes the prefix or body needs.
        needed: usize,
        /// Bytes of them present.
        have: usize,
    },
    /// A known frame whose body length is invalid for its tag (a Gossip shorter than
    /// its fixed part, an IHave that is empty or not a whole number of entries, a
    /// Graft or Prune of the wrong size).
    #[error("frame 0x{tag:02x} has invalid body length {len}")]
    BadLength {
        /// The frame's tag.
        tag: u8,
        /// The body length its prefix announced.
        len: usize,
    },
    /// A Digest listing more blocks than a sender ever puts in one frame
    /// ([`DIGEST_MAX_BLOCKS`](super::layout::DIGEST_MAX_BLOCKS)): forged or corrupt, and
    /// refused before any of it costs a pull.
    #[error("digest of {blocks} blocks exceeds the bound of {max}")]
    DigestTooLarge {
        /// Blocks the frame lists.
        blocks: usize,
        /// The bound.
        max: usize,
    },
    /// A Gossip frame whose topic is not a valid subject (the reason's label).
    #[error("gossip topic is invalid: {0}")]
    BadTopic(&'static str),
    /// A header with no frames at all, not even unknown ones.
    #[error("datagram carries no frames")]
    NoFrames,
}

impl DecodeError {
    /// Short, stable label for metrics (a counter per reason); never changes once
    /// shipped, unlike the `Display` text.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => "too_short",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::DigestTooLarge { .. } => "digest_too_large",
            DecodeError::BadTopic(_) => "bad_topic",
            DecodeError::NoFrames => "no_frames",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case_labels() {
        let all = [
            DecodeError::TooShort { len: 3 },
            DecodeError::BadMagic,
            DecodeError::UnsupportedVersion(9),
            DecodeError::Truncated {
                tag: 1,
                needed: 20,
                have: 4,
            },
            DecodeError::BadLength { tag: 3, len: 7 },
            DecodeError::DigestTooLarge {
                blocks: 41,
                max: 40,
            },
            DecodeError::BadTopic("empty"),
            DecodeError::NoFrames,
        ];
        let mut labels: Vec<_> = all.iter().map(DecodeError::reason).collect();
        for l in &labels {
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
        }
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn display_names_the_tag_in_hex() {
        let e = DecodeError::BadLength { tag: 0x02, len: 17 };
        assert_eq!(e.to_string(), "frame 0x02 has invalid body length 17");
    }
}
