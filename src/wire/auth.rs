//! Cluster authentication: a keyed MAC trailer on every datagram.
//!
//! Sans-IO like the rest of `wire`: nothing here reads a clock or a socket. Callers
//! pass the current UNIX time in milliseconds (`now_ms`), so tests drive time.
//!
//! An authenticated datagram is an ordinary datagram (header and frames) with the
//! header's [`FLAG_AUTH`] bit set, followed by a trailer:
//!
//! ```text
//! trailer := timestamp_ms u64 | seq u64 | key_id u8 | mac [16]          (33 bytes)
//! mac     := BLAKE3-keyed(mac_key, header | frames | timestamp_ms | seq | key_id)[..16]
//! ```
//!
//! The MAC covers everything before it, the header (sender, incarnation, flags)
//! included, so none of it can be changed, and the auth flag cannot be stripped.
//!
//! * **128-bit tag.** An attacker without the key must guess the tag; each guess
//!   succeeds with probability 2^-128 and costs a datagram the receiver counts. Even
//!   at a billion forged datagrams a second that is ~10^22 years per expected success.
//!   Birthday bounds do not apply: the attacker cannot compute tags to collide.
//! * **`key_id`** is a one-byte fingerprint of the signing key (derived from it, not
//!   its position in a key list), so a receiver whose list is ordered differently
//!   (during a rotation) still finds the right key with one MAC computation.
//! * **Freshness.** `timestamp_ms` must be within `window_ms` of the receiver's clock
//!   (either direction), so a captured datagram is useless after the window.
//! * **Replay.** Within the window, a per-stream sliding bitmap of recent `seq`s
//!   rejects duplicates. A stream is `(sender, incarnation, seq >> 56)`: each of a
//!   node's sockets seals with its own [`Sealer`] whose top `seq` byte is its stream
//!   number (control = 0, shard k = k + 1), so streams are independently monotonic and
//!   any receiving socket can track each separately.
//!
//! Verification runs before any frame is decoded and does a bounded amount of work
//! (one BLAKE3 pass over at most one datagram), so a flood of forgeries costs the
//! receiver hashing, not protocol state.
//!
//! **Encryption** ([`ClusterKeys::encrypted`], `cluster_encrypt = true`): the frames
//! are sealed with XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) instead of being
//! MAC'd in clear. The layout and length are the same; the header also has
//! [`FLAG_SEALED`], and the trailer's last 16 bytes are the Poly1305 tag:
//!
//! ```text
//! datagram := header | ciphertext(frames) | timestamp_ms u64 | seq u64 | key_id u8 | tag [16]
//! aad      := header | timestamp_ms | seq | key_id          (authenticated, in clear)
//! nonce    := sender u64 | incarnation u32 | seq u64 | 0u32 (24 bytes, LE)
//! key      := BLAKE3-derive_key("plumcore 2026-12 datagram aead v1", cluster key)
//! ```
//!
//! The nonce is unique per key as long as `(sender, incarnation, seq)` is, which is
//! exactly what replay detection already requires of a sender (each socket's stream
//! byte and its counter seeded from the start time in microseconds). Timestamp,
//! window, replay and rotation rules (the first key seals, any key opens) are the
//! MAC's. An encrypting node refuses datagrams that are only MAC'd (`missing`).

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use thiserror::Error;

use super::layout::HEADER_LEN;

/// Header flags bit meaning "this datagram ends with an auth trailer".
pub const FLAG_AUTH: u8 = 0x01;
/// Header flags bit meaning "the frames are encrypted" (with [`FLAG_AUTH`]).
pub const FLAG_SEALED: u8 = 0x02;
/// Bytes of the MAC tag (BLAKE3 output truncated to 128 bits; see the module docs).
pub const MAC_LEN: usize = 16;
/// Bytes of the trailer: `timestamp_ms u64 | seq u64 | key_id u8 | mac [16]`.
pub const TRAILER_LEN: usize = 8 + 8 + 1 + MAC_LEN;
/// Most keys a node accepts at once: a rotation needs two; a few spare are harmless.
pub const MAX_KEYS: usize = 8;
/// Default accepted clock difference between sender and receiver.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;
/// Sequence numbers remembered per stream for replay detection.
pub const REPLAY_WINDOW: u64 = 1024;
/// Default bound on tracked replay streams, so authenticated-but-many senders cannot
/// grow memory without limit.
pub const DEFAULT_MAX_STREAMS: usize = 4096;
/// Bits of `seq` below the stream number.
const STREAM_SHIFT: u32 = 56;
/// Byte offset of the flags byte in the header.
const FLAGS_AT: usize = 3;

