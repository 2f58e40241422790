//! Pub/sub against real sockets and a real client (tungstenite): the hub's
//! fan-out across shards, the ticker feed, subscription churn, and slow
//! consumers under both backpressure policies, on both drivers.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{connect_from, metric, proc_status_kib, read_resuming, wait_metric, Patient, Server};
use tungstenite::{Message, WebSocket};

const BACKENDS: [&str; 2] = ["epoll", "uring"];

type Ws = WebSocket<Patient>;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A tungstenite client from source address `from` on `path`.
fn client(from: IpAddr, addr: SocketAddr, path: &str) -> Ws {
    let stream = connect_from(from, addr);
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tungstenite::client(url.as_str(), Patient(stream)).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn send(ws: &mut Ws, json: &str) {
    ws.send(Message::text(json)).expect("send");
}

/// Subscribes and returns the `subscribed` answer.
fn subscribe(ws: &mut Ws, topics: &str) -> String {
    send(ws, &format!(r#"{{"op":"subscribe","topics":[{topics}]}}"#));
    let ack = text(ws);
    assert!(ack.starts_with(r#"{"op":"subscribed""#), "{ack}");
    ack
}

/// The epoch a `subscribed` answer reports for `topic`.
fn epoch(ack: &str, topic: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(ack).expect("JSON");
    let epoch = v["positions"][topic]["epoch"].as_str().expect("an epoch");
    assert_eq!(epoch.len(), 16, "{ack}");
    epoch.to_owned()
}

#[test]
fn every_subscriber_on_every_shard_gets_every_message_in_order() {
    const MESSAGES: usize = 500;
    for backend in BACKENDS {
        let server = Server::start(&["serve", "--backend", backend, "--shards", "2"]);
        let addr = server.addr;
        let mut epochs = Vec::new();
        let mut subscribers: Vec<Ws> = (0..40)
            .map(|i| {
                let mut ws = client(ip(2 + i % 8), addr, "/hub");
                epochs.push(epoch(&subscribe(&mut ws, r#""news","other""#), "news"));
                ws
            })
            .collect();
        // One stream, whichever shard asked.
        assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");
        let e = &epochs[0];
        wait_metric(addr, "surge_subscriptions", |v| v == 80);
        let mut publisher = client(ip(20), addr, "/hub");
        for i in 0..MESSAGES {
            send(
                &mut publisher,
                &format!(r#"{{"op":"publish","topic":"news","data":{i}}}"#),
            );
        }
        for ws in &mut subscribers {
            for i in 0..MESSAGES {
                assert_eq!(
                    text(ws),
                    format!(
                        r#"{{"topic":"news","epoch":"{e}","offset":{},"data":{i}}}"#,
                        i + 1
                    ),
                    "{backend}"
                );
            }
        }
        // The publisher is not a subscriber and got nothing.
        publisher
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(publisher.read().is_err());
        let delivered = metric(addr, "surge_pubsub_delivered_total");
        assert_eq!(delivered, (40 * MESSAGES) as u64, "{backend}");
    }
}

#[test]
fn ticker_subscribers_get_every_tick_in_order() {
    for backend in BACKENDS {
        let server = Server::start(&[
            "ticker",
            "--backend",
            backend,
            "--shards",
            "2",
            "--symbols",
            "4",
            "--rate",
            "200",
        ]);
        let addr = server.addr;
        let mut all: Vec<Ws> = (0..10)
            .map(|i| client(ip(2 + i), addr, "/ticker"))
            .collect();
        let mut one: Vec<Ws> = (0..4)
            .map(|i| client(ip(2 + i), addr, "/ticker/MSFT"))
            .collect();
        let check = |ws: &mut Ws, ticks: usize, only: Option<&str>| {
            let mut last = std::collections::HashMap::new();
            for _ in 0..ticks {
                let t = text(ws);
                let f: Vec<&str> = t.split(' ').collect();
                assert_eq!(f.len(), 4, "{t}");
                if let Some(symbol) = only {
                    assert_eq!(f[0], symbol);
                }
                let seq: u64 = f[1].parse().unwrap();
                if let Some(prev) = last.insert(f[0].to_owned(), seq) {
                    assert_eq!(seq, prev + 1, "{backend}: gap in {t}");
                }
            }
            last.len()
        };
        for ws in &mut all {
            assert_eq!(check(ws, 200, None), 4);
        }
        for ws in &mut one {
            check(ws, 50, Some("MSFT"));
        }
        let unknown = tungstenite::client(
            format!("ws://{addr}/ticker/NOPE").as_str(),
            Patient(TcpStream::connect(addr).unwrap()),
        );
        assert!(unknown.is_err(), "an unknown symbol is a 404");
    }
}

/// A tick's fields: symbol, sequence, the microsecond it was sent.
fn tick(ws: &mut Ws) -> (String, u64, u64) {
    let t = text(ws);
    let f: Vec<&str> = t.split(' ').collect();
    assert_eq!(f.len(), 4, "{t}");
    (
        f[0].to_owned(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
    )
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A new ticker subscriber first gets the latest tick of every symbol,
/// each sent before it connected, then live ticks: every symbol's sequence
/// goes on from its snapshot by one, nothing twice, nothing skipped, on
/// either shard, whether it joins between two rounds of ticks (5 Hz) or
/// amid a fast feed.
#[test]
fn a_ticker_subscriber_gets_the_latest_tick_of_every_symbol_first() {
    const SYMBOLS: usize = 6;
    for backend in BACKENDS {
        for rate in ["5", "1000"] {
            let server = Server::start(&[
                "ticker",
                "--backend",
                backend,
                "--shards",
                "2",
                "--symbols",
                &SYMBOLS.to_string(),
                "--rate",
                rate,
            ]);
            let addr = server.addr;
            // The first round goes out as the feed starts.
            std::thread::sleep(Duration::from_millis(100));
            let slow = rate == "5";
            for i in 0..4u8 {
                let path = if i == 3 { "/ticker/MSFT" } else { "/ticker" };
                let keys = if i == 3 { 1 } else { SYMBOLS };
                let connected = now_us();
                let mut ws = client(ip(2 + i), addr, path);
                let mut last = std::collections::HashMap::new();
                for _ in 0..keys {
                    let (symbol, seq, sent) = tick(&mut ws);
                    // Between two slow rounds, the snapshot can only
                    // hold ticks sent before: a live one is sent after.
                    assert!(
                        !slow || sent < connected,
                        "{backend}: {path} began with a live tick of {symbol}"
                    );
                    assert!(last.insert(symbol, seq).is_none(), "{backend}: twice");
                }
                for _ in 0..if slow { keys } else { 50 * keys } {
                    let (symbol, seq, sent) = tick(&mut ws);
                    let before = last.insert(symbol.clone(), seq);
                    assert_eq!(before, Some(seq - 1), "{backend} at {rate} Hz: {symbol}");
                    if slow {
                        assert!(
                            sent > connected,
                            "{backend}: {symbol} {seq} is no live tick"
                        );
                    }
                }
                if slow {
                    expect_quiet(&mut ws, Duration::from_millis(100));
                }
            }
            assert!(metric(addr, "surge_pubsub_snapshots_total") >= 4);
        }
    }
}

/// Nothing arrives on `ws` for `quiet`.
fn expect_quiet(ws: &mut Ws, quiet: Duration) {
    ws.get_mut().set_read_timeout(Some(quiet)).unwrap();
    assert!(ws.read().is_err(), "an unexpected message arrived");
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
}

#[test]
fn churning_100k_subscriptions_leaves_nothing_behind() {
    let server = Server::start(&["serve", "--shards", "2"]);
    let addr = server.addr;
    let pid = server.pid();
    let start_rss = proc_status_kib(pid, "VmRSS");
    let threads: Vec<_> = (0..8u8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = client(ip(2 + c), addr, "/hub");
                for round in 0..200 {
                    let topics: Vec<String> =
                        (0..64).map(|i| format!("\"t{c}-{round}-{i}\"")).collect();
                    let list = topics.join(",");
                    subscribe(&mut ws, &list);
                    send(
                        &mut ws,
                        &format!(r#"{{"op":"unsubscribe","topics":[{list}]}}"#),
                    );
                    assert!(text(&mut ws).starts_with(r#"{"op":"unsubscribed""#));
                }
                // Some subscriptions are still held when the client vanishes.
                subscribe(&mut ws, r#""kept-a","kept-b""#);
                if c % 2 == 0 {
                    support::reset(ws.get_ref().try_clone().unwrap());
                }
                drop(ws);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_metric(addr, "surge_subscriptions", |v| v == 0);
    wait_metric(addr, "surge_topics", |v| v == 0);
    let grown = proc_status_kib(pid, "VmRSS").saturating_sub(start_rss);
    assert!(
        grown < 32 * 1024,
        "RSS grew {grown} KiB over 102,400 subscriptions"
    );
}

/// A subscriber that never reads: a small receive window, so the server
/// sees it fall behind quickly.
fn stalled(addr: SocketAddr, path: &str) -> Ws {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(&SocketAddr::new(ip(30), 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    let (ws, _) =
        tungstenite::client(format!("ws://{addr}{path}").as_str(), Patient(stream)).unwrap();
    ws
}

#[test]
fn a_slow_hub_subscriber_is_disconnected_while_fast_ones_keep_up() {
    const MESSAGES: usize = 3000;
    for backend in BACKENDS {
        let server = Server::start(&[
            "serve",
            "--backend",
            backend,
            "--shards",
            "1",
            "--max-backpressure",
            "1048576",
        ]);
        let addr = server.addr;
        let pid = server.pid();
        let mut slow = stalled(addr, "/hub");
        subscribe(&mut slow, r#""big""#);
        let mut fast = client(ip(31), addr, "/hub");
        subscribe(&mut fast, r#""big""#);
        let rss_before = proc_status_kib(pid, "VmRSS");
        let payload = "x".repeat(2000);
        let reader = std::thread::spawn(move || {
            for i in 0..MESSAGES {
                let t = text(&mut fast);
                assert!(t.ends_with(&format!("{i}\"}}")), "message {i} out of order");
            }
        });
        let mut publisher = client(ip(32), addr, "/hub");
        for i in 0..MESSAGES {
            send(
                &mut publisher,
                &format!(r#"{{"op":"publish","topic":"big","data":"{payload}{i}"}}"#),
            );
            // About 10 MB/s: well within what a reader that reads can take,
            // even in a debug build.
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        reader
            .join()
            .expect("the fast reader got everything in order");
        assert_eq!(
            metric(addr, "surge_pubsub_disconnected_total"),
            1,
            "{backend}"
        );
        assert_eq!(metric(addr, "surge_admission_overload_closes_total"), 1);
        // 6 MB went out; the stalled client's share did not pile up here.
        let grown = proc_status_kib(pid, "VmRSS").saturating_sub(rss_before);
        assert!(grown < 16 * 1024, "{backend}: RSS grew {grown} KiB");
        // Reading again, it finds what was already in flight, then the
        // 1013 close with a retry hint, then the end of the connection.
        slow.get_mut()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let close = loop {
            match slow.read() {
                Ok(Message::Close(frame)) => break frame.expect("a close code"),
                Ok(_) => {}
                Err(e) => panic!("{backend}: no close frame: {e}"),
            }
        };
        assert_eq!(u16::from(close.code), 1013, "{backend}");
        assert!(close.reason.contains("retry in"), "{}", close.reason);
        let mut raw = slow.get_ref().try_clone().unwrap();
        let mut sink = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match read_resuming(&mut raw, &mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(Instant::now() < deadline, "never closed"),
            }
        }
    }
}

#[test]
fn a_slow_ticker_subscriber_is_conflated_to_the_latest_prices() {
    for backend in BACKENDS {
        let server = Server::start(&[
            "ticker",
            "--backend",
            backend,
            "--shards",
            "1",
            "--symbols",
            "8",
            "--rate",
            "1000",
            "--ticker-max-backpressure",
            "16384",
            "--ticker-send-buffer",
            "8192",
        ]);
        let addr = server.addr;
        let pid = server.pid();
        let mut slow = stalled(addr, "/ticker");
        let mut fast = client(ip(33), addr, "/ticker");
        let rss_before = proc_status_kib(pid, "VmRSS");
        // Two seconds of 8,000 ticks a second: the fast reader misses none.
        let mut last = std::collections::HashMap::new();
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < Duration::from_secs(2) {
            let t = text(&mut fast);
            let f: Vec<&str> = t.split(' ').collect();
            let seq: u64 = f[1].parse().unwrap();
            if let Some(prev) = last.insert(f[0].to_owned(), seq) {
                assert_eq!(seq, prev + 1, "{backend}: the fast reader lost {t}");
            }
            n += 1;
        }
        assert!(n > 8000, "{n} ticks in 2 s");
        let conflated = metric(addr, "surge_pubsub_conflated_total");
        assert!(conflated > 1000, "{backend}: {conflated}");
        let grown = proc_status_kib(pid, "VmRSS").saturating_sub(rss_before);
        assert!(grown < 8 * 1024, "{backend}: RSS grew {grown} KiB");
        // Reading again, the slow client catches up to current prices
        // instead of replaying two seconds of backlog.
        let newest = *last.values().max().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t = text(&mut slow);
            let seq: u64 = t.split(' ').nth(1).unwrap().parse().unwrap();
            if seq >= newest {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend}: still replaying at {seq}"
            );
        }
        assert!(metric(addr, "surge_pubsub_snapshots_total") >= 1);
    }
}

#[test]
fn hub_mistakes_get_an_error_and_the_connection_stays_open() {
    let server = Server::start(&["serve", "--max-topics-per-conn", "2"]);
    let mut ws = client(ip(40), server.addr, "/hub");
    let error = |ws: &mut Ws| -> String {
        let t = text(ws);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["op"], "error", "{t}");
        v["error"].as_str().unwrap().to_owned()
    };
    for (request, reason) in [
        ("{", "bad JSON"),
        ("[1]", "expected a JSON object"),
        (r#"{"op":"dance"}"#, "unknown op"),
        (r#"{"op":"subscribe","topics":[]}"#, "1 to 64 topics"),
        (
            r#"{"op":"subscribe","topics":["a"],"extra":1}"#,
            "unknown field",
        ),
        (r#"{"op":"publish","topic":"a"}"#, "needs \"data\""),
        (
            r#"{"op":"subscribe","topics":["a","b","c"]}"#,
            "at most 2 topics per connection",
        ),
    ] {
        send(&mut ws, request);
        let e = error(&mut ws);
        assert!(e.contains(reason), "{request}: {e}");
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert!(error(&mut ws).contains("JSON text"));
    // Still usable.
    subscribe(&mut ws, r#""a""#);
}
