//! The Engine.IO protocol test-suite (`socketio/engine.io-protocol`,
//! `test-suite/test-suite.js`, v4) replayed against the session machine,
//! with the reference configuration (`pingInterval` 300, `pingTimeout`
//! 200, `maxPayload` 1e6) and its echo application; plus what the suite
//! leaves out (upgrade failures, bounds, messages across an upgrade).

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

const CONFIG: Config = Config {
    ping_interval_ms: 300,
    ping_timeout_ms: 200,
    max_payload: 1_000_000,
    max_queued_bytes: 1 << 20,
    upgrade_timeout_ms: 10_000,
};

fn sid() -> Sid {
    Sid::from_parts(2, 41, 7, [0x5a; 14])
}

/// Everything a session transmits now, written out as the client sees it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wire {
    /// Poll answers' bodies.
    polls: Vec<String>,
    /// WebSocket messages: text as text, binary as `bin:` and hex.
    frames: Vec<String>,
    end_probe: bool,
}

fn drain(session: &mut Session) -> Wire {
    let mut wire = Wire::default();
    while let Some(t) = session.transmit() {
        match t {
            Transmit::Poll(body) => wire.polls.push(String::from_utf8(body).unwrap()),
            Transmit::Frame(packet) => {
                let mut out = Vec::new();
                wire.frames.push(match packet.encode_frame(&mut out) {
                    FrameKind::Text => String::from_utf8(out).unwrap(),
                    FrameKind::Binary => format!("bin:{out:02x?}"),
                });
            }
            Transmit::EndProbe => wire.end_probe = true,
        }
    }
    wire
}

fn polls(session: &mut Session) -> Vec<String> {
    let wire = drain(session);
    assert!(wire.frames.is_empty() && !wire.end_probe, "{wire:?}");
    wire.polls
}

fn frames(session: &mut Session) -> Vec<String> {
    let wire = drain(session);
    assert!(wire.polls.is_empty() && !wire.end_probe, "{wire:?}");
    wire.frames
}

/// The suite's server: every message is sent back.
fn echo(session: &mut Session, messages: Vec<Data<'_>>) {
    for m in messages {
        session.send(m).unwrap();
    }
}

fn post(session: &mut Session, body: &[u8], now: u64) -> Result<Vec<Data<'static>>, Refusal> {
    session.begin_post()?;
    let messages = session.post(body, now)?;
    Ok(messages.map(Data::into_owned).collect())
}

fn text(s: &str) -> Data<'static> {
    Data::Text(Cow::Owned(s.to_owned()))
}

/// `initLongPollingSession`: the handshake poll, answered.
fn polling_session() -> Session {
    assert_eq!(
        request::parse("GET", "EIO=4&transport=polling", false),
        Ok(Request::OpenPolling)
    );
    let mut s = Session::new(sid(), CONFIG, Transport::Polling, 0);
    s.poll().unwrap();
    let answer = polls(&mut s);
    assert_eq!(answer.len(), 1);
    assert!(answer[0].starts_with('0'));
    s
}

fn websocket_session() -> Session {
    assert_eq!(
        request::parse("GET", "EIO=4&transport=websocket", true),
        Ok(Request::OpenWebSocket)
    );
    let mut s = Session::new(sid(), CONFIG, Transport::WebSocket, 0);
    let open = frames(&mut s);
    assert_eq!(open.len(), 1);
    assert!(open[0].starts_with('0'));
    s
}

fn handshake_of(open: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(value["sid"], sid().to_string());
    assert_eq!(value["pingInterval"], 300);
    assert_eq!(value["pingTimeout"], 200);
    assert_eq!(value["maxPayload"], 1_000_000);
    value
}

#[test]
fn handshake_successfully_opens_a_session() {
    let mut s = Session::new(sid(), CONFIG, Transport::Polling, 0);
    s.poll().unwrap();
    let body = polls(&mut s).remove(0);
    assert_eq!(
        handshake_of(&body)["upgrades"],
        serde_json::json!(["websocket"])
    );

    let mut s = Session::new(sid(), CONFIG, Transport::WebSocket, 0);
    let open = frames(&mut s).remove(0);
    assert_eq!(handshake_of(&open)["upgrades"], serde_json::json!([]));
}