const MAC_CONTEXT: &str = "plumcore 2026-11 datagram mac v1";
const ID_CONTEXT: &str = "plumcore 2026-11 cluster key id v1";
const AEAD_CONTEXT: &str = "plumcore 2026-12 datagram aead v1";

/// One cluster key, as derived for its uses (MAC key, AEAD key and fingerprint), so
/// the raw secret is never used directly in two roles.
#[derive(Clone)]
struct Key {
    mac_key: [u8; 32],
    aead: chacha20poly1305::XChaCha20Poly1305,
    id: u8,
}

impl Key {
    fn new(raw: &[u8; 32]) -> Self {
        use chacha20poly1305::KeyInit;
        let aead_key = blake3::derive_key(AEAD_CONTEXT, raw);
        Key {
            mac_key: blake3::derive_key(MAC_CONTEXT, raw),
            aead: chacha20poly1305::XChaCha20Poly1305::new(&aead_key.into()),
            id: blake3::derive_key(ID_CONTEXT, raw)[0],
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let h = blake3::keyed_hash(&self.mac_key, data);
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&h.as_bytes()[..MAC_LEN]);
        tag
    }
}

/// The keys of a cluster: sign with the first, accept any. Rotating without downtime
/// is: add the new key second everywhere, then move it first everywhere, then drop
/// the old one.
#[derive(Clone)]
pub struct ClusterKeys {
    keys: Vec<Key>,
    encrypt: bool,
}

impl std::fmt::Debug for ClusterKeys {
    /// Never prints key material, only fingerprints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKeys")
            .field("key_ids", &self.key_ids())
            .field("encrypt", &self.encrypt)
            .finish()
    }
}

/// Why a key file (or key list) was refused; each names the file or line to fix.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the read failed with.
        #[source]
        source: std::io::Error,
    },
    /// A non-comment line is not exactly 64 hex digits.
    #[error("key file line {line}: {reason}")]
    BadLine {
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// No key at all: an empty key file would silently leave the cluster open.
    #[error("key file holds no key")]
    Empty,
    /// More keys than [`MAX_KEYS`].
    #[error("key file holds {count} keys; at most {MAX_KEYS} are allowed")]
    TooMany {
        /// Keys the file holds.
        count: usize,
    },
}

impl ClusterKeys {
    /// Keys from raw 32-byte secrets, the first one signing.
    pub fn new(raw: &[[u8; 32]]) -> Result<Self, KeyFileError> {
        if raw.is_empty() {
            return Err(KeyFileError::Empty);
        }
        if raw.len() > MAX_KEYS {
            return Err(KeyFileError::TooMany { count: raw.len() });
        }
        Ok(ClusterKeys {
            keys: raw.iter().map(Key::new).collect(),
            encrypt: false,
        })
    }

    /// The same keys, sealing (and requiring) encrypted datagrams when `on`.
    pub fn encrypted(mut self, on: bool) -> Self {
        self.encrypt = on;
        self
    }

    /// Whether datagrams are encrypted, not only MAC'd.
    pub fn is_encrypted(&self) -> bool {
        self.encrypt
    }

    /// Parses a key file's text: one key per line as 64 hex digits; blank lines and
    /// everything after `#` are ignored.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut raw = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let content = line.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let bad = |reason: String| KeyFileError::BadLine {
                line: line_no,
                reason,
            };
            if content.len() != 64 {
                return Err(bad(format!(
                    "expected 64 hex digits (32 bytes), found {} characters",
                    content.len()
                )));
            }
            let mut key = [0u8; 32];
            for (k, pair) in content.as_bytes().chunks_exact(2).enumerate() {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(pair[0]), hex(pair[1])) {
                    (Some(h), Some(l)) => key[k] = (h * 16 + l) as u8,
                    _ => return Err(bad("not a hex digit".to_string())),
                }
            }
            if key == [0u8; 32] {
                return Err(bad("an all-zero key is not a secret".to_string()));
            }
            raw.push(key);
        }
        Self::new(&raw)
    }

    /// Reads and parses a key file (see [`parse`](Self::parse)).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Number of keys accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false (a key list has at least one key); here for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// One-byte fingerprints of the keys, signing key first, for logs.
    pub fn key_ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.id).collect()
    }
}

