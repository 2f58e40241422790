//! Socket.IO v5 on the real server, against the ground truth of
//! `tests/socketio/` (the reference server's behaviour, REFERENCE.md): the
//! stock `socket.io-client` in Node and in headless Chromium, the stock
//! `python-socketio` client and every raw wire answer, against a
//! `socketio-reference` route on two shards and both drivers; connection
//! state recovery; the connect timeout; and the `socketio` route (the hub
//! as events) on two shards and across two nodes bridged by redis-server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::hub::BACKENDS;
use support::redis::{free_port, Redis};
use support::socketio::{ground_truth, node_scenarios, text};
use support::{metric, output_within, venv, wait_metric, Server};

/// A config file with one Socket.IO route of `kind` at `/socket.io/`, the
/// protocol test suite's 300 ms ping interval (with a 2 s ping timeout, so
/// a loaded machine loses no session) and `extra` keys.
fn config(name: &str, kind: &str, extra: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("surge-sio-{}-{name}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "{extra}\n[[routes]]\npath = \"/socket.io/\"\nkind = \"{kind}\"\n\
             ping-interval-ms = 300\nping-timeout-ms = 2000\ncors-origin = \"*\"\n"
        ),
    )
    .unwrap();
    path
}

/// The same, with keys for the route itself.
fn route_config(name: &str, kind: &str, route_keys: &str) -> PathBuf {
    let path = config(name, kind, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(route_keys);
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &Path, args: &[&str]) -> Server {
    let mut all = vec!["serve", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// The raw wire checks, with `args` after the URL.
fn raw_packets(url: &str, args: &[&str], passed: usize, what: &str) {
    let dir = ground_truth();
    let out = output_within(
        Command::new("python3")
            .arg(dir.join("raw_packets.py"))
            .arg(url)
            .args(args),
        Duration::from_secs(150),
    );
    let summary = format!("raw_packets: {passed} passed, 0 failed");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&summary),
        "{what}: {}",
        text(&out)
    );
}

/// Nothing is left held once every client has gone.
fn all_released(server: &Server) {
    wait_metric(server.addr, "surge_engineio_sessions", |n| n == 0);
    wait_metric(server.addr, "surge_socketio_sockets", |n| n == 0);
    assert_eq!(metric(server.addr, "surge_engineio_polls_held"), 0);
    assert_eq!(metric(server.addr, "surge_message_bytes_held"), 0);
    assert_eq!(
        metric(server.addr, "surge_engineio_handoffs_refused_total"),
        0
    );
}

/// Every raw answer (strict: where Node breaks a spec MUST, the spec), the
/// stock Node client's scenarios and the Python client's, on two shards
/// (a client's requests and its rooms' members land on both) and on each
/// driver.
#[test]
fn the_stock_clients_and_every_spec_answer_on_two_shards_and_both_drivers() {
    let file = config("reference", "socketio-reference", "");
    let python = venv().join("bin/python");
    let dir = ground_truth();
    for backend in BACKENDS {
        let server = serve(&file, &["--shards", "2", "--backend", backend]);
        let url = format!("http://{}", server.addr);
        raw_packets(&url, &["--strict"], 76, backend);
        node_scenarios(
            &url,
            &[
                "connect_auth",
                "polling",
                "websocket",
                "upgrade",
                "multiplex",
                "refused",
                "heartbeat",
                "rooms",
            ],
            &[],
            backend,
        );
        let scenarios = [
            "connect_auth",
            "polling",
            "websocket",
            "upgrade",
            "multiplex",
            "refused",
            "heartbeat",
            "rooms",
        ];
        let out = output_within(
            Command::new(&python)
                .arg(dir.join("python_scenarios.py"))
                .arg(&url)
                .args(scenarios),
            Duration::from_secs(120),
        );
        let summary = format!("python_scenarios: {} passed, 0 failed", scenarios.len());
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&summary),
            "{backend}: {}",
            text(&out)
        );
        // Requests met sessions of the other shard; the malformed packets
        // were counted by rule.
        assert!(metric(server.addr, "surge_engineio_handoffs_total") > 0);
        assert!(metric(server.addr, "surge_socketio_violations_total") >= 60);
        assert!(metric(server.addr, "surge_socketio_connects_refused_total") > 0);
        all_released(&server);
    }
}

/// Connection state recovery: a client whose session drops gets its id,
/// rooms and the missed events back, once each and in order, whichever
/// shard it reconnects to.
#[test]
fn recovery_delivers_missed_events_once_from_any_shard() {
    let file = route_config(
        "recovery",
        "socketio-reference",
        "max-disconnection-ms = 5000\n",
    );
    for backend in BACKENDS {
        let server = serve(&file, &["--shards", "2", "--backend", backend]);
        let url = format!("http://{}", server.addr);
        // Run twice: a reconnect lands on the other shard about half the time.
        for _ in 0..2 {
            node_scenarios(&url, &["recovery", "upgrade", "heartbeat"], &[], backend);
        }
        let recovered = metric(server.addr, "surge_socketio_recoveries_total");
        assert!(recovered >= 4, "{backend}: {recovered} recoveries");
        all_released(&server);
    }
}

