//! The application's say on what the cluster carries: a [`Validator`] runs on the
//! shard for every message received from a peer, before it is delivered, cached or
//! relayed (gossipsub's Accept / Reject / Ignore). A message that is not accepted goes
//! no further from this node, and is marked seen so nobody is asked for it again.
//!
//! The validator runs on the shard's thread, inline with the data path: keep it
//! fast and non-blocking. A validator that panics is caught, counted, and its
//! message treated as [`Verdict::Ignore`].

use std::sync::Arc;

use crate::ids::MessageId;
use crate::topic::Topic;

/// What a validator decides about one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it here and relay it.
    Accept,
    /// Invalid: drop it (gossipsub would also penalise the sender).
    Reject,
    /// Not wanted, but not the sender's fault: drop it.
    Ignore,
}

/// A received message, as the validator sees it.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    /// Its origin and seq.
    pub id: MessageId,
    /// The topic it was broadcast on.
    pub topic: &'a Topic,
    /// The application's bytes.
    pub payload: &'a [u8],
    /// Hops it travelled to reach this node.
    pub hops: u16,
}

/// Decides whether a received message is delivered and relayed.
pub trait Validator: Send + Sync + 'static {
    /// The verdict on `msg`; called once per message, on the shard's thread.
    fn validate(&self, msg: &MessageView<'_>) -> Verdict;
}

impl<F> Validator for F
where
    F: Fn(&MessageView<'_>) -> Verdict + Send + Sync + 'static,
{
    fn validate(&self, msg: &MessageView<'_>) -> Verdict {
        self(msg)
    }
}

/// A shared validator, as the configs carry it: cloning shares it; two handles are
/// equal when they share one validator.
#[derive(Clone)]
pub struct ValidatorHandle(pub Arc<dyn Validator>);

impl ValidatorHandle {
    /// Wraps `v`.
    pub fn new(v: impl Validator) -> Self {
        ValidatorHandle(Arc::new(v))
    }

    /// Runs the validator, turning a panic into [`Verdict::Ignore`] (the `bool` says
    /// it panicked, for the counter).
    pub fn check(&self, msg: &MessageView<'_>) -> (Verdict, bool) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.validate(msg))) {
            Ok(v) => (v, false),
            Err(_) => (Verdict::Ignore, true),
        }
    }
}

impl std::fmt::Debug for ValidatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValidatorHandle(..)")
    }
}

impl PartialEq for ValidatorHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Messages by verdict, and validator panics (counted as ignored too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ValidationCounts {
    /// Messages the validator accepted (delivered and relayed).
    pub accepted: u64,
    /// Messages it rejected as invalid.
    pub rejected: u64,
    /// Messages it ignored, panics included.
    pub ignored: u64,
    /// Calls that panicked (each also counted in `ignored`).
    pub panics: u64,
}

impl ValidationCounts {
    /// Counts one verdict.
    pub fn count(&mut self, v: Verdict, panicked: bool) {
        match v {
            Verdict::Accept => self.accepted += 1,
            Verdict::Reject => self.rejected += 1,
            Verdict::Ignore => self.ignored += 1,
        }
        if panicked {
            self.panics += 1;
        }
    }
}
