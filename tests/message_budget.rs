//! Messages still arriving cannot pin memory: a shard's message budget
//! bounds what partial (fragmented, slow or compressed) messages hold, a
//! message has a deadline that pings do not extend, the ticker never
//! assembles what clients send, and /hub has a small message limit of its
//! own. Measured on the server process (VmHWM), the close codes clients
//! see and /metrics, on both drivers.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{
    connect, frame, metric, proc_status_kib, read_response_head, upgrade_request, wait_metric,
    Server,
};

const BACKENDS: [&str; 2] = ["epoll", "uring"];
const MIB: u64 = 1 << 20;

/// A `/proc/PID/status` field in bytes (`VmHWM`, `VmRSS`).
fn vm(pid: u32, field: &str) -> u64 {
    proc_status_kib(pid, field) * 1024
}

/// Upgrades on `path` with `extra` headers; the stream and the 101 head.
fn open(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut s = connect(addr);
    s.write_all(upgrade_request(path, extra).as_bytes())
        .unwrap();
    let (status, head) = read_response_head(&mut s);
    assert_eq!(status, 101, "{head}");
    (s, head)
}

/// Reads frames until a close within `within`: its code and reason, or
/// `None` if none came (pongs, ticks and echoes are skipped).
fn close_within(s: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((first, payload, used)) = parse_frame(&buf) {
            buf.drain(..used);
            if first & 0x0F == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// One unmasked server frame at the start of `buf`: first byte, payload,
/// bytes used.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, head) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    (buf.len() >= head + len).then(|| (buf[0], buf[head..head + len].to_vec(), head + len))
}

/// Sends every stream its bytes at once, a thread each; errors (a server
/// that has closed) are ignored.
fn send_all(conns: &[TcpStream], wire: &[u8]) {
    std::thread::scope(|scope| {
        for s in conns {
            let mut s = s.try_clone().unwrap();
            scope.spawn(move || {
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                let _ = s.write_all(wire);
            });
        }
    });
}

/// `surge_closes_total{code="CODE"}`.
fn closes(addr: SocketAddr, code: &str) -> u64 {
    let (_, _, body) = support::http_get(addr, "/metrics");
    let line = format!("surge_closes_total{{code=\"{code}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.parse().unwrap())
}

/// 64 connections each send `wire` (a message that never completes) to a
/// server with an 8 MiB budget: the process stays near its baseline, the
/// connections over the budget see 1013, and /metrics shows both.
fn partial_messages_stay_within_the_budget(backend: &str, extra: &str, wire: &[u8]) {
    let server = Server::start(&[
        "echo",
        "--backend",
        backend,
        "--shards",
        "1",
        "--message-budget",
        "8388608",
    ]);
    let conns: Vec<TcpStream> = (0..64).map(|_| open(server.addr, "/", extra).0).collect();
    let before = vm(server.pid(), "VmHWM");
    send_all(&conns, wire);
    let mut refused = 0;
    for s in &conns {
        let mut s = s.try_clone().unwrap();
        if let Some((code, reason)) = close_within(&mut s, Duration::from_millis(300)) {
            assert_eq!(code, 1013, "{backend}: {reason}");
            assert!(reason.contains("budget"), "{backend}: reason {reason:?}");
            refused += 1;
        }
    }
    let grown = vm(server.pid(), "VmHWM").saturating_sub(before);
    assert!(
        grown < 24 * MIB,
        "{backend}: 64 partial 4 MiB messages grew the server by {} MiB",
        grown / MIB
    );
    assert!(refused >= 60, "{backend}: only {refused} of 64 saw 1013");
    let held = metric(server.addr, "surge_message_bytes_held");
    assert!(
        held > 0 && held <= 8 * MIB,
        "{backend}: {held} bytes held under an 8 MiB budget"
    );
    assert_eq!(
        metric(server.addr, "surge_message_budget_closes_total"),
        refused
    );
    drop(conns);
    assert_eq!(
        wait_metric(server.addr, "surge_message_bytes_held", |v| v == 0),
        0
    );
}

#[test]
fn fragmented_messages_stay_within_the_shard_budget() {
    // The first frame of a 4 MiB message: no FIN, so it never completes.
    let wire = frame(0x02, &vec![0x5A; 4 << 20]);
    for backend in BACKENDS {
        partial_messages_stay_within_the_budget(backend, "", &wire);
    }
}

#[test]
fn compressed_fragments_that_inflate_big_stay_within_the_shard_budget() {
    // 4 MiB of zeros compress to a few KiB: RSV1, no FIN, sync-flushed so
    // that it all inflates at once.
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0; 4 << 20]).unwrap();
    encoder.flush().unwrap();
    let compressed = encoder.get_ref().clone();
    assert!(compressed.len() < 64 << 10);
    let wire = frame(0x42, &compressed);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    for backend in BACKENDS {
        partial_messages_stay_within_the_budget(backend, offer, &wire);
    }
}

