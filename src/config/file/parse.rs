//! `--config FILE`: a TOML file whose keys are the command-line flags of the
//! same name (`max-message = 65536`, or `max_message`), optionally grouped
//! in sections (`[admission]`, `[tls] cert`, `[api] listen`, `[bridge.redis] url`), plus
//! `[[routes]]` tables that map paths to what serves them and `[[topics]]`
//! tables that set what hub topics keep by the start of their names.
//!
//! Keys become arguments for clap, so a key accepts exactly what its flag
//! accepts and both share one validator; a flag given on the command line
//! wins over the file. Every error names the file, the line and the key.

use std::ffi::OsString;
use std::time::Duration;

use clap::ValueEnum;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::config::pubsub::Backpressure;
use crate::config::{RouteKind, RouteSpec, TopicRule};
use crate::protocol::deflate::DeflatePolicy;

/// Sections that only group keys: a key `k` in `[s]` is the flag `s-k` when
/// one exists (`[tls] cert` is `--tls-cert`), otherwise `k`.
const SECTIONS: &[&str] = &[
    "admission",
    "pubsub",
    "deflate",
    "tls",
    "ticker",
    "bridge",
    "api",
];

/// Flags that make no sense inside a config file.
const NOT_KEYS: &[&str] = &["config", "check-config", "help", "version"];

/// What a config file adds to the command line.
#[derive(Debug, Default)]
pub(crate) struct FileArgs {
    /// Arguments for the subcommand, before those of the command line.
    pub(crate) args: Vec<OsString>,
    /// The flag each key became, where it was, for later errors.
    pub(crate) origins: Vec<Origin>,
    /// `[[routes]]`, in file order; empty when the file has none.
    pub(crate) routes: Vec<RouteSpec>,
    /// `[[topics]]`, in file order.
    pub(crate) topics: Vec<TopicRule>,
}

/// Where a flag's value came from in the file.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The long flag, without dashes.
    pub(crate) flag: String,
    /// The key as written, with its section.
    pub(crate) key: String,
    /// 1-based line of the key.
    pub(crate) line: usize,
}

impl FileArgs {
    /// Rewrites an error about `--flag` that came from the file so that it
    /// names the file, line and key instead.
    pub(crate) fn attribute(&self, file: &str, error: &str) -> String {
        for origin in &self.origins {
            let flag = format!("--{}", origin.flag);
            let mentioned = error.match_indices(&flag).any(|(i, _)| {
                let rest = &error[i + flag.len()..];
                !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            if mentioned {
                return format!("{file}:{}: key `{}`: {error}", origin.line, origin.key);
            }
        }
        error.to_owned()
    }
}

/// Reads `text` (named `file` in errors) against the flags of `command`;
/// keys whose flag `explicit` reports as given on the command line are
/// skipped, since the command line wins.
pub(crate) fn parse(
    file: &str,
    text: &str,
    command: &clap::Command,
    explicit: &dyn Fn(&str) -> bool,
) -> Result<FileArgs, String> {
    let root = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        format!("{file}:{line}: {}", e.message().trim_end())
    })?;
    let mut reader = Reader {
        file,
        text,
        command,
        explicit,
        out: FileArgs::default(),
    };
    reader.table(root.get_ref(), &[])?;
    Ok(reader.out)
}

struct Reader<'a> {
    file: &'a str,
    text: &'a str,
    command: &'a clap::Command,
    explicit: &'a dyn Fn(&str) -> bool,
    out: FileArgs,
}

