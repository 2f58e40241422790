//! `--check-config`: the settings in effect, written as a config file that
//! would reproduce them.

use std::fmt::Write;

use clap::ArgAction;

use crate::config::{RouteSpec, Routes, TopicRule};

/// Flags that are not settings.
const SKIP: &[&str] = &["config", "check-config", "help", "version"];

/// Every flag of `command` with its value in `matches` (defaults
/// included), then the routes and the topic rules.
pub(crate) fn render(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    routes: &Routes,
) -> String {
    let mut out = String::from("# effective configuration\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if SKIP.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let rendered = match arg.get_action() {
            ArgAction::SetTrue => matches.get_flag(id).to_string(),
            ArgAction::Append => {
                let items: Vec<String> = values.iter().map(|v| literal(v)).collect();
                format!("[{}]", items.join(", "))
            }
            _ => match values.first() {
                Some(v) => literal(v),
                // No value and no default: the setting is unset.
                None => continue,
            },
        };
        let _ = writeln!(out, "{long} = {rendered}");
    }
    if routes.table.is_empty() {
        out.push_str("# routes: every path echoes\n");
    }
    for route in &routes.table {
        out.push('\n');
        out.push_str(&route_table(route));
    }
    for rule in &routes.topic_rules {
        out.push('\n');
        out.push_str(&topic_table(rule));
    }
    out
}

fn topic_table(rule: &TopicRule) -> String {
    let mut out = String::from("[[topics]]\n");
    let _ = writeln!(out, "prefix = {}", literal_string(&rule.prefix));
    if let Some(n) = rule.history_size {
        let _ = writeln!(out, "history-size = {n}");
    }
    if let Some(d) = rule.history_ttl {
        let _ = writeln!(out, "history-ttl-ms = {}", d.as_millis());
    }
    if let Some(b) = rule.latest {
        let _ = writeln!(out, "latest = {b}");
    }
    out
}

fn route_table(route: &RouteSpec) -> String {
    let mut out = String::from("[[routes]]\n");
    let _ = writeln!(out, "path = {}", literal_string(&route.path));
    let _ = writeln!(out, "kind = {}", literal_string(&value_name(route.kind)));
    if let Some(name) = &route.handler {
        let _ = writeln!(out, "handler = {}", literal_string(name));
    }
    if let Some(n) = route.max_message {
        let _ = writeln!(out, "max-message = {n}");
    }
    if let Some(d) = route.idle_timeout {
        let _ = writeln!(out, "idle-timeout-ms = {}", d.as_millis());
    }
    if let Some(p) = route.backpressure {
        let _ = writeln!(out, "backpressure = {}", literal_string(&value_name(p)));
    }
    if let Some(n) = route.max_backpressure {
        let _ = writeln!(out, "max-backpressure = {n}");
    }
    if let Some(p) = route.deflate {
        let _ = writeln!(out, "deflate = {}", literal_string(&value_name(p)));
    }
    if let Some(n) = route.history_size {
        let _ = writeln!(out, "history-size = {n}");
    }
    if let Some(d) = route.history_ttl {
        let _ = writeln!(out, "history-ttl-ms = {}", d.as_millis());
    }
    if let Some(b) = route.latest {
        let _ = writeln!(out, "latest = {b}");
    }
    if let Some(n) = route.max_recovery {
        let _ = writeln!(out, "max-recovery = {n}");
    }
    if let Some(n) = route.ping_interval_ms {
        let _ = writeln!(out, "ping-interval-ms = {n}");
    }
    if let Some(n) = route.ping_timeout_ms {
        let _ = writeln!(out, "ping-timeout-ms = {n}");
    }
    if let Some(n) = route.max_payload {
        let _ = writeln!(out, "max-payload = {n}");
    }
    if let Some(origin) = &route.cors_origin {
        let _ = writeln!(out, "cors-origin = {}", literal_string(origin));
    }
    if let Some(n) = route.connect_timeout_ms {
        let _ = writeln!(out, "connect-timeout-ms = {n}");
    }
    if let Some(n) = route.max_disconnection_ms {
        let _ = writeln!(out, "max-disconnection-ms = {n}");
    }
    out
}

fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// Numbers and booleans bare, everything else as a TOML string.
fn literal(v: &str) -> String {
    let number = v.parse::<i128>().is_ok()
        || (v.parse::<f64>().is_ok_and(f64::is_finite) && v.contains('.'));
    if number || v == "true" || v == "false" {
        v.to_owned()
    } else {
        literal_string(v)
    }
}

fn literal_string(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}
