//! The Socket.IO side of one Engine.IO session, free of I/O: which
//! namespaces it has connected, the packet rules the codec leaves to a
//! session (a `CONNECT` first, nothing for a namespace not connected, no
//! `CONNECT_ERROR` from a client), the server's own ack ids, and the
//! deadlines the reference has no bound for.
//!
//! How the shard drives it: every Engine.IO message goes to
//! [`Connection::receive`]; what comes back is a packet the application
//! acts on (a `CONNECT` it accepts with [`Connection::accept`] or refuses
//! with [`refusal`], an event, an ack, a `DISCONNECT`), nothing yet (a
//! binary packet waiting for attachments), or the [`Violation`] that ends
//! the session. Call [`Connection::on_timer`] once the time passes
//! [`Connection::next_deadline`].

use std::borrow::Cow;
use std::fmt;

use super::decoder::{DecodeError, Decoder, Limits};
use super::packet::{Packet, PacketType};
use crate::engineio::Data;

/// A session's settings (the route's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Milliseconds a session may go without any namespace connected
    /// from its start, and a binary packet may wait for its attachments.
    /// Default 45,000, the reference's `connectTimeout`.
    pub connect_timeout_ms: u32,
    /// Bounds on a binary packet's attachments.
    pub limits: Limits,
    /// Acks the server may await per socket; past it the oldest is
    /// forgotten (its answer, if it ever comes, is dropped as unknown).
    pub max_pending_acks: usize,
    /// Milliseconds a dropped socket is kept for connection state
    /// recovery; 0 (the default): it is not.
    pub recovery_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 45_000,
            limits: Limits::default(),
            max_pending_acks: 64,
            recovery_ms: 0,
        }
    }
}

/// Why a session's Socket.IO input ends it. The reference answers every
/// one by closing the Engine.IO session without a Socket.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The input does not decode ([`DecodeError`]).
    Decode(DecodeError),
    /// A packet other than `CONNECT` for a namespace not connected (the
    /// spec: a server that does not receive a `CONNECT` first MUST close
    /// the connection).
    NotConnected,
    /// A `CONNECT` for a namespace already connected.
    ConnectedTwice,
    /// A `CONNECT_ERROR`, which only a server sends.
    ConnectErrorFromClient,
    /// An event without its payload, which the spec makes mandatory (the
    /// reference lets one pass).
    MissingPayload,
    /// No namespace was connected within the connect timeout.
    ConnectTimeout,
    /// A binary packet's attachments did not all arrive within the
    /// connect timeout.
    AttachmentTimeout,
}

impl Violation {
    /// Every violation's label, in the order of [`Violation::index`].
    pub const LABELS: [&'static str; 7] = [
        "parse_error",
        "not_connected",
        "connected_twice",
        "connect_error_from_client",
        "missing_payload",
        "connect_timeout",
        "attachment_timeout",
    ];

    /// Its place in [`Violation::LABELS`].
    pub const fn index(self) -> usize {
        match self {
            Self::Decode(_) => 0,
            Self::NotConnected => 1,
            Self::ConnectedTwice => 2,
            Self::ConnectErrorFromClient => 3,
            Self::MissingPayload => 4,
            Self::ConnectTimeout => 5,
            Self::AttachmentTimeout => 6,
        }
    }

    /// A label for metrics.
    pub const fn as_str(self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => e.fmt(f),
            Self::NotConnected => f.write_str("packet for a namespace not connected"),
            Self::ConnectedTwice => f.write_str("CONNECT for a namespace already connected"),
            Self::ConnectErrorFromClient => f.write_str("CONNECT_ERROR from a client"),
            Self::MissingPayload => f.write_str("event without a payload"),
            Self::ConnectTimeout => f.write_str("no namespace connected in time"),
            Self::AttachmentTimeout => f.write_str("binary attachments did not arrive in time"),
        }
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

/// What an ack the server awaits answers for: the application's token
/// (for the reference: the client's own ack id the answer goes on to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaited {
    id: u64,
    token: u64,
}

/// One connected namespace.
#[derive(Debug)]
pub struct Socket {
    /// `/`, the common case, takes no allocation.
    namespace: Cow<'static, str>,
    sid: SocketId,
    next_ack: u64,
    awaited: Vec<Awaited>,
}

