//! `GET /hub/events` on the real server, read with a raw HTTP client: the
//! hub's messages as server-sent events whose ids are the stream's
//! positions, a reconnect that resumes from `Last-Event-ID`, a recovery
//! that fails said plainly, the same admission and backpressure as
//! WebSocket subscribers, heartbeats, the drain, and a precise answer to
//! every bad request.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::hub::{hub_client, loopback as ip, next_text, send_text, HubWs, BACKENDS};
use support::{connect, connect_from, metric, wait_metric, Server};

/// One block of an event stream: its fields, or a comment.
#[derive(Debug, Default)]
struct Event {
    event: Option<String>,
    id: Option<String>,
    retry: Option<String>,
    data: Vec<String>,
    comment: bool,
}

impl Event {
    fn data(&self) -> String {
        self.data.join("\n")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.data()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// An event stream read line by line.
struct Stream {
    reader: BufReader<TcpStream>,
    head: String,
}

impl Stream {
    /// Sends `GET TARGET` with `headers` (lines ending in CRLF) and reads
    /// the response head.
    fn open(addr: SocketAddr, target: &str, headers: &str) -> (u16, Self) {
        Self::open_on(connect(addr), target, headers)
    }

    fn open_on(mut s: TcpStream, target: &str, headers: &str) -> (u16, Self) {
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            let n = reader.read_line(&mut head).expect("response head");
            assert!(n > 0, "response head cut short: {head:?}");
        }
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, Self { reader, head })
    }

    /// An admitted stream of `topics` (a query value), with `headers`.
    fn subscribe(addr: SocketAddr, query: &str, headers: &str) -> Self {
        let (status, stream) = Self::open(
            addr,
            &format!("/hub/events?{query}"),
            &format!("Accept: text/event-stream\r\n{headers}"),
        );
        assert_eq!(status, 200, "{}", stream.head);
        stream
    }

    /// The next block, or `None` at the end of the stream.
    fn next(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("an event") == 0 {
                assert!(!any, "stream ended mid-event: {event:?}");
                return None;
            }
            let line = line.strip_suffix('\n').expect("a whole line");
            if line.is_empty() {
                if any {
                    return Some(event);
                }
                continue;
            }
            any = true;
            if line.starts_with(':') {
                event.comment = true;
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "event" => event.event = Some(value.into()),
                "id" => event.id = Some(value.into()),
                "retry" => event.retry = Some(value.into()),
                "data" => event.data.push(value.into()),
                other => panic!("unknown field {other:?} in {line:?}"),
            }
        }
    }

    /// The next event that is not a heartbeat.
    fn next_event(&mut self) -> Event {
        loop {
            let event = self.next().expect("an event, not the end");
            if !event.comment {
                return event;
            }
        }
    }
}

