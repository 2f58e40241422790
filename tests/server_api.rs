//! The server API (`--api-listen`) driven from outside, with `curl` and
//! `ureq`: a publish reaches hub subscribers on both shards and, through a
//! real redis-server, on a second node, and answers its positions when the
//! topic keeps history; a disconnect closes one user's connections (those
//! whose token, signed by PyJWT, names them) on both nodes and no one
//! else's; event-stream subscribers get the same messages; the topics and connections answers count what is there; every
//! mistake gets its precise status and a JSON error; a body over the
//! bound is refused; a slow client holds up nobody.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::hub::{next_text, send_text, HubWs};
use support::redis::{free_port, Redis};
use support::Server;

const KEY: &str = "test-api-key-0123456789abcdef";

/// Tokens signed by PyJWT for the real clock, and the secret's file.
struct Tokens {
    dir: PathBuf,
    tokens: HashMap<String, String>,
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server-api");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let out = support::output_within(
            Command::new(support::venv().join("bin/python"))
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/py/jwt_tokens.py"
                ))
                .arg(&dir)
                .arg(now.to_string()),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "jwt_tokens.py failed (is PyJWT[crypto] in the venv? run scripts/test.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("api.key"), format!("  {KEY}\n")).unwrap();
        let tokens = serde_json::from_slice(&std::fs::read(dir.join("tokens.json")).unwrap());
        Tokens {
            dir,
            tokens: tokens.unwrap(),
        }
    })
}

fn file(name: &str) -> String {
    tokens().dir.join(name).to_str().unwrap().to_owned()
}

/// alice (`hs_valid`) may subscribe to `chat` and `news.*`; bob (`hs_bob`)
/// to `chat`.
fn token(user: &str) -> &'static str {
    let name = if user == "alice" {
        "hs_valid"
    } else {
        "hs_bob"
    };
    &tokens().tokens[name]
}

/// A node: hub with signed tokens and the API on a free port.
struct Node {
    server: Server,
    api: SocketAddr,
}

fn node(extra: &[&str]) -> Node {
    let (secret, key) = (file("hs.secret"), file("api.key"));
    let mut args = vec![
        "serve",
        "--jwt-hs256-secret",
        &secret,
        "--api-listen",
        "127.0.0.1:0",
        "--api-key-file",
        &key,
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let stderr = server.stderr();
    let api = stderr
        .lines()
        .find_map(|l| l.strip_prefix("surge api listening on "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no API readiness line in {stderr}"));
    Node { server, api }
}

/// A hub connection of `user`, subscribed to `topic`.
fn subscriber(addr: SocketAddr, user: &str, topic: &str) -> HubWs {
    let url = format!("ws://{addr}/hub?token={}", token(user));
    let (mut ws, _) = tungstenite::client(url.as_str(), support::Patient(support::connect(addr)))
        .expect("upgrade");
    ws.get_mut()
        .0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    send_text(
        &mut ws,
        &format!(r#"{{"op":"subscribe","topics":["{topic}"]}}"#),
    );
    let answer = next_text(&mut ws);
    assert!(answer.starts_with(r#"{"op":"subscribed""#), "{answer}");
    ws
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `ureq` POST of JSON `body` with the key; the status and JSON answer.
fn post(api: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let mut resp = agent()
        .post(format!("http://{api}{path}"))
        .header("Authorization", format!("Bearer {KEY}"))
        .content_type("application/json")
        .send(body.to_string())
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).expect("a JSON answer"))
}

/// `ureq` GET with the key.
fn get(api: SocketAddr, path: &str) -> (u16, Value) {
    let mut resp = agent()
        .get(format!("http://{api}{path}"))
        .header("Authorization", format!("Bearer {KEY}"))
        .call()
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).expect("a JSON answer"))
}

/// `curl ARGS URL` with the status appended on the last line; the status,
/// the body and the headers (with `-i` in `args`).
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = support::output_within(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url),
        Duration::from_secs(15),
    );
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

fn bearer() -> String {
    format!("Authorization: Bearer {KEY}")
}

/// The next message carries `data` on `topic`; its offset.
fn delivered(ws: &mut HubWs, topic: &str, data: &Value) -> u64 {
    let got: Value = serde_json::from_str(&next_text(ws)).unwrap();
    assert_eq!(got["topic"], json!(topic), "{got}");
    assert_eq!(&got["data"], data, "{got}");
    got["offset"].as_u64().expect("an offset")
}

/// The close code the peer sends next (messages before it skipped).
fn close_code(ws: &mut HubWs) -> u16 {
    support::hub::close_frame(ws).0
}

/// An event stream (`GET /hub/events`) of `topic` for `user`, once its
/// response head is in.
fn event_stream(addr: SocketAddr, user: &str, topic: &str) -> std::io::BufReader<TcpStream> {
    use std::io::BufRead;
    let mut s = support::connect(addr);
    write!(
        s,
        "GET /hub/events?topics={topic}&token={} HTTP/1.1\r\nHost: x\r\n\
         Accept: text/event-stream\r\n\r\n",
        token(user)
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(s);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).unwrap() > 0, "{head}");
    }
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    reader
}

