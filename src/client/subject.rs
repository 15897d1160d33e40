//! NATS subjects and subscription filters: what a client may publish to, what it may
//! subscribe with, and which subjects a filter matches. The rules are nats-server's,
//! so a client that works against it gets the same answers here.

use thiserror::Error;

/// Longest subject (or filter) accepted, in bytes. nats-server has no hard cap, but a
/// bound keeps every table key small; 255 is what most deployments stay under.
pub const MAX_SUBJECT_LEN: usize = 255;

/// Why a subject or filter was refused.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum SubjectError {
    /// Zero bytes long.
    #[error("empty subject")]
    Empty,
    /// Longer than [`MAX_SUBJECT_LEN`].
    #[error("subject of {len} bytes exceeds {MAX_SUBJECT_LEN}")]
    TooLong {
        /// Its length, in bytes.
        len: usize,
    },
    /// A leading, trailing or doubled `.`.
    #[error("subject has an empty token")]
    EmptyToken,
    /// Whitespace, a control byte or DEL: these end a protocol argument, so a subject
    /// holding one could never be spoken on the wire.
    #[error("subject contains byte 0x{0:02x}")]
    BadChar(u8),
    /// Not valid UTF-8 (only reachable from raw protocol bytes).
    #[error("subject is not valid UTF-8")]
    NotUtf8,
    /// `>` anywhere but as the whole last token of a filter.
    #[error("'>' is only allowed as the last token")]
    MisplacedFullWildcard,
    /// A `*` or `>` token in a subject that is published to.
    #[error("wildcard in a publish subject")]
    WildcardInPublish,
}

/// Checks the rules shared by subjects and filters: length, characters, no empty
/// token. Wildcards are the callers' business.
fn check_common(s: &str) -> Result<(), SubjectError> {
    if s.is_empty() {
        return Err(SubjectError::Empty);
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong { len: s.len() });
    }
    if let Some(&b) = s.as_bytes().iter().find(|&&b| b <= 0x20 || b == 0x7f) {
        return Err(SubjectError::BadChar(b));
    }
    if s.split('.').any(str::is_empty) {
        return Err(SubjectError::EmptyToken);
    }
    Ok(())
}

/// Whether `s` may be published to: a valid subject with no `*` or `>` token. Tokens
/// that merely contain those characters (`a*`, `b>c`) are literal, as in NATS.
pub fn validate_subject(s: &str) -> Result<(), SubjectError> {
    check_common(s)?;
    if s.split('.').any(|t| t == "*" || t == ">") {
        return Err(SubjectError::WildcardInPublish);
    }
    Ok(())
}

/// A validated publish subject (no wildcards).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Box<str>);

impl Subject {
    /// Validates `s` with [`validate_subject`].
    pub fn new(s: &str) -> Result<Subject, SubjectError> {
        validate_subject(s)?;
        Ok(Subject(s.into()))
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated subscription filter: tokens, where a whole-token `*` matches exactly
/// one token and a whole-token `>` (last only) matches one or more.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    text: Box<str>,
    literal: bool,
}

impl Filter {
    /// Validates `s` as a filter.
    pub fn parse(s: &str) -> Result<Filter, SubjectError> {
        check_common(s)?;
        let mut literal = true;
        let mut tokens = s.split('.').peekable();
        while let Some(t) = tokens.next() {
            match t {
                "*" => literal = false,
                ">" if tokens.peek().is_none() => literal = false,
                ">" => return Err(SubjectError::MisplacedFullWildcard),
                _ => {}
            }
        }
        Ok(Filter {
            text: s.into(),
            literal,
        })
    }

