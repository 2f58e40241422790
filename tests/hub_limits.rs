//! What one hub client can cost the server: a big publish is not blown up
//! into a JSON tree, a publish larger than the backpressure bound still
//! reaches the subscribers that keep up (and one over `--max-publish` is
//! refused to its publisher), and topics keep no latest frames unless a
//! conflating subscriber needs them. Measured on the real process: its
//! peak and current RSS, its `/metrics`, the frames clients get.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::hub::{
    hub_client as client, loopback as ip, next_text as text, send_text as send, HubWs as Ws,
    BACKENDS,
};
use support::{metric, output_within, proc_status_kib, wait_metric, Server};

/// Subscribes and returns the `subscribed` answer.
fn subscribe(ws: &mut Ws, topics: &[String]) -> String {
    let list: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    send(
        ws,
        &format!(r#"{{"op":"subscribe","topics":[{}]}}"#, list.join(",")),
    );
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

fn publish(topic: &str, data: &str) -> String {
    format!(r#"{{"op":"publish","topic":"{topic}","data":{data}}}"#)
}

#[test]
fn one_big_publish_costs_the_server_a_small_multiple_of_its_size() {
    // 4 Mi small JSON values: a tree of them would take 16-32 times the
    // 8 MiB of text.
    let data = format!("[{}0]", "0,".repeat(4 << 20));
    let request = publish("big", &data);
    let limit = (32 << 20).to_string();
    for backend in BACKENDS {
        let server = Server::start(&[
            "serve",
            "--backend",
            backend,
            "--shards",
            "1",
            "--hub-max-message",
            &limit,
            "--max-publish",
            &limit,
            "--max-backpressure",
            &limit,
        ]);
        let pid = server.pid();
        let mut subscriber = client(ip(2), server.addr);
        subscribe(&mut subscriber, &["big".into()]);
        let mut publisher = client(ip(3), server.addr);
        let before = proc_status_kib(pid, "VmRSS");
        send(&mut publisher, &request);
        let got = text(&mut subscriber);
        assert_eq!(
            got.len(),
            data.len() + r#"{"topic":"big","epoch":"0123456789abcdef","offset":1,"data":}"#.len()
        );
        assert!(got.ends_with(",0,0]}"), "{backend}: {:.40}", &got);
        let peak = proc_status_kib(pid, "VmHWM").saturating_sub(before);
        let message = (request.len() / 1024) as u64;
        // The message as received, its outgoing text and its frame, with
        // room for the allocator; never the tree.
        assert!(
            peak < 5 * message,
            "{backend}: one {message} KiB publish raised peak RSS by {peak} KiB"
        );
    }
}

#[test]
fn a_publish_larger_than_the_bound_reaches_every_subscriber_that_keeps_up() {
    const PUBLISHES: usize = 10;
    for backend in BACKENDS {
        let server = Server::start(&[
            "serve",
            "--backend",
            backend,
            "--shards",
            "1",
            "--max-backpressure",
            "16384",
            "--max-publish",
            "65536",
        ]);
        let addr = server.addr;
        let mut epochs = Vec::new();
        let mut subscribers: Vec<Ws> = (0..3)
            .map(|i| {
                let mut ws = client(ip(10 + i), addr);
                epochs.push(epoch(&subscribe(&mut ws, &["big".into()]), "big"));
                ws
            })
            .collect();
        let mut publisher = client(ip(20), addr);
        // Each publish is nearly four times the bound, under --max-publish.
        let payload = "x".repeat(60_000);
        for i in 0..PUBLISHES {
            send(
                &mut publisher,
                &publish("big", &format!("\"{payload}{i}\"")),
            );
            for ws in &mut subscribers {
                let got = text(ws);
                assert!(got.ends_with(&format!("{i}\"}}")), "{backend}: publish {i}");
            }
        }
        assert_eq!(metric(addr, "surge_pubsub_disconnected_total"), 0);
        assert_eq!(metric(addr, "surge_admission_overload_closes_total"), 0);
        assert_eq!(
            metric(addr, "surge_pubsub_delivered_total"),
            (3 * PUBLISHES) as u64
        );
        // Still subscribed, still open.
        send(&mut publisher, &publish("big", "1"));
        for (ws, e) in subscribers.iter_mut().zip(&epochs) {
            assert_eq!(
                text(ws),
                format!(
                    r#"{{"topic":"big","epoch":"{e}","offset":{},"data":1}}"#,
                    PUBLISHES + 1
                ),
                "{backend}"
            );
        }
    }
}

#[test]
fn a_publish_over_max_publish_is_refused_to_its_publisher_alone() {
    let server = Server::start(&["serve", "--shards", "1"]);
    let addr = server.addr;
    let mut subscriber = client(ip(30), addr);
    let e = epoch(&subscribe(&mut subscriber, &["t".into()]), "t");
    let mut publisher = client(ip(31), addr);
    // 38 bytes of request around the string's characters.
    let at_limit = publish("t", &format!("\"{}\"", "y".repeat(32_768 - 38)));
    assert_eq!(at_limit.len(), 32_768);
    let over = publish("t", &format!("\"{}\"", "z".repeat(32_768 - 37)));
    send(&mut publisher, &over);
    let answer = text(&mut publisher);
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["op"], "error", "{answer}");
    assert_eq!(
        v["error"], "a publish is at most 32768 bytes; this one is 32769",
        "{answer}"
    );
    // The subscriber never sees the refused one; the publisher may go on.
    send(&mut publisher, &at_limit);
    assert!(text(&mut subscriber).contains("yyy"));
    send(&mut publisher, &publish("t", "2"));
    assert_eq!(
        text(&mut subscriber),
        format!(r#"{{"topic":"t","epoch":"{e}","offset":2,"data":2}}"#)
    );
    assert_eq!(metric(addr, "surge_pubsub_delivered_total"), 2);
}

#[test]
fn max_publish_is_a_setting_with_a_floor() {
    let run = |args: &[&str]| {
        output_within(
            Command::new(env!("CARGO_BIN_EXE_surge")).args(args),
            Duration::from_secs(20),
        )
    };
    let out = run(&["serve", "--check-config"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\nmax-publish = 32768\n"));
    let out = run(&["serve", "--max-publish", "0", "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-publish must be at least 1"));
}

/// 512 topics on 8 connections, one ~60 KiB message published to each and
/// read by its subscriber.
fn fill_topics(addr: SocketAddr, payload: &str) -> Vec<Ws> {
    let mut publisher = client(ip(40), addr);
    let mut subscribers = Vec::new();
    for c in 0..8u8 {
        let topics: Vec<String> = (0..64).map(|t| format!("t{c}-{t}")).collect();
        let mut ws = client(ip(41 + c), addr);
        subscribe(&mut ws, &topics);
        for topic in &topics {
            send(&mut publisher, &publish(topic, &format!("\"{payload}\"")));
            assert!(text(&mut ws).starts_with(&format!(r#"{{"topic":"{topic}""#)));
        }
        subscribers.push(ws);
    }
    subscribers
}

/// A config that serves the hub alone: the ticker's topics, which keep
/// their latest ticks for every new subscriber, stay out of the count.
fn hub_only_config() -> String {
    let path = std::env::temp_dir().join(format!("surge-hub-only-{}.toml", std::process::id()));
    std::fs::write(&path, "[[routes]]\npath = \"/hub\"\nkind = \"hub\"\n").unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn topics_without_a_conflating_subscriber_keep_no_latest_frames() {
    let payload = "p".repeat(60_000);
    let config = hub_only_config();
    let server = Server::start(&[
        "serve",
        "--config",
        &config,
        "--shards",
        "1",
        "--max-publish",
        "65536",
    ]);
    let pid = server.pid();
    let before = proc_status_kib(pid, "VmRSS");
    let subscribers = fill_topics(server.addr, &payload);
    // Every message was written: whatever the server still holds of
    // 30 MB of publishes, it holds for nobody.
    let grown = proc_status_kib(pid, "VmRSS").saturating_sub(before);
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB over 512 topics");
    assert_eq!(metric(server.addr, "surge_pubsub_snapshot_bytes"), 0);
    drop(subscribers);

    // Conflating subscribers keep the latest frame of each of their topics,
    // until they go.
    let server = Server::start(&[
        "serve",
        "--config",
        &config,
        "--shards",
        "1",
        "--max-publish",
        "65536",
        "--hub-backpressure",
        "conflate",
    ]);
    let subscribers = fill_topics(server.addr, &payload);
    // Each frame: a 4-byte header and
    // {"topic":"tC-T","epoch":"<16 hex>","offset":1,"data":"..."}.
    let frames: usize = (0..8)
        .flat_map(|c| {
            (0..64).map(move |t| {
                4 + format!(
                    r#"{{"topic":"t{c}-{t}","epoch":"0123456789abcdef","offset":1,"data":""}}"#
                )
                .len()
            })
        })
        .sum::<usize>()
        + 512 * payload.len();
    wait_metric(server.addr, "surge_pubsub_snapshot_bytes", |v| {
        v == frames as u64
    });
    drop(subscribers);
    wait_metric(server.addr, "surge_subscriptions", |v| v == 0);
    wait_metric(server.addr, "surge_pubsub_snapshot_bytes", |v| v == 0);
}

/// `--publish-rate` with `--publish-burst`: a connection publishes its
/// burst at once, the next publish gets the hub's error answer (saying when
/// to retry) and reaches nobody, the connection stays open, and the bucket
/// refills at the rate. Another connection has its own bucket.
#[test]
fn a_connection_publishing_past_its_rate_is_answered_and_stays_open() {
    let server = Server::start(&[
        "serve",
        "--shards",
        "1",
        "--publish-rate",
        "1",
        "--publish-burst",
        "3",
    ]);
    let addr = server.addr;
    let mut subscriber = client(ip(40), addr);
    subscribe(&mut subscriber, &["r".into()]);
    let mut publisher = client(ip(41), addr);
    // Each in a read of its own (what the connection keeps between reads
    // is what holds the bucket), all well within the second a publish
    // refills.
    for n in 0..4 {
        send(&mut publisher, &publish("r", &n.to_string()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = text(&mut publisher);
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["op"], "error", "{answer}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("publish rate exceeded: at most 1 per second; retry in "),
        "{answer}"
    );
    for n in 0..3 {
        assert!(text(&mut subscriber).ends_with(&format!("\"data\":{n}}}")));
    }
    // A second publisher is not held back by the first one's bucket.
    let mut other = client(ip(42), addr);
    send(&mut other, &publish("r", "10"));
    assert!(text(&mut subscriber).ends_with("\"data\":10}"));
    // A second refills one publish.
    std::thread::sleep(Duration::from_millis(1100));
    send(&mut publisher, &publish("r", "4"));
    assert!(text(&mut subscriber).ends_with("\"data\":4}"));
    assert_eq!(metric(addr, "surge_pubsub_delivered_total"), 5);
}
