//! Logging set-up for the subcommands that log (`node`, `cluster`).

use std::io::IsTerminal;

use plumcore::node::config::LogFormat;

/// Logs to stderr: colours only when stderr is a terminal (never in a file or a
/// pipe), or one JSON object a line. `RUST_LOG`, when set and valid, wins over `level`
/// (which the config has already checked).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
