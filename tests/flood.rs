//! A reconnect flood: 1,500 clients on six source addresses connect,
//! upgrade, drop and reconnect in a tight loop (`surge load connect`) for a
//! bounded time, while a well-behaved client from another address upgrades
//! every 25 ms and times it. Run once with admission pacing and once with
//! every limit off; the figures of both are printed for the record, and the
//! paced run must hold the configured pace and keep the probe's p99 low.

mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{connect_from, metric, output_within, read_response_head, upgrade_request, Server};

const FLOODERS: u64 = 6;
const FLOOD_SECS: u64 = 4;
const RATE_PER_IP: u64 = 50;
const BURST_PER_IP: u64 = 25;

/// Printed through `Debug` for the record; some fields only there.
#[derive(Debug)]
#[allow(dead_code)]
struct Figures {
    /// Upgrades the server admitted, per second of flood.
    admitted_per_s: f64,
    /// Upgrade attempts the server decided (admitted or refused), per second.
    attempts_per_s: f64,
    probe_p50: Duration,
    probe_p99: Duration,
    probe_failures: usize,
    probes: usize,
}

/// Times upgrades from 127.0.0.50 every 25 ms until `until`.
fn probe(addr: SocketAddr, until: Instant) -> (Vec<Duration>, usize) {
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 50));
    let mut times = Vec::new();
    let mut failures = 0;
    while Instant::now() < until {
        let start = Instant::now();
        let mut s = connect_from(from, addr);
        s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
        if read_response_head(&mut s).0 == 101 {
            times.push(start.elapsed());
        } else {
            failures += 1;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(25));
    }
    (times, failures)
}

fn flood(limits: &[&str]) -> Figures {
    let mut args = vec!["echo", "--shards", "2"];
    args.extend_from_slice(limits);
    let server = Server::start(&args);
    let addr = server.addr;
    let started = Instant::now();
    let until = started + Duration::from_secs(FLOOD_SECS);
    let prober = std::thread::spawn(move || probe(addr, until));
    let secs = FLOOD_SECS.to_string();
    let url = server.url("/");
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_surge")).args([
            "load",
            "connect",
            "--url",
            &url,
            "--conns",
            "1500",
            "--sources",
            "127.0.0.2-127.0.0.7",
            "--duration",
            &secs,
        ]),
        Duration::from_secs(FLOOD_SECS + 30),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let (mut times, probe_failures) = prober.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("RESULT ")),
        "load connect failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admitted = metric(addr, "surge_admission_admitted_total") as f64;
    let rejected = metric(addr, "surge_admission_rejected_total") as f64;
    times.sort();
    assert!(!times.is_empty(), "the probe never got in");
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Figures {
        admitted_per_s: admitted / elapsed,
        attempts_per_s: (admitted + rejected) / elapsed,
        probe_p50: pick(0.5),
        probe_p99: pick(0.99),
        probe_failures,
        probes: times.len() + probe_failures,
    }
}

#[test]
fn reconnect_flood_is_paced_and_a_normal_client_still_gets_in() {
    let rate = RATE_PER_IP.to_string();
    let burst = BURST_PER_IP.to_string();
    let paced = flood(&[
        "--handshake-rate-per-ip",
        &rate,
        "--handshake-burst-per-ip",
        &burst,
        "--tarpit-ms",
        "500",
    ]);
    let open = flood(&["--max-conns-per-ip", "0"]);
    eprintln!("FLOOD paced: {paced:?}");
    eprintln!("FLOOD unlimited: {open:?}");
    // The pace: each flooding address gets its rate plus one burst; the
    // probe's own upgrades (one per 25 ms at most) come on top.
    let allowed =
        (FLOODERS * (RATE_PER_IP * FLOOD_SECS + BURST_PER_IP)) as f64 / FLOOD_SECS as f64 + 40.0;
    assert!(
        paced.admitted_per_s <= allowed * 1.1,
        "admitted {:.0}/s, pace allows {allowed:.0}/s",
        paced.admitted_per_s
    );
    assert_eq!(paced.probe_failures, 0, "{paced:?}");
    assert!(paced.probes >= 20, "{paced:?}");
    assert!(
        paced.probe_p99 < Duration::from_millis(500),
        "probe p99 {:?}",
        paced.probe_p99
    );
    // The tarpit slows the loop itself: far fewer attempts reach the server.
    assert!(
        paced.attempts_per_s < open.attempts_per_s,
        "paced {paced:?} vs unlimited {open:?}"
    );
}
