//! Replays the saved fuzz corpora (`fuzz/regression/<target>/`, minimised after the
//! long runs recorded in docs/testing.md) through the very checks the cargo-fuzz targets
//! run, on the stable toolchain, so CI catches a regression on any input the fuzzer
//! once found interesting without needing nightly or libFuzzer.

use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/decode_datagram.rs"]
mod decode_datagram;

#[path = "../fuzz/checks/config_parsers.rs"]
mod config_parsers;

#[path = "../fuzz/checks/shard_frames.rs"]
mod shard_frames;

#[path = "../fuzz/checks/client_proto.rs"]
mod client_proto;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regression")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("regression corpus {}: {e}", dir.display()))
        .map(|e| e.expect("readable entry").path())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= 10,
        "{target}: only {} saved inputs; the corpus was not committed",
        files.len()
    );
    for f in &files {
        let data = std::fs::read(f).expect("readable input");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{target}: input {} fails its check", f.display());
        }
    }
}

#[test]
fn decode_datagram_corpus() {
    replay("decode_datagram", decode_datagram::run);
}

#[test]
fn config_parsers_corpus() {
    replay("config_parsers", config_parsers::run);
}

#[test]
fn shard_frames_corpus() {
    replay("shard_frames", shard_frames::run);
}

#[test]
fn client_proto_corpus() {
    replay("client_proto", client_proto::run);
}