/// Why a datagram was dropped by [`Verifier::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No auth flag, or too short to hold a header and a trailer; or, on an
    /// encrypting node, a datagram that is only MAC'd (and the other way round).
    #[error("datagram is not authenticated")]
    Missing,
    /// The MAC does not match under any accepted key (forged, corrupted, wrong key).
    #[error("datagram MAC does not verify")]
    BadMac,
    /// The timestamp is outside the clock window (old capture or skewed clock).
    #[error("datagram timestamp is outside the clock window")]
    Stale,
    /// This (sender, incarnation, seq) was already accepted, or is too old to tell.
    #[error("datagram is a replay")]
    Replay,
}

impl AuthError {
    /// Stable metric label (`plumtree_auth_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::BadMac => "bad_mac",
            AuthError::Stale => "stale",
            AuthError::Replay => "replay",
        }
    }
}

/// Seals the datagrams of one sending socket. Not shared across threads: each socket
/// owns one, so its `seq` stream needs no synchronisation.
#[derive(Clone, Debug)]
pub struct Sealer {
    keys: ClusterKeys,
    seq: u64,
}

impl Sealer {
    /// A sealer for stream `stream` (control socket 0, shard k: k + 1). `start` seeds
    /// the low 56 bits of `seq`; pass the start time in microseconds so that a node
    /// restarted within the same incarnation second does not reuse sequence numbers
    /// its peers' replay windows still hold.
    pub fn new(keys: ClusterKeys, stream: u8, start: u64) -> Self {
        let low = start & ((1 << STREAM_SHIFT) - 1);
        Sealer {
            keys,
            seq: (u64::from(stream) << STREAM_SHIFT) | low,
        }
    }

    /// Sets the auth flag in `datagram`'s header and appends the trailer signed with
    /// the first key. `datagram` must be a finished datagram (header and frames).
    pub fn seal(&mut self, datagram: &mut Vec<u8>, now_ms: u64) {
        debug_assert!(datagram.len() >= HEADER_LEN, "seal needs a header");
        let encrypt = self.keys.encrypt;
        if let Some(flags) = datagram.get_mut(FLAGS_AT) {
            *flags |= FLAG_AUTH;
            if encrypt {
                *flags |= FLAG_SEALED;
            }
        }
        let key = &self.keys.keys[0];
        // Keep the stream byte; wrap the low 56 bits (2^56 datagrams never happen).
        let stream = self.seq & !((1 << STREAM_SHIFT) - 1);
        let seq = self.seq;
        self.seq = stream | (self.seq.wrapping_add(1) & ((1 << STREAM_SHIFT) - 1));
        datagram.reserve(TRAILER_LEN);
        datagram.extend_from_slice(&now_ms.to_le_bytes());
        datagram.extend_from_slice(&seq.to_le_bytes());
        datagram.push(key.id);
        if encrypt && datagram.len() >= HEADER_LEN + TRAILER_LEN - MAC_LEN {
            use chacha20poly1305::aead::AeadInPlace;
            let body_end = datagram.len() - (TRAILER_LEN - MAC_LEN);
            let nonce = nonce_for(&datagram[..HEADER_LEN], seq);
            let (head, rest) = datagram.split_at_mut(HEADER_LEN);
            let (frames, trailer) = rest.split_at_mut(body_end - HEADER_LEN);
            let mut aad = [0u8; HEADER_LEN + TRAILER_LEN - MAC_LEN];
            aad[..HEADER_LEN].copy_from_slice(head);
            aad[HEADER_LEN..].copy_from_slice(trailer);
            // Encrypting a buffer we own cannot fail (only lengths over 2^38 would).
            match key
                .aead
                .encrypt_in_place_detached(&nonce.into(), &aad, frames)
            {
                Ok(tag) => datagram.extend_from_slice(&tag),
                Err(_) => datagram.extend_from_slice(&[0u8; MAC_LEN]),
            }
            return;
        }
        let tag = key.mac(datagram);
        datagram.extend_from_slice(&tag);
    }

