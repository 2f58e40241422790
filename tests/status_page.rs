//! The status page at `GET /` of `surge serve`: served as one
//! self-contained HTML file, and, in headless Chromium (Debian's
//! `chromium`, installed by scripts/test.sh), live: ticks arrive over its
//! WebSocket and `/metrics` is polled, on both drivers.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::*;

fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    http_get(addr, path)
}

#[test]
fn the_page_is_served_beside_the_ticker_only() {
    let server = Server::start(&["serve"]);
    let (status, headers, body) = get(server.addr, "/");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert!(body.starts_with("<!doctype html>"), "{body}");
    for part in ["<canvas", "/ticker", "/metrics"] {
        assert!(body.contains(part), "no {part}");
    }
    // Self-contained: nothing is loaded from another host.
    for external in ["src=\"http", "href=\"http", "src=\"//", "@import"] {
        assert!(!body.contains(external), "{external}");
    }
    // A query string does not change the answer.
    assert_eq!(get(server.addr, "/?refresh=1").0, 200);

    // Without a feed there is nothing to show: `surge echo` keeps asking
    // plain requests to upgrade.
    let echo = Server::start(&["echo"]);
    let (status, headers, _) = get(echo.addr, "/");
    assert_eq!(status, 426);
    assert_eq!(header(&headers, "upgrade"), Some("websocket"));
}

/// Runs headless Chromium on `url` with `extra` flags; its stdout.
fn chromium(url: &str, extra: &[&str], profile: &str) -> String {
    let dir = std::env::temp_dir().join(format!("surge-status-{}-{profile}", std::process::id()));
    let output = output_within(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .args(extra)
            .arg(url),
        Duration::from_secs(90),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The value of `attr="..."` in the first tag that has it.
fn attr<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let start = dom.find(&format!(" {attr}=\""))? + attr.len() + 3;
    dom[start..].split('"').next()
}

/// Headless Chromium showing one page, driven over the DevTools protocol
/// so that the DOM is read after real seconds: virtual time (as with
/// `--dump-dom --virtual-time-budget`) runs ahead of a live feed.
struct Browser {
    child: std::process::Child,
    profile: std::path::PathBuf,
    page: tungstenite::WebSocket<Patient>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    fn open(url: &str, name: &str) -> Self {
        let profile =
            std::env::temp_dir().join(format!("surge-status-{}-{name}", std::process::id()));
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("chromium is not installed: run `bash scripts/test.sh`, which installs it");
        // Chromium names its DevTools port on stderr; keep reading after
        // that so it never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        let devtools: SocketAddr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium never opened its DevTools port")
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let target = loop {
            let (_, _, list) = get(devtools, "/json/list");
            let pages: serde_json::Value = serde_json::from_str(&list).unwrap();
            let found = pages.as_array().into_iter().flatten().find(|p| {
                p["type"] == "page" && p["url"].as_str().is_some_and(|u| u.starts_with(url))
            });
            if let Some(page) = found {
                break page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "no page: {list}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = std::net::TcpStream::connect(devtools).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (page, _) = tungstenite::client(target.as_str(), Patient(stream)).unwrap();
        Self {
            child,
            profile,
            page,
            next_id: 1,
        }
    }

    /// The page's DOM as it is now.
    fn dom(&mut self) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let call = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {
                "expression": "document.documentElement.outerHTML",
                "returnByValue": true,
            },
        });
        self.page
            .send(tungstenite::Message::text(call.to_string()))
            .unwrap();
        loop {
            let message = self.page.read().unwrap();
            let Ok(text) = message.to_text() else {
                continue;
            };
            let reply: serde_json::Value = serde_json::from_str(text).unwrap();
            if reply["id"] == id {
                return reply["result"]["result"]["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{reply}"))
                    .to_owned();
            }
        }
    }
}

/// What the page shows: body attributes and each ticker row's cells.
struct Shown {
    body: String,
    rows: Vec<Vec<String>>,
}

impl Shown {
    fn parse(dom: &str) -> Self {
        let body = dom[dom
            .find("<body")
            .unwrap_or_else(|| panic!("no body:\n{dom}"))..]
            .to_owned();
        let rows = body
            .split("<tr data-symbol=")
            .skip(1)
            .map(|row| {
                row.split("<td")
                    .skip(1)
                    .map(|cell| {
                        let cell = &cell[cell.find('>').unwrap() + 1..];
                        cell[..cell.find("</td>").unwrap()].to_owned()
                    })
                    .collect()
            })
            .collect();
        Self { body, rows }
    }

    fn number(&self, name: &str) -> u64 {
        attr(&self.body, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{}", self.body))
    }
}

#[test]
fn chromium_shows_live_ticks_and_counters() {
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["serve", "--backend", backend]);
        let url = format!("http://{}/", server.addr);
        let mut browser = Browser::open(&url, backend);
        std::thread::sleep(Duration::from_millis(1500));
        let first = Shown::parse(&browser.dom());
        std::thread::sleep(Duration::from_millis(1500));
        let then = Shown::parse(&browser.dom());
        for shown in [&first, &then] {
            assert_eq!(attr(&shown.body, "data-ws"), Some("open"), "{backend}");
            assert_eq!(shown.rows.len(), 8, "{backend}:\n{}", shown.body);
            for row in &shown.rows {
                assert!(row[1].parse::<f64>().is_ok(), "{backend}: {row:?}");
                assert!(row[2].parse::<u64>().is_ok(), "{backend}: {row:?}");
            }
        }
        // The feed is live: the counters and every symbol's sequence moved
        // between the two looks.
        assert!(
            then.number("data-updates") > first.number("data-updates"),
            "{backend}"
        );
        for (a, b) in first.rows.iter().zip(&then.rows) {
            assert_eq!(a[0], b[0], "{backend}");
            let (was, now) = (a[2].parse::<u64>().unwrap(), b[2].parse::<u64>().unwrap());
            assert!(now > was, "{backend}: {} seq {was} then {now}", a[0]);
        }
        // /metrics is polled every second and its numbers shown: the
        // page's own WebSocket is open, and ticks are being sent.
        assert!(
            then.number("data-scrapes") > first.number("data-scrapes"),
            "{backend}"
        );
        assert!(then.number("data-connections") >= 1, "{backend}");
        let rate: f64 = attr(&then.body, "data-rate").unwrap().parse().unwrap();
        assert!(rate > 0.0, "{backend}: {rate} messages/s");
        assert!(
            then.body.contains(&format!("backend {backend}")),
            "{backend}"
        );
    }
}

#[test]
fn chromium_screenshot_of_the_page() {
    let server = Server::start(&["serve"]);
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &format!("http://{}/", server.addr),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1000,700",
            "--virtual-time-budget=5000",
        ],
        "screenshot",
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    // A blank 1000x700 page compresses to a few kilobytes; text, a table
    // and a chart do not.
    assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
}
