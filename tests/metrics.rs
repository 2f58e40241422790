//! `/metrics` and `/healthz` read with a real HTTP client, on both drivers:
//! every counter moves with the traffic that should move it, closes are
//! counted once by the code that ended them, and a draining server tells
//! health checks so while its listener still answers.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

const BACKENDS: [&str; 2] = ["epoll", "uring"];

/// Status, `Content-Type` and body of `GET path`.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let (status, headers, body) = http_get(addr, path);
    let content_type = header(&headers, "content-type")
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body)
}

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    fn take(addr: SocketAddr) -> Self {
        let (status, content_type, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        Self(body)
    }

    /// A family summed over its labels; `name` may carry labels of its own
    /// (`surge_closes_total{code="1000"}`) to pick one series.
    fn get(&self, name: &str) -> u64 {
        let (family, labels) = name
            .split_once('{')
            .map_or((name, None), |(f, l)| (f, Some(l.trim_end_matches('}'))));
        let values: Vec<u64> = self
            .0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                let (f, l) = series
                    .split_once('{')
                    .map_or((*series, ""), |(f, l)| (f, l.trim_end_matches('}')));
                f == family && labels.is_none_or(|want| l.split(',').any(|kv| kv == want))
            })
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert!(!values.is_empty(), "no {name} in:\n{}", self.0);
        values.iter().sum()
    }
}

