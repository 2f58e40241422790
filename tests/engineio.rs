//! Engine.IO v4 on the real server: the stock `engine.io-client` (Node)
//! and the raw-answer checks of `tests/engineio/` (the reference server's
//! behaviour, REFERENCE.md) against an `engineio-echo` route on two shards
//! and both drivers, then what a production server owes on top: kept-alive
//! connections, admission per session, bounded queues and bodies, the
//! drain.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::hub::BACKENDS;
use support::{connect, connect_from, metric, output_within, wait_metric, Server};

const ROUTE: &str = "/engine.io/";

/// A config file with an `engineio-echo` route at `/engine.io/`, short
/// heartbeats (the protocol test suite's 300/200 ms) and `extra` keys.
fn config(name: &str, extra: &str) -> PathBuf {
    config_pinging(name, 300, 200, extra)
}

/// The same with these ping settings (ms).
fn config_pinging(name: &str, interval: u32, timeout: u32, extra: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("surge-eio-{}-{name}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[[routes]]\npath = \"{ROUTE}\"\nkind = \"engineio-echo\"\nping-interval-ms = {interval}\nping-timeout-ms = {timeout}\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn serve(config: &Path, args: &[&str]) -> Server {
    let mut all = vec!["serve", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn ground_truth() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/engineio");
    assert!(
        dir.join("node_modules/engine.io-client").exists(),
        "engine.io-client is not installed: run `bash scripts/test.sh`, or \
         `npm ci --prefix tests/engineio --no-audit --no-fund`"
    );
    dir
}

/// The stock client's scenarios and every raw answer of the spec, on two
/// shards (the client opens a connection per request, so a session's
/// requests land on both) and on each driver.
#[test]
fn the_stock_client_and_every_spec_answer_on_two_shards_and_both_drivers() {
    let dir = ground_truth();
    let file = config("stock", "cors-origin = \"*\"\n");
    for backend in BACKENDS {
        let server = serve(&file, &["--shards", "2", "--backend", backend]);
        let url = format!("http://{}", server.addr);
        let scenarios = [
            "polling",
            "websocket",
            "upgrade",
            "heartbeat",
            "ping_timeout",
            "binary",
            "max_payload",
        ];
        let out = output_within(
            Command::new("node")
                .arg(dir.join("client_scenarios.mjs"))
                .arg(&url)
                .args(scenarios),
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), scenarios.len(), "{backend}: {stdout}");
        for line in &lines {
            assert_eq!(line["ok"], true, "{backend}: {line}");
        }
        let out = output_within(
            Command::new("python3")
                .arg(dir.join("raw_errors.py"))
                .arg(&url),
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("raw_errors: 30 passed, 0 failed"),
            "{backend}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Requests met sessions owned by the other shard, and every
        // session has ended; nothing is left held.
        assert!(metric(server.addr, "surge_engineio_handoffs_total") > 0);
        wait_metric(server.addr, "surge_engineio_sessions", |n| n == 0);
        assert_eq!(metric(server.addr, "surge_engineio_polls_held"), 0);
        assert_eq!(
            metric(server.addr, "surge_engineio_handoffs_refused_total"),
            0
        );
        assert_eq!(metric(server.addr, "surge_message_bytes_held"), 0);
    }
}

/// `surge serve` without a config serves Engine.IO at `/engine.io/`,
/// with the protocol's heartbeat.
#[test]
fn the_default_config_serves_engineio() {
    let server = Server::start(&["serve"]);
    let mut http = Http::new(connect(server.addr));
    let open = http.request("GET", "", b"");
    let sid = sid_of(&open);
    let json: serde_json::Value = serde_json::from_slice(&open.body[1..]).unwrap();
    assert_eq!(json["pingInterval"], 25_000);
    assert_eq!(json["pingTimeout"], 20_000);
    assert_eq!(json["maxPayload"], 1_000_000);
    let q = format!("&sid={sid}");
    assert_eq!(http.request("POST", &q, b"4hi").status, 200);
    assert_eq!(http.request("GET", &q, b"").text(), "4hi");
}

/// A raw HTTP/1.1 client on one connection.
struct Http {
    reader: BufReader<TcpStream>,
}

/// A response: status, lower-cased headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    fn new(s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self {
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, method: &str, query: &str, headers: &str, body: &[u8]) {
        let s = self.reader.get_mut();
        write!(
            s,
            "{method} {ROUTE}?EIO=4&transport=polling{query} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
    }

    fn read(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        Response {
            status,
            headers,
            body,
        }
    }

    fn request(&mut self, method: &str, query: &str, body: &[u8]) -> Response {
        self.send(method, query, "", body);
        self.read()
    }
}

/// The open packet's sid.
fn sid_of(open: &Response) -> String {
    assert_eq!(open.status, 200, "{}", open.text());
    let json: serde_json::Value = serde_json::from_slice(&open.body[1..]).unwrap();
    json["sid"].as_str().unwrap().to_owned()
}

/// What a browser does: the handshake, posts and polls on one kept-alive
/// connection; and the server closes one whose client asked it to.
#[test]
fn one_kept_alive_connection_carries_a_whole_polling_session() {
    let file = config("keepalive", "");
    let server = serve(&file, &[]);
    let mut http = Http::new(connect(server.addr));
    let open = http.request("GET", "", b"");
    assert_eq!(open.header("connection"), Some("keep-alive"));
    assert_eq!(open.header("access-control-allow-origin"), None);
    let sid = sid_of(&open);
    let q = format!("&sid={sid}");
    for i in 0..5 {
        let message = format!("4hello {i}");
        let post = http.request("POST", &q, message.as_bytes());
        assert_eq!((post.status, post.text()), (200, "ok".into()));
        assert_eq!(post.header("content-type"), Some("text/html"));
        let poll = http.request("GET", &q, b"");
        assert_eq!((poll.status, poll.text()), (200, message));
    }
    // Two messages in one body come back in one answer, in order.
    let post = http.request("POST", &q, b"4a\x1e4b");
    assert_eq!(post.status, 200);
    assert_eq!(http.request("GET", &q, b"").text(), "4a\x1e4b");
    // A request that asks to close is answered, then the connection ends.
    http.send("GET", "&t=x", "Connection: close\r\n", b"");
    let last = http.read();
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    http.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// A refused request without a body leaves its connection for the next
/// one; a refused request with a body ends it, since nobody reads the
/// body to find where the next request starts.
#[test]
fn refused_requests_keep_their_connection_only_without_a_body() {
    let file = config("refused", "");
    let server = serve(&file, &[]);
    let mut http = Http::new(connect(server.addr));
    let bad = http.request("GET", "&EIO=3", b"");
    assert_eq!(
        (bad.status, bad.header("connection")),
        (400, Some("keep-alive"))
    );
    let sid = sid_of(&http.request("GET", "", b""));
    // A POST without a sid is a bad handshake, its body unread.
    let refused = http.request("POST", "", b"4unread");
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.text(),
        r#"{"code":2,"message":"Bad handshake method"}"#
    );
    assert_eq!(refused.header("connection"), Some("close"));
    let mut rest = Vec::new();
    http.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let mut http = Http::new(connect(server.addr));
    let post = http.request("POST", &format!("&sid={sid}"), b"4still here");
    assert_eq!(post.status, 200);
    // A chunked body has no length to bound: 411, and the connection ends.
    let mut chunked = Http::new(connect(server.addr));
    let s = chunked.reader.get_mut();
    write!(
        s,
        "POST {ROUTE}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\
         Transfer-Encoding: chunked\r\n\r\n3\r\n4hi\r\n0\r\n\r\n"
    )
    .unwrap();
    let refused = chunked.read();
    assert_eq!(refused.status, 411);
    assert_eq!(refused.header("connection"), Some("close"));
}

/// Per-IP caps count sessions, not their requests: a client at its cap
/// still polls and posts on its sessions, and its next handshake is
/// refused (503 after the tarpit, as an upgrade is) until one of them ends.
#[test]
fn the_per_ip_cap_counts_sessions_not_requests() {
    let file = config("cap", "");
    let server = serve(&file, &["--max-conns-per-ip", "2", "--tarpit-ms", "50"]);
    let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 23));
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut http = Http::new(connect_from(client, server.addr));
        let sid = sid_of(&http.request("GET", "", b""));
        sessions.push((http, sid));
    }
    for (http, sid) in &mut sessions {
        for _ in 0..3 {
            let q = format!("&sid={sid}");
            assert_eq!(http.request("POST", &q, b"4x").status, 200);
            assert_eq!(http.request("GET", &q, b"").text(), "4x");
        }
    }
    let mut third = Http::new(connect_from(client, server.addr));
    let refused = third.request("GET", "", b"");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused
        .text()
        .contains("too many connections from your address"));
    assert!(refused.header("retry-after").is_some());
    // Another address is not affected.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 24));
    let mut http = Http::new(connect_from(other, server.addr));
    sid_of(&http.request("GET", "", b""));
    // A session that ends gives its place back.
    let (mut first, sid) = sessions.remove(0);
    assert_eq!(
        first.request("POST", &format!("&sid={sid}"), b"1").status,
        200
    );
    let mut again = Http::new(connect_from(client, server.addr));
    sid_of(&again.request("GET", "", b""));
}

