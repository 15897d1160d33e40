//! The `plumcore` command line: parses it and hands each subcommand to its module in
//! `cli/` (`plumcore cluster` was removed: `plumcore bench cluster --check` does its job).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cli::{members, node::NodeArgs, pubsub, sim::SimArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs before `main` (and before most of the allocator's first pages are touched):
/// see `plumcore::node::disable_thp` for why.
#[used]
#[link_section = ".init_array"]
static DISABLE_THP: extern "C" fn() = {
    extern "C" fn f() {
        plumcore::node::disable_thp();
    }
    f
};

#[derive(Parser)]
#[command(
    name = "plumcore",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PLUMCORE_GIT_COMMIT"), ")"),
    about = "Thread-per-core Plumtree broadcast node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: glommio shards with their own UDP sockets, a control core and the
    /// admin plane.
    Node(Box<NodeArgs>),
    /// Removed: `plumcore bench cluster --check` does its job. Still parsed, with any
    /// arguments, so that an old script is told what to run instead.
    #[command(hide = true, disable_help_flag = true)]
    Cluster {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Show a running node's HyParView views (active and passive) from its admin plane.
    Members(members::MembersArgs),
    /// Publish to a node's client port: each stdin line, or --count generated messages.
    Pub(pubsub::PubArgs),
    /// Subscribe on a node's client port and print each message (ndjson or raw).
    Sub(pubsub::SubArgs),
    /// Run the deterministic simulator: many protocol nodes over a virtual network.
    Sim(SimArgs),
    /// The bundled load generator: runs the `plumcore-bench` binary next to this one
    /// with the given arguments (`plumcore bench cluster`, `blast`, `scale`, `compare`).
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for plumcore-bench (`plumcore bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Validate a core map file against this machine.
    CheckCoreMap {
        /// The core map (TOML: `control = 0`, `shards = [1, 2, 3]`).
        file: PathBuf,
    },
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(a) => cli::node::run(*a),
        Command::Cluster { .. } => {
            eprintln!(
                "plumcore: `plumcore cluster` was removed; run `plumcore bench cluster --check` \
                 (or `plumcore-bench cluster --check`)"
            );
            Ok(ExitCode::from(2))
        }
        Command::Members(a) => Ok(members::exit_code(members::run(&a))),
        Command::Pub(a) => Ok(pubsub::exit_code(pubsub::run_pub(&a))),
        Command::Sub(a) => Ok(pubsub::exit_code(pubsub::run_sub(&a))),
        Command::Sim(a) => cli::sim::run(a),
        Command::Bench { args } => cli::bench::run(args),
        Command::CheckCoreMap { file } => Ok(cli::check_core_map::run(&file)),
    }
}
