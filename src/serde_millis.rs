//! Serde for a [`Duration`] as a whole number of milliseconds (`heartbeat_interval =
//! 100`): the form the protocol's and the membership's tunables take in TOML, kept in
//! one place so that both tables read and write durations the same way. Use it as
//! `#[serde(with = "crate::serde_millis")]`.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `d` as its milliseconds (below a millisecond is dropped).
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Reads a whole number of milliseconds.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_millis(u64::deserialize(d)?))
}
