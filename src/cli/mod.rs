//! Command-line interface: one subcommand per mode, sharing RUNTIME FLAGS.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Backend, Config};
use crate::shard::spawn::Server;

/// surge: a sharded, per-core WebSocket server.
#[derive(Debug, Parser)]
#[command(name = "surge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every message on every WebSocket path (the Autobahn and benchmark target).
    Echo(RuntimeFlags),
    /// The full server on the embedded default config (ws://HOST:PORT/echo).
    Serve(RuntimeFlags),
    /// Generate load against a WebSocket server; the last line is `RESULT ...`.
    Load(crate::load::LoadArgs),
}

/// Flags every server mode takes; each is also a config key of the same name.
#[derive(Debug, Args)]
struct RuntimeFlags {
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: Vec<SocketAddr>,
    /// Event loops, one per core by default.
    #[arg(long)]
    shards: Option<usize>,
    /// Event-loop driver.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Largest message accepted in bytes; larger ones are closed with 1009.
    #[arg(long, default_value_t = 16 << 20)]
    max_message: usize,
    /// Milliseconds from accept to a completed upgrade.
    #[arg(long, default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Milliseconds of peer silence before closing with 1001 (0: never).
    #[arg(long, default_value_t = 120_000)]
    idle_timeout_ms: u64,
    /// Milliseconds to wait for the peer's close after ours.
    #[arg(long, default_value_t = 5_000)]
    close_timeout_ms: u64,
    /// A subprotocol this server speaks (repeatable).
    #[arg(long)]
    subprotocol: Vec<String>,
    /// io_uring: sends of at least this many bytes use SEND_ZC (0: never;
    /// on loopback it only costs CPU).
    #[arg(long, default_value_t = 0)]
    zerocopy_threshold: usize,
}

impl RuntimeFlags {
    fn into_config(self) -> Result<Config, String> {
        if self.shards == Some(0) {
            return Err("--shards must be at least 1".into());
        }
        if self.max_message == 0 {
            return Err("--max-message must be at least 1".into());
        }
        let defaults = Config::default();
        Ok(Config {
            listen: self.listen,
            shards: self.shards.unwrap_or(defaults.shards),
            backend: self.backend,
            max_message: self.max_message,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            close_timeout: Duration::from_millis(self.close_timeout_ms),
            subprotocols: self.subprotocol,
            zerocopy_threshold: self.zerocopy_threshold,
        })
    }
}

/// Runs the parsed command line; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let flags = match cli.command {
        Command::Echo(flags) | Command::Serve(flags) => flags,
        Command::Load(args) => return crate::load::run(&args),
    };
    let config = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("surge: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    if let Err(e) = crate::sys::raise_fd_limit() {
        tracing::warn!("could not raise the descriptor limit: {e}");
    }
    let shards = config.shards;
    tracing::info!(
        kernel = crate::protocol::mask::kernel_name(),
        "unmask kernel"
    );
    let server = Server::start(config).map_err(|e| format!("cannot start: {e}"))?;
    let backend = match server.backend {
        Backend::Uring => "uring",
        _ => "epoll",
    };
    for addr in &server.local_addrs {
        eprintln!("surge listening on {addr} backend={backend} shards={shards}");
    }
    server.join().map_err(|e| e.to_string())
}
