//! A chat server with rooms, on the embedding API.
//!
//! ```text
//! cargo run --example chat -- 127.0.0.1:9001
//! websocat 'ws://127.0.0.1:9001/chat?room=lobby&name=ada'
//! ```
//!
//! Connect to `/chat?room=ROOM&name=NAME` (both optional) and send text:
//! `/join ROOM` moves to another room, `/nick NAME` renames, anything else
//! is said to the room. Everyone in a room, on every shard, sees what is
//! said there and who joins and leaves. Rooms and names are 1-32
//! characters of `A-Z a-z 0-9 _ - .`; a bad one in the URL is refused with
//! HTTP 400, in a command it gets an `error:` reply.

use std::sync::atomic::{AtomicU64, Ordering};

use surge::app::{App, Handler, Limits, Message, Upgrade, UpgradeRequest, Ws};

/// Who a connection is and where it talks.
#[derive(Debug)]
pub struct User {
    /// Shown before each line the user says.
    pub name: String,
    /// The room joined, if any.
    pub room: Option<String>,
}

/// The chat route.
#[derive(Debug, Default)]
pub struct Chat {
    guests: AtomicU64,
}

/// Whether `s` may be a room or user name.
pub fn valid_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn topic(room: &str) -> String {
    format!("room:{room}")
}

fn join(ws: &mut Ws<'_>, room: &str) {
    let name = match ws.data::<User>() {
        Some(user) => {
            user.room = Some(room.to_owned());
            user.name.clone()
        }
        None => return,
    };
    ws.subscribe(&topic(room));
    ws.publish(
        &topic(room),
        Message::Text(&format!("* {name} joined {room}")),
    );
}

fn leave(ws: &mut Ws<'_>) {
    let Some(user) = ws.data::<User>() else {
        return;
    };
    let name = user.name.clone();
    if let Some(room) = user.room.take() {
        ws.unsubscribe(&topic(&room));
        ws.publish(
            &topic(&room),
            Message::Text(&format!("* {name} left {room}")),
        );
    }
}

impl Handler for Chat {
    fn limits(&self) -> Limits {
        Limits {
            max_message: 4096,
            max_topics: 1,
            ..Limits::default()
        }
    }

    fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let room = req.query_param("room");
        let name = req.query_param("name");
        if !room.is_none_or(valid_name) || !name.is_none_or(valid_name) {
            return Upgrade::reject(400);
        }
        let name = name.map_or_else(
            || format!("guest{}", self.guests.fetch_add(1, Ordering::Relaxed) + 1),
            str::to_owned,
        );
        Upgrade::accept().data(User {
            name,
            room: room.map(str::to_owned),
        })
    }

    fn open(&self, ws: &mut Ws<'_>) {
        if let Some(room) = ws.data::<User>().and_then(|u| u.room.clone()) {
            join(ws, &room);
        }
    }

    fn message(&self, ws: &mut Ws<'_>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            ws.close(1003, "text only");
            return;
        };
        if let Some(room) = text.strip_prefix("/join ") {
            if !valid_name(room) {
                ws.send_text("error: room names are 1-32 of A-Z a-z 0-9 _ - .");
                return;
            }
            leave(ws);
            join(ws, room);
        } else if let Some(name) = text.strip_prefix("/nick ") {
            if !valid_name(name) {
                ws.send_text("error: names are 1-32 of A-Z a-z 0-9 _ - .");
                return;
            }
            let Some(user) = ws.data::<User>() else {
                return;
            };
            let old = std::mem::replace(&mut user.name, name.to_owned());
            if let Some(room) = user.room.clone() {
                ws.publish(
                    &topic(&room),
                    Message::Text(&format!("* {old} is now {name}")),
                );
            }
        } else {
            let Some(user) = ws.data::<User>() else {
                return;
            };
            let Some(room) = user.room.clone() else {
                ws.send_text("error: join a room first: /join ROOM");
                return;
            };
            let line = format!("{}: {text}", user.name);
            ws.publish(&topic(&room), Message::Text(&line));
        }
    }

    fn close(&self, ws: &mut Ws<'_>, _code: u16, _reason: &str) {
        leave(ws);
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let addr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    App::new()
        .listen(addr)
        .route("/chat", Chat::default())
        .run()
}