fn publish(ws: &mut HubWs, topic: &str, data: &str) {
    let topic = Value::String(topic.into());
    send_text(
        ws,
        &format!(r#"{{"op":"publish","topic":{topic},"data":{data}}}"#),
    );
}

/// `TOPIC:EPOCH:OFFSET` for an answer's position of `topic`, the topic
/// written as `written`.
fn id_part(positions: &Value, topic: &str, written: &str) -> String {
    let p = &positions[topic];
    format!("{written}:{}:{}", p["epoch"].as_str().unwrap(), p["offset"])
}

/// The stream carries the hub's messages, byte for byte what a WebSocket
/// subscriber gets, each event's id the position in every topic after it;
/// dropped and reopened with the last id as `Last-Event-ID` (which wins
/// over the query's `since`), it gets what was published meanwhile, once,
/// in order, and nothing is held while it is idle.
#[test]
fn a_stream_delivers_hub_messages_and_resumes_from_its_last_event_id() {
    for backend in BACKENDS {
        let server = Server::start(&["serve", "--backend", backend, "--history-size", "100"]);
        let addr = server.addr;
        let mut publisher = hub_client(ip(1), addr);
        let mut ws = hub_client(ip(2), addr);
        send_text(&mut ws, r#"{"op":"subscribe","topics":["ev-a","b c"]}"#);
        let _ack = next_text(&mut ws);
        // "b c" as encodeURIComponent writes it, encoded again by the query.
        let query = "topics=ev-a,b%2520c";
        let mut sse = Stream::subscribe(addr, query, "Origin: http://page.example\r\n");
        for line in [
            "Content-Type: text/event-stream\r\n",
            "Cache-Control: no-cache\r\n",
            "X-Accel-Buffering: no\r\n",
            "Connection: close\r\n",
            "Access-Control-Allow-Origin: http://page.example\r\n",
        ] {
            assert!(
                sse.head.contains(line),
                "{backend}: {line:?} in {}",
                sse.head
            );
        }
        assert!(!sse.head.contains("Content-Length"), "{}", sse.head);
        assert!(!sse.head.contains("Transfer-Encoding"), "{}", sse.head);
        let first = sse.next_event();
        assert_eq!(first.event.as_deref(), Some("subscribed"), "{first:?}");
        let retry: u64 = first.retry.as_deref().unwrap().parse().unwrap();
        assert!(
            (1000..3000).contains(&retry),
            "reconnects spread: {first:?}"
        );
        let answer = first.json();
        assert_eq!(answer["topics"], serde_json::json!(["ev-a", "b c"]));
        let start = &answer["positions"];
        let mut a = id_part(start, "ev-a", "ev-a");
        let mut b = id_part(start, "b c", "b%20c");
        assert_eq!(first.id, Some(format!("{a},{b}")), "{backend}");

        publish(&mut publisher, "ev-a", r#"{"n":1}"#);
        publish(&mut publisher, "b c", "{\n  \"n\": 2\n}");
        publish(&mut publisher, "ev-a", r#"{"n":3}"#);
        // Each topic in order; topics of one turn may interleave either way.
        let mut last_id = String::new();
        let mut seen = Vec::new();
        let mut by_ws = Vec::new();
        for _ in 1..=3 {
            let event = sse.next_event();
            let message = event.json();
            seen.push((message["data"]["n"].as_u64().unwrap(), event.data()));
            by_ws.push(next_text(&mut ws));
            let topic = message["topic"].as_str().unwrap();
            let part = format!(
                "{}:{}",
                message["epoch"].as_str().unwrap(),
                message["offset"]
            );
            match topic {
                "ev-a" => a = format!("ev-a:{part}"),
                _ => b = format!("b%20c:{part}"),
            }
            last_id = format!("{a},{b}");
            assert_eq!(event.id.as_deref(), Some(last_id.as_str()), "{backend}");
        }
        let ev_a: Vec<u64> = seen
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n % 2 == 1)
            .collect();
        assert_eq!(ev_a, [1, 3], "{backend}: {seen:?}");
        let mut texts: Vec<String> = seen.into_iter().map(|(_, t)| t).collect();
        texts.sort();
        by_ws.sort();
        assert_eq!(texts, by_ws, "{backend}: the same bytes as WebSocket's");
        wait_metric(addr, "surge_out_buffers_lent", |n| n == 0);
        drop(sse);
        wait_metric(addr, "surge_sse_streams", |n| n == 0);

        publish(&mut publisher, "ev-a", r#"{"n":4}"#);
        publish(&mut publisher, "b c", r#"{"n":5}"#);
        // Both are in their streams once a subscriber has them.
        next_text(&mut ws);
        next_text(&mut ws);
        // The browser reconnects to the URL it was given, whose since= is
        // older than the id it last saw: the id wins.
        let old = format!("{query}&since={}", urlencode(&first.id.unwrap()));
        let resume = format!("Last-Event-ID: {last_id}\r\n");
        let mut sse = Stream::subscribe(addr, &old, &resume);
        let answer = sse.next_event().json();
        assert_eq!(
            answer["recovered"],
            serde_json::json!({"ev-a": true, "b c": true}),
            "{backend}: {answer}"
        );
        // Replayed in order, each id moving only its own topic on from
        // where the client was.
        let fourth = sse.next_event();
        assert_eq!(fourth.json()["data"]["n"], 4, "{backend}: {fourth:?}");
        let after_fourth = sse_id_after(&answer, "ev-a", &b);
        assert_eq!(
            fourth.id.as_deref(),
            Some(after_fourth.as_str()),
            "{backend}"
        );
        let fifth = sse.next_event();
        assert_eq!(fifth.json()["data"]["n"], 5, "{backend}: {fifth:?}");
        let positions = &answer["positions"];
        let both = format!(
            "{},{}",
            id_part(positions, "ev-a", "ev-a"),
            id_part(positions, "b c", "b%20c")
        );
        assert_eq!(fifth.id, Some(both), "{backend}");
        assert_eq!(
            metric(addr, "surge_sse_events_total"),
            5,
            "{backend}: three live, two replayed"
        );
        assert_eq!(
            metric(addr, "surge_sse_ended_total{reason=\"client\"}"),
            1,
            "{backend}"
        );
        assert_eq!(metric(addr, "surge_sse_streams"), 1, "{backend}");
    }
}

/// The id after the replayed message of `topic`: its position in the
/// answer (where the replay ends), the other topic still at `other`.
fn sse_id_after(answer: &Value, topic: &str, other: &str) -> String {
    format!("{},{other}", id_part(&answer["positions"], topic, topic))
}

/// Percent-encodes a query value (every byte outside the unreserved set).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A position from another epoch is never taken for one: the stream says
/// so in its `subscribed` event and starts where the topic is now.
#[test]
fn a_stream_that_cannot_resume_is_told_why() {
    let server = Server::start(&["serve", "--history-size", "10"]);
    let query = "topics=ev-x&since=ev-x%3A0000000000000001%3A5";
    let mut sse = Stream::subscribe(server.addr, query, "");
    let first = sse.next_event();
    let answer = first.json();
    assert_eq!(answer["recovered"]["ev-x"], false, "{answer}");
    assert_eq!(answer["reasons"]["ev-x"], "epoch changed", "{answer}");
    assert_eq!(
        first.id,
        Some(id_part(&answer["positions"], "ev-x", "ev-x")),
        "the id is where the topic is now, not the stale position"
    );
}

/// Every request the route cannot serve gets the status that says why.
#[test]
fn bad_requests_get_precise_answers() {
    let server = Server::start(&[
        "serve",
        "--max-topics-per-conn",
        "2",
        "--auth-token",
        "sesame",
        "--allow-origin",
        "http://ok.example",
    ]);
    let accept = "Accept: text/event-stream\r\n";
    let ok = "token=sesame&topics=a";
    for (method, target, headers, status, body) in [
        (
            "GET",
            format!("/hub/events?{ok}"),
            "",
            406,
            "Accept: text/event-stream",
        ),
        (
            "GET",
            format!("/hub/events?{ok}"),
            "Accept: text/html\r\n",
            406,
            "Accept",
        ),
        ("POST", format!("/hub/events?{ok}"), accept, 405, "only GET"),
        (
            "GET",
            format!("/chat/events?{ok}"),
            accept,
            404,
            "not found",
        ),
        (
            "GET",
            "/hub/events?token=sesame".into(),
            accept,
            400,
            "1 to 64 topics",
        ),
        (
            "GET",
            format!("/hub/events?{ok},b,c"),
            accept,
            400,
            "at most 2 topics",
        ),
        (
            "GET",
            format!("/hub/events?{ok},a"),
            accept,
            400,
            "names \"a\" twice",
        ),
        (
            "GET",
            format!("/hub/events?{ok}&since=a:1:1"),
            accept,
            400,
            "16 lowercase hex",
        ),
        (
            "GET",
            format!("/hub/events?{ok}&since=b%3A0000000000000001%3A1"),
            accept,
            400,
            "which \"topics\" does not",
        ),
        ("GET", "/hub/events?topics=a".into(), accept, 401, "token"),
        (
            "GET",
            format!("/hub/events?{ok}"),
            "Accept: text/event-stream\r\nOrigin: http://evil.example\r\n",
            403,
            "origin",
        ),
    ] {
        let mut s = connect(server.addr);
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).unwrap();
        let got: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(got, status, "{method} {target} {headers:?}: {text}");
        assert!(text.contains(body), "{method} {target}: {body:?} in {text}");
    }
    let mut sse = Stream::subscribe(server.addr, ok, "Origin: http://ok.example\r\n");
    assert_eq!(sse.next_event().event.as_deref(), Some("subscribed"));
}

/// A stream counts against the per-address cap like a WebSocket: the
/// second from one address waits out the tarpit and is refused with a
/// retry hint.
#[test]
fn streams_are_admitted_like_upgrades() {
    let server = Server::start(&["serve", "--max-conns-per-ip", "1", "--tarpit-ms", "100"]);
    let mut first = Stream::subscribe(server.addr, "topics=a", "");
    assert_eq!(first.next_event().event.as_deref(), Some("subscribed"));
    let (status, second) = Stream::open_on(
        connect_from(ip(2), server.addr),
        "/hub/events?topics=a",
        "Accept: text/event-stream\r\n",
    );
    assert_eq!(status, 200, "another address is let in: {}", second.head);
    let (status, refused) = Stream::open(
        server.addr,
        "/hub/events?topics=a",
        "Accept: text/event-stream\r\n",
    );
    assert_eq!(status, 503, "{}", refused.head);
    assert!(refused.head.contains("Retry-After: "), "{}", refused.head);
}

/// An idle stream gets a comment line every heartbeat, and SIGTERM ends
/// it (the browser reconnects, elsewhere) within the drain window.
#[test]
fn heartbeats_keep_an_idle_stream_open_and_the_drain_ends_it() {
    let server = Server::start(&["serve", "--sse-heartbeat-ms", "200", "--drain-ms", "300"]);
    let mut sse = Stream::subscribe(server.addr, "topics=quiet", "");
    assert_eq!(sse.next_event().event.as_deref(), Some("subscribed"));
    let start = Instant::now();
    for _ in 0..2 {
        let beat = sse.next().expect("a heartbeat");
        assert!(beat.comment && beat.data.is_empty(), "{beat:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    let status = server.terminate();
    assert!(status.success(), "{status}");
    while let Some(block) = sse.next() {
        assert!(block.comment, "only heartbeats until the end: {block:?}");
    }
}

/// A stream that stops reading is a slow consumer like any hub subscriber:
/// past `--max-backpressure` it is ended (counted), and the publisher and
/// other subscribers go on.
#[test]
fn a_stream_over_its_backpressure_bound_is_ended() {
    for backend in BACKENDS {
        let server = Server::start(&["serve", "--backend", backend, "--max-backpressure", "16384"]);
        let addr = server.addr;
        // A small receive window, so the server's backlog grows soon.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stalled: TcpStream = socket.into();
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (status, mut sse) = Stream::open_on(
            stalled,
            "/hub/events?topics=flood",
            "Accept: text/event-stream\r\n",
        );
        assert_eq!(status, 200);
        assert_eq!(sse.next_event().event.as_deref(), Some("subscribed"));
        let mut publisher = hub_client(ip(1), addr);
        let payload = format!(r#""{}""#, "x".repeat(1000));
        let deadline = Instant::now() + Duration::from_secs(20);
        let ended = "surge_sse_ended_total{reason=\"slow_consumer\"}";
        let mut sent = 0;
        while metric(addr, ended) == 0 {
            assert!(
                sent < 50_000 && Instant::now() < deadline,
                "{backend}: still streaming after {sent} messages"
            );
            for _ in 0..200 {
                publish(&mut publisher, "flood", &payload);
            }
            sent += 200;
        }
        assert_eq!(metric(addr, "surge_sse_streams"), 0, "{backend}");
        // The publisher's connection is untouched.
        send_text(&mut publisher, r#"{"op":"subscribe","topics":["after"]}"#);
        assert!(
            next_text(&mut publisher).contains("subscribed"),
            "{backend}"
        );
        drop(sse);
    }
}

/// On a route that conflates, a stream that falls behind is not ended: it
/// skips what it cannot take and, once it reads again, gets the latest
/// message as an event, then live ones.
#[test]
fn a_conflating_route_sends_a_late_stream_the_latest_message() {
    let server = Server::start(&[
        "serve",
        "--hub-backpressure",
        "conflate",
        "--max-backpressure",
        "16384",
    ]);
    let addr = server.addr;
    let (status, mut sse) = Stream::open_on(
        small_window(addr),
        "/hub/events?topics=px",
        "Accept: text/event-stream\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(sse.next_event().event.as_deref(), Some("subscribed"));
    let mut publisher = hub_client(ip(1), addr);
    let pad = "x".repeat(1000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while metric(addr, "surge_pubsub_conflated_total") == 0 {
        assert!(
            n < 50_000 && Instant::now() < deadline,
            "not conflated after {n}"
        );
        for _ in 0..200 {
            n += 1;
            publish(
                &mut publisher,
                "px",
                &format!(r#"{{"n":{n},"pad":"{pad}"}}"#),
            );
        }
    }
    // Live messages go on while the stream catches up: it reads to the
    // last of them, in order, without the ones it skipped.
    let last_n = n + 40;
    let trickle = std::thread::spawn(move || {
        for n in n + 1..=last_n {
            std::thread::sleep(Duration::from_millis(50));
            publish(&mut publisher, "px", &format!(r#"{{"n":{n}}}"#));
        }
        publisher
    });
    let mut got = 0;
    let mut last = 0;
    while last < last_n {
        let event = sse.next_event();
        let at = event.json()["data"]["n"].as_u64().unwrap();
        assert!(at > last, "in order: {at} after {last}");
        last = at;
        got += 1;
    }
    let _publisher = trickle.join().unwrap();
    assert!(got < last_n, "some were skipped: {got} of {last_n}");
    assert_eq!(
        metric(addr, "surge_sse_ended_total"),
        0,
        "the stream goes on"
    );
    assert_eq!(metric(addr, "surge_sse_streams"), 1);
}

/// A connection to `addr` with a small receive window, so that the
/// server's backlog for it grows soon.
fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}
