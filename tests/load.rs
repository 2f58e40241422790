//! `surge load` against `surge echo`, against a tungstenite server, and
//! against servers that misbehave on purpose: the instrument must count
//! what happened, not what should have happened.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Patient, Server};
use tungstenite::Message;

/// Runs `surge load ARGS` and returns (RESULT fields, full stdout+stderr).
fn load(args: &[&str]) -> (std::collections::HashMap<String, String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .arg("load")
        .args(args)
        .output()
        .expect("run surge load");
    result_of(&out)
}

/// The RESULT fields and everything printed of a finished `surge load`.
fn result_of(out: &std::process::Output) -> (std::collections::HashMap<String, String>, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("RESULT "),
        "last line is not RESULT:\n{all}"
    );
    let fields = last
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (fields, all)
}

fn num(fields: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    fields[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key}={}", fields[key]))
}

/// A tungstenite server on a thread per connection; `on_message` decides
/// what goes back for message number N.
fn tungstenite_server(on_message: fn(usize, Message) -> Option<Message>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(Patient(stream)) else {
                    return;
                };
                let mut n = 0;
                while let Ok(msg) = ws.read() {
                    if msg.is_text() || msg.is_binary() {
                        n += 1;
                        if let Some(reply) = on_message(n, msg) {
                            if ws.send(reply).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn echo_against_surge_counts_every_message() {
    let server = Server::start(&["echo", "--shards", "1"]);
    let url = server.url("/");
    let (r, all) = load(&[
        "echo",
        "--url",
        &url,
        "--conns",
        "20",
        "--size",
        "64",
        "--duration",
        "1",
    ]);
    assert_eq!((num(&r, "open"), num(&r, "errors")), (20, 0), "{all}");
    assert!(num(&r, "msgs_per_s") > 1000, "{all}");
    assert!(num(&r, "p50_us") > 0, "{all}");
    assert!(
        all.contains("t=1s") || all.contains("t=2s"),
        "progress lines: {all}"
    );
    let (r, all) = load(&[
        "echo",
        "--url",
        &url,
        "--conns",
        "4",
        "--pipeline",
        "8",
        "--binary",
        "--size",
        "3000",
        "--duration",
        "1",
    ]);
    assert_eq!((num(&r, "open"), num(&r, "errors")), (4, 0), "{all}");
}

#[test]
fn echo_against_tungstenite_server() {
    let addr = tungstenite_server(|_, msg| Some(msg));
    let (r, all) = load(&[
        "echo",
        "--url",
        &format!("ws://{addr}/"),
        "--conns",
        "5",
        "--duration",
        "1",
    ]);
    assert_eq!((num(&r, "open"), num(&r, "errors")), (5, 0), "{all}");
    assert!(num(&r, "msgs_per_s") > 100, "{all}");
}

#[test]
fn a_corrupted_echo_is_caught() {
    let addr = tungstenite_server(|n, msg| match msg {
        Message::Text(t) if n == 3 => Some(Message::Text(t.replacen(|_: char| true, "#", 1))),
        other => Some(other),
    });
    let (r, all) = load(&[
        "echo",
        "--url",
        &format!("ws://{addr}/"),
        "--conns",
        "1",
        "--duration",
        "1",
    ]);
    assert!(all.contains("bad_echo=1"), "{all}");
    assert_eq!(num(&r, "errors"), 1, "{all}");
}

#[test]
fn a_wrong_accept_key_is_caught() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let (r, all) = load(&[
        "echo",
        "--url",
        &format!("ws://{addr}/"),
        "--conns",
        "3",
        "--duration",
        "0.5",
    ]);
    assert_eq!(num(&r, "open"), 0, "{all}");
    assert!(all.contains("bad_accept=3"), "{all}");
}

#[test]
fn refused_connections_are_counted() {
    // Bind then drop: nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (r, all) = load(&[
        "echo",
        "--url",
        &format!("ws://127.0.0.1:{port}/"),
        "--conns",
        "2",
        "--duration",
        "0.3",
        "--connect-timeout",
        "1",
    ]);
    assert_eq!(num(&r, "open"), 0, "{all}");
    assert!(num(&r, "errors") >= 2, "{all}");
    assert!(!all.contains("refused=0"), "{all}");
}

#[test]
fn connect_mode_counts_handshakes() {
    let server = Server::start(&["echo", "--shards", "1"]);
    let (r, all) = load(&[
        "connect",
        "--url",
        &server.url("/"),
        "--conns",
        "8",
        "--duration",
        "1",
    ]);
    assert_eq!(num(&r, "errors"), 0, "{all}");
    assert!(num(&r, "handshakes") > 100, "{all}");
    assert_eq!(num(&r, "handshakes"), num(&r, "open"), "{all}");
    let (r, all) = load(&[
        "connect",
        "--url",
        &server.url("/"),
        "--conns",
        "4",
        "--close",
        "clean",
        "--duration",
        "0.5",
    ]);
    assert_eq!(num(&r, "errors"), 0, "{all}");
}

#[test]
fn hold_mode_spreads_over_source_addresses() {
    let server = Server::start(&["echo", "--shards", "1"]);
    let (r, all) = load(&[
        "hold",
        "--url",
        &server.url("/"),
        "--conns",
        "2000",
        "--sources",
        "127.0.0.2-127.0.0.9",
        "--duration",
        "1",
    ]);
    assert_eq!((num(&r, "open"), num(&r, "errors")), (2000, 0), "{all}");
    assert!(all.contains("all 2000 connections open after"), "{all}");
}

#[test]
fn ctrl_c_prints_the_partial_result() {
    let server = Server::start(&["echo", "--shards", "1"]);
    let child = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "load",
            "echo",
            "--url",
            &server.url("/"),
            "--conns",
            "4",
            "--duration",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted: partial result"), "{stderr}");
    let result = stdout.lines().last().unwrap_or_default();
    assert!(
        result.starts_with("RESULT mode=echo conns=4 open=4"),
        "{stdout}"
    );
    assert!(!result.contains("msgs_per_s=0 "), "{stdout}");
}

#[test]
fn subscribe_mode_counts_gaps_and_latency() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || ticker(stream));
        }
    });
    let (r, all) = load(&[
        "subscribe",
        "--url",
        &format!("ws://{addr}/ticker"),
        "--conns",
        "2",
        "--duration",
        "1",
    ]);
    assert_eq!(num(&r, "errors"), 0, "{all}");
    // Each connection gets 200 ticks per symbol minus one skipped on AAPL.
    assert_eq!(num(&r, "gaps"), 2, "{all}");
    assert_eq!(num(&r, "msgs"), 2 * 399, "{all}");
    assert!(num(&r, "p99_us") < 1_000_000, "{all}");
}

