//! clients/js/surge.js in Node against the real server: the reconnect
//! rules that follow the server's hints, and the fallback to server-sent
//! events behind a proxy that refuses WebSocket. Each test runs
//! clients/js/test/drive.mjs (one client, its events as JSON lines) with the
//! npm `ws` package, both installed by scripts/test.sh.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::refusing_proxy::RefusingProxy;
use support::*;
use tungstenite::Message;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/test/drive.mjs");
const WS_PACKAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/clients/js/test/node_modules/ws"
);

/// One `node drive.mjs` process and the events it printed; killed on drop.
struct NodeClient {
    child: Child,
    _stdin: ChildStdin,
    events: Receiver<Value>,
    seen: Vec<Value>,
}

impl NodeClient {
    fn start(url: &str, topic: &str, options: &str) -> Self {
        Self::start_with(url, topic, options, &[])
    }

    /// Like `start`, with the driver's further arguments.
    fn start_with(url: &str, topic: &str, options: &str, more: &[&str]) -> Self {
        Self::start_node(&[], url, topic, options, more)
    }

    /// Like `start_with`, with flags for node itself.
    fn start_node(flags: &[&str], url: &str, topic: &str, options: &str, more: &[&str]) -> Self {
        assert!(
            std::path::Path::new(WS_PACKAGE).exists(),
            "the npm ws package is missing: run `bash scripts/test.sh`, which installs it"
        );
        let mut child = Command::new("node")
            .args(flags)
            .args([DRIVER, url, topic, options])
            .args(more)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is not installed: run `bash scripts/test.sh`, which installs it");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("driver printed {line:?}: {e}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            _stdin: stdin,
            events,
            seen: Vec::new(),
        }
    }

    /// The next event (after those already waited for) that `matches`,
    /// within `within`.
    fn wait(&mut self, what: &str, within: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {within:?}; events: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the driver exited before {what}; events: {:#?}", self.seen)
                }
            }
        }
    }

    fn wait_ev(&mut self, ev: &str, within: Duration) -> Value {
        self.wait(ev, within, |e| e["ev"] == ev)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub connection that publishes.
fn publisher(server: &Server) -> tungstenite::WebSocket<Patient> {
    let stream = TcpStream::connect(server.addr).unwrap();
    let (ws, _) = tungstenite::client(server.url("/hub").as_str(), Patient(stream)).unwrap();
    ws
}

fn publish(ws: &mut tungstenite::WebSocket<Patient>, topic: &str, data: &str) {
    let request = format!(r#"{{"op":"publish","topic":"{topic}","data":{data}}}"#);
    ws.send(Message::text(request)).unwrap();
}

fn millis(event: &Value) -> u64 {
    event["t"].as_u64().unwrap()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_1013_retry_in_hint_delays_the_reconnect() {
    let server = Server::start(&["serve", "--max-backpressure", "65536"]);
    // Backoff alone would come back within 50 ms.
    let mut client = NodeClient::start(
        &server.url("/hub"),
        "slow",
        r#"{"backoffBaseMs":50,"backoffCapMs":100,"random":0.5}"#,
    );
    client.wait_ev("ready", 10 * SECOND);
    // A stopped process reads nothing: its backlog on the server grows past
    // the bound and the server closes it with 1013 "retry in N s".
    client.signal("-STOP");
    let mut ws = publisher(&server);
    // Digits from a xorshift: the connection deflates, and a repeated
    // letter would shrink to nothing.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let digits: String = (0..30_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'0' + (x % 10) as u8)
        })
        .collect();
    let big = format!("\"{digits}\"");
    // In rounds: the server judges a subscriber's backlog when new
    // messages arrive, so the later rounds find the earlier ones unsent.
    // The kernel's buffers take megabytes first: publish until the server
    // says it closed the subscriber (bounded).
    for round in 0.. {
        for _ in 0..10 {
            publish(&mut ws, "slow", &big);
        }
        ws.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if metric(server.addr, "surge_pubsub_disconnected_total") == 1 {
            break;
        }
        assert!(round < 300, "the stopped subscriber was never closed");
    }
    client.signal("-CONT");
    let close = client.wait("the 1013 close", 10 * SECOND, |e| {
        e["ev"] == "close" && e["code"] == 1013
    });
    let reason = close["reason"].as_str().unwrap();
    let hint: u64 = reason
        .split("retry in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry hint in {reason:?}"));
    let waiting = client.wait_ev("state", SECOND);
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    assert_eq!(waiting["info"]["why"], "retry in", "{waiting}");
    assert!(
        waiting["info"]["delayMs"].as_u64().unwrap() >= hint * 1000,
        "{waiting} for {reason:?}"
    );
    let again = client.wait("the reconnect", Duration::from_secs(hint + 5), |e| {
        e["state"] == "connecting"
    });
    let waited = millis(&again) - millis(&close);
    println!("1013 {reason:?}: reconnected after {waited} ms");
    assert!(
        waited + 20 >= hint * 1000,
        "waited {waited} ms for {reason:?}"
    );
    client.wait_ev("ready", 5 * SECOND);
}

