//! `plumcore bench ...`: the load generator is its own crate (it depends on this one),
//! built as the `plumcore-bench` binary in the same directory; this replaces the
//! process with it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::Result;

/// Execs `plumcore-bench` next to this binary with `args`; returns only when it cannot
/// (2 when it is not installed, 1 when the exec failed).
pub fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("plumcore-bench");
    if !bin.is_file() {
        eprintln!(
            "plumcore: {} not found; build it with `cargo build --release -p plumcore-bench` \
             (it is installed next to the plumcore binary)",
            bin.display()
        );
        return Ok(ExitCode::from(2));
    }
    let err = std::process::Command::new(&bin).args(args).exec();
    eprintln!("plumcore: running {}: {err}", bin.display());
    Ok(ExitCode::from(1))
}
