//! The opening handshake over real sockets: every RFC 6455 §4.2 rule, and
//! the HTTP answers a listener gives to everything that is not an upgrade.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

fn status_of(server: &Server, request: &[u8]) -> (u16, String) {
    let mut s = connect(server.addr);
    s.write_all(request).unwrap();
    let answer = read_response_head(&mut s);
    if answer.0 != 101 {
        // Every refusal ends the exchange: the server closes TCP.
        assert_tcp_closed(&mut s, Duration::from_secs(5));
    }
    answer
}

#[test]
fn valid_upgrade_gets_the_rfc_accept_value() {
    let server = Server::start(&["echo"]);
    let (status, head) = status_of(&server, upgrade_request("/chat", "").as_bytes());
    assert_eq!(status, 101);
    assert!(
        head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        "{head}"
    );
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket\r\n"));
    assert!(!head.contains("Sec-WebSocket-Protocol"));
}

#[test]
fn header_tokens_are_case_insensitive_comma_lists() {
    let server = Server::start(&["echo"]);
    let req = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
         sec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\r\n"
    );
    assert_eq!(status_of(&server, req.as_bytes()).0, 101);
}

#[test]
fn refusals_carry_precise_statuses() {
    let server = Server::start(&["echo"]);
    let good = upgrade_request("/", "");
    let cases: Vec<(String, u16, &str)> = vec![
        (good.replace("GET", "POST"), 405, "Allow: GET"),
        (good.replace("HTTP/1.1", "HTTP/1.0"), 505, ""),
        (good.replace("Host: localhost\r\n", ""), 400, "missing Host"),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
            "Connection",
        ),
        (
            good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 12"),
            426,
            "Sec-WebSocket-Version: 13",
        ),
        (
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
            426,
            "Sec-WebSocket-Version: 13",
        ),
        (good.replace(KEY, "c2hvcnQ="), 400, "Sec-WebSocket-Key"),
        (
            good.replace(
                "Sec-WebSocket-Version: 13\r\n",
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: YmJiYmJiYmJiYmJiYmJiYg==\r\n",
            ),
            400,
            "more than one Sec-WebSocket-Key",
        ),
        (
            good.replace("Host: localhost\r\n", "Host: localhost\r\nHost: other\r\n"),
            400,
            "more than one Host",
        ),
        (
            good.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            426,
            "Upgrade: websocket",
        ),
        ("BREW / HTCPCP/1.0\r\n\r\n".into(), 400, ""),
        ("GET / HTTP/1.1\r\nBad Header\r\n\r\n".into(), 400, ""),
    ];
    for (request, status, must_contain) in cases {
        let mut s = connect(server.addr);
        s.write_all(request.as_bytes()).unwrap();
        let (got, head) = read_response_head(&mut s);
        assert_eq!(got, status, "request:\n{request}\nanswer:\n{head}");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        assert!(
            head.contains(must_contain) || body.contains(must_contain),
            "{must_contain:?} missing from:\n{head}{body}"
        );
        assert!(!body.is_empty(), "every refusal explains itself");
    }
}

#[test]
fn oversized_requests_get_431() {
    let server = Server::start(&["echo"]);
    let big = upgrade_request("/", &format!("X-Pad: {}\r\n", "a".repeat(9000)));
    assert_eq!(status_of(&server, big.as_bytes()).0, 431);
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        status_of(&server, upgrade_request("/", &many).as_bytes()).0,
        431
    );
    // A head that never ends is cut off at the limit, not buffered forever.
    let mut s = connect(server.addr);
    let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(10_000));
    let _ = s.write_all(endless.as_bytes());
    assert_eq!(read_response_head(&mut s).0, 431);
}

