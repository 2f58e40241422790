//! Positions and history in Redis (`--redis-url`), against a real
//! redis-server started here: a client resumes on another node from the
//! position the first one gave it, a Redis restarted without its data makes
//! a new epoch (never a wrong replay), and with Redis down a node keeps
//! serving its own subscribers and answers resumes "unavailable" at once;
//! a drained node sends what its relay still holds before it exits.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::hub::{hub_client, loopback, next_text, send_text, HubWs};
use support::redis::{free_port, Redis};
use support::{metric, wait_metric, Server};

fn node(url: &str) -> Server {
    let server = Server::start(&["serve", "--redis-url", url, "--history-size", "100"]);
    wait_metric(server.addr, "surge_shared_history_available", |v| v == 1);
    wait_metric(server.addr, "surge_bridge_connected", |v| v == 1);
    server
}

fn client(addr: SocketAddr) -> HubWs {
    let mut ws = hub_client(loopback(1), addr);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ws
}

/// Subscribes to "news", resuming from `since` if given; the answer.
fn subscribe(ws: &mut HubWs, since: Option<&(String, u64)>) -> Value {
    let request = match since {
        None => r#"{"op":"subscribe","topics":["news"]}"#.to_owned(),
        Some((epoch, offset)) => format!(
            r#"{{"op":"subscribe","topics":["news"],"since":{{"news":{{"epoch":"{epoch}","offset":{offset}}}}}}}"#
        ),
    };
    send_text(ws, &request);
    let answer: Value = serde_json::from_str(&next_text(ws)).unwrap();
    assert_eq!(answer["op"], "subscribed", "{answer}");
    answer
}

fn publish(ws: &mut HubWs, data: &str) {
    send_text(
        ws,
        &format!(r#"{{"op":"publish","topic":"news","data":"{data}"}}"#),
    );
}

/// The next message: its data and position.
fn next(ws: &mut HubWs) -> (String, (String, u64)) {
    let text = next_text(ws);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["topic"], "news", "{text}");
    let position = (
        v["epoch"].as_str().expect("an epoch").to_owned(),
        v["offset"].as_u64().expect("an offset"),
    );
    (v["data"].as_str().unwrap().to_owned(), position)
}

fn expect(ws: &mut HubWs, data: &str) -> (String, u64) {
    let (got, position) = next(ws);
    assert_eq!(got, data);
    position
}

#[test]
fn a_client_resumes_on_another_node_from_the_position_the_first_gave() {
    let port = free_port();
    let _redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let a = node(&url);
    let mut on_a = client(a.addr);
    subscribe(&mut on_a, None);
    let mut positions = Vec::new();
    for i in 1..=5 {
        publish(&mut on_a, &format!("m{i}"));
        positions.push(expect(&mut on_a, &format!("m{i}")));
    }
    let (epoch, _) = positions[0].clone();
    assert!(positions.windows(2).all(|w| w[1].1 == w[0].1 + 1));

    // A node started after those publishes has them only from Redis.
    let b = node(&url);
    assert!(metric(b.addr, "surge_bridge_loaded_topics_total") >= 1);
    let mut on_b = client(b.addr);
    let answer = subscribe(&mut on_b, Some(&positions[1]));
    assert_eq!(answer["recovered"]["news"], true, "{answer}");
    assert_eq!(answer["positions"]["news"]["epoch"], epoch.as_str());
    assert_eq!(answer["positions"]["news"]["offset"], positions[4].1);
    for i in 3..=5 {
        assert_eq!(expect(&mut on_b, &format!("m{i}")), positions[i - 1]);
    }
    // Live from there, at the position Redis gives on every node.
    publish(&mut on_a, "m6");
    let six = expect(&mut on_a, "m6");
    assert_eq!(six, (epoch.clone(), positions[4].1 + 1));
    assert_eq!(expect(&mut on_b, "m6"), six);
    // And back: a client of B resumes on A, replayed from A's copy.
    let mut again = client(a.addr);
    let answer = subscribe(&mut again, Some(&positions[3]));
    assert_eq!(answer["recovered"]["news"], true, "{answer}");
    assert_eq!(expect(&mut again, "m5"), positions[4]);
    assert_eq!(expect(&mut again, "m6"), six);
    assert!(metric(b.addr, "surge_replayed_messages_total") >= 3);
}