/// Scrapes until `check` holds for `name` (counters are published once per
/// loop turn, so a scrape may trail an event by a moment).
fn wait_for(addr: SocketAddr, name: &str, check: impl Fn(u64) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = Scrape::take(addr);
        let v = scrape.get(name);
        if check(v) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{name} stuck at {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ws_client(addr: SocketAddr, path: &str) -> WebSocket<Patient> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (ws, response) =
        tungstenite::client(format!("ws://{addr}{path}").as_str(), Patient(stream))
            .unwrap_or_else(|e| panic!("upgrade {path}: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

#[test]
fn counters_follow_connections_messages_and_closes() {
    const N: u64 = 5;
    for backend in BACKENDS {
        let server = Server::start(&["echo", "--backend", backend, "--shards", "2"]);
        let addr = server.addr;
        let before = Scrape::take(addr);
        assert_eq!(
            before.get(&format!("surge_backend{{backend=\"{backend}\"}}")),
            1
        );
        assert_eq!(before.get("surge_draining"), 0);
        // The scrape's own connection is open while it is answered.
        let idle = before.get("surge_connections_open");

        let mut clients: Vec<_> = (0..N).map(|_| ws_client(addr, "/echo")).collect();
        wait_for(addr, "surge_connections_open", |v| v == idle + N);
        for (i, ws) in clients.iter_mut().enumerate() {
            let text = format!("hello {i}");
            ws.send(Message::text(text.clone())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::text(text));
        }
        let after = wait_for(addr, "surge_messages_sent_total", |v| v >= N);
        for (name, at_least) in [
            ("surge_handshakes_total", N),
            ("surge_messages_received_total", N),
            ("surge_messages_sent_total", N),
            // Every echo is at least a 13-byte masked frame in, 9 out.
            ("surge_bytes_received_total", 13 * N),
            ("surge_bytes_sent_total", 9 * N),
        ] {
            let moved = after.get(name) - before.get(name);
            assert!(moved >= at_least, "{backend}: {name} moved {moved}");
        }

        for mut ws in clients {
            ws.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .unwrap();
            // Read until the server's answer completes the handshake.
            while ws.read().is_ok() {}
        }
        let closed = wait_for(addr, "surge_connections_open", |v| v == idle);
        assert_eq!(
            closed.get("surge_closes_total{code=\"1000\"}"),
            N,
            "{backend}"
        );
        assert_eq!(
            closed.get("surge_closes_total{code=\"1006\"}"),
            0,
            "{backend}"
        );

        // A client that vanishes with a reset ends its connection abnormally.
        let ws = ws_client(addr, "/echo");
        let stream = ws.get_ref().try_clone().unwrap();
        wait_for(addr, "surge_connections_open", |v| v == idle + 1);
        drop(ws);
        reset(stream);
        let reset_seen = wait_for(addr, "surge_closes_total{code=\"1006\"}", |v| v == 1);
        assert_eq!(reset_seen.get("surge_closes_total{code=\"1000\"}"), N);
        wait_for(addr, "surge_connections_open", |v| v == idle);

        // A close the server starts is counted by its code, once.
        let mut ws = ws_client(addr, "/echo");
        // A text frame that is not UTF-8, which tungstenite would not send.
        std::io::Write::write_all(ws.get_mut(), &text(&[0xC3, 0x28])).unwrap();
        wait_for(addr, "surge_closes_total{code=\"1007\"}", |v| v == 1);
        drop(ws);
        let end = wait_for(addr, "surge_connections_open", |v| v == idle);
        assert_eq!(end.get("surge_closes_total{code=\"1006\"}"), 1, "{backend}");
        assert_eq!(end.get("surge_closes_total"), N + 2, "{backend}");
    }
}

#[test]
fn admission_refusals_are_labelled_by_reason() {
    for backend in BACKENDS {
        let server = Server::start(&[
            "echo",
            "--backend",
            backend,
            "--max-conns-per-ip",
            "1",
            "--tarpit-ms",
            "0",
        ]);
        let addr = server.addr;
        let label = "surge_admission_rejected_total{reason=\"per_ip_cap\"}";
        assert_eq!(Scrape::take(addr).get(label), 0);
        let _held = ws_client(addr, "/echo");
        let mut s = connect(addr);
        std::io::Write::write_all(&mut s, upgrade_request("/echo", "").as_bytes()).unwrap();
        assert_eq!(read_response_head(&mut s).0, 503, "{backend}");
        let scrape = Scrape::take(addr);
        assert_eq!(scrape.get(label), 1, "{backend}");
        assert_eq!(scrape.get("surge_admission_rejected_total"), 1, "{backend}");
    }
}

#[test]
fn healthz_answers_503_while_draining_and_the_listener_stays_up() {
    for backend in BACKENDS {
        let server = Server::start(&[
            "echo",
            "--backend",
            backend,
            "--shards",
            "4",
            "--drain-ms",
            "3000",
        ]);
        let addr = server.addr;
        assert_eq!(
            get(addr, "/healthz"),
            (200, "text/plain; charset=utf-8".into(), "ok\n".into())
        );
        let clients: Vec<TcpStream> = (0..3).map(|_| open_ws(addr)).collect();
        // A request caught half-sent by the signal is still answered.
        let mut half_sent = connect(addr);
        std::io::Write::write_all(&mut half_sent, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(2);
        let (status, _, body) = loop {
            let answer = get(addr, "/healthz");
            if answer.0 != 200 || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!((status, body.as_str()), (503, "draining\n"), "{backend}");
        // Every shard's listener keeps answering while any shard drains,
        // including shards that hold none of the connections.
        for _ in 0..20 {
            assert_eq!(get(addr, "/healthz").0, 503, "{backend}");
        }
        assert_eq!(Scrape::take(addr).get("surge_draining"), 1, "{backend}");
        std::io::Write::write_all(&mut half_sent, b"\r\n").unwrap();
        let (status, head) = read_response_head(&mut half_sent);
        assert_eq!(status, 503, "{backend}: {head}");
        // New upgrades are turned away with a status a client can act on.
        let mut s = connect(addr);
        std::io::Write::write_all(&mut s, upgrade_request("/echo", "").as_bytes()).unwrap();
        let (status, head) = read_response_head(&mut s);
        assert_eq!(status, 503, "{backend}: {head}");
        assert!(head.contains("Retry-After: "), "{backend}: {head}");
        // The open connections still get their 1001 within the window.
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut s| {
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let code = read_close(&mut s);
                    let _ = std::io::Write::write_all(&mut s, &close(1001, b""));
                    code
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), Some(1001), "{backend}");
        }
        let status = server.terminate();
        assert!(status.success(), "{backend}: {status:?}");
    }
}
