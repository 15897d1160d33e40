//! The control executor: HyParView membership over the control socket and the
//! node's periodic work (maintenance, cleanup scheduling, stats aggregation).
//! Arrows: `exec` (loops, socket) → `state` (one turn into the membership driver and
//! back out); `report` adds the node snapshot to `state`.

pub(crate) mod exec;
mod report;
pub(crate) mod state;