#[test]
fn request_may_arrive_one_byte_at_a_time() {
    let server = Server::start(&["echo"]);
    let mut s = connect(server.addr);
    for b in upgrade_request("/", "").as_bytes() {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(read_response_head(&mut s).0, 101);
    s.write_all(&text(b"after")).unwrap();
    assert_eq!(read_frame(&mut s), (0x81, b"after".to_vec()));
}

#[test]
fn first_frames_may_share_the_request_write() {
    let server = Server::start(&["echo"]);
    let mut s = connect(server.addr);
    let mut wire = upgrade_request("/", "").into_bytes();
    wire.extend(text(b"one"));
    wire.extend(binary(&[1, 2, 3]));
    s.write_all(&wire).unwrap();
    assert_eq!(read_response_head(&mut s).0, 101);
    assert_eq!(read_frame(&mut s), (0x81, b"one".to_vec()));
    assert_eq!(read_frame(&mut s), (0x82, vec![1, 2, 3]));
}

#[test]
fn subprotocol_is_one_the_client_offered_or_none() {
    let server = Server::start(&[
        "echo",
        "--subprotocol",
        "v2.chat",
        "--subprotocol",
        "v1.chat",
    ]);
    let pick = |offer: &str| {
        let (status, head) = status_of(&server, upgrade_request("/", offer).as_bytes());
        assert_eq!(status, 101);
        head.lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
            .map(str::to_owned)
    };
    // The client's order of preference wins among protocols both speak.
    assert_eq!(
        pick("Sec-WebSocket-Protocol: v1.chat, v2.chat\r\n").as_deref(),
        Some("v1.chat")
    );
    assert_eq!(
        pick("Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Protocol: v2.chat\r\n").as_deref(),
        Some("v2.chat")
    );
    assert_eq!(pick("Sec-WebSocket-Protocol: mqtt, stomp\r\n"), None);
    assert_eq!(pick(""), None);
}

#[test]
fn healthz_and_metrics_answer_plain_http() {
    let server = Server::start(&["echo"]);
    let mut s = connect(server.addr);
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let (status, _) = read_response_head(&mut s);
    assert_eq!(status, 200);
    let mut s = connect(server.addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response_head(&mut s).0, 200);
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    for name in [
        "surge_connections_open",
        "surge_handshakes_total",
        "surge_messages_received_total",
        "surge_messages_sent_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{body}"
        );
    }
}

#[test]
fn slow_handshakes_are_cut_off() {
    let server = Server::start(&["echo", "--handshake-timeout-ms", "300"]);
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert_tcp_closed(&mut s, Duration::from_secs(3));
}

#[test]
fn head_limits_are_inclusive_8_kib_and_100_lines() {
    let server = Server::start(&["echo"]);
    // The whole head, request line to the blank line, padded to a length.
    let padded = |total: usize| {
        let base = upgrade_request("/", "").len() + "X-Pad: \r\n".len();
        upgrade_request("/", &format!("X-Pad: {}\r\n", "a".repeat(total - base)))
    };
    assert_eq!(padded(8192).len(), 8192);
    assert_eq!(status_of(&server, padded(8192).as_bytes()).0, 101);
    assert_eq!(status_of(&server, padded(8193).as_bytes()).0, 431);
    // upgrade_request carries 5 header lines of its own.
    let lines = |n: usize| -> String { (0..n - 5).map(|i| format!("X-H{i}: v\r\n")).collect() };
    assert_eq!(
        status_of(&server, upgrade_request("/", &lines(100)).as_bytes()).0,
        101
    );
    assert_eq!(
        status_of(&server, upgrade_request("/", &lines(101)).as_bytes()).0,
        431
    );
}

#[test]
fn malformed_keys_get_400() {
    let server = Server::start(&["echo"]);
    for key in [
        "YWFhYWFhYWFhYWFhYWFh",         // 15 bytes
        "YWFhYWFhYWFhYWFhYWFhYWE=",     // 17 bytes
        "!!!!!!!!!!!!!!!!!!!!!!==",     // not base64
        "dGhlIHNhbXBsZSBub25jZQ",       // unpadded
        "dGhlIHNhbXBsZSBub25jZQ==dGhl", // trailing garbage
    ] {
        let (status, head) = status_of(
            &server,
            upgrade_request("/", "").replace(KEY, key).as_bytes(),
        );
        assert_eq!(status, 400, "key {key:?}:\n{head}");
    }
    let empty = upgrade_request("/", "").replace(KEY, "");
    assert_eq!(status_of(&server, empty.as_bytes()).0, 400);
}

#[test]
fn every_other_method_gets_405_and_every_version_but_13_gets_426() {
    let server = Server::start(&["echo"]);
    let good = upgrade_request("/", "");
    for method in ["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] {
        let (status, head) = status_of(&server, good.replacen("GET", method, 1).as_bytes());
        assert_eq!(status, 405, "{method}:\n{head}");
    }
    for version in ["8", "12", "14", "13, 8", "abc"] {
        let request = good.replace(
            "Sec-WebSocket-Version: 13",
            &format!("Sec-WebSocket-Version: {version}"),
        );
        let (status, head) = status_of(&server, request.as_bytes());
        assert_eq!(status, 426, "version {version:?}:\n{head}");
        assert!(
            head.contains("Sec-WebSocket-Version: 13\r\n"),
            "version {version:?}:\n{head}"
        );
    }
}