/// The Origin allow-list and tokens guard the handshake of both
/// transports, as they guard a WebSocket upgrade (CSWSH): 403 with the
/// protocol's `Forbidden` (Engine.IO has no other refusal for either).
#[test]
fn the_origin_allow_list_guards_the_handshake() {
    let file = config("origin", "");
    let server = serve(&file, &["--allow-origin", "https://app.example"]);
    let mut http = Http::new(connect(server.addr));
    http.send("GET", "", "Origin: https://evil.example\r\n", b"");
    let refused = http.read();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.text(), r#"{"code":4,"message":"Forbidden"}"#);
    http.send("GET", "", "Origin: https://app.example\r\n", b"");
    sid_of(&http.read());
    let mut ws = connect(server.addr);
    let target = format!("{ROUTE}?EIO=4&transport=websocket");
    let request = support::upgrade_request(&target, "Origin: https://evil.example\r\n");
    ws.write_all(request.as_bytes()).unwrap();
    let (status, _) = support::read_response_head(&mut ws);
    assert_eq!(status, 403);
    drop(server);
    // A token, as ?token= (the stock client's `query` option) or a header.
    let server = serve(&file, &["--auth-token", "s3cret"]);
    let mut http = Http::new(connect(server.addr));
    let refused = http.request("GET", "", b"");
    assert_eq!(refused.status, 403, "{}", refused.text());
    sid_of(&http.request("GET", "&token=s3cret", b""));
    http.send("GET", "", "Authorization: Bearer s3cret\r\n", b"");
    sid_of(&http.read());
}