#[test]
fn polling_sends_and_receives_text_and_binary() {
    for body in [
        "4hello",
        "4test1\x1e4test2\x1e4test3",
        "4hello\x1ebAQIDBA==",
    ] {
        let mut s = polling_session();
        let messages = post(&mut s, body.as_bytes(), 10).unwrap();
        echo(&mut s, messages);
        s.poll().unwrap();
        assert_eq!(polls(&mut s), [body]);
    }
}

#[test]
fn polling_closes_the_session_upon_invalid_packet_format() {
    let mut s = polling_session();
    assert_eq!(post(&mut s, b"abc", 10), Err(Refusal::BadRequest));
    assert_eq!(s.closed(), Some(CloseReason::ParseError));
    assert_eq!(s.poll(), Err(Refusal::UnknownSid));
}

#[test]
fn polling_closes_the_session_upon_duplicate_poll_requests() {
    let mut s = polling_session();
    s.poll().unwrap();
    assert!(polls(&mut s).is_empty(), "nothing to say: the poll is held");
    assert_eq!(s.poll(), Err(Refusal::BadRequest));
    assert_eq!(s.closed(), Some(CloseReason::TransportError));
    assert_eq!(polls(&mut s), ["1"], "the held poll hears the close");
    assert_eq!(s.poll(), Err(Refusal::UnknownSid));
}

#[test]
fn websocket_sends_and_receives_text_and_binary() {
    let mut s = websocket_session();
    let m = s.on_frame(Frame::Text("4hello"), 10).unwrap().into_owned();
    echo(&mut s, vec![m]);
    assert_eq!(frames(&mut s), ["4hello"]);
    let m = s
        .on_frame(Frame::Binary(&[1, 2, 3, 4]), 10)
        .unwrap()
        .into_owned();
    echo(&mut s, vec![m]);
    assert_eq!(frames(&mut s), ["bin:[01, 02, 03, 04]"]);
    assert_eq!(s.on_frame(Frame::Text("abc"), 10), None);
    assert_eq!(s.closed(), Some(CloseReason::ParseError));
}

#[test]
fn polling_heartbeat() {
    let mut s = polling_session();
    let mut now = 0;
    for _ in 0..3 {
        let due = s.next_deadline().unwrap();
        assert_eq!(
            due,
            now + 300,
            "a ping every pingInterval after the last pong"
        );
        s.on_timer(due - 1);
        s.poll().unwrap();
        assert!(polls(&mut s).is_empty());
        s.on_timer(due);
        assert_eq!(polls(&mut s), ["2"], "the held poll carries the ping");
        assert_eq!(s.next_deadline(), Some(due + 200));
        now = due + 50;
        assert_eq!(post(&mut s, b"3", now), Ok(vec![]));
    }
    assert_eq!(s.closed(), None);
}

#[test]
fn polling_closes_the_session_upon_ping_timeout() {
    let mut s = polling_session();
    s.on_timer(300);
    s.on_timer(499);
    assert_eq!(s.closed(), None);
    s.on_timer(500);
    assert_eq!(s.closed(), Some(CloseReason::PingTimeout));
    assert_eq!(s.next_deadline(), None);
    assert!(polls(&mut s).is_empty(), "the unread ping is dropped");
    assert_eq!(s.poll(), Err(Refusal::UnknownSid));

    // A poll held at the time hears the close.
    let mut s = polling_session();
    s.on_timer(300);
    s.poll().unwrap();
    assert_eq!(polls(&mut s), ["2"]);
    s.poll().unwrap();
    s.on_timer(500);
    assert_eq!(polls(&mut s), ["1"]);
}

#[test]
fn websocket_heartbeat_and_ping_timeout() {
    let mut s = websocket_session();
    for round in 0..3u64 {
        let due = s.next_deadline().unwrap();
        s.on_timer(due);
        assert_eq!(frames(&mut s), ["2"], "round {round}");
        assert_eq!(s.on_frame(Frame::Text("3"), due + 10), None);
    }
    let due = s.next_deadline().unwrap();
    s.on_timer(due);
    assert_eq!(frames(&mut s), ["2"]);
    s.on_timer(due + 200);
    assert_eq!(s.closed(), Some(CloseReason::PingTimeout));
}