#[test]
fn plain_requests_get_health_or_an_upgrade_hint() {
    let server = Server::start(&["echo"]);
    let (status, _) = status_of(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    for path in ["/", "/echo", "/anything?x=1"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, head) = status_of(&server, request.as_bytes());
        assert_eq!(status, 426, "{path}:\n{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: websocket\r\n"),
            "{path}:\n{head}"
        );
    }
    // /healthz is also a WebSocket path like any other when asked to upgrade.
    assert_eq!(
        status_of(&server, upgrade_request("/healthz", "").as_bytes()).0,
        101
    );
}

#[test]
fn connection_and_upgrade_tokens_in_lists() {
    let server = Server::start(&["echo"]);
    let good = upgrade_request("/", "");
    for (connection, want) in [
        ("keep-alive, Upgrade", 101),
        ("keep-alive,upgrade", 101),
        ("UPGRADE", 101),
        ("Upgrade, keep-alive", 101),
        ("upgradex", 400),
        ("keep-alive", 400),
    ] {
        let request = good.replace("Connection: Upgrade", &format!("Connection: {connection}"));
        let (status, head) = status_of(&server, request.as_bytes());
        assert_eq!(status, want, "Connection: {connection}\n{head}");
    }
    let request = good.replace("Upgrade: websocket", "Upgrade: WebSocket");
    assert_eq!(status_of(&server, request.as_bytes()).0, 101);
}

#[test]
fn no_subprotocol_when_the_server_speaks_none() {
    let server = Server::start(&["echo"]);
    let offer = upgrade_request("/", "Sec-WebSocket-Protocol: chat, superchat\r\n");
    let (status, head) = status_of(&server, offer.as_bytes());
    assert_eq!(status, 101);
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
}

#[test]
fn subprotocol_names_are_exact_tokens() {
    let server = Server::start(&["echo", "--subprotocol", "chat"]);
    let pick = |offer: &str| {
        let (status, head) = status_of(
            &server,
            upgrade_request("/", &format!("Sec-WebSocket-Protocol: {offer}\r\n")).as_bytes(),
        );
        assert_eq!(status, 101, "{head}");
        head.lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
            .map(str::to_owned)
    };
    assert_eq!(pick("  other ,  chat ").as_deref(), Some("chat"));
    assert_eq!(pick("Chat"), None, "tokens are case-sensitive");
    assert_eq!(pick("chatty"), None);
    assert_eq!(pick("cha"), None);
}

#[test]
fn one_readiness_line_per_listener_and_all_of_them_serve() {
    let server = Server::start_listening(&["echo", "--backend", "epoll", "--shards", "1"], 2);
    assert_eq!(server.addrs.len(), 2);
    assert_ne!(server.addrs[0], server.addrs[1]);
    for (line, addr) in server.ready_lines.iter().zip(&server.addrs) {
        assert_eq!(
            line,
            &format!("surge listening on {addr} backend=epoll shards=1")
        );
        let mut s = open_ws(*addr);
        s.write_all(&text(b"hi")).unwrap();
        assert_eq!(read_frame(&mut s), (0x81, b"hi".to_vec()));
    }
}

#[test]
fn serve_routes_echo_hub_and_ticker_and_404s_the_rest() {
    let server = Server::start(&["serve"]);
    let upgrade = |path: &str| {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request(path, "").as_bytes()).unwrap();
        (read_response_head(&mut s).0, s)
    };
    let (status, mut s) = upgrade("/echo");
    assert_eq!(status, 101);
    s.write_all(&binary(b"served")).unwrap();
    assert_eq!(read_frame(&mut s), (0x82, b"served".to_vec()));
    assert_eq!(upgrade("/hub").0, 101);
    let (status, mut feed) = upgrade("/ticker/AAPL");
    assert_eq!(status, 101);
    let (op, tick) = read_frame(&mut feed);
    assert_eq!(op, 0x81);
    assert!(
        tick.starts_with(b"AAPL "),
        "{}",
        String::from_utf8_lossy(&tick)
    );
    for path in ["/", "/other", "/ticker/NOPE"] {
        assert_eq!(upgrade(path).0, 404, "{path}");
    }
}