fn ticker(stream: TcpStream) {
    let Ok(mut ws) = tungstenite::accept(Patient(stream)) else {
        return;
    };
    for seq in 1..=200u64 {
        for symbol in ["AAPL", "MSFT"] {
            if symbol == "AAPL" && seq == 100 {
                continue;
            }
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros();
            if ws
                .send(Message::Text(format!("{symbol} {seq} {ts} 189.23")))
                .is_err()
            {
                return;
            }
        }
    }
    // Stay open until the client leaves.
    while ws.read().is_ok() {}
}

#[test]
fn subscribe_mode_against_surge_ticker_sees_every_tick() {
    let server = Server::start(&["ticker", "--symbols", "4", "--rate", "100"]);
    let (r, all) = load(&[
        "subscribe",
        "--url",
        &server.url("/ticker"),
        "--conns",
        "200",
        "--duration",
        "2",
    ]);
    assert_eq!((num(&r, "open"), num(&r, "errors")), (200, 0), "{all}");
    assert_eq!(num(&r, "gaps"), 0, "{all}");
    // 200 subscribers x 4 symbols x 100 Hz for 2 s, give or take a tick.
    let msgs = num(&r, "msgs");
    assert!((150_000..=170_000).contains(&msgs), "{msgs}: {all}");
}