impl Socket {
    /// The namespace, `/` or `/name`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket's public id (not the Engine.IO session's).
    pub fn sid(&self) -> &str {
        self.sid.as_str()
    }
}

/// A socket's id, inline when it is one of this server's (20 ASCII
/// characters): an idle socket's id takes no allocation.
#[derive(Debug)]
enum SocketId {
    Inline([u8; 20]),
    Other(Box<str>),
}

impl SocketId {
    fn new(id: String) -> Self {
        match <[u8; 20]>::try_from(id.as_bytes()) {
            Ok(bytes) if id.is_ascii() => Self::Inline(bytes),
            _ => Self::Other(id.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Made from ASCII text.
            Self::Inline(b) => std::str::from_utf8(b).unwrap_or_default(),
            Self::Other(s) => s,
        }
    }
}

/// The Socket.IO state of one Engine.IO session.
#[derive(Debug)]
pub struct Connection {
    settings: Settings,
    decoder: Decoder,
    sockets: Vec<Socket>,
    /// Until a first namespace connects: when the session is closed.
    connect_by: Option<u64>,
    ended: Option<Violation>,
}

impl Connection {
    /// A session opened at `now` (ms).
    pub fn new(settings: Settings, now: u64) -> Self {
        Self {
            settings,
            decoder: Decoder::new(settings.limits),
            sockets: Vec::new(),
            connect_by: Some(now + u64::from(settings.connect_timeout_ms)),
            ended: None,
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The namespaces connected, in the order they connected.
    pub fn sockets(&self) -> &[Socket] {
        &self.sockets
    }

    /// The socket connected on `namespace`.
    pub fn socket(&self, namespace: &str) -> Option<&Socket> {
        self.sockets.iter().find(|s| s.namespace == namespace)
    }

    /// Why the session's input ended it, once it has.
    pub fn ended(&self) -> Option<Violation> {
        self.ended
    }

    /// Takes one Engine.IO message at `now`. A packet for the application
    /// comes back checked against the session's rules: a `CONNECT` for a
    /// namespace not yet connected, or an event, ack or `DISCONNECT` for
    /// one that is (a `DISCONNECT` has already left it).
    pub fn receive<'a>(
        &mut self,
        message: Data<'a>,
        now: u64,
    ) -> Result<Option<Packet<'a>>, Violation> {
        if let Some(v) = self.ended {
            return Err(v);
        }
        let decoded = match message {
            Data::Text(Cow::Borrowed(text)) => self.decoder.text(text, now),
            Data::Text(Cow::Owned(text)) => self
                .decoder
                .text(&text, now)
                .map(|p| p.map(Packet::into_owned)),
            Data::Binary(bytes) => self.decoder.binary(bytes),
        };
        let checked = decoded
            .map_err(Violation::from)
            .and_then(|p| p.map(|p| self.check(p)).transpose());
        if let Err(v) = checked {
            self.end(v);
        }
        checked
    }

