//! The config file: a TOML file whose keys are the runtime flags
//! (`parse.rs` reads it into arguments for them), folded under the command
//! line here; `effective.rs` writes the settings in effect back as one.

mod effective;
mod parse;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::FromArgMatches;

use super::flags::ServerCommand;
use super::tls::TlsCheck;
use super::{Config, RouteKind, RouteSpec, Routes};

/// The config `surge serve` uses when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// Reads a config file as `surge serve --config FILE` would, for programs
/// that embed surge (`App::config_file`); app routes are allowed.
/// `check_tls` refuses TLS files that make no usable certificate.
pub(crate) fn load(path: &std::path::Path, check_tls: TlsCheck) -> Result<Config, String> {
    let args: Vec<OsString> = vec![
        "surge".into(),
        "serve".into(),
        "--config".into(),
        path.into(),
    ];
    let matches = ServerCommand::command()
        .try_get_matches_from(&args)
        .map_err(|e| e.to_string())?;
    let (sub, given) = matches.subcommand().ok_or("no subcommand")?;
    resolve(&args, sub, given, check_tls).map(|r| r.config)
}

/// A server command line with its config file folded in.
pub(crate) struct Resolved {
    pub(crate) config: Config,
    /// `--check-config` was given.
    pub(crate) check: bool,
    /// The settings in effect, as a config file.
    pub(crate) effective: String,
}

/// Folds the config file (or the embedded default of `serve`) under the
/// command line of server subcommand `sub` (`given`: its matches) and
/// builds the server's settings; `check_tls` refuses TLS files that make
/// no usable certificate.
pub(crate) fn resolve(
    args: &[OsString],
    sub: &str,
    given: &clap::ArgMatches,
    check_tls: TlsCheck,
) -> Result<Resolved, String> {
    let file = given.get_one::<PathBuf>("config");
    let (label, text) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
            (path.display().to_string(), text)
        }
        None if sub == "serve" => ("<embedded default config>".into(), DEFAULT_CONFIG.into()),
        None => (String::new(), String::new()),
    };
    let command = ServerCommand::command();
    let sub_command = command
        .find_subcommand(sub)
        .ok_or_else(|| format!("no subcommand {sub}"))?;
    let explicit = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    let from_file = parse::parse(&label, &text, sub_command, &explicit)?;
    // The subcommand's own arguments follow its name; the file's go first.
    let at = args
        .iter()
        .skip(1)
        .position(|a| a == sub)
        .map_or(1, |p| p + 2);
    let mut merged: Vec<OsString> = args[..at].to_vec();
    merged.extend(from_file.args.iter().cloned());
    merged.extend(args[at..].iter().cloned());
    let attribute = |e: String| from_file.attribute(&label, &e);
    let matches = ServerCommand::command()
        .try_get_matches_from(&merged)
        .map_err(|e| attribute(e.to_string().lines().next().unwrap_or_default().into()))?;
    let server = ServerCommand::from_arg_matches(&matches).map_err(|e| attribute(e.to_string()))?;
    let (config, check) = server.into_config(check_tls);
    let mut config = config.map_err(attribute)?;
    if !from_file.routes.is_empty() {
        apply_routes(&mut config.routes, from_file.routes)
            .map_err(|e| format!("{label}: routes: {e}"))?;
    }
    config.routes.topic_rules = from_file.topics;
    let (_, final_matches) = matches.subcommand().unwrap_or((sub, given));
    let effective = effective::render(sub_command, final_matches, &config.routes);
    Ok(Resolved {
        config,
        check,
        effective,
    })
}

/// Makes the `[[routes]]` table the only paths served.
fn apply_routes(routes: &mut Routes, table: Vec<RouteSpec>) -> Result<(), String> {
    if table.len() >= usize::from(super::NO_SPEC) {
        return Err(format!(
            "at most {} routes",
            usize::from(super::NO_SPEC) - 1
        ));
    }
    let has = |kind| table.iter().any(|r: &RouteSpec| r.kind == kind);
    if has(RouteKind::Ticker) && routes.ticker_symbols.is_empty() {
        return Err("a ticker route needs `surge serve` or `surge ticker`".into());
    }
    if !has(RouteKind::Ticker) {
        routes.ticker_symbols.clear();
    }
    routes.hub = has(RouteKind::Hub);
    routes.echo_everywhere = false;
    routes.table = table;
    Ok(())
}
