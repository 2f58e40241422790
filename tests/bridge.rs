//! Two `surge serve` nodes bridged through a real redis-server (started
//! here on a free loopback port): a publish on either reaches subscribers on
//! both, exactly once, at the same position; killing redis-server leaves
//! each node serving its own subscribers, counts what could not be
//! relayed, and both nodes reconnect when it comes back.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::redis::{free_port, Redis};
use support::{metric, proc_status_kib, wait_metric, Patient, Server};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<Patient>;

fn hub(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    let (mut ws, _) =
        tungstenite::client(format!("ws://{addr}/hub").as_str(), Patient(stream)).expect("upgrade");
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ws.send(Message::text(r#"{"op":"subscribe","topics":["news"]}"#))
        .unwrap();
    assert!(text(&mut ws).starts_with(r#"{"op":"subscribed""#));
    ws
}

fn text(ws: &mut Ws) -> String {
    match ws.read().expect("read") {
        Message::Text(t) => t.to_string(),
        other => panic!("unexpected {other:?}"),
    }
}

fn publish(ws: &mut Ws, data: &str) {
    ws.send(Message::text(format!(
        r#"{{"op":"publish","topic":"news","data":"{data}"}}"#
    )))
    .unwrap();
}

/// The next message is `data` on "news", with the position Redis gave it
/// (the same on every node); returns it.
fn expect(ws: &mut Ws, data: &str) -> (String, u64) {
    let got = text(ws);
    let v: serde_json::Value = serde_json::from_str(&got).expect("JSON");
    let epoch = v["epoch"].as_str().expect("an epoch");
    let offset = v["offset"].as_u64().expect("an offset");
    assert!(epoch.len() == 16 && offset > 0, "{got}");
    assert_eq!(
        got,
        format!(r#"{{"topic":"news","epoch":"{epoch}","offset":{offset},"data":"{data}"}}"#)
    );
    (epoch.to_owned(), offset)
}

/// The same, on the node that published it.
fn expect_local(ws: &mut Ws, data: &str) -> (String, u64) {
    expect(ws, data)
}

fn expect_nothing(ws: &mut Ws) {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(ws.read().is_err(), "an unexpected message arrived");
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
}

#[test]
fn two_nodes_share_publishes_through_redis_and_survive_its_restart() {
    let port = free_port();
    let redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let a = Server::start(&["serve", "--redis-url", &url]);
    let b = Server::start(&["serve", "--redis-url", &url]);
    for node in [a.addr, b.addr] {
        wait_metric(node, "surge_bridge_connected", |v| v == 1);
    }
    let (mut on_a, mut on_b) = (hub(a.addr), hub(b.addr));
    publish(&mut on_a, "one");
    let one = expect_local(&mut on_a, "one");
    assert_eq!(expect(&mut on_b, "one"), one, "one position on every node");
    publish(&mut on_b, "two");
    let two = expect(&mut on_a, "two");
    assert_eq!(expect_local(&mut on_b, "two"), two);
    assert_eq!(two, (one.0.clone(), one.1 + 1), "one order per topic");
    // Exactly once: nothing echoes back through Redis.
    expect_nothing(&mut on_a);
    expect_nothing(&mut on_b);

    redis.kill();
    wait_metric(a.addr, "surge_bridge_connected", |v| v == 0);
    publish(&mut on_a, "alone");
    let alone = expect_local(&mut on_a, "alone");
    assert_ne!(
        alone.0, two.0,
        "delivered here alone, in an epoch of its own"
    );
    expect_nothing(&mut on_b);
    wait_metric(a.addr, "surge_bridge_alone_total", |v| v >= 1);

    let _redis = Redis::start(port);
    for node in [a.addr, b.addr] {
        wait_metric(node, "surge_bridge_connected", |v| v == 1);
        wait_metric(node, "surge_bridge_reconnects_total", |v| v >= 1);
    }
    // The publish side may learn of the outage only on its next write:
    // publish until a message makes it across, then everything does.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        publish(&mut on_a, &format!("back{n}"));
        expect_local(&mut on_a, &format!("back{n}"));
        on_b.get_mut()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Ok(Message::Text(t)) = on_b.read() {
            let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
            assert_eq!(v["data"], format!("back{n}"), "{t}");
            assert_ne!(
                v["epoch"],
                two.0.as_str(),
                "Redis lost its data: a new epoch"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never carried messages again"
        );
    }
    on_b.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    publish(&mut on_b, "three");
    expect(&mut on_a, "three");
    expect_local(&mut on_b, "three");
    eprintln!(
        "BRIDGE node a: sent={} received={} alone={} reconnects={}",
        metric(a.addr, "surge_bridge_sent_total"),
        metric(a.addr, "surge_bridge_received_total"),
        metric(a.addr, "surge_bridge_alone_total"),
        metric(a.addr, "surge_bridge_reconnects_total")
    );
}

/// A process that is stopped and resumed (SIGSTOP/SIGCONT, a cgroup
/// freeze) sees EINTR from its socket reads that have a timeout; the
/// bridge's subscription must ride that out rather than reconnect and
/// drop what was published meanwhile.
#[test]
fn a_stopped_and_resumed_node_keeps_its_redis_link() {
    let port = free_port();
    let _redis = Redis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let a = Server::start(&["serve", "--redis-url", &url]);
    let b = Server::start(&["serve", "--redis-url", &url]);
    for node in [a.addr, b.addr] {
        wait_metric(node, "surge_bridge_connected", |v| v == 1);
    }
    let (mut on_a, mut on_b) = (hub(a.addr), hub(b.addr));
    let reconnects = metric(a.addr, "surge_bridge_reconnects_total");
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        for signal in ["-STOP", "-CONT"] {
            let status = Command::new("kill")
                .args([signal, &a.pid().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            std::thread::sleep(Duration::from_millis(50));
        }
        publish(&mut on_b, &format!("after-stop-{round}"));
        expect_local(&mut on_b, &format!("after-stop-{round}"));
        expect(&mut on_a, &format!("after-stop-{round}"));
    }
    assert_eq!(
        metric(a.addr, "surge_bridge_reconnects_total"),
        reconnects,
        "{}",
        a.stderr()
    );
    assert_eq!(
        metric(a.addr, "surge_bridge_connected"),
        1,
        "{}",
        a.stderr()
    );
}

/// This process's peak resident memory, in MiB.
fn peak_mib() -> u64 {
    proc_status_kib("self", "VmHWM") / 1024
}

/// While Redis is down the relay sits in its reconnect backoff (up to 5 s
/// between attempts) and local publishes pile up for it: they must stay
/// within the relay queue's 64 MiB, the rest counted as lost at once; and
/// once Redis is back, publishes are relayed again (what the full queue
/// held was given back). The node runs in this process (the embedding
/// API), so one thread can publish hundreds of MiB in well under a second
/// and `/proc/self/status` is the node's own memory.
#[test]
fn publishes_while_redis_is_down_stay_within_the_relay_bound_and_count_as_lost() {
    use surge::app::{App, Backend, Config};
    const MIB: usize = 1 << 20;
    const PUBLISHES: u64 = 512;
    const BOUND_MIB: u64 = 64;
    // Nothing listens there yet: every connect fails.
    let port = free_port();
    let config = Config {
        redis: Some(surge::bridge::redis::RedisConfig {
            url: format!("redis://127.0.0.1:{port}"),
            prefix: "surge:".into(),
        }),
        ..Config::default()
    };
    let node = App::new()
        .config(config)
        .listen("127.0.0.1:0".parse().unwrap())
        .backend(Backend::Epoll)
        .shards(1)
        .start()
        .expect("start");
    let addr = node.local_addrs()[0];
    // Failed connects at 0, ~0.1, ~0.3, ~0.7 and ~1.5 s: from 2 s on the
    // relay sleeps at least 0.8 s between attempts, and whatever is
    // published meanwhile waits in its queue.
    std::thread::sleep(Duration::from_secs(2));
    let lost_before = metric(addr, "surge_bridge_lost_total");

    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = peak_mib();
    let publisher = node.publisher();
    let payload = "x".repeat(MIB);
    let started = Instant::now();
    for _ in 0..PUBLISHES {
        publisher.publish_text("news", &payload);
    }
    let took = started.elapsed();
    let grown = peak_mib().saturating_sub(before);
    let lost = metric(addr, "surge_bridge_lost_total") - lost_before;
    eprintln!(
        "RELAY: {PUBLISHES} x 1 MiB in {took:?} with Redis down: peak grew {grown} MiB, {lost} lost"
    );
    // The relay's bound, plus the shard's inbox if the shard falls behind.
    assert!(grown < 2 * BOUND_MIB + 48, "the peak grew {grown} MiB");
    // Past the bound they are lost at once, not at the next failed connect.
    assert!(
        (PUBLISHES - BOUND_MIB..=PUBLISHES).contains(&lost),
        "{lost} lost"
    );

    let _redis = Redis::start(port);
    wait_metric(addr, "surge_bridge_connected", |v| v == 1);
    // What the queue still held is sent now (or was dropped by a failed
    // connect before): wait until every publish so far is accounted for.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, "surge_bridge_sent_total") + metric(addr, "surge_bridge_lost_total")
        < lost_before + PUBLISHES
    {
        assert!(Instant::now() < deadline, "publishes unaccounted for");
        std::thread::sleep(Duration::from_millis(50));
    }
    // More than the bound in all, a few at a time: each gets through only
    // if the bytes of the ones before were given back.
    let sent_before = metric(addr, "surge_bridge_sent_total");
    let lost_before = metric(addr, "surge_bridge_lost_total");
    for round in 1..=BOUND_MIB / 8 + 2 {
        for _ in 0..8 {
            publisher.publish_text("news", &payload);
        }
        wait_metric(addr, "surge_bridge_sent_total", |v| {
            v >= sent_before + 8 * round
        });
    }
    assert_eq!(metric(addr, "surge_bridge_lost_total"), lost_before);
}
