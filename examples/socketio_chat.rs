//! A Socket.IO chat with rooms, on the embedding API: the stock
//! `socket.io-client` (browser or Node) talks to it unchanged.
//!
//! ```text
//! cargo run --example socketio_chat -- 127.0.0.1:9001
//! ```
//!
//! ```js
//! const socket = io("http://127.0.0.1:9001", { auth: { name: "ada" } });
//! socket.emit("join", "lobby", (rooms) => console.log(rooms));   // ["lobby"]
//! socket.emit("say", { room: "lobby", text: "hi" }, (ok) => {});
//! socket.on("said", ({ from, room, text }) => {});  // from everyone else in the room
//! socket.on("joined", ({ name, room }) => {});      // someone came in
//! socket.on("left", ({ name, id, reason }) => {});  // someone left, and why
//! socket.on("clock", (n) => {});                    // to room "clock", from another thread
//! ```
//!
//! A connect without `auth.name` (1-32 characters of `A-Z a-z 0-9 _ - .`)
//! is refused with `connect_error` "a name is needed (auth.name)". A
//! mistake in an event (a bad room name, saying something to a room not
//! joined) is answered in its ack as `{"error": "..."}`. On namespace
//! `/admin`, `announce` (a text) reaches every chat socket as
//! `announcement`, and `whisper` (`{to, text}`) reaches one user's
//! sockets, on whatever shard or node they are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use surge::app::{
    Ack, App, Connect, ConnectRequest, DisconnectReason, Emitter, Event, Namespaces, Socket,
    SocketIoHandler,
};

/// Who a socket is.
#[derive(Debug)]
pub struct User {
    /// Shown with what the user says.
    pub name: String,
}

/// Whether `s` may be a room or user name.
pub fn valid_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The chat's namespace, `/`.
#[derive(Debug, Default)]
pub struct Chat;

#[derive(Deserialize)]
struct Auth {
    name: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

/// The room every user's sockets are in, so that `/admin` can reach them.
fn user_room(name: &str) -> String {
    format!("user.{name}")
}

fn answer(socket: &mut Socket<'_>, ack: Option<Ack>, result: Result<serde_json::Value, &str>) {
    if let Some(ack) = ack {
        let value = result.unwrap_or_else(|e| json!({ "error": e }));
        let _ = ack.send(socket, &value);
    }
}

impl SocketIoHandler for Chat {
    fn connect(&self, request: &ConnectRequest<'_>) -> Connect {
        match request.auth_as::<Auth>() {
            Some(Auth { name }) if valid_name(&name) => Connect::accept().data(User { name }),
            _ => Connect::refuse("a name is needed (auth.name)"),
        }
    }

    fn connected(&self, socket: &mut Socket<'_>) {
        let name = socket.data::<User>().map(|u| u.name.clone());
        if let Some(name) = name {
            socket.join(&user_room(&name));
        }
    }

    fn event(&self, socket: &mut Socket<'_>, event: &Event<'_>, ack: Option<Ack>) {
        let name = socket
            .data::<User>()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        match event.name() {
            "join" => {
                let room = event.first::<String>().filter(|r| valid_name(r));
                let result = match room {
                    Some(room) if socket.join(&room) => {
                        socket
                            .to(&room)
                            .emit("joined", &json!({ "name": name, "room": room }));
                        Ok(json!(socket
                            .rooms()
                            .into_iter()
                            .filter(|r| !r.starts_with("user."))
                            .collect::<Vec<_>>()))
                    }
                    Some(_) => Err("in too many rooms"),
                    None => Err("name a room: 1-32 of A-Z a-z 0-9 _ - ."),
                };
                answer(socket, ack, result);
            }
            "leave" => {
                if let Some(room) = event.first::<String>() {
                    socket.leave(&room);
                }
                answer(socket, ack, Ok(json!(true)));
            }
            "say" => {
                let result = match event.first::<Say>() {
                    Some(say) if socket.rooms().contains(&say.room.as_str()) => {
                        let said = json!({ "from": name, "room": say.room, "text": say.text });
                        socket.to(&say.room).emit("said", &said);
                        Ok(json!(true))
                    }
                    Some(_) => Err("join the room first"),
                    None => Err("say {room, text}"),
                };
                answer(socket, ack, result);
            }
            _ => answer(socket, ack, Err("unknown event (join, leave, say)")),
        }
    }

    fn disconnect(&self, socket: &mut Socket<'_>, reason: DisconnectReason) {
        let name = socket.data::<User>().map(|u| u.name.clone());
        if let Some(name) = name {
            let left = json!({ "name": name, "id": socket.id(), "reason": reason.as_str() });
            socket.broadcast().emit("left", &left);
        }
    }
}

/// The `/admin` namespace: messages to the chat's users.
#[derive(Debug, Default)]
pub struct Admin {
    /// Reaches the chat's namespace; set once the server runs.
    pub emitter: Arc<OnceLock<Emitter>>,
}

#[derive(Deserialize)]
struct Whisper {
    to: String,
    text: String,
}

impl SocketIoHandler for Admin {
    fn event(&self, socket: &mut Socket<'_>, event: &Event<'_>, ack: Option<Ack>) {
        let Some(emitter) = self.emitter.get() else {
            return answer(socket, ack, Err("not running yet"));
        };
        let result = match event.name() {
            "announce" => match event.first::<String>() {
                Some(text) => Ok(json!(emitter.of("/").emit("announcement", &text))),
                None => Err("announce TEXT"),
            },
            "whisper" => match event.first::<Whisper>() {
                Some(w) if valid_name(&w.to) => {
                    let room = user_room(&w.to);
                    Ok(json!(emitter.of("/").to(&room).emit("whisper", &w.text)))
                }
                _ => Err("whisper {to, text}"),
            },
            _ => Err("unknown event (announce, whisper)"),
        };
        answer(socket, ack, result);
    }
}

/// The chat's namespaces.
pub fn namespaces(admin: Admin) -> Namespaces {
    Namespaces::new()
        .namespace("/", Chat)
        .namespace("/admin", admin)
}

/// Counts to room `clock` once per `every`, from its own thread, until
/// `stop` is set.
pub fn clock(emitter: Emitter, every: Duration, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            n += 1;
            emitter.of("/").to("clock").emit("clock", &n);
        }
    })
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let addr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let admin = Admin::default();
    let admin_emitter = Arc::clone(&admin.emitter);
    let running = App::new()
        .listen(addr)
        .socketio("/socket.io/", namespaces(admin))
        .start()?;
    running.announce();
    let emitter = running.emitter("/socket.io/").expect("the route above");
    let _ = admin_emitter.set(emitter.clone());
    let _clock = clock(emitter, Duration::from_secs(1), Arc::default());
    running.join()
}