impl Reader<'_> {
    fn error(&self, at: usize, key: &str, message: impl std::fmt::Display) -> String {
        format!(
            "{}:{}: key `{key}`: {message}",
            self.file,
            line_of(self.text, at)
        )
    }

    fn table(&mut self, table: &DeTable<'_>, section: &[&str]) -> Result<(), String> {
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            let at = key.span().start;
            let mut path = section.to_vec();
            path.push(name);
            let shown = path.join(".");
            match value.get_ref() {
                DeValue::Array(items) if section.is_empty() && name == "routes" => {
                    for item in items.iter() {
                        let DeValue::Table(route) = item.get_ref() else {
                            return Err(self.error(at, &shown, "must be [[routes]] tables"));
                        };
                        let spec = self.route(route, item.span().start)?;
                        if self.out.routes.iter().any(|r| r.path == spec.path) {
                            return Err(self.error(
                                item.span().start,
                                "routes.path",
                                format_args!("{:?} is routed twice", spec.path),
                            ));
                        }
                        self.out.routes.push(spec);
                    }
                }
                DeValue::Array(items) if section.is_empty() && name == "topics" => {
                    for item in items.iter() {
                        let DeValue::Table(table) = item.get_ref() else {
                            return Err(self.error(at, &shown, "must be [[topics]] tables"));
                        };
                        let rule = self.topic(table, item.span().start)?;
                        if self.out.topics.iter().any(|r| r.prefix == rule.prefix) {
                            return Err(self.error(
                                item.span().start,
                                "topics.prefix",
                                format_args!("{:?} has a rule already", rule.prefix),
                            ));
                        }
                        self.out.topics.push(rule);
                    }
                }
                DeValue::Table(inner) => {
                    let known = match section {
                        [] => SECTIONS.contains(&name),
                        ["bridge"] => name == "redis",
                        _ => false,
                    };
                    if !known {
                        return Err(self.error(
                            at,
                            &shown,
                            format_args!(
                                "unknown section (sections: {}, bridge.redis, [[routes]], \
                                 [[topics]])",
                                SECTIONS.join(", ")
                            ),
                        ));
                    }
                    self.table(inner, &path)?;
                }
                _ => self.key(section, name, value, at, &shown)?,
            }
        }
        Ok(())
    }

    /// One key: found as a flag, turned into arguments, checked alone so a
    /// bad value is reported against its own line.
    fn key(
        &mut self,
        section: &[&str],
        name: &str,
        value: &Spanned<DeValue<'_>>,
        at: usize,
        shown: &str,
    ) -> Result<(), String> {
        let key = name.replace('_', "-");
        let arg = section
            .last()
            .map(|s| format!("{s}-{key}"))
            .and_then(|long| self.find(&long))
            .or_else(|| self.find(&key))
            .filter(|a| !NOT_KEYS.contains(&a.get_long().unwrap_or_default()))
            .ok_or_else(|| self.error(at, shown, "unknown key (every flag of --help is a key)"))?;
        let long = arg.get_long().unwrap_or_default().to_owned();
        if (self.explicit)(arg.get_id().as_str()) {
            return Ok(());
        }
        let flag = format!("--{long}");
        let mut args: Vec<OsString> = Vec::new();
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        match value.get_ref() {
            DeValue::Boolean(b) if switch => {
                if *b {
                    args.push(flag.clone().into());
                }
            }
            _ if switch => return Err(self.error(at, shown, "must be true or false")),
            DeValue::Array(items) if many => {
                for item in items.iter() {
                    args.push(flag.clone().into());
                    args.push(self.scalar(item, shown)?.into());
                }
            }
            DeValue::Array(_) => {
                return Err(self.error(at, shown, "takes one value, not a list"));
            }
            _ => {
                args.push(flag.clone().into());
                args.push(self.scalar(value, shown)?.into());
            }
        }
        let mut alone: Vec<OsString> = vec![self.command.get_name().into()];
        alone.extend(args.iter().cloned());
        if let Err(e) = self.command.clone().try_get_matches_from(alone) {
            return Err(self.error(at, shown, first_line(&e.to_string())));
        }
        self.out.origins.push(Origin {
            flag: long,
            key: shown.to_owned(),
            line: line_of(self.text, at),
        });
        self.out.args.extend(args);
        Ok(())
    }

    fn find(&self, long: &str) -> Option<&clap::Arg> {
        self.command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
    }

    fn scalar(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<String, String> {
        let at = value.span().start;
        Ok(match value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .map_err(|e| self.error(at, key, e))?
                .to_string(),
            DeValue::Float(f) => f.as_str().to_owned(),
            DeValue::Boolean(b) => b.to_string(),
            DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => {
                return Err(self.error(at, key, "must be a string, number or boolean"))
            }
        })
    }

    /// One `[[routes]]` table.
    fn route(&self, table: &DeTable<'_>, at: usize) -> Result<RouteSpec, String> {
        let mut path = None;
        let mut kind = None;
        let mut spec = RouteSpec::new(String::new(), RouteKind::Echo);
        // Where a history key was written, to point at it if the kind
        // turns out to keep none.
        let mut history_key = None;
        let mut recovery_key = None;
        let mut engineio_key = None;
        let mut socketio_key = None;
        for (key, value) in table {
            let name = key.get_ref().replace('_', "-");
            let shown = format!("routes.{name}");
            let at = key.span().start;
            let text = self.scalar(value, &shown)?;
            let bad = |e: &dyn std::fmt::Display| self.error(at, &shown, e);
            match name.as_str() {
                "path" => {
                    if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
                        return Err(bad(&format_args!(
                            "{text:?} is not a path (it starts with / and has no query)"
                        )));
                    }
                    path = Some(text);
                }
                "kind" => {
                    kind = Some(RouteKind::from_str(&text, true).map_err(|_| {
                        bad(&format_args!(
                            "{text:?} is not one of echo, hub, ticker, app, engineio-echo, socketio-reference, socketio"
                        ))
                    })?)
                }
                "handler" => spec.handler = Some(text),
                "max-message" => {
                    let n = text.parse::<usize>().map_err(|e| bad(&e))?;
                    if n == 0 {
                        return Err(bad(&"must be at least 1"));
                    }
                    spec.max_message = Some(n);
                }
                "idle-timeout-ms" => {
                    let ms = text.parse::<u64>().map_err(|e| bad(&e))?;
                    spec.idle_timeout = Some(Duration::from_millis(ms));
                }
                "max-backpressure" => {
                    spec.max_backpressure = Some(text.parse::<usize>().map_err(|e| bad(&e))?);
                }
                "backpressure" => {
                    spec.backpressure =
                        Some(Backpressure::from_str(&text, true).map_err(|_| {
                            bad(&format_args!("{text:?} is not one of disconnect, conflate"))
                        })?);
                }
                "history-size" => {
                    spec.history_size = Some(text.parse::<usize>().map_err(|e| bad(&e))?);
                    history_key.get_or_insert((at, shown.clone()));
                }
                "history-ttl-ms" => {
                    let ms = text.parse::<u64>().map_err(|e| bad(&e))?;
                    spec.history_ttl = Some(Duration::from_millis(ms));
                    history_key.get_or_insert((at, shown.clone()));
                }
                "latest" => {
                    spec.latest =
                        Some(boolean(value).ok_or_else(|| bad(&"must be true or false"))?);
                    history_key.get_or_insert((at, shown.clone()));
                }
                "max-recovery" => {
                    spec.max_recovery = Some(text.parse::<usize>().map_err(|e| bad(&e))?);
                    recovery_key.get_or_insert((at, shown.clone()));
                }
                "ping-interval-ms" | "ping-timeout-ms" | "max-payload" => {
                    let n = text.parse::<u32>().map_err(|e| bad(&e))?;
                    if n == 0 {
                        return Err(bad(&"must be at least 1"));
                    }
                    *match name.as_str() {
                        "ping-interval-ms" => &mut spec.ping_interval_ms,
                        "ping-timeout-ms" => &mut spec.ping_timeout_ms,
                        _ => &mut spec.max_payload,
                    } = Some(n);
                    engineio_key.get_or_insert((at, shown.clone()));
                }
                "connect-timeout-ms" | "max-disconnection-ms" => {
                    let n = text.parse::<u32>().map_err(|e| bad(&e))?;
                    if n == 0 {
                        return Err(bad(&"must be at least 1"));
                    }
                    *if name.as_str() == "connect-timeout-ms" {
                        &mut spec.connect_timeout_ms
                    } else {
                        &mut spec.max_disconnection_ms
                    } = Some(n);
                    socketio_key.get_or_insert((at, shown.clone()));
                }
                "cors-origin" => {
                    let origin_like = text == "*"
                        || (text.starts_with("http://") || text.starts_with("https://"))
                            && !text.contains([' ', ',', '\r', '\n']);
                    if !origin_like {
                        return Err(bad(&format_args!(
                            "{text:?} is neither \"*\" nor one origin (scheme://host[:port])"
                        )));
                    }
                    spec.cors_origin = Some(text);
                    engineio_key.get_or_insert((at, shown.clone()));
                }
                "deflate" => {
                    spec.deflate = Some(DeflatePolicy::from_str(&text, true).map_err(|_| {
                        bad(&format_args!(
                            "{text:?} is not one of off, on, no-context-takeover"
                        ))
                    })?);
                }
                _ => {
                    return Err(bad(
                        &"unknown route key (path, kind, handler, max-message, \
                         idle-timeout-ms, backpressure, max-backpressure, deflate, \
                         history-size, history-ttl-ms, latest, max-recovery, \
                         ping-interval-ms, ping-timeout-ms, max-payload, cors-origin, \
                         connect-timeout-ms, max-disconnection-ms)",
                    ))
                }
            }
        }
        spec.path = path.ok_or_else(|| self.error(at, "routes.path", "missing"))?;
        spec.kind = kind.ok_or_else(|| self.error(at, "routes.kind", "missing"))?;
        if let (Some((key_at, shown)), false) = (history_key, spec.kind == RouteKind::Hub) {
            return Err(self.error(key_at, &shown, "only a hub route keeps history"));
        }
        if let (Some((key_at, shown)), false) = (recovery_key, spec.kind == RouteKind::Hub) {
            return Err(self.error(key_at, &shown, "only a hub route resumes subscriptions"));
        }
        if let (Some((key_at, shown)), false) = (engineio_key, spec.kind.is_engineio()) {
            return Err(self.error(key_at, &shown, "only an Engine.IO route has it"));
        }
        if let (Some((key_at, shown)), false) = (socketio_key, spec.kind.is_socketio()) {
            return Err(self.error(key_at, &shown, "only a Socket.IO route has it"));
        }
        match (spec.kind, &spec.handler) {
            (RouteKind::App, None) => {
                return Err(self.error(at, "routes.handler", "missing (an app route names one)"));
            }
            (RouteKind::App | RouteKind::SocketIo, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(self.error(
                    at,
                    "routes.handler",
                    "only an app or socketio route has one",
                ));
            }
        }
        Ok(spec)
    }

    /// One `[[topics]]` table.
    fn topic(&self, table: &DeTable<'_>, at: usize) -> Result<TopicRule, String> {
        let mut rule = TopicRule::new(String::new());
        let mut prefix = None;
        for (key, value) in table {
            let name = key.get_ref().replace('_', "-");
            let shown = format!("topics.{name}");
            let at = key.span().start;
            let text = self.scalar(value, &shown)?;
            let bad = |e: &dyn std::fmt::Display| self.error(at, &shown, e);
            match name.as_str() {
                "prefix" => {
                    if !matches!(value.get_ref(), DeValue::String(_)) {
                        return Err(bad(&"must be a string"));
                    }
                    if text.is_empty() {
                        return Err(bad(
                            &"must not be empty (history-size, history-ttl-ms and latest \
                             set every topic's rule)",
                        ));
                    }
                    prefix = Some(text);
                }
                "history-size" => {
                    rule.history_size = Some(text.parse::<usize>().map_err(|e| bad(&e))?);
                }
                "history-ttl-ms" => {
                    let ms = text.parse::<u64>().map_err(|e| bad(&e))?;
                    rule.history_ttl = Some(Duration::from_millis(ms));
                }
                "latest" => {
                    rule.latest =
                        Some(boolean(value).ok_or_else(|| bad(&"must be true or false"))?);
                }
                _ => {
                    return Err(bad(
                        &"unknown topics key (prefix, history-size, history-ttl-ms, latest)",
                    ))
                }
            }
        }
        rule.prefix = prefix.ok_or_else(|| self.error(at, "topics.prefix", "missing"))?;
        if rule == TopicRule::new(rule.prefix.clone()) {
            return Err(self.error(
                at,
                "topics",
                format_args!(
                    "the rule for {:?} sets nothing (history-size, history-ttl-ms, latest)",
                    rule.prefix
                ),
            ));
        }
        Ok(rule)
    }
}

/// A TOML boolean's value; `None` for anything else.
fn boolean(value: &Spanned<DeValue<'_>>) -> Option<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => None,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The message of a clap error, without its `error: ` prefix and usage.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}
