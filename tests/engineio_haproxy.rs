//! Engine.IO through a real HAProxy running tuning/haproxy-engineio.cfg as
//! shipped, in front of two `surge serve` nodes with an `engineio-echo`
//! route: the stock engine.io-client (tests/engineio/through_balancer.mjs)
//! keeps polling sessions and upgraded ones on one node each by HAProxy's
//! cookie (no request of theirs reaches a node that does not know its sid),
//! both nodes serve sessions (their cookies and their own `/metrics` say
//! so), a session without the cookie is lost (so the cookie is what holds
//! the others together), and while a node drains and stops new sessions
//! land on the other one and HAProxy's health check marks it down.

mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::free_port;
use support::{http_get, metric, output_within, Server};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Pings every 300 ms (the protocol suite's setting), so each polling
/// session answers several, each one more request to keep on its node. The
/// ping timeout is long: on a loaded machine a pong may be late, and a
/// session lost to that would look like one sent to the wrong node.
const ROUTE: &str = "[[routes]]\npath = \"/engine.io/\"\nkind = \"engineio-echo\"\n\
                     ping-interval-ms = 300\nping-timeout-ms = 2000\n";

/// A running haproxy, killed on drop, with what it printed.
struct Haproxy {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Haproxy {
    /// haproxy in the foreground on a free loopback port, in front of
    /// `nodes`, once it accepts connections.
    fn start(nodes: [SocketAddr; 2]) -> Self {
        let port = free_port();
        let config = Path::new(MANIFEST).join("tuning/haproxy-engineio.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("SURGE_LB_BIND", format!("127.0.0.1:{port}"))
            .env("SURGE_NODE1", nodes[0].to_string())
            .env("SURGE_NODE2", nodes[1].to_string())
            // Two descriptors a connection, within the test's fd budget.
            .env("SURGE_LB_MAXCONN", "1000")
            // The request log, shown when a session fails.
            .env("SURGE_LB_LOG", "stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run haproxy ({e}): it must be on PATH; run `bash scripts/test.sh`, \
                     which installs it (apt-get install haproxy)"
                )
            });
        let mut proxy = Self {
            child,
            port,
            stderr: Arc::default(),
        };
        let mut pipe = proxy.child.stderr.take().unwrap();
        let sink = Arc::clone(&proxy.stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = support::read_resuming(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("haproxy exited ({status}):\n{}", proxy.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on port {port} within 10 s:\n{}",
                proxy.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (bounded: 10 s) until haproxy has said `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "haproxy did not say {text:?} within 10 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A surge node serving the Engine.IO echo route, believing HAProxy's
/// X-Forwarded-For (HAProxy connects from 127.0.0.1).
fn node(config: &Path) -> Server {
    Server::start(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
}

/// Runs the driver's `scenarios` at once through `proxy`; one result each.
fn sessions(proxy: &Haproxy, scenarios: &[&str]) -> Vec<Value> {
    let driver = Path::new(MANIFEST).join("tests/engineio/through_balancer.mjs");
    let out = output_within(
        Command::new("node")
            .arg(driver)
            .arg(proxy.url())
            .args(scenarios),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("driver printed {line:?}: {e}"))
        })
        .collect();
    assert!(
        out.status.success() && results.len() == scenarios.len(),
        "sessions through haproxy failed ({}):\n{stdout}{}\nhaproxy:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        proxy.stderr()
    );
    results
}

/// The nodes (cookie values) the sessions were pinned to.
fn cookies(results: &[Value]) -> BTreeSet<String> {
    results
        .iter()
        .map(|r| {
            r["cookie"]
                .as_str()
                .unwrap_or_else(|| panic!("no cookie: {r}"))
                .to_owned()
        })
        .collect()
}

/// Requests a node refused for naming a sid it does not know.
fn unknown_sids(node: &Server) -> u64 {
    let (status, _, body) = http_get(node.addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with("surge_engineio_refused_total{") && l.contains("\"unknown_sid\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Unknown-sid refusals over both nodes once they stop changing: a request
/// of a client that has just gone may still be on its way through HAProxy.
fn settled_unknown_sids(a: &Server, b: &Server) -> u64 {
    let mut last = unknown_sids(a) + unknown_sids(b);
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = unknown_sids(a) + unknown_sids(b);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("unknown-sid refusals still rising after 5 s: {last}");
}

fn config_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("surge-engineio-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("engineio.toml");
    std::fs::write(&path, ROUTE).unwrap();
    path
}

#[test]
fn sessions_stay_on_their_node_behind_haproxy() {
    let client = Path::new(MANIFEST).join("tests/engineio/node_modules/engine.io-client");
    assert!(
        client.exists(),
        "engine.io-client is missing: run `bash scripts/test.sh`, which installs it \
         (npm ci --prefix tests/engineio)"
    );
    let config = config_file();
    let a = node(&config);
    let b = node(&config);
    let proxy = Haproxy::start([a.addr, b.addr]);

    // Alone, while both nodes are idle, so leastconn takes them in turn:
    // without a cookie the requests of one session reach both nodes.
    let lost = sessions(&proxy, &["cookieless"]);
    assert!(lost[0]["lostAfter"].is_u64(), "{:?}", lost);
    let refused = settled_unknown_sids(&a, &b);
    assert!(
        refused >= 1,
        "the cookieless session's loss was not an unknown sid"
    );
    let received = [&a, &b].map(|n| metric(n.addr, "surge_engineio_packets_received_total"));

    let results = sessions(
        &proxy,
        &[
            "polling", "polling", "polling", "upgrade", "upgrade", "upgrade",
        ],
    );
    for r in &results[..3] {
        assert_eq!(r["echoed"], 12, "{r}");
        assert!(r["pings"].as_u64().unwrap() >= 2, "{r}");
    }
    assert_eq!(
        cookies(&results),
        BTreeSet::from(["s1".to_owned(), "s2".to_owned()]),
        "sessions went to one node only: {results:?}\nhaproxy:\n{}",
        proxy.stderr()
    );
    // The nodes' own count: each received messages, the three upgrades
    // happened, and no request reached a node that did not know its sid.
    for (node, before) in [&a, &b].into_iter().zip(received) {
        let now = metric(node.addr, "surge_engineio_packets_received_total");
        assert!(now > before, "node {} received no messages", node.addr);
    }
    let upgrades: u64 = [&a, &b]
        .map(|n| metric(n.addr, "surge_engineio_upgrades_total"))
        .iter()
        .sum();
    assert_eq!(upgrades, 3);
    assert_eq!(settled_unknown_sids(&a, &b), refused, "{results:?}");

    // Node 1 is told to stop and drains: it answers new handshakes 503,
    // then stops listening. New sessions land on node 2 all along (HAProxy
    // retries a handshake elsewhere on a 503 or a refused connection), and
    // the health check takes node 1 out.
    let status = Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let results = sessions(&proxy, &["polling", "upgrade"]);
    assert_eq!(cookies(&results), BTreeSet::from(["s2".to_owned()]));
    proxy.wait_for("surge1 is DOWN");
    drop(b);
}
