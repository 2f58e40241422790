//! `--max-lifetime-ms`: every WebSocket (an Engine.IO session's among them)
//! and event stream is closed (1001, or the stream ends) at a moment spread over the tenth of the lifetime
//! after it, whatever traffic it has, so long-lived clients rebalance
//! across nodes after a scale-out; connections younger than it are left.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::Server;

#[test]
fn connections_are_closed_with_1001_within_a_tenth_past_their_lifetime() {
    for backend in support::hub::BACKENDS {
        let server = Server::start(&[
            "serve",
            "--backend",
            backend,
            "--max-lifetime-ms",
            "1500",
            "--shards",
            "2",
        ]);
        let addr = server.addr;
        let opened = Instant::now();
        let mut clients: Vec<_> = (0..8)
            .map(|_| {
                let url = format!("ws://{addr}/echo");
                let s = support::connect(addr);
                tungstenite::client(url.as_str(), support::Patient(s))
                    .expect("upgrade")
                    .0
            })
            .collect();
        // An Engine.IO session on a WebSocket (as socket.io-client opens
        // one): its WebSocket is closed the same way, and the stock client
        // reconnects after that `transport close`.
        let mut engineio = {
            let url = format!("ws://{addr}/engine.io/?EIO=4&transport=websocket");
            let s = support::connect(addr);
            tungstenite::client(url.as_str(), support::Patient(s))
                .expect("upgrade")
                .0
        };
        let mut stream = support::connect(addr);
        stream
            .write_all(b"GET /hub/events?topics=a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .unwrap();
        assert_eq!(support::read_response_head(&mut stream).0, 200);
        // Traffic does not buy a connection more time.
        for _ in 0..10 {
            for ws in &mut clients {
                ws.send(tungstenite::Message::text("hi")).unwrap();
                assert!(ws.read().unwrap().is_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(opened.elapsed() < Duration::from_millis(1500));
        for ws in clients.iter_mut().chain([&mut engineio]) {
            let (code, reason) = support::hub::close_frame(ws);
            let lived = opened.elapsed();
            assert_eq!(code, 1001, "{backend}");
            assert_eq!(reason, "max lifetime reached");
            // 1500 ms, a tenth more, and a few ticks for the test's own
            // reading.
            assert!(
                (Duration::from_millis(1500)..Duration::from_millis(1900)).contains(&lived),
                "{backend}: closed after {lived:?}"
            );
            // The close reply goes out.
            let _ = ws.flush();
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            opened.elapsed() < Duration::from_millis(2500),
            "{backend}: the event stream did not end"
        );
        drop(stream);
        drop(clients);
        drop(engineio);
        // The scrape itself is the one connection left.
        support::wait_metric(addr, "surge_connections_open", |open| open == 1);
    }
}
