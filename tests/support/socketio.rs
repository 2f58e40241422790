//! The Socket.IO ground truth in `tests/socketio/`: where it is, and its
//! Node scenarios run against a server.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::output_within;

/// `tests/socketio/`, with the stock client installed.
pub(crate) fn ground_truth() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "socket.io-client is not installed: run `bash scripts/test.sh`, or \
         `npm ci --prefix tests/socketio --no-audit --no-fund`"
    );
    dir
}

/// A process's output and errors, for a failure message.
pub(crate) fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the Node scenarios against `url` and checks every one passed.
pub(crate) fn node_scenarios(url: &str, scenarios: &[&str], env: &[(&str, &str)], what: &str) {
    let dir = ground_truth();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("client_scenarios.mjs"))
        .arg(url)
        .args(scenarios);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output_within(&mut cmd, Duration::from_secs(150));
    let summary = format!("client_scenarios: {} passed, 0 failed", scenarios.len());
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&summary),
        "{what}: {}",
        text(&out)
    );
}