#[test]
fn subscribe_mode_inflates_compressed_ticks() {
    let server = Server::start(&[
        "ticker",
        "--symbols",
        "4",
        "--rate",
        "100",
        "--deflate-threshold",
        "0",
    ]);
    let (r, all) = load(&[
        "subscribe",
        "--url",
        &server.url("/ticker"),
        "--conns",
        "50",
        "--duration",
        "2",
        "--deflate",
    ]);
    assert_eq!((num(&r, "open"), num(&r, "errors")), (50, 0), "{all}");
    assert_eq!(num(&r, "gaps"), 0, "{all}");
    let msgs = num(&r, "msgs");
    assert!((37_000..=43_000).contains(&msgs), "{msgs}: {all}");
    // They came compressed (the load generator rejects RSV1 frames
    // unless it offered deflate).
    assert!(
        support::metric(server.addr, "surge_pubsub_compressed_total") > 0,
        "{all}"
    );
}

#[test]
fn subscribe_mode_counts_corrupt_compressed_frames_as_protocol_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(mut ws) = tungstenite::accept(Patient(stream)) else {
                continue;
            };
            // RSV1 + text: "compressed" bytes that are no DEFLATE stream.
            let _ = ws.get_mut().write_all(&[0xC1, 4, 0xFF, 0xFF, 0xFF, 0xFF]);
            let _ = ws.get_mut().flush();
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let (r, all) = load(&[
        "subscribe",
        "--url",
        &format!("ws://{addr}/ticker"),
        "--conns",
        "1",
        "--duration",
        "1",
        "--deflate",
    ]);
    assert_eq!(num(&r, "errors"), 1, "{all}");
    assert!(all.contains("protocol=1"), "{all}");
}

