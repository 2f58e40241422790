//! Headless Chromium (Debian's `chromium`, installed by scripts/test.sh)
//! opens a page that echoes messages through `surge serve` with the
//! permessage-deflate Chromium always offers, then publishes the outcome to
//! a hub topic this test subscribes to.

mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tungstenite::Message;

#[test]
fn chromium_echoes_compressed_messages() {
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["serve", "--backend", backend]);
        let stream = TcpStream::connect(server.addr).unwrap();
        let (mut listener, _) = tungstenite::client(
            format!("ws://{}/hub", server.addr).as_str(),
            Patient(stream),
        )
        .unwrap();
        listener
            .send(Message::text(
                r#"{"op":"subscribe","topics":["chromium-result"]}"#,
            ))
            .unwrap();
        let _ack = listener.read().unwrap();
        let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/page/deflate_echo.html");
        let profile =
            std::env::temp_dir().join(format!("surge-chromium-{}-{backend}", std::process::id()));
        let url = format!("file://{page}?base=ws://{}", server.addr);
        let mut chromium = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is not installed: run `bash scripts/test.sh`, which installs it");
        listener
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let start = Instant::now();
        let result = listener.read();
        let _ = chromium.kill();
        let _ = chromium.wait();
        let _ = std::fs::remove_dir_all(&profile);
        let text = match result {
            Ok(Message::Text(t)) => t.to_string(),
            other => panic!(
                "{backend}: no result from the page after {:?}: {other:?}",
                start.elapsed()
            ),
        };
        println!("{backend}: {text}");
        assert!(text.contains("permessage-deflate"), "{backend}: {text}");
        assert!(text.contains("echoes OK: 4"), "{backend}: {text}");
    }
}