/// A session that connects no namespace is closed at the route's
/// connect timeout.
#[test]
fn a_session_without_a_namespace_is_closed_at_the_connect_timeout() {
    let file = route_config(
        "timeout",
        "socketio-reference",
        "connect-timeout-ms = 1000\n",
    );
    let server = serve(&file, &["--shards", "2"]);
    let url = format!("http://{}", server.addr);
    raw_packets(
        &url,
        &["--connect-timeout", "1000", "--only", "no_connect_timeout"],
        2,
        "connect timeout",
    );
    // The two sessions (one per transport) timed out, nothing else.
    assert_eq!(metric(server.addr, "surge_socketio_violations_total"), 2);
}

/// The stock browser bundle in headless Chromium, over WebSocket and over
/// polling from a page of another origin.
#[test]
fn the_browser_bundle_in_headless_chromium() {
    let file = config("browser", "socketio-reference", "");
    let server = serve(&file, &["--shards", "2"]);
    let url = format!("http://{}", server.addr);
    let out = output_within(
        Command::new("python3")
            .arg(ground_truth().join("browser_scenarios.py"))
            .arg(&url),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .contains("browser_scenarios: 4 passed, 0 failed"),
        "{}",
        text(&out)
    );
}

/// The `socketio` route: subscribe, unsubscribe and publish as events,
/// every mistake answered, and a ticker symbol as a room of the feed.
#[test]
fn the_socketio_route_maps_the_hub_and_the_feed() {
    let file = config(
        "hub",
        "socketio",
        "[ticker]\nsymbols = 4\nrate = 20.0\n\n[[routes]]\npath = \"/ticker\"\nkind = \"ticker\"\n",
    );
    for backend in BACKENDS {
        let server = serve(&file, &["--shards", "2", "--backend", backend]);
        let url = format!("http://{}", server.addr);
        node_scenarios(
            &url,
            &["hub_rooms", "hub_errors", "hub_ticker"],
            &[],
            backend,
        );
        all_released(&server);
    }
}

/// `--publish-rate` holds a `socketio` session's publishes as it holds a
/// hub WebSocket's: the burst passes, the next is refused in its ack.
#[test]
fn a_socketio_session_publishes_within_its_rate() {
    let file = config("rate", "socketio", "");
    let server = serve(&file, &["--publish-rate", "1", "--publish-burst", "2"]);
    let url = format!("http://{}", server.addr);
    node_scenarios(&url, &["hub_publish_rate"], &[], "publish rate");
    all_released(&server);
}

/// A `socketio` route with `deflate` set: members that offer
/// permessage-deflate get it without server context takeover and every
/// broadcast compressed once per shard, the others get the plain frames,
/// and the stock Node client (which offers it) works unchanged.
#[test]
fn a_deflate_route_compresses_each_broadcast_once() {
    let file = route_config("deflate", "socketio", "deflate = \"no-context-takeover\"\n");
    let python = venv().join("bin/python");
    let dir = ground_truth();
    for backend in BACKENDS {
        let server = serve(&file, &["--shards", "1", "--backend", backend]);
        let url = format!("http://{}", server.addr);
        let out = output_within(
            Command::new(&python)
                .arg(dir.join("deflate_members.py"))
                .arg(&url),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{backend}: {}", text(&out));
        assert_eq!(
            metric(server.addr, "surge_socketio_compressed_total"),
            1,
            "{backend}: one broadcast, two deflate members, one shard"
        );
        node_scenarios(&url, &["hub_rooms", "hub_errors"], &[], backend);
        all_released(&server);
    }
}

/// Two `socketio` nodes bridged by a real redis-server: a publish on one
/// reaches a room's members on the other, on both transports, once.
#[test]
fn rooms_span_two_nodes_through_redis() {
    let port = free_port();
    let _redis = Redis::start(port);
    let redis_url = format!("redis://127.0.0.1:{port}");
    let file = config("bridge", "socketio", "");
    let a = serve(&file, &["--shards", "2", "--redis-url", &redis_url]);
    let b = serve(&file, &["--shards", "2", "--redis-url", &redis_url]);
    for node in [a.addr, b.addr] {
        wait_metric(node, "surge_bridge_connected", |v| v == 1);
    }
    let second = format!("http://{}", b.addr);
    node_scenarios(
        &format!("http://{}", a.addr),
        &["hub_two_nodes"],
        &[("SECOND_URL", &second)],
        "two nodes",
    );
    assert!(metric(b.addr, "surge_bridge_received_total") > 0);
}
