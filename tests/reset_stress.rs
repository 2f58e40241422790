//! Opens and abruptly resets thousands of connections while messages are in
//! flight, on both drivers (and with zero-copy sends on io_uring), then
//! checks through /metrics that every connection slot and every receive
//! buffer came back; and holds thousands of clients that stop reading with
//! output owed until the server drops them, checking its descriptors too.
//! `cargo test` builds the server with debug assertions and overflow
//! checks, so arithmetic slips in the drivers fail loudly here too.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::SockRef;
use support::{fd_count, metric, Server};

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

fn churn_and_check(backend: &str, extra: &[&str]) {
    let mut args = vec!["echo", "--shards", "2", "--backend", backend];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
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
    churn_and_check("uring", &[]);
}

/// The same with zero-copy sends, whose completions (failed ones too) are
/// followed by a notification the slot must wait for: freed early, the
/// slot's next tenant would hear it.
#[test]
fn uring_zero_copy_reset_churn_leaks_nothing() {
    churn_and_check("uring", &["--zerocopy-threshold", "1024"]);
}

#[test]
fn epoll_reset_churn_leaks_nothing() {
    churn_and_check("epoll", &[]);
}

/// One client that is owed output and stops reading: a tiny receive window,
/// an upgrade and 128 KiB of echo requests, then silence with the socket
/// left open; every other one also shuts its write side (FIN). None if the
/// server did not let it in.
fn stall_one(addr: SocketAddr, frame: &[u8], fin: bool) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    // Loopback's 64 KiB segments would size the server's send buffer to
    // megabytes, enough to take every echo; small ones keep it to tens of
    // KiB, so the echoes wait in the server, with a send armed.
    socket.set_mss(1024).ok()?;
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .ok()?;
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(UPGRADE).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    (&head == b"HTTP/1.1 101").then_some(())?;
    s.write_all(frame).ok()?;
    if fin {
        s.shutdown(std::net::Shutdown::Write).ok()?;
    }
    Some(s)
}

/// Thousands of clients that stop reading with output owed, on io_uring:
/// for those still sending, the idle timeout starts closes that cannot be
/// delivered; for those that sent their FIN, the linger deadline runs. The
/// close timeout drops them all, and every slot, buffer and descriptor
/// comes back.
#[test]
fn uring_stalled_readers_leak_nothing() {
    let (idle_ms, close_ms) = (1000, 500);
    let server = Server::start(&[
        "echo",
        "--shards",
        "2",
        "--backend",
        "uring",
        "--idle-timeout-ms",
        &idle_ms.to_string(),
        "--close-timeout-ms",
        &close_ms.to_string(),
        "--max-conns-per-ip",
        "0",
    ]);
    let addr = server.addr;
    std::thread::sleep(Duration::from_millis(200));
    let baseline = fd_count(server.pid());
    let frame = masked_frame(128 * 1024);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let frame = frame.clone();
            std::thread::spawn(move || {
                (0..375)
                    .filter_map(|i| stall_one(addr, &frame, i % 2 == 1))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let held: Vec<TcpStream> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(held.len() > 2500, "only {} clients got in", held.len());
    let deadline = Instant::now() + Duration::from_millis(idle_ms + close_ms + 10_000);
    loop {
        let fds = fd_count(server.pid());
        // The scrape itself holds one connection and maybe one buffer.
        let open = metric(addr, "surge_connections_open");
        let lent = metric(addr, "surge_recv_buffers_lent");
        let out = metric(addr, "surge_out_buffers_lent");
        if fds <= baseline && open == 1 && lent == 0 && out <= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: {fds} descriptors (baseline {baseline}), {open} connections open, \
             {lent} receive and {out} output buffers lent, with {} stalled clients",
            held.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
}
