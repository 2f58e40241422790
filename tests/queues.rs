//! A shard's hub inbox is bounded in bytes: a shard that stops draining
//! refuses what does not fit and counts it, and the process's peak memory
//! shows it (the relay queue of the Redis bridge: tests/bridge.rs).
//!
//! The server runs in this process (through the embedding API), so the
//! publishing thread can push hundreds of MiB in well under a second and
//! `/proc/self/status` is the server's own memory. The peak is reset
//! (`/proc/self/clear_refs`) before each measurement.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use support::{metric, proc_status_kib, Patient};
use surge::app::{App, Backend, Config, Handler, Message as AppMessage, Running, Ws as AppWs};
use tungstenite::Message;

/// One large message: a mebibyte.
const MIB: usize = 1 << 20;
/// Messages the test publishes: far more than the bound holds.
const PUBLISHES: u64 = 512;
/// What the default bound lets a stalled shard hold: 64 MiB.
const DEFAULT_BOUND_MIB: u64 = 64;

/// This process's peak resident memory, in MiB.
fn peak_mib() -> u64 {
    proc_status_kib("self", "VmHWM") / 1024
}

/// Makes the current resident size the peak again.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

fn start(backend: Backend, config: Config, app: App) -> Running {
    app.config(config)
        .listen("127.0.0.1:0".parse().unwrap())
        .backend(backend)
        .shards(1)
        .start()
        .expect("start")
}

fn addr(running: &Running) -> SocketAddr {
    running.local_addrs()[0]
}

/// Holds its shard inside `message` until told to go on (or 20 s pass), so
/// the shard's inbox is not drained meanwhile.
struct Stall {
    entered: Mutex<Sender<()>>,
    go_on: Mutex<Receiver<()>>,
}

impl Handler for Stall {
    fn message(&self, _ws: &mut AppWs<'_>, _msg: AppMessage<'_>) {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self
            .go_on
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(20));
    }
}

#[test]
fn a_shard_that_does_not_drain_refuses_publishes_past_its_inbox_bytes() {
    for backend in [Backend::Epoll, Backend::Uring] {
        let (entered_tx, entered) = mpsc::channel();
        let (go_on, go_on_rx) = mpsc::channel();
        let stall = Stall {
            entered: Mutex::new(entered_tx),
            go_on: Mutex::new(go_on_rx),
        };
        let server = start(
            backend,
            Config::default(),
            App::new().route("/stall", stall),
        );
        let addr = addr(&server);
        let stream = support::connect(addr);
        let (mut ws, _) =
            tungstenite::client(format!("ws://{addr}/stall").as_str(), Patient(stream))
                .expect("upgrade");
        ws.send(Message::text("hold the shard")).unwrap();
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the shard never reached the handler");

        reset_peak();
        let before = peak_mib();
        let publisher = server.publisher();
        let payload = vec![7u8; MIB];
        for _ in 0..PUBLISHES {
            publisher.publish_binary("news", &payload);
        }
        let grown = peak_mib().saturating_sub(before);
        go_on.send(()).unwrap();

        let dropped = metric(addr, "surge_pubsub_inbox_dropped_total");
        eprintln!(
            "INBOX {backend:?}: {PUBLISHES} x 1 MiB to a stalled shard: peak grew {grown} MiB, \
             {dropped} refused"
        );
        // (The second backend reuses heap the first one freed, so its figure
        // is lower; queuing all 512 MiB would still show.)
        assert!(
            grown < DEFAULT_BOUND_MIB + 48,
            "{backend:?}: the peak grew {grown} MiB"
        );
        // At most the bound's worth got in, and at least half of it.
        assert!(
            (PUBLISHES - DEFAULT_BOUND_MIB..=PUBLISHES - DEFAULT_BOUND_MIB / 2).contains(&dropped),
            "{backend:?}: {dropped} refused"
        );
        // Drained, the inbox takes publishes again.
        publisher.publish_binary("news", &payload);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(metric(addr, "surge_pubsub_inbox_dropped_total"), dropped);
    }
}

fn surge(args: &[&str]) -> (Option<i32>, String, String) {
    let out = support::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_surge")).args(args),
        Duration::from_secs(20),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inbox_bytes_is_a_setting_with_a_default_and_a_floor() {
    let (code, out, stderr) = surge(&["serve", "--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains("\ninbox-bytes = 67108864\n"), "{out}");
    let (code, out, stderr) = surge(&["serve", "--inbox-bytes", "4096", "--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains("\ninbox-bytes = 4096\n"), "{out}");
    let (code, _, stderr) = surge(&["serve", "--inbox-bytes", "0", "--check-config"]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("--inbox-bytes must be at least 1"),
        "{stderr}"
    );
}
