//! What shards tell each other about Engine.IO sessions. A session lives
//! on the shard that opened it, but each of its HTTP requests (and its
//! WebSocket) arrives on whichever shard's listener the kernel picked:
//! the connection's shard passes what the client asked to the owner
//! ([`ToOwner`]) and writes what the owner answers ([`ToConn`]). On one
//! shard the same values go straight from one side to the other, so both
//! cases run the same code.

use super::sid::Sid;

/// A connection on some shard, as the owner of a session names it: a
/// stale reference (the slot was reused) is told apart by its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    /// The shard the connection lives on.
    pub shard: u16,
    /// Its slot there.
    pub key: u32,
    /// The slot's generation when the request arrived.
    pub generation: u32,
}

/// What a connection's request asks of the session it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A `GET`: hold it until there is something to carry.
    Poll,
    /// A `POST`'s head arrived and its body is still coming: a second
    /// one now is refused.
    BeginPost,
    /// A `POST`'s whole body. `begun`: [`Ask::BeginPost`] was sent first.
    Post {
        /// The body, exactly `Content-Length` bytes.
        body: Vec<u8>,
        /// Whether [`Ask::BeginPost`] went first.
        begun: bool,
    },
    /// A `POST` refused before its body was read (over `maxPayload`, or
    /// not text): it ends the session, as the reference does.
    PostRefused {
        /// Over `maxPayload` (413); otherwise not text (400).
        too_large: bool,
    },
    /// A WebSocket asks to take the session over (answered
    /// [`Answer::Accept`] or refused).
    Upgrade,
    /// A message on the session's WebSocket (or the probing one).
    Frame {
        /// A text message (UTF-8, checked); otherwise binary.
        text: bool,
        /// The message's payload.
        data: Vec<u8>,
    },
    /// The connection ended before its request was answered, or (a
    /// WebSocket) at all.
    Ended,
}

/// A request for the owner of session `sid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToOwner {
    /// The session, as the request named it.
    pub sid: Sid,
    /// The connection that asked, for the answer.
    pub from: ConnRef,
    /// What it asks.
    pub ask: Ask,
}

/// What the owner says back to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer: this status, `Content-Type` and body. `close`: the
    /// connection ends after it (otherwise it is kept alive for the next
    /// request).
    Http {
        /// The status code.
        status: u16,
        /// The body's type (empty: none).
        content_type: &'static str,
        /// The body.
        body: Vec<u8>,
        /// End the connection after it.
        close: bool,
    },
    /// End the connection at once, unanswered (the first of two
    /// concurrent `POST`s, as the reference does).
    Drop,
    /// The upgrade may go ahead: send the 101 and read frames.
    Accept,
    /// The upgrade is refused: this whole response, then the connection
    /// closes.
    Refused(Vec<u8>),
    /// WebSocket frames, whole, to write on an open WebSocket.
    Frames(Vec<u8>),
    /// Write these WebSocket frames, made once and shared by every
    /// recipient (a Socket.IO room broadcast).
    Shared(std::sync::Arc<[u8]>),
    /// Close the WebSocket: the session ended, or the probe failed.
    CloseWebSocket,
    /// Close the WebSocket with 1013: what it carried could not reach
    /// its session (the owner's inbox was full).
    Overloaded,
}

/// An answer for the connection `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToConn {
    /// The connection.
    pub to: ConnRef,
    /// The session the answer is about, told if it cannot be delivered.
    pub sid: Sid,
    /// What to do with it.
    pub answer: Answer,
}

/// A Socket.IO client reconnecting with a `pid`: for the shard that
/// keeps the dropped socket the pid names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    /// The shard the pid names.
    pub shard: u16,
    /// The socket's private id.
    pub pid: String,
    /// The offset of the last event the client received.
    pub offset: String,
    /// The namespace being connected.
    pub namespace: String,
    /// The new session, which gets the answer.
    pub session: Sid,
    /// The `CONNECT`'s payload, for the connect that follows.
    pub auth: String,
}

/// The answer to a [`Recover`]: the socket back, or `None` (it is not
/// kept, or what it missed is no longer held): the client then gets a new
/// socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The request.
    pub ask: Recover,
    /// The socket, if it is recovered.
    pub socket: Option<RecoveredSocket>,
}

/// A recovered socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSocket {
    /// Its public id, as before.
    pub sid: String,
    /// The hub topics of its rooms.
    pub rooms: Vec<std::sync::Arc<str>>,
    /// The room broadcasts it missed, oldest first, as their frames.
    pub missed: Vec<std::sync::Arc<[u8]>>,
}

/// One handoff between shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// For the shard that owns a session.
    ToOwner(ToOwner),
    /// For the shard a connection is on.
    ToConn(ToConn),
    /// For the shard that keeps a dropped Socket.IO socket.
    Recover(Box<Recover>),
    /// For the shard of the session that asked to recover one.
    Recovered(Box<Recovered>),
}

impl Handoff {
    /// The shard it is for.
    pub fn shard(&self) -> u16 {
        match self {
            Self::ToOwner(m) => m.sid.shard(),
            Self::ToConn(m) => m.to.shard,
            Self::Recover(m) => m.shard,
            Self::Recovered(m) => m.ask.session.shard(),
        }
    }

    /// The bytes it carries, for an inbox's byte bound.
    pub fn len(&self) -> usize {
        match self {
            Self::ToOwner(ToOwner {
                ask: Ask::Post { body: b, .. } | Ask::Frame { data: b, .. },
                ..
            })
            | Self::ToConn(ToConn {
                answer: Answer::Http { body: b, .. } | Answer::Frames(b) | Answer::Refused(b),
                ..
            }) => b.len(),
            Self::ToConn(ToConn {
                answer: Answer::Shared(f),
                ..
            }) => f.len(),
            Self::Recover(m) => m.pid.len() + m.offset.len() + m.auth.len(),
            Self::Recovered(m) => m
                .socket
                .as_ref()
                .map_or(0, |s| s.missed.iter().map(|f| f.len()).sum()),
            _ => 0,
        }
    }

    /// Whether it carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