#[test]
fn a_refused_upgrade_waits_its_retry_after() {
    let server = Server::start(&[
        "serve",
        "--max-conns-per-ip",
        "1",
        "--tarpit-ms",
        "100",
        "--retry-after-s",
        "1",
    ]);
    // This connection is the address's one: the client's upgrade is
    // refused with 503 and a Retry-After of 1-2 s.
    let holder = publisher(&server);
    let mut client = NodeClient::start(
        &server.url("/hub"),
        "refused",
        r#"{"backoffBaseMs":50,"backoffCapMs":100,"random":0.5}"#,
    );
    let close = client.wait_ev("close", 5 * SECOND);
    let waiting = client.wait_ev("state", SECOND);
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    assert_eq!(waiting["info"]["why"], "Retry-After", "{waiting}");
    let delay = waiting["info"]["delayMs"].as_u64().unwrap();
    assert!((1000..=2000).contains(&delay), "{waiting}");
    drop(holder);
    let again = client.wait("the reconnect", 5 * SECOND, |e| e["state"] == "connecting");
    let waited = millis(&again) - millis(&close);
    println!("503 Retry-After: reconnected after {waited} ms (planned {delay} ms)");
    assert!(waited + 20 >= delay, "waited {waited} ms of {delay}");
    // The held connection may take a moment to be counted out.
    client.wait_ev("ready", 10 * SECOND);
}

/// Also: what is published while away waits, within its bound, and goes
/// out in order once the client is back.
#[test]
fn the_drain_1001_reconnects_soon_to_a_restarted_server() {
    let first = Server::start(&["serve", "--drain-ms", "200"]);
    let addr = first.addr;
    // Backoff would wait 30 s; the drain's 1001 waits 0.5 x 1.5 s. Room
    // for the three small publishes made while away, not the large one.
    let mut client = NodeClient::start_with(
        &first.url("/hub"),
        "deploy",
        r#"{"backoffBaseMs":60000,"backoffCapMs":60000,"drainDelayMs":1500,"random":0.5,
            "maxQueuedBytes":200}"#,
        &["queue-while-away"],
    );
    client.wait_ev("ready", 10 * SECOND);
    let mut ws = publisher(&first);
    publish(&mut ws, "deploy", r#"{"n":1}"#);
    client.wait("n 1", 5 * SECOND, |e| e["data"]["n"] == 1);
    drop(ws);
    assert!(first.terminate().success());
    let second = Server::start_at(&["serve"], addr);
    let close = client.wait_ev("close", 5 * SECOND);
    assert_eq!(close["code"], 1001, "{close}");
    let refused = client.wait_ev("refused", SECOND);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("surge: publish queue full"),
        "{refused}"
    );
    let waiting = client.wait_ev("state", SECOND);
    assert_eq!(waiting["info"]["why"], "going away", "{waiting}");
    assert_eq!(waiting["info"]["delayMs"], 750, "{waiting}");
    let ready = client.wait_ev("ready", 5 * SECOND);
    assert_eq!(ready["opens"], 2, "{ready}");
    // Sent after the resubscribe, so they came back, in order.
    let queued: Vec<_> = client
        .seen
        .iter()
        .filter_map(|e| e["data"]["queued"].as_u64())
        .collect();
    assert_eq!(queued, [1, 2, 3]);
    println!(
        "drain: live again on the restarted server {} ms after the 1001",
        millis(&ready) - millis(&close)
    );
    let mut ws = publisher(&second);
    publish(&mut ws, "deploy", r#"{"n":2}"#);
    client.wait("n 2", 5 * SECOND, |e| e["data"]["n"] == 2);
}