/// `surge load publish` to `topic` on `server`'s `/hub` at 200 messages/s
/// for `secs`, in the background.
fn publisher(server: &Server, topic: &str, secs: f64) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "load",
            "publish",
            "--url",
            &server.url("/hub"),
            "--topics",
            topic,
        ])
        .args([
            "--rate",
            "200",
            "--conns",
            "1",
            "--duration",
            &secs.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run surge load publish")
}

fn publisher_result(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .contains(" errors=0"),
        "publisher: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Resuming subscribers of `/hub`, dropped twice over: the server closes
/// each idle one with 1001, and at 600 ms all reset their sockets, stay
/// away 400 ms while publishing goes on, and come back together.
fn resume_run(server: &Server) -> (std::collections::HashMap<String, String>, String) {
    let publishing = publisher(server, "feed", 3.5);
    // The publisher's first messages are out before anyone subscribes.
    std::thread::sleep(Duration::from_millis(300));
    let (r, all) = load(&[
        "subscribe",
        "--url",
        &server.url("/hub"),
        "--topics",
        "feed",
        "--resume",
        "--conns",
        "50",
        "--sources",
        "127.0.0.2-127.0.0.3",
        "--duration",
        "2",
        "--drop-after-ms",
        "600",
        "--drop-for-ms",
        "400",
        "--reconnect-delay-ms",
        "100",
    ]);
    publisher_result(publishing);
    (r, all)
}

#[test]
fn resuming_subscribers_miss_nothing_across_closes_with_history_on() {
    let server = Server::start(&[
        "serve",
        "--history-size",
        "1000",
        "--idle-timeout-ms",
        "800",
    ]);
    let (r, all) = resume_run(&server);
    assert_eq!(num(&r, "errors"), 0, "{all}");
    assert_eq!((num(&r, "gaps"), num(&r, "dups")), (0, 0), "{all}");
    assert_eq!(num(&r, "not_recovered"), 0, "{all}");
    // The storm alone is 50 reconnects; the idle closes add more.
    assert!(num(&r, "reconnects") > 50, "{all}");
    // Every client is live, or lost its connection and has not recovered
    // yet (the run ended first).
    assert_eq!(
        num(&r, "live") + num(&r, "reconnects") - num(&r, "recovered"),
        50,
        "{all}"
    );
    assert!(r["recovery_max_ms"] != "0.0", "{all}");
    // 50 subscribers x 200 messages/s for 2 s, the replays included.
    assert!(num(&r, "msgs") > 15_000, "{all}");
    let recovered = support::metric(server.addr, "surge_recoveries_total{result=\"recovered\"}");
    assert!(recovered >= num(&r, "recovered"), "{recovered}: {all}");
}

#[test]
fn resuming_without_history_reports_every_gap() {
    let server = Server::start(&["serve", "--idle-timeout-ms", "800"]);
    let (r, all) = resume_run(&server);
    assert_eq!(num(&r, "errors"), 0, "{all}");
    assert!(num(&r, "reconnects") >= 50, "{all}");
    // Every resubscribe that missed something fails closed, and each is a
    // gap: at least the storm's, 400 ms away at 200 messages/s. (One back
    // before the next publish missed nothing and recovers even so.)
    assert!(num(&r, "not_recovered") >= 50, "{all}");
    assert_eq!(num(&r, "gaps"), num(&r, "not_recovered"), "{all}");
    // No history, or (while every subscriber was away and the topic kept
    // nothing) a new epoch: either way the server said so.
    let refused: u64 = ["no_history", "epoch"]
        .iter()
        .map(|why| {
            support::metric(
                server.addr,
                &format!("surge_recoveries_total{{result=\"{why}\"}}"),
            )
        })
        .sum();
    assert!(refused >= num(&r, "not_recovered"), "{refused}: {all}");
}

/// A drained node's subscribers get 1001, find the node refusing and then
/// gone, and come back to its restart: without a shared store the restart
/// has a new epoch, so every resume fails closed and each is a gap.
#[test]
fn resuming_across_a_restart_fails_closed() {
    let args = ["serve", "--history-size", "1000", "--drain-ms", "200"];
    let server = Server::start(&args);
    let addr = server.addr;
    let url = server.url("/hub");
    let subscribers = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "load",
            "subscribe",
            "--url",
            &url,
            "--topics",
            "feed",
            "--resume",
        ])
        .args([
            "--conns",
            "20",
            "--duration",
            "4",
            "--reconnect-delay-ms",
            "100",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run surge load subscribe");
    let publishing = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "load", "publish", "--url", &url, "--topics", "feed", "--resume",
        ])
        .args([
            "--rate",
            "200",
            "--duration",
            "5",
            "--reconnect-delay-ms",
            "100",
        ])
        .args(["--conns", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run surge load publish");
    std::thread::sleep(Duration::from_millis(800));
    assert!(server.terminate().success());
    std::thread::sleep(Duration::from_millis(300));
    let restarted = Server::start_at(&args, addr);
    let (r, all) = result_of(&subscribers.wait_with_output().unwrap());
    publisher_result(publishing);
    assert_eq!((num(&r, "errors"), num(&r, "dups")), (0, 0), "{all}");
    assert_eq!((num(&r, "live"), num(&r, "reconnects")), (20, 20), "{all}");
    // Refused while it drained (503, Retry-After: 1) or was gone, then
    // back well before the run ends.
    assert!(num(&r, "retries") > 0, "{all}");
    assert_eq!(
        (
            num(&r, "recovered"),
            num(&r, "not_recovered"),
            num(&r, "gaps")
        ),
        (0, 20, 20),
        "{all}"
    );
    assert_eq!(
        support::metric(restarted.addr, "surge_recoveries_total{result=\"epoch\"}"),
        20,
        "{all}"
    );
}
