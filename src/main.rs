//! The `surge` binary: parses the command line and hands it to `surge::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SURGE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    surge::cli::run(std::env::args_os().collect())
}
