//! `plumcore node`: loads the config (file, then flags), starts the node and runs it
//! until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

use plumcore::node::{self, config::ConfigFlags};

use super::log::init_logging;

/// `plumcore node`'s command line: the config file, and a flag per config key that
/// has one (the library's [`ConfigFlags`], generated from the key table).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub flags: ConfigFlags,
}

/// Runs the node: a bad config exits 2 with one line naming the key, a node that
/// could not start or failed exits with its error's code, a clean stop exits 0 after
/// the shutdown report.
pub fn run(args: NodeArgs) -> Result<ExitCode> {
    let cfg = match node::config::load(args.config.as_deref(), &args.flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plumcore: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&cfg.log_level, cfg.log_format);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    match node::run(cfg, stop) {
        Ok(report) => {
            tracing::info!(
                status = report.status,
                initial_tasks = report.initial_tasks,
                completed_tasks = report.completed_tasks,
                remaining_tasks = report.remaining_tasks,
                duration_seconds = report.duration_seconds,
                "shutdown complete"
            );
            eprintln!("plumcore: shutdown {}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("plumcore: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::NodeArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    #[test]
    fn config_file_and_key_flags_parse_together() {
        let cli =
            Cli::try_parse_from(["x", "--config", "/c.toml", "--shards", "2", "--flood"]).unwrap();
        assert_eq!(
            cli.node.config.as_deref(),
            Some(std::path::Path::new("/c.toml"))
        );
        assert_eq!(cli.node.flags.shards, Some(2));
        assert!(cli.node.flags.flood);
        assert!(Cli::try_parse_from(["x", "--no-such-flag"]).is_err());
    }
}