    /// [`seal`](Self::seal) for a datagram held as `Bytes` (what the builders emit).
    pub fn seal_bytes(&mut self, datagram: &[u8], now_ms: u64) -> bytes::Bytes {
        let mut v = Vec::with_capacity(datagram.len() + TRAILER_LEN);
        v.extend_from_slice(datagram);
        self.seal(&mut v, now_ms);
        bytes::Bytes::from(v)
    }
}

/// The AEAD nonce of a datagram: `sender u64 | incarnation u32 | seq u64 | 0u32`,
/// read from its header (bytes 4..16) and its trailer's `seq`.
fn nonce_for(header: &[u8], seq: u64) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..12].copy_from_slice(&header[4..16]);
    n[12..20].copy_from_slice(&seq.to_le_bytes());
    n
}

/// A replay stream: who sent it, in which life, from which of its sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StreamKey {
    sender: u64,
    incarnation: u32,
    stream: u8,
}

/// Sliding window over the last [`REPLAY_WINDOW`] sequence numbers of one stream.
/// Bit `s % REPLAY_WINDOW` is set when `s` (within the window below `highest`) was
/// accepted.
#[derive(Clone, Debug)]
struct ReplayWindow {
    highest: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
    last_used: u64,
}

impl ReplayWindow {
    fn new(seq: u64, tick: u64) -> Self {
        let mut w = ReplayWindow {
            highest: seq,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
            last_used: tick,
        };
        w.set(seq);
        w
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = Self::slot(seq);
        self.bits[w] |= b;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, b) = Self::slot(seq);
        self.bits[w] & b != 0
    }

    fn clear(&mut self, seq: u64) {
        let (w, b) = Self::slot(seq);
        self.bits[w] &= !b;
    }

    /// Records `seq`; false if it was seen or is too old to tell.
    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            let advance = seq - self.highest;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for s in self.highest + 1..seq {
                    self.clear(s);
                }
            }
            self.highest = seq;
            self.set(seq);
            return true;
        }
        if self.highest - seq >= REPLAY_WINDOW || self.is_set(seq) {
            return false;
        }
        self.set(seq);
        true
    }
}

/// Verifies datagrams arriving on one receiving socket and remembers what it accepted.
/// Not shared across threads: each socket owns one.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: ClusterKeys,
    window_ms: u64,
    max_streams: usize,
    streams: FxHashMap<StreamKey, ReplayWindow>,
    tick: u64,
}

impl Verifier {
    /// A verifier with the default clock window and stream bound.
    pub fn new(keys: ClusterKeys) -> Self {
        Self::with_limits(keys, DEFAULT_WINDOW_MS, DEFAULT_MAX_STREAMS)
    }

    /// A verifier accepting timestamps within `window_ms` of `now_ms` and tracking at
    /// most `max_streams` replay streams (least recently used evicted first).
    pub fn with_limits(keys: ClusterKeys, window_ms: u64, max_streams: usize) -> Self {
        Verifier {
            keys,
            window_ms,
            max_streams: max_streams.max(1),
            streams: FxHashMap::default(),
            tick: 0,
        }
    }

    /// Replay streams currently tracked (bounded by `max_streams`).
    pub fn tracked_streams(&self) -> usize {
        self.streams.len()
    }

