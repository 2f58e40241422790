//! Admission control against real sockets: per-client caps shared by every
//! shard, pacing, the tarpit and its bound, policy refusals, client
//! addresses from PROXY protocol and trusted X-Forwarded-For, slowloris,
//! the in-flight handshake bound and the spread-out shutdown drain.
//!
//! Distinct clients are distinct loopback source addresses (127.0.0.2, ...).

mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{
    connect, connect_from, metric, read_close, read_frame, read_response_head, read_resuming,
    reset, text, upgrade_request, wait_metric, Server,
};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Sends an upgrade request from `from` without waiting for the answer.
fn request_from(from: IpAddr, addr: SocketAddr, extra: &str) -> TcpStream {
    let mut s = connect_from(from, addr);
    s.write_all(upgrade_request("/", extra).as_bytes()).unwrap();
    s
}

/// The `Retry-After` value of a response head.
fn retry_after(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .unwrap_or_else(|| panic!("no Retry-After in {head}"))
        .trim()
        .parse()
        .unwrap()
}

/// Asserts the peer closed without sending a single byte.
fn assert_closed_silently(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match read_resuming(s, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected a silent close, got {other:?}"),
    }
}

#[test]
fn per_ip_cap_is_exact_across_shards_and_counts_return_to_zero() {
    const CAP: usize = 20;
    for backend in ["epoll", "uring"] {
        let server = Server::start(&[
            "echo",
            "--backend",
            backend,
            "--shards",
            "2",
            "--max-conns-per-ip",
            "20",
            "--tarpit-ms",
            "300",
        ]);
        let addr = server.addr;
        // All requests go out before any answer is read: a refused
        // client's answer is held back by the tarpit.
        let sent = Instant::now();
        let mut greedy: Vec<TcpStream> = (0..CAP + 50)
            .map(|_| request_from(ip(2), addr, ""))
            .collect();
        let others: Vec<TcpStream> = (0..CAP)
            .map(|_| {
                let mut s = request_from(ip(3), addr, "");
                assert_eq!(read_response_head(&mut s).0, 101, "{backend}");
                s
            })
            .collect();
        let mut admitted = Vec::new();
        let mut refused = 0;
        for mut s in greedy.drain(..) {
            let (status, head) = read_response_head(&mut s);
            match status {
                101 => admitted.push(s),
                503 => {
                    refused += 1;
                    assert!((5..=10).contains(&retry_after(&head)), "{head}");
                    assert!(
                        sent.elapsed() >= Duration::from_millis(150),
                        "answered early"
                    );
                }
                other => panic!("{backend}: unexpected {other}: {head}"),
            }
        }
        assert_eq!((admitted.len(), refused), (CAP, 50), "{backend}");
        assert_eq!(metric(addr, "surge_admission_connections"), 2 * CAP as u64);
        assert_eq!(metric(addr, "surge_admission_rejected_total"), 50);
        // The admitted connections work.
        admitted[0].write_all(&text(b"still here")).unwrap();
        assert_eq!(read_frame(&mut admitted[0]).1, b"still here");
        // Half end with a reset, half with a FIN; every count comes back.
        for (i, s) in admitted.into_iter().chain(others).enumerate() {
            if i % 2 == 0 {
                reset(s);
            } else {
                drop(s);
            }
        }
        wait_metric(addr, "surge_admission_connections", |v| v == 0);
        wait_metric(addr, "surge_admission_clients", |v| v == 0);
        // And the capped client gets its full cap again.
        let again: Vec<TcpStream> = (0..CAP)
            .map(|_| {
                let mut s = request_from(ip(2), addr, "");
                assert_eq!(read_response_head(&mut s).0, 101);
                s
            })
            .collect();
        assert_eq!(metric(addr, "surge_admission_connections"), CAP as u64);
        drop(again);
    }
}

