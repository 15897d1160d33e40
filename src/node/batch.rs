//! The body of `POST /broadcast/batch`: payloads one after another, each behind its
//! length as a `u32` in little-endian order (the byte order of the wire format):
//!
//! ```text
//! body := ( len u32 LE | payload [len] )*
//! ```
//!
//! The whole body is checked before anything is broadcast, so a malformed batch is
//! refused whole with the index of the first bad entry and costs nothing else.

use thiserror::Error;

/// Most payloads one batch may carry.
pub const MAX_BATCH_MESSAGES: usize = 10_000;

/// Most body bytes a batch may have for payloads of at most `max_payload` bytes
/// (every entry at its largest), capped at 16 MiB.
pub fn max_batch_body(max_payload: usize) -> usize {
    (MAX_BATCH_MESSAGES * (4 + max_payload)).min(16 << 20)
}

/// Why a batch body was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// The body has no entry at all.
    #[error("empty batch: the body holds no payload")]
    Empty,
    /// Fewer than 4 bytes are left where an entry's length should be.
    #[error("entry {index}: the body ends inside its length prefix")]
    TruncatedLength {
        /// The entry's position in the batch, counting from 0.
        index: usize,
    },
    /// An entry's length prefix claims more bytes than the body has left.
    #[error("entry {index}: length {len} runs past the end of the body ({left} bytes left)")]
    TruncatedPayload {
        /// The entry's position in the batch, counting from 0.
        index: usize,
        /// The length its prefix claims, in bytes.
        len: usize,
        /// The bytes left in the body after the prefix.
        left: usize,
    },
    /// An entry is longer than the node's `max_payload`.
    #[error("entry {index}: payload of {len} bytes exceeds max_payload {max}")]
    TooLarge {
        /// The entry's position in the batch, counting from 0.
        index: usize,
        /// The entry's length in bytes.
        len: usize,
        /// The node's `max_payload`, in bytes.
        max: usize,
    },
    /// A zero-length entry while the node refuses empty payloads.
    #[error("entry {index}: empty payload refused (allow_empty is off)")]
    EmptyPayload {
        /// The entry's position in the batch, counting from 0.
        index: usize,
    },
    /// More entries than [`MAX_BATCH_MESSAGES`].
    #[error("more than {max} payloads in one batch")]
    TooMany {
        /// The bound, [`MAX_BATCH_MESSAGES`].
        max: usize,
    },
}

/// Splits a batch body into its payloads, checking every entry first.
pub fn parse_batch(
    body: &[u8],
    max_payload: usize,
    allow_empty: bool,
) -> Result<Vec<&[u8]>, BatchError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let index = out.len();
        if index == MAX_BATCH_MESSAGES {
            return Err(BatchError::TooMany {
                max: MAX_BATCH_MESSAGES,
            });
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(BatchError::TruncatedLength { index });
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > max_payload {
            return Err(BatchError::TooLarge {
                index,
                len,
                max: max_payload,
            });
        }
        if len == 0 && !allow_empty {
            return Err(BatchError::EmptyPayload { index });
        }
        if len > tail.len() {
            return Err(BatchError::TruncatedPayload {
                index,
                len,
                left: tail.len(),
            });
        }
        let (payload, tail) = tail.split_at(len);
        out.push(payload);
        rest = tail;
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

/// Encodes payloads as a batch body (for clients and tests).
pub fn encode_batch<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let payloads: Vec<&[u8]> = vec![b"a", b"hello", &[0u8; 1200]];
        let body = encode_batch(payloads.iter().copied());
        assert_eq!(parse_batch(&body, 1200, false).unwrap(), payloads);
    }

    #[test]
    fn every_malformed_body_is_refused_with_the_entry_it_failed_at() {
        let good = encode_batch([&b"ab"[..], b"cd"]);
        let mut cut = good.clone();
        cut.pop();
        assert_eq!(
            parse_batch(&cut, 1200, false),
            Err(BatchError::TruncatedPayload {
                index: 1,
                len: 2,
                left: 1
            })
        );
        let mut prefix = good.clone();
        prefix.extend_from_slice(&[1, 0]);
        assert_eq!(
            parse_batch(&prefix, 1200, false),
            Err(BatchError::TruncatedLength { index: 2 })
        );
        let big = encode_batch([&b"x"[..], &[0u8; 1201]]);
        assert_eq!(
            parse_batch(&big, 1200, false),
            Err(BatchError::TooLarge {
                index: 1,
                len: 1201,
                max: 1200
            })
        );
        // A forged length far past the body is refused by max_payload first.
        let forged = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            parse_batch(&forged, 1200, false),
            Err(BatchError::TooLarge { index: 0, .. })
        ));
        let empty_entry = encode_batch([&b"x"[..], b""]);
        assert_eq!(
            parse_batch(&empty_entry, 1200, false),
            Err(BatchError::EmptyPayload { index: 1 })
        );
        assert_eq!(parse_batch(&empty_entry, 1200, true).unwrap().len(), 2);
        assert_eq!(parse_batch(b"", 1200, false), Err(BatchError::Empty));
    }

    #[test]
    fn the_entry_count_is_bounded() {
        let one: &[u8] = b"x";
        let ok = encode_batch(std::iter::repeat_n(one, MAX_BATCH_MESSAGES));
        assert_eq!(
            parse_batch(&ok, 1200, false).unwrap().len(),
            MAX_BATCH_MESSAGES
        );
        let over = encode_batch(std::iter::repeat_n(one, MAX_BATCH_MESSAGES + 1));
        assert_eq!(
            parse_batch(&over, 1200, false),
            Err(BatchError::TooMany {
                max: MAX_BATCH_MESSAGES
            })
        );
        assert!(over.len() <= max_batch_body(1200));
    }
}