#[test]
fn a_message_kept_alive_by_pings_is_closed_at_its_deadline() {
    for backend in BACKENDS {
        let server = Server::start(&["echo", "--backend", backend, "--message-timeout-ms", "1000"]);
        let (mut slow, _) = open(server.addr, "/", "");
        let (mut pinger, _) = open(server.addr, "/", "");
        slow.write_all(&frame(0x01, b"the start of a message "))
            .unwrap();
        let start = Instant::now();
        let mut closed = None;
        while closed.is_none() && start.elapsed() < Duration::from_secs(4) {
            slow.write_all(&frame(0x89, b"still here")).unwrap();
            pinger.write_all(&frame(0x89, b"still here")).unwrap();
            closed = close_within(&mut slow, Duration::from_millis(150));
        }
        let took = start.elapsed();
        let (code, reason) = closed.unwrap_or_else(|| panic!("{backend}: pings kept it open"));
        assert_eq!(
            (code, reason.as_str()),
            (1008, "message timeout"),
            "{backend}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{backend}: closed after {took:?}"
        );
        // Pings alone, with no message in progress, keep a connection open.
        assert_eq!(close_within(&mut pinger, Duration::from_millis(100)), None);
        pinger.write_all(&frame(0x81, b"hello")).unwrap();
        let mut buf = [0u8; 64];
        pinger
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = pinger.read(&mut buf).unwrap();
        assert!(buf[..n].windows(5).any(|w| w == b"hello"), "{backend}");
        assert_eq!(closes(server.addr, "1008"), 1, "{backend}");
    }
}

#[test]
fn a_ticker_client_sending_a_huge_message_holds_nothing() {
    for backend in BACKENDS {
        let server = Server::start(&[
            "ticker",
            "--symbols",
            "1",
            "--rate",
            "1",
            "--backend",
            backend,
            "--message-timeout-ms",
            "0",
        ]);
        let (mut s, _) = open(server.addr, "/ticker", "");
        let before = vm(server.pid(), "VmHWM");
        // 12 MiB in 64 KiB fragments: under --max-message, so today it is
        // assembled in full for a route that never reads it.
        let piece = vec![0x33; 64 << 10];
        let mut wire = frame(0x02, &piece);
        for _ in 1..192 {
            wire.extend(frame(0x00, &piece));
        }
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&wire).unwrap();
        // Ticks flow meanwhile; make sure the server has read it all.
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(server.addr, "surge_bytes_received_total") < 12 * MIB
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let grown = vm(server.pid(), "VmHWM").saturating_sub(before);
        assert!(
            grown < 4 * MIB,
            "{backend}: a 12 MiB message to the ticker grew the server by {} KiB",
            grown >> 10
        );
        assert_eq!(metric(server.addr, "surge_message_bytes_held"), 0);
        // The message ends and the connection carries on.
        s.write_all(&frame(0x80, b"")).unwrap();
        s.write_all(&frame(0x88, &1000u16.to_be_bytes())).unwrap();
        let closed = close_within(&mut s, Duration::from_secs(5));
        assert_eq!(closed.map(|c| c.0), Some(1000), "{backend}");
    }
}

/// A hub request of 100 KiB: a publish, valid JSON.
fn big_publish() -> Vec<u8> {
    let data = "x".repeat(100 << 10);
    format!(r#"{{"op":"publish","topic":"big","data":"{data}"}}"#).into_bytes()
}

/// Whether the hub still answers on `s`: a subscribe gets its ack.
fn hub_answers(s: &mut TcpStream) -> bool {
    s.write_all(&frame(0x81, br#"{"op":"subscribe","topics":["t"]}"#))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while Instant::now() < deadline {
        while let Some((first, payload, used)) = parse_frame(&buf) {
            buf.drain(..used);
            if first & 0x0F == 0x8 {
                return false;
            }
            if payload.windows(10).any(|w| w == b"subscribed") {
                return true;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    false
}

#[test]
fn the_hub_refuses_a_100_kib_message_unless_its_route_allows_it() {
    let dir = std::env::temp_dir().join(format!("surge-hub-max-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        "[[routes]]\npath = \"/hub\"\nkind = \"hub\"\nmax-message = 200000\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for backend in BACKENDS {
        let server = Server::start(&["serve", "--backend", backend]);
        let (mut s, _) = open(server.addr, "/hub", "");
        s.write_all(&frame(0x81, &big_publish())).unwrap();
        let closed = close_within(&mut s, Duration::from_secs(5));
        assert_eq!(
            closed,
            Some((1009, "message over 65536 bytes".to_owned())),
            "{backend}"
        );
        // /echo keeps the server-wide limit.
        let (mut echo, _) = open(server.addr, "/echo", "");
        echo.write_all(&frame(0x82, &vec![1; 100 << 10])).unwrap();
        let (first, echoed) = support::read_frame(&mut echo);
        assert_eq!((first, echoed.len()), (0x82, 100 << 10), "{backend}");

        for args in [
            vec!["serve", "--backend", backend, "--config", config],
            vec!["serve", "--backend", backend, "--hub-max-message", "200000"],
        ] {
            let server = Server::start(&args);
            let (mut s, _) = open(server.addr, "/hub", "");
            s.write_all(&frame(0x81, &big_publish())).unwrap();
            assert!(hub_answers(&mut s), "{args:?}: the raised limit took");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_defaults_leave_room_for_a_full_size_message() {
    // Autobahn 9.x sends messages of up to 16 MiB, --max-message's default.
    let piece = vec![0x61; 1 << 20];
    let mut wire = frame(0x01, &piece);
    for i in 1..16 {
        wire.extend(frame(if i == 15 { 0x80 } else { 0x00 }, &piece));
    }
    for backend in BACKENDS {
        let server = Server::start(&["echo", "--backend", backend]);
        let (mut s, _) = open(server.addr, "/", "");
        let mut writer = s.try_clone().unwrap();
        let wire = wire.clone();
        let sent = std::thread::spawn(move || writer.write_all(&wire).unwrap());
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (first, echoed) = support::read_frame(&mut s);
        sent.join().unwrap();
        assert_eq!((first, echoed.len()), (0x81, 16 << 20), "{backend}");
        assert!(echoed.iter().all(|&b| b == 0x61));
        assert_eq!(metric(server.addr, "surge_message_budget_closes_total"), 0);
    }
}
