//! Peers that are owed output and never read again: a suspended phone
//! whose TCP stays up, or a client that sent its FIN and walked away. On
//! both drivers the server must give back the descriptor, the buffers and
//! the admission ticket by the close deadline, whatever its sends are
//! waiting for: checked on the server's own descriptor table
//! (`/proc/PID/fd`), its gauges, and a second upgrade from the same address
//! under a per-address cap of one.

mod support;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{binary, fd_count, metric, open_ws, read_response_head, upgrade_request, Server};

const BACKENDS: [&str; 2] = ["epoll", "uring"];

/// Polls (every 50 ms, `within` in all) until the server holds `baseline`
/// descriptors and only the scrape's own connection is open, with no
/// buffer lent; panics with what it last saw otherwise.
fn assert_back_to_baseline(server: &Server, baseline: usize, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let fds = fd_count(server.pid());
        // The scrape itself holds one connection and maybe one buffer.
        let open = metric(server.addr, "surge_connections_open");
        let out = metric(server.addr, "surge_out_buffers_lent");
        let lent = metric(server.addr, "surge_recv_buffers_lent");
        // The scrape's connection may still be closing as the table is read.
        if fds <= baseline && open == 1 && out <= 1 && lent == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after {within:?} the server still holds {fds} descriptors (baseline \
             {baseline}), {open} connections open, {out} output and {lent} receive buffers lent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the scrape connections of start-up to go, then counts.
fn settled_fd_count(server: &Server) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = fd_count(server.pid());
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count(server.pid());
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// A client with a tiny receive window that upgrades: whatever the server
/// owes it backs up on the server's side at once.
fn small_window_ws(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Set before connecting, so the window it advertises stays small.
    socket.set_recv_buffer_size(4096).unwrap();
    // Loopback's 64 KiB segments would size the server's send buffer to
    // megabytes; small ones keep it to tens of KiB.
    socket.set_mss(1024).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let (status, head) = read_response_head(&mut s);
    assert_eq!(status, 101, "{head}");
    s
}

/// Sends 64 KiB echo requests until the server stops reading (a write
/// makes no progress for 300 ms) or `cap` bytes went out; returns the
/// bytes sent.
fn send_until_blocked(s: &mut TcpStream, cap: usize) -> usize {
    let frame = binary(&vec![7u8; 64 * 1024]);
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut sent = 0;
    while sent < cap {
        match s.write(&frame) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("write failed after {sent} bytes: {e}"),
        }
    }
    sent
}

fn start(backend: &str, idle_ms: u64, close_ms: u64, extra: &[&str]) -> Server {
    let (idle_ms, close_ms) = (idle_ms.to_string(), close_ms.to_string());
    let mut args = vec![
        "echo",
        "--backend",
        backend,
        "--shards",
        "1",
        "--idle-timeout-ms",
        &idle_ms,
        "--close-timeout-ms",
        &close_ms,
        "--max-conns-per-ip",
        "1",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A client sends far more echo requests than the server will buffer
/// replies for and never reads: the server stops reading it, its send
/// waits for window space that never comes, the idle timeout starts a
/// close that cannot be delivered, and the close timeout must free it.
fn stalled_reader_is_freed(backend: &str, extra: &[&str]) {
    // Idle outlasts the blocked write that tells the client to stop.
    let (idle_ms, close_ms) = (1500, 500);
    let server = start(backend, idle_ms, close_ms, extra);
    let baseline = settled_fd_count(&server);
    let mut s = small_window_ws(server.addr);
    let sent = send_until_blocked(&mut s, 64 << 20);
    assert!(
        sent < 64 << 20,
        "{backend}: the server read {sent} bytes without pausing"
    );
    assert!(fd_count(server.pid()) > baseline, "{backend}: held");
    // Idle, close, and slack for a debug build on a shared machine.
    let within = Duration::from_millis(idle_ms + close_ms + 3000);
    assert_back_to_baseline(&server, baseline, within, backend);
    assert_eq!(
        metric(server.addr, "surge_closes_total{code=\"1001\"}"),
        1,
        "{backend}: the idle close was counted"
    );
    // The admission ticket came back: with a cap of one per address, a
    // new upgrade from the same address is let in.
    drop(open_ws(server.addr));
    drop(s);
}

#[test]
fn stalled_reader_is_freed_by_the_close_deadline() {
    for backend in BACKENDS {
        stalled_reader_is_freed(backend, &[]);
    }
}

/// The same with zero-copy sends: the kernel holds the bytes of a send it
/// has queued until the peer acknowledges them, and its notification (for
/// which the slot waits) does not come while the peer's window stays shut.
#[test]
fn stalled_reader_with_zero_copy_sends_is_freed_by_the_close_deadline() {
    stalled_reader_is_freed("uring", &["--zerocopy-threshold", "1024"]);
}

/// A client sends a few MiB of echo requests, shuts its write side
/// and never reads: the FIN starts the linger deadline (the close timeout),
/// long before the idle timeout would.
fn half_closed_reader_is_freed(backend: &str) {
    let (idle_ms, close_ms) = (60_000, 400);
    let server = start(backend, idle_ms, close_ms, &[]);
    let baseline = settled_fd_count(&server);
    let mut s = small_window_ws(server.addr);
    // 512 KiB of echoes: more than the server's socket takes, so output
    // stays owed, yet under the 4 MiB at which the server stops reading,
    // so it reads the FIN.
    let frame = binary(&vec![7u8; 64 * 1024]);
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..8 {
        s.write_all(&frame).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let within = Duration::from_millis(close_ms + 3000);
    assert_back_to_baseline(&server, baseline, within, backend);
    assert_eq!(
        metric(server.addr, "surge_closes_total{code=\"1006\"}"),
        1,
        "{backend}: a FIN without a close frame counts as 1006"
    );
    drop(open_ws(server.addr));
    drop(s);
}

#[test]
fn half_closed_reader_is_freed_by_the_close_deadline() {
    for backend in BACKENDS {
        half_closed_reader_is_freed(backend);
    }
}