    /// The filter text, as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the filter has no wildcard token, so it matches exactly one subject
    /// (itself) and can be looked up by equality.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether `subject` (a valid publish subject) is matched. O(length) with no
    /// allocation; for a subject that is not valid the answer is unspecified (but it
    /// never panics).
    pub fn matches(&self, subject: &str) -> bool {
        if self.literal {
            return *self.text == *subject;
        }
        let mut subj = subject.split('.');
        for ft in self.text.split('.') {
            match ft {
                ">" => return subj.next().is_some(),
                "*" => {
                    if subj.next().is_none() {
                        return false;
                    }
                }
                lit => {
                    if subj.next() != Some(lit) {
                        return false;
                    }
                }
            }
        }
        subj.next().is_none()
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn publish_subjects() {
        assert_eq!(validate_subject("foo.bar"), Ok(()));
        assert_eq!(
            validate_subject("a*.b>.c"),
            Ok(()),
            "mixed tokens are literal"
        );
        assert_eq!(validate_subject(""), Err(SubjectError::Empty));
        assert_eq!(validate_subject("foo..bar"), Err(SubjectError::EmptyToken));
        assert_eq!(validate_subject(".foo"), Err(SubjectError::EmptyToken));
        assert_eq!(validate_subject("foo."), Err(SubjectError::EmptyToken));
        assert_eq!(validate_subject("fo o"), Err(SubjectError::BadChar(b' ')));
        assert_eq!(validate_subject("fo\to"), Err(SubjectError::BadChar(b'\t')));
        assert_eq!(validate_subject("fo\x7f"), Err(SubjectError::BadChar(0x7f)));
        assert_eq!(
            validate_subject("foo.*"),
            Err(SubjectError::WildcardInPublish)
        );
        assert_eq!(validate_subject(">"), Err(SubjectError::WildcardInPublish));
        assert_eq!(validate_subject("ünï.cødé"), Ok(()));
        assert!(Subject::new("a.b").is_ok_and(|s| s.as_str() == "a.b"));
    }

    #[test]
    fn length_cap() {
        let ok = "a".repeat(MAX_SUBJECT_LEN);
        assert_eq!(validate_subject(&ok), Ok(()));
        assert!(Filter::parse(&ok).is_ok());
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        assert_eq!(
            validate_subject(&long),
            Err(SubjectError::TooLong { len: 256 })
        );
        assert_eq!(
            Filter::parse(&long),
            Err(SubjectError::TooLong { len: 256 })
        );
    }

    #[test]
    fn filters_parse() {
        for ok in ["a", "a.b", "*", ">", "a.*", "*.b.>", "a.*.*", "a*.>", "b>"] {
            assert!(Filter::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Filter::parse("a.>.b"),
            Err(SubjectError::MisplacedFullWildcard)
        );
        assert_eq!(
            Filter::parse(">.>"),
            Err(SubjectError::MisplacedFullWildcard)
        );
        assert_eq!(Filter::parse("a..*"), Err(SubjectError::EmptyToken));
        assert_eq!(Filter::parse(""), Err(SubjectError::Empty));
        assert!(Filter::parse("a.b").is_ok_and(|f| f.is_literal()));
        assert!(Filter::parse("a*.b>").is_ok_and(|f| f.is_literal()));
        assert!(Filter::parse("a.*").is_ok_and(|f| !f.is_literal()));
        assert!(Filter::parse("a.>").is_ok_and(|f| !f.is_literal() && f.as_str() == "a.>"));
    }

    fn m(filter: &str, subject: &str) -> bool {
        Filter::parse(filter)
            .expect("valid filter")
            .matches(subject)
    }

    #[test]
    fn matching() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b", "a"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("*.b", "a.b"));
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c.d"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "a"));
        assert!(m(">", "a.b.c"));
        assert!(m("*.*.>", "a.b.c"));
        assert!(!m("*.*.>", "a.b"));
        assert!(!m("a*", "ab"), "a* is a literal token");
        assert!(m("a*", "a*"));
    }

    /// Reference matcher: token lists, recursion, no shortcuts.
    fn naive(filter: &[&str], subject: &[&str]) -> bool {
        match (filter.first(), subject.first()) {
            (None, None) => true,
            (Some(&">"), Some(_)) => filter.len() == 1,
            (Some(&"*"), Some(_)) => naive(&filter[1..], &subject[1..]),
            (Some(f), Some(s)) => f == s && naive(&filter[1..], &subject[1..]),
            _ => false,
        }
    }

    fn subject_tokens() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "a*"]), 1..6)
    }

    fn filter_tokens() -> impl Strategy<Value = Vec<&'static str>> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "a*"]), 0..6),
            any::<bool>(),
        )
            .prop_filter_map("a filter has a token", |(mut t, full)| {
                if full {
                    t.push(">");
                }
                (!t.is_empty()).then_some(t)
            })
    }

    proptest! {
        #[test]
        fn matches_agrees_with_naive(f in filter_tokens(), s in subject_tokens()) {
            let filter = Filter::parse(&f.join(".")).expect("generated filter is valid");
            let subject = s.join(".");
            prop_assert_eq!(validate_subject(&subject), Ok(()));
            prop_assert_eq!(filter.matches(&subject), naive(&f, &s));
        }

        #[test]
        fn any_text_is_judged_without_panic(s in "\\PC{0,40}|[ab.*> ]{0,12}") {
            let pub_ok = validate_subject(&s).is_ok();
            let filter = Filter::parse(&s);
            if pub_ok {
                // Every publish subject is also a literal filter matching itself.
                let f = filter.expect("publish subject is a filter");
                prop_assert!(f.is_literal());
                prop_assert!(f.matches(&s));
            } else if let Ok(f) = filter {
                prop_assert!(!f.is_literal());
            }
        }
    }
}