#[test]
fn a_redis_restarted_without_its_data_makes_a_new_epoch_never_a_wrong_replay() {
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let (a, b) = (node(&url), node(&url));
    let (mut on_a, mut on_b) = (client(a.addr), client(b.addr));
    subscribe(&mut on_a, None);
    subscribe(&mut on_b, None);
    let mut seen = Vec::new();
    for i in 1..=5 {
        publish(&mut on_a, &format!("m{i}"));
        expect(&mut on_a, &format!("m{i}"));
        seen.push(expect(&mut on_b, &format!("m{i}")));
    }
    let old_epoch = seen[0].0.clone();
    let reconnects = |s: &Server| metric(s.addr, "surge_bridge_reconnects_total");
    let before = (reconnects(&a), reconnects(&b));

    redis.kill();
    let _redis = Redis::start(port);
    wait_metric(a.addr, "surge_bridge_reconnects_total", |v| v > before.0);
    wait_metric(b.addr, "surge_bridge_reconnects_total", |v| v > before.1);
    for s in [&a, &b] {
        wait_metric(s.addr, "surge_shared_history_available", |v| v == 1);
    }
    // Nothing published since: Redis has no trace of the topic, and what
    // each node still had of it is not proof of anything.
    for addr in [a.addr, b.addr] {
        let mut late = client(addr);
        let answer = subscribe(&mut late, Some(&seen[2]));
        assert_eq!(answer["recovered"]["news"], false, "{answer}");
        assert_eq!(answer["reasons"]["news"], "epoch changed", "{answer}");
        assert_ne!(answer["positions"]["news"]["epoch"], old_epoch.as_str());
    }
    // Publishes reach Redis again (the first may go out while the relay
    // still learns of the restart: delivered on A alone, in A's epoch; or
    // reach Redis before a node's listener is back, reaching nobody there,
    // as Redis pub/sub does).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let new_epoch = loop {
        n += 1;
        publish(&mut on_a, &format!("after{n}"));
        on_b.get_mut()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Ok(tungstenite::Message::Text(t)) = on_b.read() {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["data"], format!("after{n}"));
            break v["epoch"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "publishes never reached Redis again"
        );
    };
    on_b.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_ne!(new_epoch, old_epoch, "a new history, a new epoch");
    // A hears the publish B heard, after whatever reached it before.
    while next(&mut on_a).0 != format!("after{n}") {}
    // A client with a position from before: told, then live messages only.
    for addr in [a.addr, b.addr] {
        let mut resumed = client(addr);
        let answer = subscribe(&mut resumed, Some(&seen[2]));
        assert_eq!(answer["recovered"]["news"], false, "{answer}");
        assert_eq!(answer["reasons"]["news"], "epoch changed", "{answer}");
        assert_eq!(answer["positions"]["news"]["epoch"], new_epoch.as_str());
        publish(&mut on_b, "live");
        let (data, (epoch, _)) = next(&mut resumed);
        assert_eq!(
            (data.as_str(), epoch.as_str()),
            ("live", new_epoch.as_str())
        );
        expect(&mut on_a, "live");
        expect(&mut on_b, "live");
    }
    assert!(metric(b.addr, "surge_recoveries_total{result=\"epoch\"}") >= 2);
}

