//! Headless Chromium (Debian's `chromium`, installed by scripts/test.sh)
//! opens a page that echoes messages through `surge serve` with the
//! permessage-deflate Chromium always offers, then publishes the outcome to
//! a hub topic this test subscribes to; a page with clients/js/surge.js
//! that rides out a killed and restarted server (history in a real
//! redis-server) without a gap; and the same client behind a proxy that
//! refuses WebSocket, on server-sent events.

mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::refusing_proxy::RefusingProxy;
use support::*;
use tungstenite::Message;

#[test]
fn chromium_echoes_compressed_messages() {
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["serve", "--backend", backend]);
        let stream = TcpStream::connect(server.addr).unwrap();
        let (mut listener, _) = tungstenite::client(
            format!("ws://{}/hub", server.addr).as_str(),
            Patient(stream),
        )
        .unwrap();
        listener
            .send(Message::text(
                r#"{"op":"subscribe","topics":["chromium-result"]}"#,
            ))
            .unwrap();
        let _ack = listener.read().unwrap();
        let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/page/deflate_echo.html");
        let profile =
            std::env::temp_dir().join(format!("surge-chromium-{}-{backend}", std::process::id()));
        let url = format!("file://{page}?base=ws://{}", server.addr);
        let mut chromium = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is not installed: run `bash scripts/test.sh`, which installs it");
        listener
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let start = Instant::now();
        let result = listener.read();
        let _ = chromium.kill();
        let _ = chromium.wait();
        let _ = std::fs::remove_dir_all(&profile);
        let text = match result {
            Ok(Message::Text(t)) => t.to_string(),
            other => panic!(
                "{backend}: no result from the page after {:?}: {other:?}",
                start.elapsed()
            ),
        };
        println!("{backend}: {text}");
        assert!(text.contains("permessage-deflate"), "{backend}: {text}");
        assert!(text.contains("echoes OK: 4"), "{backend}: {text}");
    }
}

