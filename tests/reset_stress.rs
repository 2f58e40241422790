//! Opens and abruptly resets thousands of connections while messages are in
//! flight, on both drivers, then checks through /metrics that every
//! connection slot and every receive buffer came back. `cargo test` builds
//! the server with debug assertions and overflow checks, so arithmetic
//! slips in the drivers fail loudly here too.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::SockRef;
use support::{metric, Server};

fn masked_frame(payload_len: usize) -> Vec<u8> {
    let mut f = vec![0x82, 0xFF];
    f.extend_from_slice(&(payload_len as u64).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f.extend((0..payload_len).map(|i| i as u8));
    f
}

const UPGRADE: &[u8] =
    b"GET /x HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// One connection: upgrade and a big message in one write, maybe read a
/// little of the echo, then RST.
fn churn_one(addr: SocketAddr, round: usize, frame: &[u8]) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut wire = UPGRADE.to_vec();
    // Vary how much is sent so resets land in every phase: mid-request,
    // mid-frame, and with echoes still queued.
    let cut = match round % 4 {
        0 => UPGRADE.len() / 2,
        1 => UPGRADE.len() + frame.len() / 3,
        _ => UPGRADE.len() + frame.len(),
    };
    wire.extend_from_slice(frame);
    let _ = s.write_all(&wire[..cut]);
    if round % 4 == 3 {
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
    }
    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
}

fn churn_and_check(backend: &str) {
    let server = Server::start(&["echo", "--shards", "2", "--backend", backend]);
    let addr = server.addr;
    let frame = masked_frame(200_000);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let frame = frame.clone();
            std::thread::spawn(move || {
                for round in 0..250 {
                    churn_one(addr, t + round, &frame);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        metric(addr, "surge_handshakes_total") > 1000,
        "the churn reached the server"
    );
    // Everything is closed; give the server a moment to see the resets.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The scrape itself holds one connection.
        let open = metric(addr, "surge_connections_open");
        let lent = metric(addr, "surge_recv_buffers_lent");
        let out = metric(addr, "surge_out_buffers_lent");
        // The scrape's own response may hold one output buffer.
        if open == 1 && lent == 0 && out <= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: {open} connections open, {lent} buffers lent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And it still serves.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(UPGRADE).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 101");
}

#[test]
fn uring_reset_churn_leaks_nothing() {
    churn_and_check("uring");
}

#[test]
fn epoll_reset_churn_leaks_nothing() {
    churn_and_check("epoll");
}