/// A client that posts but never polls cannot make the server hold more
/// than the session's queue bound: the session ends (`buffer_full`) and
/// its memory goes with it.
#[test]
fn a_session_that_is_never_polled_is_bounded_and_ends() {
    let file = config_pinging("bound", 60_000, 60_000, "");
    let server = serve(&file, &[]);
    let mut http = Http::new(connect(server.addr));
    let sid = sid_of(&http.request("GET", "", b""));
    let q = format!("&sid={sid}");
    let message = format!("4{}", "x".repeat(100_000));
    let mut refused = None;
    for i in 0..40 {
        let post = http.request("POST", &q, message.as_bytes());
        if post.status != 200 {
            refused = Some((i, post.status, post.text()));
            break;
        }
    }
    let (i, status, text) = refused.expect("the queue was never bounded");
    assert!((10..=11).contains(&i), "ended after {i} posts of 100 kB");
    assert_eq!(status, 400);
    assert!(text.contains("Session ID unknown"), "{text}");
    assert_eq!(
        metric(
            server.addr,
            "surge_engineio_closed_total{reason=\"buffer_full\"}"
        ),
        1
    );
}

/// A held poll whose client goes away ends its session at once, as the
/// reference's does (transport close), not at the next heartbeat: on
/// each driver, with heartbeats a minute apart.
#[test]
fn a_held_poll_whose_client_goes_ends_its_session_at_once() {
    let file = config_pinging("held", 60_000, 60_000, "");
    for backend in ["epoll", "uring"] {
        let server = serve(&file, &["--backend", backend, "--shards", "1"]);
        let mut http = Http::new(connect(server.addr));
        let sid = sid_of(&http.request("GET", "", b""));
        let mut held = Http::new(connect(server.addr));
        held.send("GET", &format!("&sid={sid}"), "", b"");
        wait_metric(server.addr, "surge_engineio_polls_held", |n| n == 1);
        drop(held);
        let closed = "surge_engineio_closed_total{reason=\"transport_close\"}";
        wait_metric(server.addr, closed, |n| n == 1);
        assert_eq!(
            metric(server.addr, "surge_engineio_sessions"),
            0,
            "{backend}"
        );
        assert_eq!(
            metric(server.addr, "surge_engineio_polls_held"),
            0,
            "{backend}"
        );
    }
}

