//! Check of the `config_parsers` fuzz target, shared with the stable corpus
//! regression test: the node config parser and the core-map parser answer with a
//! value or a typed, one-line error, never a panic.

use std::path::Path;

/// The whole target: run it on one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match plumcore::node::config::parse_toml(Path::new("fuzz.toml"), text) {
        Ok(cfg) => {
            let _ = cfg.validate();
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }
    match core_pinning::CoreMap::parse(text) {
        Ok(map) => {
            let _ = map.validate(&core_pinning::Topology::fake(16));
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }
}
