//! A rolling deploy loses nothing: two `surge serve` nodes share one real
//! redis-server; 1,000 hub subscribers (Python `websockets`, resuming with
//! `since` on the other node when theirs goes, as clients/js/surge.js does)
//! are spread over both, and a publisher sends 1,000 messages a second
//! throughout, through the node that is not being restarted. Node A is
//! drained (SIGTERM) and started again, then node B. Every subscriber ends
//! with every message exactly once, in the order Redis gave them, and the
//! time each resume took is printed (p50, p99).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::redis::{free_port, Redis};
use support::{venv, wait_metric, Server};

const TOPICS: usize = 100;
const SUBSCRIBERS: usize = 1000;
const RATE: usize = 1000;
/// How long traffic runs between the steps of the deploy.
const SETTLE: Duration = Duration::from_secs(3);

fn node(url: &str, at: Option<SocketAddr>) -> Server {
    let args = [
        "serve",
        "--redis-url",
        url,
        "--history-size",
        "2000",
        "--max-conns-per-ip",
        "0",
        "--drain-ms",
        "1000",
    ];
    let server = match at {
        None => Server::start(&args),
        Some(addr) => Server::start_at(&args, addr),
    };
    wait_metric(server.addr, "surge_shared_history_available", |v| v == 1);
    wait_metric(server.addr, "surge_bridge_connected", |v| v == 1);
    server
}

#[test]
fn a_rolling_deploy_of_two_nodes_on_redis_loses_nothing() {
    let port = free_port();
    let _redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let (mut a, mut b) = (node(&url, None), node(&url, None));
    let (a_addr, b_addr) = (a.addr, b.addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/rolling_deploy.py");
    let mut clients = Command::new(venv().join("bin/python"))
        .args([
            script,
            &format!("{a_addr},{b_addr}"),
            &TOPICS.to_string(),
            &SUBSCRIBERS.to_string(),
            &RATE.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut commands = clients.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = clients.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let ready = lines.recv_timeout(Duration::from_secs(60));
    assert_eq!(ready.as_deref(), Ok("ready"));
    let mut say = |command: &str| writeln!(commands, "{command}").unwrap();

    std::thread::sleep(SETTLE);
    say("via 1");
    std::thread::sleep(Duration::from_millis(200));
    assert!(a.terminate().success(), "node A did not drain cleanly");
    a = node(&url, Some(a_addr));
    std::thread::sleep(SETTLE);
    say("via 0");
    std::thread::sleep(Duration::from_millis(200));
    assert!(b.terminate().success(), "node B did not drain cleanly");
    b = node(&url, Some(b_addr));
    std::thread::sleep(SETTLE);
    say("stop");

    let result = lines
        .recv_timeout(Duration::from_secs(40))
        .expect("the clients' result");
    let _ = clients.wait();
    let json = result.strip_prefix("RESULT ").expect(&result);
    let r: serde_json::Value = serde_json::from_str(json).unwrap();
    eprintln!("ROLLING DEPLOY: {r}");
    eprintln!(
        "ROLLING DEPLOY: recovery p50 {} ms, p99 {} ms over {} resumes",
        r["recovery_ms_p50"], r["recovery_ms_p99"], r["recovered"]
    );
    let published = r["published"].as_u64().unwrap();
    assert!(published >= (RATE * 8) as u64, "{r}");
    for count in [
        "gaps",
        "duplicates",
        "missing",
        "unexpected",
        "epoch_changes",
    ] {
        assert_eq!(r[count], 0, "{count}: {r}");
    }
    assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(
        r["delivered"],
        published * SUBSCRIBERS as u64 / TOPICS as u64
    );
    // Every subscriber moved at least once (from A, then from B to A).
    assert!(
        r["recovered"].as_u64().unwrap() >= SUBSCRIBERS as u64,
        "{r}"
    );
    drop((a, b));
}