#[test]
fn polling_forcefully_closes_the_session() {
    let mut s = polling_session();
    s.poll().unwrap();
    assert_eq!(post(&mut s, b"1", 10), Ok(vec![]), "answered 200 ok");
    assert_eq!(s.closed(), Some(CloseReason::ClientClose));
    assert_eq!(polls(&mut s), ["6"], "the held poll is let go with a noop");
    assert_eq!(s.poll(), Err(Refusal::UnknownSid));
}

#[test]
fn websocket_forcefully_closes_the_session() {
    let mut s = websocket_session();
    assert_eq!(s.on_frame(Frame::Text("1"), 10), None);
    assert_eq!(s.closed(), Some(CloseReason::ClientClose));
}

fn upgrade_request() -> Request {
    let query = format!("EIO=4&transport=websocket&sid={sid}", sid = sid());
    request::parse("GET", &query, true).unwrap()
}

#[test]
fn successfully_upgrades_from_polling_to_websocket() {
    let mut s = polling_session();
    assert_eq!(upgrade_request(), Request::Upgrade(sid()));
    assert_eq!(upgrade_request().sid(), Some(s.sid()));
    s.begin_upgrade(10).unwrap();
    assert_eq!(s.on_frame(Frame::Text("2probe"), 20), None);
    assert_eq!(frames(&mut s), ["3probe"]);
    s.poll().unwrap();
    assert_eq!(polls(&mut s), ["6"], "a noop ends polling at once");
    assert_eq!(s.on_frame(Frame::Text("5"), 30), None);
    assert_eq!(s.transport(), Transport::WebSocket);
    let m = s.on_frame(Frame::Text("4hello"), 40).unwrap().into_owned();
    echo(&mut s, vec![m]);
    assert_eq!(frames(&mut s), ["4hello"]);
}

#[test]
fn a_held_poll_is_answered_noop_by_the_probe() {
    let mut s = polling_session();
    s.poll().unwrap();
    s.begin_upgrade(10).unwrap();
    s.on_frame(Frame::Text("2probe"), 20);
    let wire = drain(&mut s);
    assert_eq!(
        (wire.polls, wire.frames),
        (vec!["6".to_owned()], vec!["3probe".to_owned()])
    );
}

#[test]
fn ignores_http_requests_with_same_sid_after_upgrade() {
    let mut s = polling_session();
    s.begin_upgrade(10).unwrap();
    s.on_frame(Frame::Text("2probe"), 20);
    s.on_frame(Frame::Text("5"), 20);
    assert_eq!(frames(&mut s), ["3probe"]);
    assert_eq!(s.poll(), Err(Refusal::BadRequest));
    assert_eq!(s.begin_post(), Err(Refusal::BadRequest));
    assert_eq!(s.closed(), None, "refused, the session untouched");
    let m = s.on_frame(Frame::Text("4hello"), 40).unwrap().into_owned();
    echo(&mut s, vec![m]);
    assert_eq!(frames(&mut s), ["4hello"]);
}

#[test]
fn ignores_websocket_connection_with_same_sid_after_upgrade() {
    let mut s = polling_session();
    s.begin_upgrade(10).unwrap();
    assert_eq!(
        s.begin_upgrade(11),
        Err(Refusal::BadRequest),
        "one upgrade at a time"
    );
    s.on_frame(Frame::Text("2probe"), 20);
    s.on_frame(Frame::Text("5"), 20);
    assert_eq!(s.begin_upgrade(30), Err(Refusal::BadRequest));
    assert_eq!(frames(&mut s), ["3probe"]);
    let m = s.on_frame(Frame::Text("4hello"), 40).unwrap().into_owned();
    echo(&mut s, vec![m]);
    assert_eq!(frames(&mut s), ["4hello"]);
    // A WebSocket-only session has no upgrade either.
    assert_eq!(
        websocket_session().begin_upgrade(0),
        Err(Refusal::BadRequest)
    );
}

