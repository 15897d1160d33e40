//! The control executor: HyParView membership over the control socket and the
//! node's periodic work (maintenance, cleanup scheduling, stats aggregation).

pub(crate) mod exec;
