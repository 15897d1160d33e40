//! Core maps for plumcore: which core runs what, checked against the machine.
//!
//! plumcore runs one glommio executor per shard core plus a control
//! executor. This crate owns the small, testable part of that decision:
//!
//! * [`CoreMap`]: the TOML core map (`control`, `shards`, `isolate_irq_hint`),
//!   parsed strictly so typos fail loudly;
//! * [`Topology`]: which cores this process may use, plus best-effort NUMA
//!   and CPU-model information;
//! * [`CoreMap::validate`] / [`CoreMap::probe`]: errors for maps that cannot
//!   work, warnings for maps that work badly, and a default when there is
//!   no map;
//! * [`pin_current_thread`]: pinning a thread to its core;
//! * [`CoreMapError`]: one-line errors, each naming the offending key, that
//!   the binary prints before exiting with status 2.
//!
//! ```
//! use core_pinning::{CoreMap, Topology};
//!
//! let map = CoreMap::parse("control = 0\nshards = [1, 2, 3]\n").unwrap();
//! let checked = map.validate(&Topology::fake(4)).unwrap();
//! assert!(checked.warnings.is_empty());
//! assert_eq!(checked.map.shards, vec![1, 2, 3]);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod map;
mod pin;
pub mod topology;

pub use error::CoreMapError;
pub use map::{CoreMap, Validated};
pub use pin::pin_current_thread;
pub use topology::{CoreSource, Topology};