/// A connection the server drops (here: its idle timeout) is resumed from
/// the client's positions: what was published while it was away arrives
/// once, in order, and no gap is reported.
#[test]
fn a_dropped_connection_resumes_without_a_gap() {
    let server = Server::start(&["serve", "--history-size", "100", "--idle-timeout-ms", "800"]);
    let mut client = NodeClient::start(
        &server.url("/hub"),
        "resume",
        r#"{"drainDelayMs":1000,"random":0.5}"#,
    );
    client.wait_ev("ready", 10 * SECOND);
    let mut ws = publisher(&server);
    publish(&mut ws, "resume", r#"{"n":1}"#);
    client.wait("n 1", 5 * SECOND, |e| e["data"]["n"] == 1);
    drop(ws);
    let close = client.wait_ev("close", 5 * SECOND);
    assert_eq!(close["code"], 1001, "{close}");
    // Published while the client waits to come back.
    let mut ws = publisher(&server);
    for n in 2..=4 {
        publish(&mut ws, "resume", &format!(r#"{{"n":{n}}}"#));
    }
    ws.flush().unwrap();
    let ready = client.wait_ev("ready", 10 * SECOND);
    assert_eq!(ready["opens"], 2, "{ready}");
    let got: Vec<u64> = client
        .seen
        .iter()
        .filter(|e| e["ev"] == "message")
        .filter_map(|e| e["data"]["n"].as_u64())
        .collect();
    assert_eq!(got, [1, 2, 3, 4], "{:#?}", client.seen);
    let gaps: Vec<_> = client.seen.iter().filter(|e| e["ev"] == "gap").collect();
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(
        metric(server.addr, "surge_recoveries_total{result=\"recovered\"}"),
        1
    );
}

/// A latest-value topic's value reaches a new surge.js subscriber: the
/// `subscribed` answer reports the position just before it, so the client
/// takes it as the next message rather than one it has seen.
#[test]
fn a_latest_value_reaches_a_new_subscriber() {
    let server = Server::start(&["serve", "--latest"]);
    let mut ws = publisher(&server);
    for n in 1..=3 {
        publish(&mut ws, "value", &format!(r#"{{"n":{n}}}"#));
    }
    // Answered once the publishes before it were carried out.
    ws.send(Message::text(r#"{"op":"subscribe","topics":["sync"]}"#))
        .unwrap();
    assert!(ws.read().unwrap().to_text().unwrap().contains("subscribed"));
    let mut client = NodeClient::start(&server.url("/hub"), "value", "{}");
    let value = client.wait("the value", 10 * SECOND, |e| e["ev"] == "message");
    assert_eq!(value["data"]["n"], 3, "{value}");
    assert_eq!(value["meta"]["offset"], 3, "{value}");
    client.wait_ev("ready", 10 * SECOND);
    let gaps: Vec<_> = client.seen.iter().filter(|e| e["ev"] == "gap").collect();
    assert!(gaps.is_empty(), "{gaps:?}");
}

/// With positions in Redis a topic gets its epoch from its first publish,
/// after the subscription that answered with a position of this node's
/// own at offset 0: the client takes the first message of the new epoch
/// as the start of its stream, not as a gap, and hears what another node
/// publishes at the next offset.
#[test]
fn a_fresh_topic_on_redis_starts_without_a_gap() {
    let port = support::redis::free_port();
    let _redis = support::redis::Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let node = |url: &str| {
        let server = Server::start(&["serve", "--redis-url", url, "--history-size", "10"]);
        wait_metric(server.addr, "surge_shared_history_available", |v| v == 1);
        wait_metric(server.addr, "surge_bridge_connected", |v| v == 1);
        server
    };
    let (a, b) = (node(&url), node(&url));
    let mut client = NodeClient::start(&a.url("/hub"), "fresh", r#"{"random":0.5}"#);
    client.wait_ev("ready", 10 * SECOND);
    let mut ws = publisher(&b);
    publish(&mut ws, "fresh", r#"{"n":1}"#);
    let got = client.wait("n 1", 5 * SECOND, |e| e["data"]["n"] == 1);
    assert_eq!(got["meta"]["offset"], 2, "{got}");
    let gaps: Vec<_> = client.seen.iter().filter(|e| e["ev"] == "gap").collect();
    assert!(gaps.is_empty(), "{gaps:?}");
}

/// With WebSocket refused by a proxy in front of the server, the client
/// falls back to server-sent events (Node 20 has EventSource behind
/// `--experimental-eventsource`) and receives over them; a stream cut while
/// messages are published resumes from its Last-Event-ID with every one of
/// them, once, in order, and no gap.
#[test]
fn the_sse_fallback_receives_and_resumes() {
    let server = Server::start(&["serve", "--history-size", "100"]);
    let proxy = RefusingProxy::start(server.addr);
    let mut client = NodeClient::start_node(
        &["--experimental-eventsource"],
        &format!("ws://{}/hub", proxy.addr),
        "sse-node",
        r#"{"sseAfterFailures":1,"backoffBaseMs":50,"backoffCapMs":100,"random":0.5}"#,
        &[],
    );
    client.wait("open over SSE", 10 * SECOND, |e| {
        e["state"] == "open" && e["info"]["transport"] == "sse"
    });
    assert!(proxy.refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    wait_metric(server.addr, "surge_sse_streams", |n| n == 1);
    let mut ws = publisher(&server);
    publish(&mut ws, "sse-node", r#"{"n":1}"#);
    client.wait("n 1", 5 * SECOND, |e| e["data"]["n"] == 1);
    proxy.cut_and_block(true);
    for n in 2..=3 {
        publish(&mut ws, "sse-node", &format!(r#"{{"n":{n}}}"#));
    }
    ws.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    proxy.cut_and_block(false);
    client.wait("n 3", 15 * SECOND, |e| e["data"]["n"] == 3);
    let got: Vec<u64> = client
        .seen
        .iter()
        .filter(|e| e["ev"] == "message")
        .filter_map(|e| e["data"]["n"].as_u64())
        .collect();
    assert_eq!(got, [1, 2, 3], "{:#?}", client.seen);
    let gaps: Vec<_> = client.seen.iter().filter(|e| e["ev"] == "gap").collect();
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(
        metric(server.addr, "surge_recoveries_total{result=\"recovered\"}"),
        1,
        "the stream resumed through recovery"
    );
}