/// A page using clients/js/surge.js keeps its subscription through a
/// SIGKILLed server and its restart on the same port, with positions and
/// history in a real redis-server: what another node published while the
/// server was down is replayed when the page resumes, so it misses nothing
/// and reports no gap.
#[test]
fn the_js_client_resumes_without_a_gap_after_the_server_is_killed() {
    let port = support::redis::free_port();
    let _redis = support::redis::Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let args = ["serve", "--redis-url", &url, "--history-size", "100"];
    let node = |server: Server| {
        wait_metric(server.addr, "surge_shared_history_available", |v| v == 1);
        server
    };
    let first = node(Server::start(&args));
    let other = node(Server::start(&args));
    let addr = first.addr;
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/page/js_client.html");
    let profile = std::env::temp_dir().join(format!("surge-chromium-js-{}", std::process::id()));
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // The page imports the module from a file: URL.
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{page}?base=ws://{addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is not installed: run `bash scripts/test.sh`, which installs it");
    let outcome = std::panic::catch_unwind(|| {
        // The test's probe stays on the other node throughout: the page's
        // answers reach it through Redis.
        let mut page = PageProbe::connect(&other, "js");
        page.ask_until(|s| s["opens"] == 1);
        page.publish(r#"{"n":1}"#);
        page.publish(r#"{"n":2}"#);
        page.ask_until(|s| s["got"] == serde_json::json!([1, 2]));
        drop(first); // SIGKILL, mid-stream
        page.publish(r#"{"n":3}"#);
        page.publish(r#"{"n":4}"#);
        let _second = node(Server::start_at(&args, addr));
        page.ask_until(|s| s["opens"] == 2);
        page.publish(r#"{"n":5}"#);
        page.ask_until(|s| s["got"] == serde_json::json!([1, 2, 3, 4, 5]))
    });
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let state = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e));
    println!("page: {state}");
    assert_eq!(state["opens"], 2, "one reconnect: {state}");
    assert_eq!(state["gaps"], serde_json::json!([]), "{state}");
}

/// The test's side of a page's topics: publishes to "NAME-feed" and reads
/// the page's answers on "NAME-result".
struct PageProbe {
    ws: tungstenite::WebSocket<Patient>,
    name: &'static str,
}

impl PageProbe {
    fn connect(server: &Server, name: &'static str) -> Self {
        let mut ws = Self::upgrade(server);
        ws.send(Message::text(format!(
            r#"{{"op":"subscribe","topics":["{name}-result"]}}"#
        )))
        .unwrap();
        let _ack = ws.read().unwrap();
        Self { ws, name }
    }

    /// A hub connection to `server`. Right after a restart on the same
    /// port, a connection may still land on the killed server's listening
    /// socket, which an io_uring ring's asynchronous teardown keeps for a
    /// moment (SO_REUSEPORT lets both be bound), and be reset: try again,
    /// for a bounded time.
    fn upgrade(server: &Server) -> tungstenite::WebSocket<Patient> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stream = TcpStream::connect(server.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(250)))
                .unwrap();
            match tungstenite::client(server.url("/hub").as_str(), Patient(stream)) {
                Ok((ws, _)) => return ws,
                Err(e) if Instant::now() < deadline => {
                    println!("probe upgrade failed ({e}); trying again");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("no hub connection within 5 s: {e}"),
            }
        }
    }

    fn publish(&mut self, data: &str) {
        let name = self.name;
        let request = format!(r#"{{"op":"publish","topic":"{name}-feed","data":{data}}}"#);
        self.ws.send(Message::text(request)).unwrap();
    }

    /// Asks the page for its state until `done` holds (30 s at most: the
    /// first ask also waits for Chromium to start).
    fn ask_until(&mut self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            self.publish(r#"{"ask":true}"#);
            // Answers to earlier asks may still come: read what is there.
            loop {
                match self.ws.read() {
                    Ok(Message::Text(t)) => {
                        let msg: serde_json::Value = serde_json::from_str(&t).unwrap();
                        last = msg["data"].clone();
                        if done(&last) {
                            return last;
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => panic!("probe: {e}"),
                }
            }
        }
        panic!("the page never reached the state; last: {last}");
    }
}

/// With WebSocket refused by a proxy in front of the server, a page using
/// clients/js/surge.js falls back to server-sent events and receives over
/// them; a stream cut while messages are published resumes from its
/// Last-Event-ID with every one of them, once, in order and with no gap;
/// and after a server restart (which loses in-memory history) it comes back
/// on its own and says plainly that the epoch changed.
#[test]
fn the_js_client_falls_back_to_server_sent_events_and_resumes() {
    let first = Server::start(&["serve", "--history-size", "100"]);
    let addr = first.addr;
    let proxy = RefusingProxy::start(addr);
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/page/sse_client.html");
    let profile = std::env::temp_dir().join(format!("surge-chromium-sse-{}", std::process::id()));
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "file://{page}?base=ws://{}&report=ws://{addr}",
            proxy.addr
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is not installed: run `bash scripts/test.sh`, which installs it");
    let outcome = std::panic::catch_unwind(|| {
        let mut page = PageProbe::connect(&first, "sse");
        page.ask_until(|s| s["opens"] == 1 && s["transport"] == "sse");
        page.publish(r#"{"n":1}"#);
        page.publish(r#"{"n":2}"#);
        page.ask_until(|s| s["got"] == serde_json::json!([1, 2]));
        page.ws
            .send(Message::text(
                r#"{"op":"publish","topic":"sse-quiet","data":0}"#,
            ))
            .unwrap();
        page.ask_until(|s| s["quiet"] == 1);
        // The network breaks: what is published meanwhile is replayed once
        // the browser's own reconnect gets through.
        proxy.cut_and_block(true);
        page.publish(r#"{"n":3}"#);
        page.publish(r#"{"n":4}"#);
        std::thread::sleep(Duration::from_millis(500));
        proxy.cut_and_block(false);
        let resumed = page.ask_until(|s| s["got"] == serde_json::json!([1, 2, 3, 4]));
        assert_eq!(resumed["gaps"], serde_json::json!([]), "{resumed}");
        assert!(
            metric(addr, "surge_recoveries_total{result=\"recovered\"}") >= 1,
            "the stream resumed through recovery"
        );
        drop(first); // SIGKILL
        let second = Server::start_at(&["serve", "--history-size", "100"], addr);
        let mut page = PageProbe::connect(&second, "sse");
        page.ask_until(|s| s["opens"].as_u64() >= Some(3));
        page.publish(r#"{"n":5}"#);
        page.ask_until(|s| s["got"] == serde_json::json!([1, 2, 3, 4, 5]))
    });
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let state = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e));
    println!("page: {state}");
    assert_eq!(state["transport"], "sse", "{state}");
    assert!(
        proxy.refused.load(Ordering::Relaxed) >= 1,
        "the page tried WebSocket first"
    );
    let mut gaps: Vec<&str> = state["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    gaps.sort_unstable();
    assert_eq!(
        gaps,
        ["sse-feed: epoch changed", "sse-quiet: epoch changed"],
        "only the restart's lost history is a gap, each topic's said once, the quiet \
         one's by the stream's subscribed event: {state}"
    );
}