    /// Checks `datagram` and returns the length of its authenticated part (header and
    /// frames, without the trailer), which the caller then decodes; with encrypting
    /// keys the frames are decrypted in place first. Checks in order: present, tag,
    /// clock window, replay; replay state changes only for datagrams that passed the
    /// first three, so forgeries cannot disturb it.
    pub fn open(&mut self, datagram: &mut [u8], now_ms: u64) -> Result<usize, AuthError> {
        if !self.keys.encrypt {
            return self.verify(datagram, now_ms);
        }
        let body_len = datagram
            .len()
            .checked_sub(TRAILER_LEN)
            .filter(|&n| n >= HEADER_LEN)
            .ok_or(AuthError::Missing)?;
        if datagram[FLAGS_AT] & (FLAG_AUTH | FLAG_SEALED) != FLAG_AUTH | FLAG_SEALED {
            return Err(AuthError::Missing);
        }
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        let (frames, trailer) = rest.split_at_mut(body_len - HEADER_LEN);
        let (fields, tag) = trailer.split_at(TRAILER_LEN - MAC_LEN);
        let mut aad = [0u8; HEADER_LEN + TRAILER_LEN - MAC_LEN];
        aad[..HEADER_LEN].copy_from_slice(head);
        aad[HEADER_LEN..].copy_from_slice(fields);
        let seq = u64::from_le_bytes(fields[8..16].try_into().map_err(|_| AuthError::Missing)?);
        let key_id = fields[16];
        let nonce = nonce_for(head, seq);
        let tag = chacha20poly1305::Tag::from_slice(tag);
        use chacha20poly1305::aead::AeadInPlace;
        // Try each key with this fingerprint; a failed attempt leaves `frames`
        // untouched (the tag is checked before anything is decrypted).
        let ok = self.keys.keys.iter().filter(|k| k.id == key_id).any(|k| {
            k.aead
                .decrypt_in_place_detached(&nonce.into(), &aad, frames, tag)
                .is_ok()
        });
        if !ok {
            return Err(AuthError::BadMac);
        }
        self.fresh_and_new(datagram, now_ms).map(|()| body_len)
    }

    /// [`open`](Self::open) for a received buffer that may be shared (a pooled
    /// receive buffer): returns the authenticated part as a slice of it when the keys
    /// only MAC, and an opened private copy when they encrypt (decryption is in
    /// place, and a shared buffer cannot be written).
    pub fn open_bytes(
        &mut self,
        datagram: bytes::Bytes,
        now_ms: u64,
    ) -> Result<bytes::Bytes, AuthError> {
        if !self.keys.encrypt {
            let n = self.verify(&datagram, now_ms)?;
            return Ok(datagram.slice(..n));
        }
        let mut own = bytes::BytesMut::from(&datagram[..]);
        let n = self.open(&mut own, now_ms)?;
        own.truncate(n);
        Ok(own.freeze())
    }

    /// Checks `datagram`'s MAC (keys that do not encrypt) and returns the length of
    /// its MAC'd part; see [`open`](Self::open), which handles both kinds.
    pub fn verify(&mut self, datagram: &[u8], now_ms: u64) -> Result<usize, AuthError> {
        if self.keys.encrypt {
            return Err(AuthError::Missing);
        }
        let body_len = datagram
            .len()
            .checked_sub(TRAILER_LEN)
            .filter(|&n| n >= HEADER_LEN)
            .ok_or(AuthError::Missing)?;
        if datagram[FLAGS_AT] & FLAG_AUTH == 0 {
            return Err(AuthError::Missing);
        }
        let signed_len = datagram.len() - MAC_LEN;
        let (signed, tag) = datagram.split_at(signed_len);
        let tag: &[u8; MAC_LEN] = tag.try_into().map_err(|_| AuthError::Missing)?;
        let trailer = &signed[body_len..];
        let u64_at = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        let timestamp = u64_at(&trailer[0..8]);
        let seq = u64_at(&trailer[8..16]);
        let key_id = trailer[16];
        let ok = self
            .keys
            .keys
            .iter()
            .filter(|k| k.id == key_id)
            .any(|k| constant_time_eq::constant_time_eq_16(&k.mac(signed), tag));
        if !ok {
            return Err(AuthError::BadMac);
        }
        if datagram[FLAGS_AT] & FLAG_SEALED != 0 {
            // Sealed by an encrypting node: the MAC cannot have matched, but be sure.
            return Err(AuthError::Missing);
        }
        let _ = (timestamp, seq);
        self.fresh_and_new(datagram, now_ms).map(|()| body_len)
    }

