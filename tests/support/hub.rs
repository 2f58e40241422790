//! A hub client for the tests: a tungstenite connection to `/hub` from a
//! chosen loopback address, and its text messages.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tungstenite::{Message, WebSocket};

use super::{connect_from, Patient};

/// Every driver, for tests that run on each themselves.
pub(crate) const BACKENDS: [&str; 2] = ["epoll", "uring"];

/// A hub connection.
pub(crate) type HubWs = WebSocket<Patient>;

/// 127.0.0.`last`: a distinct client address on loopback.
pub(crate) fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Upgrades to `/hub` at `addr` from `from`.
pub(crate) fn hub_client(from: IpAddr, addr: SocketAddr) -> HubWs {
    let url = format!("ws://{addr}/hub");
    let (ws, response) =
        tungstenite::client(url.as_str(), Patient(connect_from(from, addr))).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message; any other data frame, a close among them, fails.
pub(crate) fn next_text(ws: &mut HubWs) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {:.200}", format!("{other:?}")),
        }
    }
}

/// Sends one text message.
pub(crate) fn send_text(ws: &mut HubWs, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

/// Reads until the close frame: its code and reason (1005 and none when
/// it carries no code). Any read error fails.
pub(crate) fn close_frame(ws: &mut HubWs) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}