#[test]
fn handshake_rate_per_ip_answers_429_with_a_wait() {
    let server = Server::start(&[
        "echo",
        "--handshake-rate-per-ip",
        "2",
        "--handshake-burst-per-ip",
        "5",
        "--tarpit-ms",
        "0",
    ]);
    let statuses: Vec<(u16, String)> = (0..8)
        .map(|_| read_response_head(&mut request_from(ip(4), server.addr, "")))
        .collect();
    let ok = statuses.iter().filter(|(s, _)| *s == 101).count();
    assert_eq!(ok, 5, "the burst passes, then the rate holds: {statuses:?}");
    for (status, head) in &statuses[5..] {
        assert_eq!(*status, 429, "{head}");
        // One slot frees every 500 ms: the hint is 1-2 s.
        assert!((1..=2).contains(&retry_after(head)), "{head}");
    }
    // Another client is not affected.
    assert_eq!(
        read_response_head(&mut request_from(ip(5), server.addr, "")).0,
        101
    );
    assert_eq!(metric(server.addr, "surge_admission_rejected_total"), 3);
}

#[test]
fn the_tarpit_delays_answers_and_its_bound_answers_the_oldest_first() {
    let server = Server::start(&[
        "echo",
        "--shards",
        "1",
        "--max-conns-per-ip",
        "1",
        "--tarpit-ms",
        "2000",
        "--tarpit-slots",
        "5",
    ]);
    let addr = server.addr;
    let mut holder = request_from(ip(6), addr, "");
    assert_eq!(read_response_head(&mut holder).0, 101);
    let start = Instant::now();
    let mut parked = Vec::new();
    for _ in 0..10 {
        parked.push(request_from(ip(6), addr, ""));
        // Arrival order is the eviction order.
        std::thread::sleep(Duration::from_millis(20));
    }
    // The five oldest are answered as soon as newer ones need their slots.
    for s in &mut parked[..5] {
        let (status, head) = read_response_head(s);
        assert_eq!(status, 503, "{head}");
    }
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(metric(addr, "surge_tarpit_parked"), 5);
    assert_eq!(metric(addr, "surge_admission_tarpit_evictions_total"), 5);
    // The rest wait out the delay: 1-3 s with jitter.
    for s in &mut parked[5..] {
        assert_eq!(read_response_head(s).0, 503);
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    assert!(waited < Duration::from_millis(4000), "{waited:?}");
    assert_eq!(metric(addr, "surge_admission_tarpitted_total"), 10);
    wait_metric(addr, "surge_tarpit_parked", |v| v == 0);
}

#[test]
fn policy_refusals_name_their_status() {
    let server = Server::start(&[
        "echo",
        "--allow-origin",
        "https://app.example.com",
        "--allow-origin",
        "https://*.example.org",
        "--auth-token",
        "s3cret",
        "--subprotocol",
        "chat",
        "--require-subprotocol",
    ]);
    let answer = |path: &str, extra: &str| {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request(path, extra).as_bytes())
            .unwrap();
        read_response_head(&mut s)
    };
    let good = "Sec-WebSocket-Protocol: chat\r\n";
    assert_eq!(answer("/?token=s3cret", good).0, 101);
    let with_origin = |o: &str| format!("{good}Origin: {o}\r\n");
    assert_eq!(
        answer("/?token=s3cret", &with_origin("https://app.example.com")).0,
        101
    );
    assert_eq!(
        answer("/?token=s3cret", &with_origin("https://a.example.org")).0,
        101
    );
    let (status, head) = answer("/?token=s3cret", &with_origin("https://evil.example.net"));
    assert_eq!(status, 403, "{head}");
    assert_eq!(answer("/", good).0, 401);
    assert_eq!(answer("/?token=wrong", good).0, 401);
    let bearer = format!("{good}Authorization: Bearer s3cret\r\n");
    assert_eq!(answer("/", &bearer).0, 101);
    assert_eq!(answer("/?token=s3cret", "").0, 400);
    assert_eq!(
        answer("/?token=s3cret", "Sec-WebSocket-Protocol: other\r\n").0,
        400
    );
    assert_eq!(metric(server.addr, "surge_admission_rejected_total"), 5);
    // Health checks are not upgrades and pass untouched.
    let mut s = connect(server.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response_head(&mut s).0, 200);
}