/// The next `data:` line of an event stream that mentions `what`.
fn event_with(stream: &mut std::io::BufReader<TcpStream>, what: &str) -> String {
    use std::io::BufRead;
    loop {
        let mut line = String::new();
        assert!(
            stream.read_line(&mut line).expect("an event") > 0,
            "stream ended"
        );
        if line.starts_with("data:") && line.contains(what) {
            return line;
        }
    }
}

/// Opens `user` connections to `topic` until the API reports them on
/// both shards.
fn on_both_shards(n: &Node, user: &str, topic: &str) -> Vec<HubWs> {
    let mut conns = Vec::new();
    for _ in 0..24 {
        conns.push(subscriber(n.server.addr, user, topic));
        let (status, answer) = get(n.api, &format!("/api/connections?user={user}"));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["count"], json!(conns.len()), "{answer}");
        let shards: BTreeSet<u64> = answer["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["shard"].as_u64().unwrap())
            .collect();
        if shards.len() == 2 && conns.len() >= 2 {
            return conns;
        }
    }
    panic!("24 connections all landed on one shard");
}

/// On one node with two shards: publishes (one topic, several, through
/// curl and ureq) reach every subscriber on both shards and answer the
/// positions subscribers see; topics and connections count them; a
/// disconnect closes alice's connections on both shards with 4010 and
/// leaves bob's open.
#[test]
fn publish_and_disconnect_reach_every_shard() {
    let n = node(&["--shards", "2", "--history-size", "10"]);
    let mut alice = on_both_shards(&n, "alice", "chat");
    let mut bob = subscriber(n.server.addr, "bob", "chat");
    let mut stream = event_stream(n.server.addr, "bob", "chat");
    let mut alice_stream = event_stream(n.server.addr, "alice", "chat");

    let (status, body) = curl(
        &[
            "-H",
            &bearer(),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"topic":"chat","data":{"n":1}}"#,
        ],
        &format!("http://{}/api/publish", n.api),
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["published"], json!(1));
    let position = &answer["positions"][0];
    assert_eq!(position["topic"], json!("chat"), "{answer}");
    let offset = position["offset"].as_u64().expect("an offset");
    for ws in alice.iter_mut().chain([&mut bob]) {
        assert_eq!(delivered(ws, "chat", &json!({"n": 1})), offset);
    }
    // The event stream gets it too, the same message.
    let event = event_with(&mut stream, r#""n":1"#);
    assert!(event.contains(&format!(r#""offset":{offset}"#)), "{event}");

    // Several topics at once; one of them has no subscriber.
    let (status, answer) = post(
        n.api,
        "/api/publish",
        &json!({"topics": ["chat", "news.x"], "data": "two"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"], json!(2));
    assert_eq!(answer["positions"].as_array().unwrap().len(), 2, "{answer}");
    for ws in alice.iter_mut().chain([&mut bob]) {
        assert_eq!(delivered(ws, "chat", &json!("two")), offset + 1);
    }

    let (status, answer) = get(n.api, "/api/topics");
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"topics": [{"topic": "chat", "subscribers": alice.len() + 3}]})
    );
    // Bob's WebSocket and his event stream.
    let (_, answer) = get(n.api, "/api/connections?user=bob");
    assert_eq!(answer["count"], json!(2), "{answer}");
    for conn in answer["connections"].as_array().unwrap() {
        assert_eq!(
            (conn["peer"].as_str(), conn["topics"].as_u64()),
            (Some("127.0.0.1"), Some(1)),
            "{answer}"
        );
        assert!(conn["exp"].as_u64().is_some(), "{answer}");
    }

    let (status, answer) = post(n.api, "/api/disconnect", &json!({"user": "alice"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["closed"], json!(alice.len() + 1), "{answer}");
    for ws in &mut alice {
        assert_eq!(close_code(ws), 4010);
    }
    // Her event stream ends too.
    let mut rest = Vec::new();
    alice_stream
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Read::read_to_end(&mut alice_stream, &mut rest).expect("the stream ends");
    let (_, answer) = get(n.api, "/api/connections?user=alice");
    assert_eq!(answer["count"], json!(0), "{answer}");
    // Bob is still subscribed and served.
    let (status, _) = post(n.api, "/api/publish", &json!({"topic": "chat", "data": 3}));
    assert_eq!(status, 200);
    delivered(&mut bob, "chat", &json!(3));
    // A code and reason of the caller's own.
    let mut again = subscriber(n.server.addr, "alice", "chat");
    let (_, answer) = post(
        n.api,
        "/api/disconnect",
        &json!({"user": "alice", "code": 4999, "reason": "banned"}),
    );
    assert_eq!(answer["closed"], json!(1), "{answer}");
    assert_eq!(close_code(&mut again), 4999);
    assert!(support::metric(n.server.addr, "surge_api_requests_total{status=\"200\"}") >= 8);
}

/// Two nodes through redis-server: a publish on one node's API reaches
/// the other's subscribers at the position Redis gave it, which the
/// answer reports, and a disconnect there closes alice's
/// connection on both nodes and no one else's.
#[test]
fn publish_and_disconnect_cross_nodes_through_redis() {
    let port = free_port();
    let _redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let flags = ["--redis-url", &url, "--shards", "1", "--history-size", "10"];
    let a = node(&flags);
    let b = node(&flags);
    let mut alice_a = subscriber(a.server.addr, "alice", "chat");
    let mut alice_b = subscriber(b.server.addr, "alice", "chat");
    let mut bob_b = subscriber(b.server.addr, "bob", "chat");
    // The other node's listener is subscribed once a publish round-trips.
    let (status, answer) = post(a.api, "/api/publish", &json!({"topic": "chat", "data": 1}));
    assert_eq!(status, 200, "{answer}");
    // The position Redis gave it, which every node's subscribers see.
    let position = &answer["positions"][0];
    assert_eq!(position["topic"], json!("chat"), "{answer}");
    let offset = position["offset"].as_u64().unwrap();
    for ws in [&mut alice_a, &mut alice_b, &mut bob_b] {
        assert_eq!(delivered(ws, "chat", &json!(1)), offset);
    }
    let (status, answer) = post(a.api, "/api/disconnect", &json!({"user": "alice"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"user": "alice", "closed": 1, "relayed": true})
    );
    assert_eq!(close_code(&mut alice_a), 4010);
    assert_eq!(close_code(&mut alice_b), 4010);
    let (status, _) = post(a.api, "/api/publish", &json!({"topic": "chat", "data": 2}));
    assert_eq!(status, 200);
    delivered(&mut bob_b, "chat", &json!(2));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, answer) = get(b.api, "/api/connections?user=alice");
        if answer["count"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` raw and reads the whole answer: status, head, JSON body.
fn raw(api: SocketAddr, request: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before all of it is written.
    let _ = s.write_all(request);
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8(text).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text:?}"));
    let status = head[9..12].parse().unwrap();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}"));
    (status, head.to_owned(), body)
}

fn request(method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every mistake gets its own status and a JSON `error` that says what is
/// wrong, and each is counted by status in /metrics.
#[test]
fn every_mistake_is_answered_precisely() {
    let n = node(&["--shards", "1", "--api-max-body", "1024"]);
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let json_auth = format!("{auth}Content-Type: application/json\r\n");
    let publish = r#"{"topic":"a","data":1}"#;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (request("GET", "/api/topics", "", ""), 401, "missing Authorization"),
        (
            request("GET", "/api/topics", "Authorization: Bearer wrong-key-0123456789\r\n", ""),
            401,
            "wrong API key",
        ),
        (
            request("GET", "/api/topics", &format!("Authorization: Basic {KEY}\r\n"), ""),
            401,
            "must be Bearer",
        ),
        (request("GET", "/api/nope", &auth, ""), 404, "no endpoint /api/nope"),
        (request("GET", "/api/publish", &auth, ""), 405, "POST only"),
        (request("DELETE", "/api/topics", &auth, ""), 405, "GET only"),
        (request("POST", "/api/publish", &json_auth, "{"), 400, "cut short"),
        (request("POST", "/api/publish", &json_auth, "nope"), 400, "not JSON"),
        (
            request("POST", "/api/publish", &json_auth, r#"{"topic":"a"}"#),
            400,
            "missing field \"data\"",
        ),
        (
            request("POST", "/api/publish", &json_auth, r#"{"data":1}"#),
            400,
            "missing field \"topic\"",
        ),
        (
            request("POST", "/api/publish", &json_auth, r#"{"topic":"a","data":1,"x":1}"#),
            400,
            "unknown field `x`",
        ),
        (request("POST", "/api/publish", &auth, publish), 415, "application/json"),
        (
            format!("POST /api/publish HTTP/1.1\r\n{json_auth}\r\n").into_bytes(),
            411,
            "Content-Length",
        ),
        (
            format!("POST /api/publish HTTP/1.1\r\n{json_auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .into_bytes(),
            411,
            "chunked",
        ),
        (
            request("POST", "/api/publish", &json_auth, &format!(r#"{{"topic":"a","data":"{}"}}"#, "x".repeat(2000))),
            413,
            "at most 1024 bytes",
        ),
        (
            request("POST", "/api/publish", &json_auth, &format!(r#"{{"topic":"{}","data":1}}"#, "t".repeat(129))),
            422,
            "topic names are 1 to 128 bytes",
        ),
        (
            request("POST", "/api/disconnect", &json_auth, r#"{"user":"a","code":1006}"#),
            422,
            "\"code\" must be",
        ),
        (request("POST", "/api/disconnect", &json_auth, r#"{}"#), 400, "missing field \"user\""),
        (request("GET", "/api/connections", &auth, ""), 400, "missing query parameter"),
        (
            format!("GET /api/topics HTTP/1.1\r\n{auth}X: {}\r\n\r\n", "a".repeat(9000)).into_bytes(),
            431,
            "request head",
        ),
        (b"GET /api/topics HTTP/1.0\r\n\r\n".to_vec(), 400, "HTTP/1.1"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400, "malformed"),
    ];
    for (req, status, says) in &cases {
        let (got, head, body) = raw(n.api, req);
        let shown = String::from_utf8_lossy(&req[..req.len().min(80)]).into_owned();
        assert_eq!(got, *status, "{shown}: {head} {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(
            error.contains(says),
            "{shown}: {error:?} does not say {says:?}"
        );
        if *status == 401 {
            assert!(head.contains("\r\nWWW-Authenticate: Bearer"), "{head}");
        }
        if *status == 405 {
            assert!(head.contains("\r\nAllow: "), "{head}");
        }
    }
    // None of them was carried out.
    assert_eq!(
        support::metric(n.server.addr, "surge_api_requests_total{status=\"200\"}"),
        0
    );
    assert_eq!(
        support::metric(n.server.addr, "surge_api_requests_total{status=\"401\"}"),
        3
    );
    assert_eq!(
        support::metric(n.server.addr, "surge_api_requests_total{status=\"413\"}"),
        1
    );

    // A shard whose inbox cannot take the message: 503, nothing published.
    let tight = node(&["--shards", "1", "--inbox-bytes", "200"]);
    let big = json!({"topic": "a", "data": "z".repeat(300)});
    let mut resp = agent()
        .post(format!("http://{}/api/publish", tight.api))
        .header("Authorization", format!("Bearer {KEY}"))
        .content_type("application/json")
        .send(big.to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("inboxes are full; nothing was published"),
        "{text}"
    );

    // curl: a body over the bound is refused (curl sees the answer even
    // though the server never reads the body), and a missing key.
    let big = tokens().dir.join("big.json");
    let data = "y".repeat(64 << 10);
    std::fs::write(&big, format!(r#"{{"topic":"a","data":"{data}"}}"#)).unwrap();
    let (status, body) = curl(
        &[
            "-H",
            &bearer(),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", big.display()),
        ],
        &format!("http://{}/api/publish", n.api),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 1024 bytes"), "{body}");
    let (status, body) = curl(&["-i"], &format!("http://{}/api/topics", n.api));
    assert_eq!(status, 401);
    assert!(
        body.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{body}"
    );
}

/// A client that sends half a head and stalls holds up no other request,
/// and is answered 408 once `--api-timeout-ms` has passed.
#[test]
fn a_slow_client_holds_up_nobody() {
    let n = node(&["--shards", "1", "--api-timeout-ms", "1500"]);
    let mut slow = TcpStream::connect(n.api).unwrap();
    slow.write_all(b"POST /api/publish HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut slow_body = TcpStream::connect(n.api).unwrap();
    slow_body
        .write_all(
            format!(
                "POST /api/publish HTTP/1.1\r\n{}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"topic\"",
                bearer()
            )
            .as_bytes(),
        )
        .unwrap();
    let started = Instant::now();
    let (status, _) = get(n.api, "/api/topics");
    assert_eq!(status, 200);
    let (status, _) = post(n.api, "/api/publish", &json!({"topic": "a", "data": 1}));
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for s in [&mut slow, &mut slow_body] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

/// The flags are checked at start and are config keys like every other,
/// in an `[api]` section too, shown by --check-config.
#[test]
fn api_settings_are_checked_and_are_config_keys() {
    let surge = env!("CARGO_BIN_EXE_surge");
    let key = file("api.key");
    let run = |args: &[&str]| {
        let out = support::output_within(
            Command::new(surge)
                .arg("serve")
                .args(args)
                .arg("--check-config"),
            Duration::from_secs(10),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["--api-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--api-listen needs --api-key-file"), "{err}");
    let short = tokens().dir.join("short.key");
    std::fs::write(&short, "abc\n").unwrap();
    let (code, _, err) = run(&[
        "--api-listen",
        "127.0.0.1:0",
        "--api-key-file",
        short.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("3-byte key; at least 16"), "{err}");
    let config = tokens().dir.join("api.toml");
    std::fs::write(
        &config,
        format!("[api]\nlisten = \"127.0.0.1:9901\"\nkey-file = {key:?}\nmax-body = 4096\n"),
    )
    .unwrap();
    let (code, out, err) = run(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "api-listen = \"127.0.0.1:9901\"",
        "api-max-body = 4096",
        "api-max-conns = 64",
    ] {
        assert!(out.contains(line), "{line} not in {out}");
    }
    assert!(!out.contains(KEY), "the key itself is never printed");
}

/// `--api-max-conns 2`: one client address may hold one connection, the
/// whole server two; past either cap the answer is 503 at once.
#[test]
fn connections_are_capped_in_all_and_per_client() {
    let n = node(&["--shards", "1", "--api-max-conns", "2"]);
    let stall = |from: u8| {
        let mut s = support::connect_from(support::hub::loopback(from), n.api);
        s.write_all(b"GET /api/topics HTTP/1.1\r\n").unwrap();
        s
    };
    let answer_from = |from: u8| {
        let mut s = support::connect_from(support::hub::loopback(from), n.api);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&request(
            "GET",
            "/api/topics",
            &format!("Authorization: Bearer {KEY}\r\n"),
            "",
        ));
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    let _first = stall(1);
    // The accept thread counts the stalled connection before it takes
    // the next one.
    let busy = answer_from(1);
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
    assert!(busy.contains("Retry-After: 1"), "{busy}");
    let second = stall(2);
    assert!(answer_from(3).starts_with("HTTP/1.1 503 "));
    // Once the second stalled connection ends, another client is served
    // while the first still holds all its address may.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !answer_from(3).starts_with("HTTP/1.1 200 ") {
        assert!(Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answer_from(1).starts_with("HTTP/1.1 503 "));
    assert!(support::metric(n.server.addr, "surge_api_requests_total{status=\"503\"}") >= 3);
}
