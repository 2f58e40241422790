//! Command-line interface: one subcommand per mode. The server modes'
//! RUNTIME FLAGS, each also a key of the `--config` file, and the file
//! itself are the config's (`crate::config::flags`, `crate::config::file`);
//! here they become a running server or a printed `--check-config`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::AppRoutes;
use crate::config::file::resolve;
use crate::config::flags::ServerCommand;
use crate::config::{Backend, Config, RouteKind};
use crate::server::Server;

pub use crate::config::file::DEFAULT_CONFIG;

/// Reads a config file as `surge serve --config FILE` would, for programs
/// that embed surge (`App::config_file`); app routes are allowed.
pub fn load_config(path: &std::path::Path) -> Result<Config, String> {
    crate::config::file::load(path, crate::tls::check)
}

/// surge: a sharded, per-core WebSocket server.
#[derive(Debug, Parser)]
#[command(name = "surge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Boxed: a server's flags are hundreds of bytes, `load`'s a few.
    #[command(flatten)]
    Server(Box<ServerCommand>),
    /// Generate load against a WebSocket server; the last line is `RESULT ...`.
    Load(crate::load::LoadArgs),
}

/// Runs `surge` with these arguments (the first is the program name); the
/// process exit code.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let Some((sub, sub_matches)) = matches.subcommand() else {
        return ExitCode::from(2);
    };
    if sub == "load" {
        return match Cli::from_arg_matches(&matches) {
            Ok(Cli {
                command: Command::Load(args),
            }) => crate::load::run(&args),
            Ok(_) => ExitCode::from(2),
            Err(e) => e.exit(),
        };
    }
    let resolved = match resolve(&args, sub, sub_matches, crate::tls::check) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("surge: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(app) = resolved
        .config
        .routes
        .table
        .iter()
        .find(|r| r.kind == RouteKind::App || r.handler.is_some())
    {
        eprintln!(
            "surge: route {:?} names handler {:?}: only a program embedding surge registers \
             handlers (App::handler, App::socketio_handler, see examples/); the surge binary \
             has none",
            app.path,
            app.handler.as_deref().unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    if resolved.check {
        print!("{}", resolved.effective);
        return ExitCode::SUCCESS;
    }
    match serve(resolved.config) {
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
    let server =
        Server::start(config, AppRoutes::default()).map_err(|e| format!("cannot start: {e}"))?;
    let backend = match server.backend {
        Backend::Uring => "uring",
        _ => "epoll",
    };
    // Before the readiness lines: whoever waits for those finds it.
    if let Some(addr) = server.api_addr {
        eprintln!("surge api listening on {addr}");
    }
    for addr in &server.local_addrs {
        eprintln!("surge listening on {addr} backend={backend} shards={shards}");
    }
    server.join().map_err(|e| e.to_string())
}