    fn check<'a>(&mut self, packet: Packet<'a>) -> Result<Packet<'a>, Violation> {
        let connected = self.position(packet.namespace());
        match (packet.kind(), connected) {
            (PacketType::ConnectError, _) => Err(Violation::ConnectErrorFromClient),
            (PacketType::Connect, None) => Ok(packet),
            (PacketType::Connect, Some(_)) => Err(Violation::ConnectedTwice),
            (_, None) => Err(Violation::NotConnected),
            (PacketType::Event | PacketType::BinaryEvent, _) if packet.data().is_none() => {
                Err(Violation::MissingPayload)
            }
            (PacketType::Disconnect, Some(at)) => {
                self.sockets.remove(at);
                Ok(packet)
            }
            (_, Some(_)) => Ok(packet),
        }
    }

    fn position(&self, namespace: &str) -> Option<usize> {
        self.sockets.iter().position(|s| s.namespace == namespace)
    }

    /// The application accepts a `CONNECT` for `namespace` (not yet
    /// connected): the socket gets `sid` and the answer to send is
    /// returned, `0[/ns,]{"sid":"…"}` plus any `extra` JSON members
    /// (`"pid":"…"`).
    pub fn accept(&mut self, namespace: &str, sid: String, extra: &str) -> Packet<'static> {
        self.connect_by = None;
        let data = format!(
            "{{\"sid\":{}{}{extra}}}",
            serde_json::to_string(&sid).expect("a string"),
            if extra.is_empty() { "" } else { "," }
        );
        // One namespace is the common case: no room for four.
        self.sockets.reserve_exact(1);
        self.sockets.push(Socket {
            namespace: if namespace == "/" {
                Cow::Borrowed("/")
            } else {
                Cow::Owned(namespace.to_owned())
            },
            sid: SocketId::new(sid),
            next_ack: 0,
            awaited: Vec::new(),
        });
        Packet::new(
            PacketType::Connect,
            namespace.to_owned(),
            None,
            Some(data.into()),
            Vec::new(),
        )
        .expect("a checked namespace and an object")
    }

    /// The server leaves `namespace`: returns the `DISCONNECT` to send,
    /// if the namespace was connected.
    pub fn leave(&mut self, namespace: &str) -> Option<Packet<'static>> {
        let at = self.position(namespace)?;
        self.sockets.remove(at);
        Packet::new(
            PacketType::Disconnect,
            namespace.to_owned(),
            None,
            None,
            Vec::new(),
        )
        .ok()
    }

    /// A new ack id for an event the server sends on `namespace`, whose
    /// answer the application will know by `token`. `None` if the
    /// namespace is not connected.
    pub fn await_ack(&mut self, namespace: &str, token: u64) -> Option<u64> {
        let max = self.settings.max_pending_acks;
        let at = self.position(namespace)?;
        let socket = &mut self.sockets[at];
        let id = socket.next_ack;
        socket.next_ack = (id + 1) % (super::MAX_ACK_ID + 1);
        if socket.awaited.len() >= max {
            socket.awaited.remove(0);
        }
        socket.awaited.push(Awaited { id, token });
        Some(id)
    }

    /// The token of the ack `id` the server awaited on `namespace`, now
    /// answered; `None` for an id it never sent (the reference drops
    /// those).
    pub fn answered(&mut self, namespace: &str, id: u64) -> Option<u64> {
        let at = self.position(namespace)?;
        let socket = &mut self.sockets[at];
        let at = socket.awaited.iter().position(|a| a.id == id)?;
        Some(socket.awaited.remove(at).token)
    }

    /// When [`on_timer`](Self::on_timer) is next due.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.ended.is_some() {
            return None;
        }
        let attachments = self
            .decoder
            .in_progress_since()
            .map(|since| since + u64::from(self.settings.connect_timeout_ms));
        match (self.connect_by, attachments) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The time is `now`: the violation that ends the session, if a
    /// deadline passed.
    pub fn on_timer(&mut self, now: u64) -> Option<Violation> {
        let late = if self.connect_by.is_some_and(|at| at <= now) {
            Violation::ConnectTimeout
        } else if self
            .decoder
            .in_progress_since()
            .is_some_and(|since| since + u64::from(self.settings.connect_timeout_ms) <= now)
        {
            Violation::AttachmentTimeout
        } else {
            return None;
        };
        self.end(late);
        Some(late)
    }

    fn end(&mut self, v: Violation) {
        self.ended = Some(v);
        self.decoder.reset();
    }
}

/// The `CONNECT_ERROR` refusing a `CONNECT` on `namespace`:
/// `4[/ns,]{"message":…}`.
pub fn refusal(namespace: &str, message: &str) -> Packet<'static> {
    let data = format!(
        "{{\"message\":{}}}",
        serde_json::to_string(message).expect("a string")
    );
    Packet::new(
        PacketType::ConnectError,
        namespace.to_owned(),
        None,
        Some(data.into()),
        Vec::new(),
    )
    .expect("a checked namespace and an object")
}

/// The Engine.IO messages that carry `packet`: its text form, then each
/// attachment as a binary message.
pub fn messages(packet: &Packet<'_>, mut each: impl FnMut(Data<'static>)) {
    let mut text = String::new();
    let attachments = packet.encode(&mut text);
    each(Data::Text(Cow::Owned(text)));
    for a in attachments {
        each(Data::Binary(Cow::Owned(a.to_vec())));
    }
}

/// A socket id: 20 characters of base64url, 120 random bits, as the
/// reference's. `None` if the system has no randomness to give.
pub fn new_socket_id() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 15];
    getrandom::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
