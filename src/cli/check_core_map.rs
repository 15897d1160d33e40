//! `plumcore check-core-map FILE`: validates a core map against this machine, so that
//! an operator finds a bad map before a node refuses to start with it.

use std::path::Path;
use std::process::ExitCode;

use core_pinning::{CoreMap, Topology};

/// Prints the map's warnings and a summary (exit 0), or one line naming the file and
/// what is wrong (exit 2).
pub fn run(file: &Path) -> ExitCode {
    let topo = Topology::detect();
    let result = CoreMap::from_path(file).and_then(|m| m.validate(&topo));
    match result {
        Ok(v) => {
            for w in &v.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: control core {}, shard cores {:?} (machine: cores {})",
                v.map.control,
                v.map.shards,
                topo.online_summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plumcore: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}