/// A `POST` body still arriving reserves its length in the shard's
/// message budget and lets it go when its connection dies; one over what
/// is left is refused before it is read.
#[test]
fn post_bodies_in_progress_are_held_within_the_message_budget() {
    let file = config("budget", "");
    // The budget is each shard's: one shard holds both bodies.
    let server = serve(&file, &["--message-budget", "300000", "--shards", "1"]);
    let mut http = Http::new(connect(server.addr));
    let sid = sid_of(&http.request("GET", "", b""));
    let mut slow = connect(server.addr);
    write!(
        slow,
        "POST {ROUTE}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n4"
    )
    .unwrap();
    slow.write_all(&[b'y'; 99_999]).unwrap();
    // Its whole length is reserved, not only what has arrived.
    wait_metric(server.addr, "surge_message_bytes_held", |n| n == 200_000);
    // 110,000 more would not fit beside it.
    let mut other = Http::new(connect(server.addr));
    let other_sid = sid_of(&other.request("GET", "", b""));
    let big = vec![b'4'; 110_000];
    let refused = other.request("POST", &format!("&sid={other_sid}"), &big);
    assert_eq!(refused.status, 503);
    support::reset(slow);
    wait_metric(server.addr, "surge_message_bytes_held", |n| n == 0);
    // The dropped POST ended nothing but itself: its session still polls.
    let mut http = Http::new(connect(server.addr));
    let q = format!("&sid={sid}");
    assert_eq!(http.request("POST", &q, b"4ok").status, 200);
    assert_eq!(http.request("GET", &q, b"").text(), "4ok");
}

/// SIGTERM ends every session: a held poll is answered with the close
/// packet; a WebSocket session's socket is closed (1000), as the
/// reference ends a WebSocket transport.
#[test]
fn the_drain_closes_every_session() {
    let file = config_pinging("drain", 60_000, 60_000, "");
    let server = serve(&file, &["--drain-ms", "500"]);
    let mut http = Http::new(connect(server.addr));
    let sid = sid_of(&http.request("GET", "", b""));
    http.send("GET", &format!("&sid={sid}"), "", b"");
    wait_metric(server.addr, "surge_engineio_polls_held", |n| n == 1);
    let mut ws = connect(server.addr);
    let target = format!("{ROUTE}?EIO=4&transport=websocket");
    ws.write_all(support::upgrade_request(&target, "").as_bytes())
        .unwrap();
    assert_eq!(support::read_response_head(&mut ws).0, 101);
    let (_, open) = support::read_frame(&mut ws);
    assert!(open.starts_with(b"0{"), "{open:?}");
    // An idle kept-alive connection, with no request to answer.
    let mut idle = Http::new(connect(server.addr));
    sid_of(&idle.request("GET", "", b""));
    let server_addr = server.addr;
    let started = Instant::now();
    let waiter = std::thread::spawn(move || server.terminate());
    let answer = http.read();
    assert_eq!((answer.status, answer.text()), (200, "1".into()));
    // While the drain lasts, a new session is refused.
    let mut late = Http::new(connect(server_addr));
    let refused = late.request("GET", "", b"");
    assert_eq!(
        (refused.status, refused.text()),
        (503, "server shutting down\n".into())
    );
    assert_eq!(support::read_frame(&mut ws), (0x88, vec![0x03, 0xe8]));
    ws.write_all(&support::close(1000, b"")).unwrap();
    let mut rest = Vec::new();
    idle.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    // Clients that go when told: the server has nothing left to wait for.
    drop((http, idle, ws, late));
    let status = waiter.join().unwrap();
    // Nothing waited for the close timeout (5 s).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(status.success(), "{status:?}");
}
