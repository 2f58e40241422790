//! The Python `websockets` client against `surge echo`, on both drivers.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn python_websockets_round_trips() {
    let python = venv().join("bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/echo_client.py");
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["echo", "--backend", backend]);
        let out = output_within(
            Command::new(&python).args([script, &server.url("/echo")]),
            Duration::from_secs(120),
        );
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{backend}: {report}");
        assert!(out.status.success(), "{backend}: {report}");
        assert!(report.contains("all round trips OK"), "{report}");
    }
}