#[test]
fn a_failed_upgrade_leaves_the_session_polling() {
    // Anything but the probe and `5` on the probing WebSocket.
    for bad in ["4hello", "abc", "3probe", "2"] {
        let mut s = polling_session();
        s.begin_upgrade(10).unwrap();
        assert_eq!(s.on_frame(Frame::Text(bad), 20), None);
        assert_eq!(
            drain(&mut s),
            Wire {
                end_probe: true,
                ..Wire::default()
            },
            "{bad}"
        );
        assert_eq!(s.transport(), Transport::Polling);
        s.send(text("still here")).unwrap();
        s.poll().unwrap();
        assert_eq!(polls(&mut s), ["4still here"]);
        s.begin_upgrade(30).unwrap();
    }
    // Too slow, probed or not.
    let slow = Config {
        ping_interval_ms: 60_000,
        ..CONFIG
    };
    for probe in [false, true] {
        let mut s = Session::new(sid(), slow, Transport::Polling, 0);
        s.poll().unwrap();
        let _open = polls(&mut s);
        s.begin_upgrade(100).unwrap();
        if probe {
            s.on_frame(Frame::Text("2probe"), 150);
            assert_eq!(frames(&mut s), ["3probe"]);
        }
        assert_eq!(s.next_deadline(), Some(10_100));
        s.on_timer(10_099);
        assert!(!drain(&mut s).end_probe);
        s.on_timer(10_100);
        assert!(drain(&mut s).end_probe);
        assert_eq!(s.next_deadline(), Some(60_000));
        s.poll().unwrap();
        assert!(
            polls(&mut s).is_empty(),
            "polling as before: the poll is held"
        );
    }
    // The probing WebSocket went away.
    let mut s = polling_session();
    s.begin_upgrade(100).unwrap();
    s.websocket_closed();
    assert_eq!(s.closed(), None);
    assert!(!drain(&mut s).end_probe);
    s.begin_upgrade(200).unwrap();
}

#[test]
fn messages_cross_the_upgrade_exactly_once_in_order() {
    let mut s = polling_session();
    let mut seen = Vec::new();
    let mut sent = 0;
    let mut send = |s: &mut Session, n: usize| {
        for _ in 0..n {
            s.send(text(&format!("m{sent}"))).unwrap();
            sent += 1;
        }
    };
    send(&mut s, 2);
    s.poll().unwrap();
    seen.extend(polls(&mut s));
    s.begin_upgrade(10).unwrap();
    send(&mut s, 1);
    s.on_frame(Frame::Text("2probe"), 20);
    send(&mut s, 2);
    let wire = drain(&mut s);
    assert_eq!(wire.frames, ["3probe"]);
    s.poll().unwrap();
    let answer = polls(&mut s);
    assert_eq!(
        answer,
        ["4m2\x1e4m3\x1e4m4\x1e6"],
        "what waits goes out, then the noop"
    );
    seen.extend(answer);
    send(&mut s, 2);
    s.on_frame(Frame::Text("5"), 30);
    send(&mut s, 1);
    seen.extend(frames(&mut s));
    let messages: Vec<&str> = seen
        .iter()
        .flat_map(|body| body.split('\x1e'))
        .filter_map(|p| p.strip_prefix('4'))
        .collect();
    let want: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    assert_eq!(messages, want);
}

#[test]
fn bounds_and_bad_posts_end_the_session_with_their_own_reason() {
    let mut s = Session::new(
        sid(),
        Config {
            max_payload: 8,
            ..CONFIG
        },
        Transport::Polling,
        0,
    );
    assert_eq!(
        post(&mut s, b"4123456789", 0),
        Err(Refusal::PayloadTooLarge)
    );
    assert_eq!(s.closed(), Some(CloseReason::PayloadTooLarge));

    let mut s = polling_session();
    s.begin_post().unwrap();
    assert_eq!(s.begin_post(), Err(Refusal::BadRequest));
    assert_eq!(s.closed(), Some(CloseReason::TransportError));

    let mut s = polling_session();
    assert_eq!(
        post(&mut s, b"4a\x1e2", 0),
        Err(Refusal::BadRequest),
        "v4 pings come from the server"
    );
    assert_eq!(s.closed(), Some(CloseReason::TransportError));

    let mut s = polling_session();
    s.begin_post().unwrap();
    s.post_dropped();
    assert_eq!(
        post(&mut s, b"4a\x1e1\x1e4b\x1e2", 0),
        Ok(vec![text("a")]),
        "nothing counts past a close"
    );
    assert_eq!(s.closed(), Some(CloseReason::ClientClose));

    let mut s = polling_session();
    assert_eq!(
        s.post(b"4a", 0).map(|_| ()),
        Err(Refusal::BadRequest),
        "a body without its head"
    );

    let mut s = polling_session();
    s.poll().unwrap();
    s.poll_dropped();
    assert_eq!(s.closed(), Some(CloseReason::TransportClose));

    let mut s = websocket_session();
    s.websocket_closed();
    assert_eq!(s.closed(), Some(CloseReason::TransportClose));
}

