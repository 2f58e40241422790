//! A server at its descriptor limit: accepts fail with EMFILE until a
//! connection goes. It must back off (retry once a tick, not spin on the
//! failing accept), say so in a rate-limited log line, and take the
//! waiting clients in once descriptors free up. Run on both drivers in a
//! process started under `ulimit -n 64`; the CPU it burns while held at the
//! limit is read from `/proc/PID/stat`.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{connect, read_response_head, upgrade_request, Server};

const BACKENDS: [&str; 2] = ["epoll", "uring"];

/// The server's descriptor limit: a few dozen connections fill it.
const MAX_FDS: u64 = 64;

/// User plus system CPU the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Opens WebSocket connections until one is left waiting in the backlog
/// (the server says its accept failed and answers nothing); returns the
/// upgraded ones and the waiter.
fn fill_to_the_limit(server: &Server, backend: &str) -> (Vec<TcpStream>, TcpStream) {
    let mut held = Vec::new();
    for _ in 0..MAX_FDS {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut byte = [0u8; 1];
        loop {
            if matches!(s.peek(&mut byte), Ok(1)) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (status, head) = read_response_head(&mut s);
                assert_eq!(status, 101, "{backend}: {head}");
                held.push(s);
                break;
            }
            if lines_saying(server, "accept failed") > 0 {
                return (held, s);
            }
            assert!(
                Instant::now() < deadline,
                "{backend}: neither an answer nor an accept failure in 5 s"
            );
        }
    }
    panic!("{backend}: {MAX_FDS} connections upgraded under a limit of {MAX_FDS} descriptors");
}

fn lines_saying(server: &Server, what: &str) -> usize {
    server.stderr().lines().filter(|l| l.contains(what)).count()
}

fn backs_off_at_the_limit(backend: &str) {
    let server =
        Server::start_with_fd_limit(&["echo", "--backend", backend, "--shards", "1"], MAX_FDS);
    let (mut held, mut waiter) = fill_to_the_limit(&server, backend);
    assert!(held.len() > 20, "{backend}: only {} upgraded", held.len());
    // Held at the limit for two seconds: the waiter's accept keeps failing.
    let (lines_before, cpu_before) = (
        lines_saying(&server, "accept failed"),
        cpu_ticks(server.pid()),
    );
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let cpu = cpu_ticks(server.pid()) - cpu_before;
    let lines = lines_saying(&server, "accept failed") - lines_before;
    let per_second = clock_ticks_per_second();
    let share = cpu as f64 / (per_second as f64 * window.as_secs_f64());
    eprintln!(
        "{backend}: at the limit for {window:?}: {:.1}% of a core, {lines} log lines",
        share * 100.0
    );
    // A spinning loop takes the whole core; one retry a tick costs little
    // even in a debug build.
    assert!(
        share < 0.25,
        "{backend}: {:.0}% of a core at the limit",
        share * 100.0
    );
    // One line a second at most, each saying how many it stood for.
    assert!(
        lines <= 3,
        "{backend}: {lines} accept warnings in {window:?}"
    );
    assert!(
        server.stderr().contains("more like it suppressed"),
        "{backend}: the rate-limited line counts what it left out:\n{}",
        server.stderr()
    );
    // A descriptor frees up: the waiter is let in.
    drop(held.pop());
    waiter
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (status, head) = read_response_head(&mut waiter);
    assert_eq!(status, 101, "{backend}: {head}");
}

#[test]
fn accept_backs_off_at_the_descriptor_limit() {
    for backend in BACKENDS {
        backs_off_at_the_limit(backend);
    }
}
