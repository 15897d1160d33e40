//! Typed errors for core map loading, validation and pinning.
//!
//! Every variant renders as exactly one line that names the offending key (or
//! file, or core), because the node binary prints the error verbatim to stderr
//! and exits with status 2: an operator must be able to fix the core map from
//! that single line without reading a backtrace.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while reading, validating or applying a core map.
///
/// Why an enum with plain-data fields (no boxed sources): the errors are
/// `Clone + PartialEq` so tests can compare them exactly, and the Display of
/// each variant already carries the whole story in one line, so printing the
/// error with an `anyhow`-style `{:#}` chain does not repeat the OS message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreMapError {
    /// The core map file could not be read (missing, unreadable, a directory, not UTF-8).
    #[error("core map file `{path}`: cannot read: {reason}", path = .path.display())]
    Read {
        /// The path that was given to [`crate::CoreMap::from_path`].
        path: PathBuf,
        /// The kind of I/O failure, so callers can react to e.g. `NotFound`.
        kind: std::io::ErrorKind,
        /// The operating system's one-line description of the failure.
        reason: String,
    },

    /// The text is not valid TOML at all (unclosed bracket, bad string, ...).
    #[error("core map: invalid TOML at line {line}, column {col}: {message}")]
    Syntax {
        /// 1-based line of the first problem.
        line: usize,
        /// 1-based column (in characters) of the first problem.
        col: usize,
        /// The TOML parser's description, flattened to one line.
        message: String,
    },

    /// The same key is assigned twice in the file.
    #[error("core map key `{key}`: set twice (second time at line {line}, column {col})")]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// 1-based line of the second assignment.
        line: usize,
        /// 1-based column of the second assignment.
        col: usize,
    },

    /// A key that the core map does not know (typo protection: `deny_unknown_fields`).
    #[error(
        "core map key `{key}`: unknown key at line {line}, column {col} \
         (expected one of `control`, `shards`, `isolate_irq_hint`)"
    )]
    UnknownKey {
        /// The unknown key as written (escaped to stay on one line).
        key: String,
        /// 1-based line of the key.
        line: usize,
        /// 1-based column of the key.
        col: usize,
    },

    /// A required key is absent.
    #[error("core map key `{key}`: missing (required)")]
    MissingKey {
        /// `control` or `shards`.
        key: &'static str,
    },

    /// A known key has a value of the wrong type or range (e.g. `shards = 3`, `control = -1`).
    #[error("core map key `{key}`: {reason} (line {line}, column {col})")]
    InvalidValue {
        /// The key whose value is wrong.
        key: &'static str,
        /// What was expected, as the deserializer phrased it, on one line.
        reason: String,
        /// 1-based line of the value.
        line: usize,
        /// 1-based column of the value.
        col: usize,
    },

    /// A core named by the map is not usable by this process on this machine.
    #[error(
        "core map key `{key}`: core {core} does not exist on this machine (cores {online} online)"
    )]
    NoSuchCore {
        /// `control` or `shards`.
        key: &'static str,
        /// The core number that is not available.
        core: usize,
        /// The cores that are available, in cpulist form (`0-3,8`).
        online: String,
    },

    /// A core appears more than once in `shards`; two executors on one core defeat thread-per-core.
    #[error("core map key `shards`: core {core} listed twice")]
    DuplicateShard {
        /// The repeated core number.
        core: usize,
    },

    /// `shards = []`: a node without shards cannot serve any traffic.
    #[error("core map key `shards`: must not be empty")]
    EmptyShards,

    /// The kernel refused to pin the calling thread to a core.
    #[error(
        "cannot pin thread to core {core}: sched_setaffinity refused \
         (core offline or outside this process's CPU set)"
    )]
    Pin {
        /// The core the thread was to be pinned to.
        core: usize,
    },
}

/// Flattens a message to a single line so every [`CoreMapError`] stays one line.
///
/// Why: TOML/serde messages and user-written keys may contain newlines or
/// control characters; those would break the "one line per error" contract.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' || c == '\r' || c == '\t' {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_newlines_and_escapes_controls() {
        assert_eq!(one_line("a\nb\r\nc\t"), "a b c");
        assert_eq!(one_line("x\u{7}y"), "x\\u{7}y");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn every_variant_displays_as_one_line() {
        let all = [
            CoreMapError::Read {
                path: PathBuf::from("/etc/plumcore/core-map.toml"),
                kind: std::io::ErrorKind::NotFound,
                reason: "No such file or directory (os error 2)".into(),
            },
            CoreMapError::Syntax {
                line: 2,
                col: 12,
                message: "unclosed array, expected `]`".into(),
            },
            CoreMapError::DuplicateKey {
                key: "control".into(),
                line: 2,
                col: 1,
            },
            CoreMapError::UnknownKey {
                key: "shard".into(),
                line: 2,
                col: 1,
            },
            CoreMapError::MissingKey { key: "control" },
            CoreMapError::InvalidValue {
                key: "control",
                reason: "invalid value: integer `-1`, expected usize".into(),
                line: 1,
                col: 11,
            },
            CoreMapError::NoSuchCore {
                key: "shards",
                core: 7,
                online: "0-1".into(),
            },
            CoreMapError::DuplicateShard { core: 2 },
            CoreMapError::EmptyShards,
            CoreMapError::Pin { core: 3 },
        ];
        for e in all {
            let s = e.to_string();
            assert!(!s.contains('\n'), "multi-line: {s:?}");
            assert!(!s.is_empty());
        }
    }

    #[test]
    fn displays_match_the_documented_wording() {
        assert_eq!(
            CoreMapError::NoSuchCore {
                key: "shards",
                core: 7,
                online: "0-1".into()
            }
            .to_string(),
            "core map key `shards`: core 7 does not exist on this machine (cores 0-1 online)"
        );
        assert_eq!(
            CoreMapError::DuplicateShard { core: 2 }.to_string(),
            "core map key `shards`: core 2 listed twice"
        );
        assert_eq!(
            CoreMapError::EmptyShards.to_string(),
            "core map key `shards`: must not be empty"
        );
    }
}