#[test]
fn a_client_that_stops_polling_fills_its_queue_and_is_closed() {
    let mut s = Session::new(
        sid(),
        Config {
            max_queued_bytes: 500,
            ..CONFIG
        },
        Transport::Polling,
        0,
    );
    s.poll().unwrap();
    let _open = polls(&mut s);
    for _ in 0..4 {
        s.send(text(&"x".repeat(99))).unwrap();
    }
    assert_eq!(s.queued_bytes(), 400);
    s.send(text(&"x".repeat(99))).unwrap();
    assert_eq!(s.send(text("x")), Err(CloseReason::BufferFull));
    assert_eq!(s.closed(), Some(CloseReason::BufferFull));
    assert_eq!(s.queued_bytes(), 0, "nothing is held for a closed session");
    assert_eq!(s.send(text("x")), Err(CloseReason::BufferFull));
}

#[test]
fn the_server_closes_after_what_is_queued() {
    let mut s = polling_session();
    s.poll().unwrap();
    s.close_by_server();
    assert_eq!(polls(&mut s), ["1"]);
    assert_eq!(s.closed(), Some(CloseReason::ServerClose));

    let mut s = websocket_session();
    s.send(text("last")).unwrap();
    s.close_by_server();
    assert_eq!(s.send(text("late")), Err(CloseReason::ServerClose));
    assert_eq!(frames(&mut s), ["4last"]);
}

/// What a client may do at any moment, for the interleaving property.
#[derive(Debug, Clone, Copy)]
enum Step {
    Send,
    Poll,
    Probe,
    Complete,
    Timer,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Send),
        3 => Just(Step::Poll),
        1 => Just(Step::Probe),
        1 => Just(Step::Complete),
        1 => Just(Step::Timer),
    ]
}

proptest! {
    /// However sends, polls, the probe, the upgrade and pings interleave,
    /// every message reaches the client once, in order.
    #[test]
    fn no_message_is_lost_or_duplicated(steps in proptest::collection::vec(step(), 0..40)) {
        let mut s = polling_session();
        let mut now = 0;
        let (mut sent, mut seen) = (0, Vec::new());
        let mut upgrading = false;
        for step in steps {
            now += 100;
            match step {
                Step::Send => {
                    s.send(text(&sent.to_string())).unwrap();
                    sent += 1;
                }
                Step::Poll if !s.poll_held() => {
                    let _ = s.poll();
                }
                Step::Probe if !upgrading && s.transport() == Transport::Polling => {
                    s.begin_upgrade(now).unwrap();
                    s.on_frame(Frame::Text("2probe"), now);
                    upgrading = true;
                }
                Step::Complete if upgrading => {
                    s.on_frame(Frame::Text("5"), now);
                    upgrading = false;
                }
                Step::Timer => {
                    // A ping, answered at once; the pong takes the
                    // transport the session is on.
                    s.on_timer(s.next_deadline().unwrap());
                    match s.transport() {
                        Transport::Polling => { let _ = post(&mut s, b"3", now); }
                        Transport::WebSocket => { s.on_frame(Frame::Text("3"), now); }
                    }
                }
                _ => {}
            }
            let wire = drain(&mut s);
            for packet in wire.polls.iter().flat_map(|b| b.split('\x1e')).chain(wire.frames.iter().map(String::as_str)) {
                if let Some(m) = packet.strip_prefix('4') {
                    seen.push(m.parse::<usize>().unwrap());
                }
            }
            prop_assert_eq!(s.closed(), None);
        }
        // Whatever is left goes to a last poll, or is already written.
        if s.transport() == Transport::Polling && !s.poll_held() {
            s.poll().unwrap();
        }
        let wire = drain(&mut s);
        for packet in wire.polls.iter().flat_map(|b| b.split('\x1e')) {
            if let Some(m) = packet.strip_prefix('4') {
                seen.push(m.parse::<usize>().unwrap());
            }
        }
        prop_assert_eq!(seen, (0..sent).collect::<Vec<_>>());
    }
}