#[test]
fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let server = Server::start(&[
        "echo",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--max-conns-per-ip",
        "1",
        "--tarpit-ms",
        "0",
    ]);
    let addr = server.addr;
    let xff = |client: &str| format!("X-Forwarded-For: 6.6.6.6, {client}\r\n");
    let from = |src: u8, extra: &str| {
        let mut s = request_from(ip(src), addr, extra);
        let status = read_response_head(&mut s).0;
        (status, s)
    };
    // Through the trusted proxy, the forwarded client is what counts.
    let (status, _a) = from(1, &xff("203.0.113.7"));
    assert_eq!(status, 101);
    assert_eq!(from(1, &xff("203.0.113.7")).0, 503);
    let (status, _b) = from(1, &xff("203.0.113.8"));
    assert_eq!(status, 101);
    // From an untrusted peer the header is ignored: the peer is counted.
    let (status, _c) = from(7, &xff("203.0.113.7"));
    assert_eq!(status, 101);
    assert_eq!(from(7, &xff("203.0.113.99")).0, 503);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let server = Server::start(&["echo", "--auth-token", "s3cret"]);
    let answer = |authorization: &str| {
        let mut s = connect(server.addr);
        let extra = format!("Authorization: {authorization}\r\n");
        s.write_all(upgrade_request("/", &extra).as_bytes())
            .unwrap();
        read_response_head(&mut s).0
    };
    // RFC 7235 §2.1: the scheme name is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(answer(&format!("{scheme} s3cret")), 101, "{scheme}");
    }
    assert_eq!(answer("bearer wrong"), 401);
    assert_eq!(answer("Basic s3cret"), 401);
    assert_eq!(metric(server.addr, "surge_admission_rejected_total"), 2);
}

#[test]
fn a_trusted_proxy_written_ipv4_mapped_is_believed_from_ipv4() {
    let server = Server::start(&[
        "echo",
        "--trusted-proxy",
        "::ffff:127.0.0.0/104",
        "--max-conns-per-ip",
        "1",
        "--tarpit-ms",
        "0",
    ]);
    let addr = server.addr;
    let from = |client: &str| {
        let xff = format!("X-Forwarded-For: {client}\r\n");
        let mut s = request_from(ip(1), addr, &xff);
        let status = read_response_head(&mut s).0;
        (status, s)
    };
    // 127.0.0.1 is inside the mapped net: each forwarded client gets its
    // own per-client cap, rather than all sharing the proxy's.
    let (status, _a) = from("203.0.113.7");
    assert_eq!(status, 101);
    let (status, _b) = from("203.0.113.8");
    assert_eq!(status, 101);
    assert_eq!(from("203.0.113.7").0, 503);
    assert_eq!(metric(addr, "surge_admission_clients"), 2);
}