#[test]
fn with_redis_down_local_traffic_flows_and_resumes_answer_unavailable_at_once() {
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let a = node(&url);
    let mut on_a = client(a.addr);
    subscribe(&mut on_a, None);
    publish(&mut on_a, "m1");
    let m1 = expect(&mut on_a, "m1");

    redis.kill();
    wait_metric(a.addr, "surge_shared_history_available", |v| v == 0);
    // Local traffic flows, in an epoch of this node's own.
    let started = Instant::now();
    for i in 2..=4 {
        publish(&mut on_a, &format!("m{i}"));
        let (epoch, _) = expect(&mut on_a, &format!("m{i}"));
        assert_ne!(epoch, m1.0);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A resume cannot be proven: said so at once.
    let mut resumed = client(a.addr);
    let started = Instant::now();
    let answer = subscribe(&mut resumed, Some(&m1));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer["recovered"]["news"], false, "{answer}");
    assert_eq!(answer["reasons"]["news"], "unavailable", "{answer}");
    publish(&mut on_a, "m5");
    expect(&mut on_a, "m5");
    assert_eq!(expect(&mut resumed, "m5").0, expect_epoch_of(&a));
    assert_eq!(
        metric(a.addr, "surge_recoveries_total{result=\"unavailable\"}"),
        1
    );
    assert!(metric(a.addr, "surge_bridge_alone_total") >= 4);

    let _redis = Redis::start(port);
    wait_metric(a.addr, "surge_shared_history_available", |v| v == 1);
}

/// The epoch node `s` publishes in while Redis is away: the one its own
/// subscriber just saw (read from a fresh subscription's answer).
fn expect_epoch_of(s: &Server) -> String {
    let mut ws = client(s.addr);
    let answer = subscribe(&mut ws, None);
    answer["positions"]["news"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_drained_node_sends_what_its_relay_holds_before_it_exits() {
    const MESSAGES: usize = 50;
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let b = node(&url);
    let a = Server::start(&[
        "serve",
        "--redis-url",
        &url,
        "--history-size",
        "100",
        "--drain-ms",
        "100",
    ]);
    wait_metric(a.addr, "surge_bridge_connected", |v| v == 1);
    let mut on_b = client(b.addr);
    subscribe(&mut on_b, None);
    let mut on_a = client(a.addr);
    publish(&mut on_a, "first");
    expect(&mut on_b, "first");
    // Redis stops answering: A's publishes wait in its relay (which asks
    // a link idle for a while whether it is alive before it sends).
    redis.signal("-STOP");
    std::thread::sleep(Duration::from_millis(400));
    for i in 0..MESSAGES {
        publish(&mut on_a, &format!("m{i}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Gone, so the drain need not wait for its close.
    drop(on_a);
    let cont = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        redis.signal("-CONT");
        redis
    });
    // A drains and its shards end while Redis is still stopped.
    let t = Instant::now();
    assert!(a.terminate().success());
    eprintln!("TERM took {:?}", t.elapsed());
    let _redis = cont.join().unwrap();
    for i in 0..MESSAGES {
        expect(&mut on_b, &format!("m{i}"));
    }
}

/// A latest-value topic is one on every node: a node started after the
/// publishes loads the value from Redis and gives it to a new subscriber
/// first, right after the position just before it.
#[test]
fn a_latest_value_published_on_one_node_reaches_a_new_subscriber_on_another() {
    let port = free_port();
    let _redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let latest = |url: &str| {
        let server = Server::start(&["serve", "--redis-url", url, "--latest"]);
        wait_metric(server.addr, "surge_shared_history_available", |v| v == 1);
        server
    };
    let a = latest(&url);
    let mut on_a = client(a.addr);
    subscribe(&mut on_a, None);
    for data in ["1", "2", "3"] {
        publish(&mut on_a, data);
    }
    expect(&mut on_a, "1");
    expect(&mut on_a, "2");
    let (epoch, offset) = expect(&mut on_a, "3");
    let b = latest(&url);
    let mut on_b = client(b.addr);
    let answer = subscribe(&mut on_b, None);
    assert_eq!(
        answer["positions"]["news"]["epoch"],
        epoch.as_str(),
        "{answer}"
    );
    assert_eq!(
        answer["positions"]["news"]["offset"],
        offset - 1,
        "{answer}"
    );
    assert_eq!(expect(&mut on_b, "3"), (epoch, offset));
}