    /// The clock-window and replay checks of an authenticated datagram.
    fn fresh_and_new(&mut self, datagram: &[u8], now_ms: u64) -> Result<(), AuthError> {
        let u64_at = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        let trailer = &datagram[datagram.len() - TRAILER_LEN..];
        let timestamp = u64_at(&trailer[0..8]);
        let seq = u64_at(&trailer[8..16]);
        if timestamp.abs_diff(now_ms) > self.window_ms {
            return Err(AuthError::Stale);
        }
        let key = StreamKey {
            sender: u64_at(&datagram[4..12]),
            incarnation: u32::from_le_bytes([
                datagram[12],
                datagram[13],
                datagram[14],
                datagram[15],
            ]),
            stream: (seq >> STREAM_SHIFT) as u8,
        };
        let low = seq & ((1 << STREAM_SHIFT) - 1);
        self.tick += 1;
        let tick = self.tick;
        if let Some(w) = self.streams.get_mut(&key) {
            w.last_used = tick;
            return if w.accept(low) {
                Ok(())
            } else {
                Err(AuthError::Replay)
            };
        }
        if self.streams.len() >= self.max_streams {
            // Only authenticated senders get here, so this O(n) scan is rare (a new
            // stream once the table is full) and cannot be triggered by forgeries.
            if let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, w)| w.last_used)
                .map(|(k, _)| *k)
            {
                self.streams.remove(&oldest);
            }
        }
        self.streams.insert(key, ReplayWindow::new(low, tick));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MessageId, NodeId};
    use crate::wire::{decode, encode_frame, encode_header, Frame, Header};
    use bytes::Bytes;

    const NOW: u64 = 1_790_000_000_000;

    fn keys(seeds: &[u8]) -> ClusterKeys {
        let raw: Vec<[u8; 32]> = seeds.iter().map(|&s| [s; 32]).collect();
        ClusterKeys::new(&raw).unwrap()
    }

    fn plain(sender: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(
            &Header {
                sender: NodeId(sender),
                incarnation: 9,
                flags: 0,
                version: crate::wire::VERSION,
            },
            &mut out,
        );
        encode_frame(
            &Frame::Gossip {
                id: MessageId {
                    origin: NodeId(sender),
                    seq: 1,
                },
                round: 0,
                topic: crate::topic::Topic::default(),
                payload: Bytes::copy_from_slice(payload),
            },
            &mut out,
        );
        out
    }

    fn sealed(sealer: &mut Sealer, now: u64) -> Vec<u8> {
        let mut d = plain(5, b"hello");
        sealer.seal(&mut d, now);
        d
    }

    #[test]
    fn round_trip_decodes_after_stripping() {
        let k = keys(&[1]);
        let mut s = Sealer::new(k.clone(), 0, 0);
        let mut v = Verifier::new(k);
        let d = sealed(&mut s, NOW);
        assert_eq!(d.len(), plain(5, b"hello").len() + TRAILER_LEN);
        let n = v.verify(&d, NOW).unwrap();
        let dg = decode(&Bytes::copy_from_slice(&d[..n])).unwrap();
        assert_eq!(dg.header.flags & FLAG_AUTH, FLAG_AUTH);
        assert_eq!(dg.header.sender, NodeId(5));
        assert_eq!(dg.frames.len(), 1);
    }

    #[test]
    fn encryption_hides_the_frames_and_opens_in_place() {
        let k = keys(&[1]).encrypted(true);
        let mut s = Sealer::new(k.clone(), 2, 77);
        let mut v = Verifier::new(k.clone());
        let secret = b"attack at dawn, the payload bytes";
        let clear = plain(5, secret);
        let mut d = clear.clone();
        s.seal(&mut d, NOW);
        // Same length as the MAC'd form: the MTU budget does not change.
        assert_eq!(d.len(), clear.len() + TRAILER_LEN);
        assert_eq!(
            d[FLAGS_AT] & (FLAG_AUTH | FLAG_SEALED),
            FLAG_AUTH | FLAG_SEALED
        );
        assert!(
            !d.windows(8).any(|w| secret.windows(8).any(|p| p == w)),
            "no 8 bytes of the payload appear in the sealed datagram"
        );
        // The header stays in clear (sender, incarnation), the rest does not.
        assert_eq!(d[4..16], clear[4..16]);
        let mut opened = d.clone();
        let n = v.open(&mut opened, NOW).unwrap();
        assert_eq!(&opened[HEADER_LEN..n], &clear[HEADER_LEN..]);
        let dg = decode(&Bytes::copy_from_slice(&opened[..n])).unwrap();
        assert_eq!(dg.frames.len(), 1);
        // Replays, stale, bit flips, wrong keys and MAC-only datagrams are refused.
        assert_eq!(v.open(&mut d.clone(), NOW), Err(AuthError::Replay));
        let mut v2 = Verifier::new(k.clone());
        assert_eq!(
            v2.open(&mut d.clone(), NOW + 2 * DEFAULT_WINDOW_MS),
            Err(AuthError::Stale)
        );
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x10;
            let e = Verifier::new(k.clone()).open(&mut t, NOW).unwrap_err();
            assert!(
                matches!(e, AuthError::BadMac | AuthError::Missing),
                "byte {i}"
            );
        }
        let mut other = d.clone();
        assert_eq!(
            Verifier::new(keys(&[2]).encrypted(true)).open(&mut other, NOW),
            Err(AuthError::BadMac)
        );
        let mut mac_only = Sealer::new(keys(&[1]), 0, 0);
        let mut m = clear.clone();
        mac_only.seal(&mut m, NOW);
        assert_eq!(
            Verifier::new(k.clone()).open(&mut m, NOW),
            Err(AuthError::Missing)
        );
        // And a MAC-only node refuses encrypted datagrams.
        assert!(Verifier::new(keys(&[1])).open(&mut d.clone(), NOW).is_err());
        // Rotation: sealed with the first key, opened by a node holding it second.
        let mut s2 = Sealer::new(keys(&[3, 1]).encrypted(true), 0, 0);
        let mut r = clear.clone();
        s2.seal(&mut r, NOW);
        assert!(Verifier::new(keys(&[1, 3]).encrypted(true))
            .open(&mut r, NOW)
            .is_ok());
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let k = keys(&[1]);
        let mut s = Sealer::new(k.clone(), 0, 0);
        let d = sealed(&mut s, NOW);
        for i in 0..d.len() {
            for bit in 0..8 {
                let mut t = d.clone();
                t[i] ^= 1 << bit;
                let mut v = Verifier::new(k.clone());
                let e = v.verify(&t, NOW).unwrap_err();
                if i == FLAGS_AT && bit == 0 {
                    assert_eq!(e, AuthError::Missing);
                } else {
                    assert_eq!(e, AuthError::BadMac, "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let k = keys(&[1]);
        let mut s = Sealer::new(k.clone(), 0, 0);
        let d = sealed(&mut s, NOW);
        for len in 0..d.len() {
            let mut v = Verifier::new(k.clone());
            let e = v.verify(&d[..len], NOW).unwrap_err();
            assert!(
                matches!(e, AuthError::Missing | AuthError::BadMac),
                "len {len}: {e:?}"
            );
            if len < HEADER_LEN + TRAILER_LEN {
                assert_eq!(e, AuthError::Missing);
            }
        }
    }

    #[test]
    fn unsealed_and_wrong_key_rejected() {
        let k = keys(&[1]);
        let mut v = Verifier::new(k);
        assert_eq!(
            v.verify(&plain(5, &[0u8; 64]), NOW),
            Err(AuthError::Missing)
        );
        let mut other = Sealer::new(keys(&[2]), 0, 0);
        assert_eq!(
            v.verify(&sealed(&mut other, NOW), NOW),
            Err(AuthError::BadMac)
        );
        assert_eq!(AuthError::BadMac.reason(), "bad_mac");
    }

    #[test]
    fn replay_is_rejected() {
        let k = keys(&[1]);
        let mut s = Sealer::new(k.clone(), 0, 0);
        let mut v = Verifier::new(k);
        let d = sealed(&mut s, NOW);
        assert!(v.verify(&d, NOW).is_ok());
        for _ in 0..3 {
            assert_eq!(v.verify(&d, NOW + 5), Err(AuthError::Replay));
        }
        // Later datagrams of the same stream still pass.
        assert!(v.verify(&sealed(&mut s, NOW), NOW).is_ok());
    }

    #[test]
    fn out_of_order_within_window_accepted_once() {
        let k = keys(&[1]);
        let mut s = Sealer::new(k.clone(), 3, 100);
        let mut v = Verifier::new(k);
        let ds: Vec<_> = (0..2000).map(|_| sealed(&mut s, NOW)).collect();
        assert!(v.verify(&ds[1500], NOW).is_ok());
        // Within the last 1024: accepted once, in any order.
        for d in ds[600..1500].iter().rev() {
            assert!(v.verify(d, NOW).is_ok());
            assert_eq!(v.verify(d, NOW), Err(AuthError::Replay));
        }
        // Too old to tell: rejected as replay.
        assert_eq!(v.verify(&ds[0], NOW), Err(AuthError::Replay));
        assert!(v.verify(&ds[1999], NOW).is_ok());
        assert_eq!(v.verify(&ds[1500], NOW), Err(AuthError::Replay));
        assert!(v.verify(&ds[1501], NOW).is_ok());
    }

    #[test]
    fn streams_of_one_sender_are_independent() {
        let k = keys(&[1]);
        let mut a = Sealer::new(k.clone(), 0, 0);
        let mut b = Sealer::new(k.clone(), 1, 0);
        let mut v = Verifier::new(k);
        let (da, db) = (sealed(&mut a, NOW), sealed(&mut b, NOW));
        // Same low seq, different streams: both accepted.
        assert!(v.verify(&da, NOW).is_ok());
        assert!(v.verify(&db, NOW).is_ok());
        assert_eq!(v.tracked_streams(), 2);
    }

    #[test]
    fn clock_window_both_directions() {
        let k = keys(&[1]);
        let mut s = Sealer::new(k.clone(), 0, 0);
        let mut v = Verifier::new(k);
        let old = sealed(&mut s, NOW - DEFAULT_WINDOW_MS - 1);
        assert_eq!(v.verify(&old, NOW), Err(AuthError::Stale));
        let future = sealed(&mut s, NOW + DEFAULT_WINDOW_MS + 1);
        assert_eq!(v.verify(&future, NOW), Err(AuthError::Stale));
        let edge = sealed(&mut s, NOW - DEFAULT_WINDOW_MS);
        assert!(v.verify(&edge, NOW).is_ok());
    }

    #[test]
    fn key_rotation() {
        let (old, new) = (keys(&[1]), keys(&[2]));
        let both = keys(&[2, 1]);
        let mut v = Verifier::new(both.clone());
        let mut s_old = Sealer::new(old.clone(), 0, 0);
        let mut s_new = Sealer::new(new, 1, 0);
        assert!(v.verify(&sealed(&mut s_old, NOW), NOW).is_ok());
        assert!(v.verify(&sealed(&mut s_new, NOW), NOW).is_ok());
        // A rotated sealer signs with its first key: old-only nodes reject it.
        let mut s_both = Sealer::new(both, 2, 0);
        let mut v_old = Verifier::new(old);
        assert_eq!(
            v_old.verify(&sealed(&mut s_both, NOW), NOW),
            Err(AuthError::BadMac)
        );
        // And new-only nodes accept it.
        let mut v_new = Verifier::new(keys(&[2]));
        assert!(v_new.verify(&sealed(&mut s_both, NOW), NOW).is_ok());
    }

    #[test]
    fn replay_streams_are_bounded() {
        let k = keys(&[1]);
        let mut v = Verifier::with_limits(k.clone(), DEFAULT_WINDOW_MS, 16);
        for sender in 0..100u64 {
            let mut s = Sealer::new(k.clone(), 0, 0);
            let mut d = plain(sender, b"x");
            s.seal(&mut d, NOW);
            assert!(v.verify(&d, NOW).is_ok());
            assert!(v.tracked_streams() <= 16);
        }
        assert_eq!(v.tracked_streams(), 16);
    }

    #[test]
    fn key_file_parsing() {
        let k = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let text = format!("# cluster keys\n\n{k}  # current\n{}\n", k.to_uppercase());
        assert_eq!(ClusterKeys::parse(&text).unwrap().len(), 2);
        assert!(matches!(
            ClusterKeys::parse("# nothing\n"),
            Err(KeyFileError::Empty)
        ));
        let e = ClusterKeys::parse(&format!("{k}\n\nabc\n")).unwrap_err();
        assert!(matches!(e, KeyFileError::BadLine { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("line 3"));
        let bad_hex = format!("{}zz", &k[..62]);
        assert!(matches!(
            ClusterKeys::parse(&bad_hex),
            Err(KeyFileError::BadLine { line: 1, .. })
        ));
        let nine = format!("{k}\n").repeat(9);
        assert!(matches!(
            ClusterKeys::parse(&nine),
            Err(KeyFileError::TooMany { count: 9 })
        ));
        assert!(format!("{:?}", ClusterKeys::parse(k).unwrap()).contains("key_ids"));
        assert!(!format!("{:?}", ClusterKeys::parse(k).unwrap()).contains("0011"));
    }
}