/// A PROXY protocol v2 header for a TCP/IPv4 client.
fn proxy_v2(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&4711u16.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

#[test]
fn proxy_listeners_take_the_client_from_the_header() {
    let server = Server::start(&[
        "echo",
        "--proxy-listen",
        "127.0.0.1:0",
        "--max-conns-per-ip",
        "1",
        "--tarpit-ms",
        "0",
    ]);
    let (plain, proxied) = (server.addrs[0], server.addrs[1]);
    let via_proxy = |header: &[u8]| {
        let mut s = connect(proxied);
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(upgrade_request("/", "").as_bytes());
        s.write_all(&bytes).unwrap();
        s
    };
    let v1 = |src: &str| format!("PROXY TCP4 {src} 127.0.0.1 4711 443\r\n").into_bytes();
    let mut a = via_proxy(&v1("198.51.100.1"));
    assert_eq!(read_response_head(&mut a).0, 101);
    // Same client through v1 and v2: capped; other clients: admitted.
    assert_eq!(
        read_response_head(&mut via_proxy(&v1("198.51.100.1"))).0,
        503
    );
    let v2_same = proxy_v2([198, 51, 100, 1], [127, 0, 0, 1]);
    assert_eq!(read_response_head(&mut via_proxy(&v2_same)).0, 503);
    let mut b = via_proxy(&proxy_v2([198, 51, 100, 2], [127, 0, 0, 1]));
    assert_eq!(read_response_head(&mut b).0, 101);
    let mut c = via_proxy(&v1("198.51.100.3"));
    assert_eq!(read_response_head(&mut c).0, 101);
    // The header split across writes still works.
    let mut d = connect(proxied);
    let header = proxy_v2([198, 51, 100, 4], [127, 0, 0, 1]);
    d.write_all(&header[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    d.write_all(&header[7..]).unwrap();
    d.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    assert_eq!(read_response_head(&mut d).0, 101);
    // A missing or malformed header: closed without a byte of response.
    assert_closed_silently(&mut via_proxy(b""));
    assert_closed_silently(&mut via_proxy(b"PROXY TCP4 nonsense\r\n"));
    assert_eq!(metric(plain, "surge_admission_rejected_total"), 4);
    // The plain listener expects no header.
    let mut e = connect(plain);
    e.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    assert_eq!(read_response_head(&mut e).0, 101);
}

#[test]
fn slowloris_does_not_block_a_normal_client_and_times_out() {
    const SLOW: usize = 500;
    let server = Server::start(&["echo", "--handshake-timeout-ms", "3000"]);
    let addr = server.addr;
    let request = upgrade_request("/", "").into_bytes();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| connect_from(ip(10 + (i % 8) as u8), addr))
        .collect();
    let start = Instant::now();
    // One byte a second on every connection, from a thread of its own.
    let dribblers: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
    let dribble = std::thread::spawn(move || {
        let mut dribblers = dribblers;
        for byte in request.iter().take(8) {
            for s in &mut dribblers {
                let _ = s.write_all(&[*byte]);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_millis(1200));
    let t = Instant::now();
    let mut normal = request_from(ip(30), addr, "");
    assert_eq!(read_response_head(&mut normal).0, 101);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "normal upgrade took {took:?}"
    );
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        assert_closed_silently(s);
    }
    let closed_after = start.elapsed();
    assert!(
        closed_after >= Duration::from_millis(2900) && closed_after < Duration::from_secs(6),
        "{closed_after:?}"
    );
    assert_eq!(
        metric(addr, "surge_admission_handshake_timeouts_total"),
        SLOW as u64
    );
    // The normal client was never disturbed.
    normal.write_all(&text(b"ok")).unwrap();
    assert_eq!(read_frame(&mut normal).1, b"ok");
    dribble.join().unwrap();
}

#[test]
fn the_oldest_pending_handshakes_make_room_for_new_ones() {
    let server = Server::start(&["echo", "--shards", "1", "--max-handshakes-in-flight", "50"]);
    let addr = server.addr;
    let mut silent: Vec<TcpStream> = (0..80)
        .map(|_| {
            let s = connect_from(ip(11), addr);
            std::thread::sleep(Duration::from_millis(2));
            s
        })
        .collect();
    wait_metric(addr, "surge_handshakes_in_flight", |v| v == 50);
    let mut normal = request_from(ip(31), addr, "");
    assert_eq!(read_response_head(&mut normal).0, 101);
    for s in &mut silent[..31] {
        assert_closed_silently(s);
    }
    for s in &mut silent[31..] {
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut b = [0u8; 1];
        let e = read_resuming(s, &mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "still open");
    }
    assert_eq!(
        metric(addr, "surge_admission_handshake_evictions_total"),
        31
    );
}

/// Whether the server has closed `s` (a FIN or a reset), waiting at most
/// 10 ms for a sign of it.
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut b = [0u8; 1];
    match read_resuming(s, &mut b) {
        Ok(0) => true,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        other => panic!("a silent pending handshake read {other:?}"),
    }
}

/// Clients from 127.0.0.3 are mid-handshake when 127.0.0.2 floods the shard
/// with half-open connections far past its bound: the flood pushes out its
/// own oldest, and the earlier clients still finish their upgrade.
fn a_half_open_flood_pushes_out_only_its_own(backend: &str) {
    const BOUND: usize = 64;
    const EARLY: usize = 4;
    const FLOOD: usize = 200;
    let server = Server::start(&[
        "echo",
        "--backend",
        backend,
        "--shards",
        "1",
        "--max-handshakes-in-flight",
        &BOUND.to_string(),
        "--max-conns-per-ip",
        "0",
    ]);
    let addr = server.addr;
    let request = upgrade_request("/", "");
    // Everything but the blank line that ends the head.
    let (head, end) = request.split_at(request.len() - 2);
    let mut early: Vec<TcpStream> = (0..EARLY)
        .map(|_| {
            let mut s = connect_from(ip(3), addr);
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect_from(ip(2), addr)).collect();
    let over = (EARLY + FLOOD - BOUND) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    // Each /metrics request is a handshake for a moment too, and may push
    // out one more of the flood.
    let mut polls = 0;
    while metric(addr, "surge_admission_handshake_evictions_total") < over {
        polls += 1;
        assert!(Instant::now() < deadline, "{backend}: evictions stuck");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, s) in early.iter_mut().enumerate() {
        let finished = s.write_all(end.as_bytes());
        assert!(
            finished.is_ok(),
            "{backend}: early client {i}: {finished:?}"
        );
        assert_eq!(read_response_head(s).0, 101, "{backend}: early client {i}");
    }
    // The flood lost its oldest: a prefix of it is closed, the rest open.
    let closed: Vec<bool> = flood.iter_mut().map(is_closed).collect();
    let dropped = closed.iter().take_while(|&&c| c).count();
    assert!(
        closed[dropped..].iter().all(|&c| !c),
        "{backend}: not the oldest dropped: {closed:?}"
    );
    assert!(
        (over as usize..=over as usize + 1 + polls).contains(&dropped),
        "{backend}: {dropped} of the flood dropped, want {over} (+{polls} polls)"
    );
    assert_eq!(
        metric(addr, "surge_admission_handshake_evictions_total"),
        dropped as u64,
        "{backend}"
    );
}

#[test]
fn a_half_open_flood_pushes_out_only_its_own_on_both_drivers() {
    for backend in ["epoll", "uring"] {
        a_half_open_flood_pushes_out_only_its_own(backend);
    }
}

#[test]
fn shutdown_spreads_its_closes_over_the_drain_window() {
    let server = Server::start(&["echo", "--drain-ms", "2000"]);
    let clients: Vec<_> = (0..100u8)
        .map(|i| {
            let mut s = request_from(ip(40 + i % 4), server.addr, "");
            assert_eq!(read_response_head(&mut s).0, 101);
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let code = read_close(&mut s);
                let at = start.elapsed();
                // Answer like a client would, so the server can finish.
                let _ = s.write_all(&support::close(1001, b""));
                (code, at)
            })
        })
        .collect();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let mut times: Vec<Duration> = readers
        .into_iter()
        .map(|r| {
            let (code, at) = r.join().unwrap();
            assert_eq!(code, Some(1001));
            at
        })
        .collect();
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(1000),
        "{first:?}..{last:?}"
    );
    assert!(last < Duration::from_millis(3500), "{last:?}");
    // Not bunched: every half of the window gets a share.
    let early = times
        .iter()
        .filter(|t| **t < first + Duration::from_millis(1000))
        .count();
    assert!(
        (20..=80).contains(&early),
        "{early} of 100 in the first second"
    );
}
