//! What one hub client can cost the server: a publish over `--max-publish`
//! is refused to its publisher. Measured on the real process: its
//! `/metrics`, the frames clients get.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use support::{connect_from, metric, output_within, Patient, Server};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<Patient>;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn client(from: IpAddr, addr: SocketAddr) -> Ws {
    let url = format!("ws://{addr}/hub");
    let (ws, response) =
        tungstenite::client(url.as_str(), Patient(connect_from(from, addr))).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message; any other data frame, a close among them, fails.
fn text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {:.200}", format!("{other:?}")),
        }
    }
}

fn send(ws: &mut Ws, json: &str) {
    ws.send(Message::text(json)).expect("send");
}

fn subscribe(ws: &mut Ws, topics: &[String]) {
    let list: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    send(
        ws,
        &format!(r#"{{"op":"subscribe","topics":[{}]}}"#, list.join(",")),
    );
    let ack = text(ws);
    assert!(ack.starts_with(r#"{"op":"subscribed""#), "{ack}");
}

fn publish(topic: &str, data: &str) -> String {
    format!(r#"{{"op":"publish","topic":"{topic}","data":{data}}}"#)
}

#[test]
fn a_publish_over_max_publish_is_refused_to_its_publisher_alone() {
    let server = Server::start(&["serve", "--shards", "1"]);
    let addr = server.addr;
    let mut subscriber = client(ip(30), addr);
    subscribe(&mut subscriber, &["t".into()]);
    let mut publisher = client(ip(31), addr);
    // 38 bytes of request around the string's characters.
    let at_limit = publish("t", &format!("\"{}\"", "y".repeat(65_536 - 38)));
    assert_eq!(at_limit.len(), 65_536);
    let over = publish("t", &format!("\"{}\"", "z".repeat(65_536 - 37)));
    send(&mut publisher, &over);
    let answer = text(&mut publisher);
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["op"], "error", "{answer}");
    assert_eq!(
        v["error"], "a publish is at most 65536 bytes; this one is 65537",
        "{answer}"
    );
    // The subscriber never sees the refused one; the publisher may go on.
    send(&mut publisher, &at_limit);
    assert!(text(&mut subscriber).contains("yyy"));
    send(&mut publisher, &publish("t", "2"));
    assert_eq!(text(&mut subscriber), r#"{"topic":"t","data":2}"#);
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("\nmax-publish = 65536\n"));
    let out = run(&["serve", "--max-publish", "0", "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-publish must be at least 1"));
}
