//! Handlers, as a shard sees them. Here: what an embedder writes, a
//! [`Handler`] and the [`Limits`] of its route; `ws.rs`: what a handler
//! holds while it runs ([`Ws`], [`Publisher`]); `dispatch.rs`: where a
//! session calls into handler code (the route table, the shard state a
//! call may touch, each call behind `catch_unwind`).
//!
//! It lives in the shard, below the drivers and the embedding API, because
//! the session calls it; `surge::app` re-exports the public items and adds
//! the `App` builder.

mod dispatch;
mod ws;

use std::any::Any;
use std::time::Duration;

use crate::admission::policy::UpgradeRequest;
use crate::pubsub::Backpressure;
pub use dispatch::AppRoutes;
pub(crate) use dispatch::{call, ended, upgrade, AppConn, AppRoute, Call, Ctx};
pub use ws::{Publisher, SendStatus, Ws};

/// A complete message from the peer. Text has been validated as UTF-8 and,
/// like binary, reassembled from fragments and inflated when compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl Message<'_> {
    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) => b,
        }
    }
}

/// The answer to an upgrade request, built with [`Upgrade::accept`] or
/// [`Upgrade::reject`].
#[derive(Debug)]
pub struct Upgrade {
    pub(crate) verdict: Verdict,
}

pub(crate) enum Verdict {
    Accept {
        /// Overrides the subprotocol the server chose from its own list.
        protocol: Option<String>,
        data: Option<Box<dyn Any + Send>>,
    },
    Reject(u16),
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accept { protocol, data } => f
                .debug_struct("Accept")
                .field("protocol", protocol)
                .field("data", &data.is_some())
                .finish(),
            Self::Reject(status) => f.debug_tuple("Reject").field(status).finish(),
        }
    }
}

impl Upgrade {
    /// Accepts the upgrade (with the subprotocol the server picked from
    /// `Config::subprotocols`, if any, and no per-connection data).
    pub fn accept() -> Self {
        Self {
            verdict: Verdict::Accept {
                protocol: None,
                data: None,
            },
        }
    }

    /// Refuses the upgrade with an HTTP status. Anything outside 400-599
    /// is answered as 403, since a refusal must read as one.
    pub fn reject(status: u16) -> Self {
        Self {
            verdict: Verdict::Reject(status),
        }
    }

    /// Answers with this subprotocol. It must be one the client offered
    /// ([`UpgradeRequest::offered_subprotocols`]); naming another is a
    /// handler bug, answered with 500 rather than a 101 the client would
    /// have to fail.
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        if let Verdict::Accept { protocol, .. } = &mut self.verdict {
            *protocol = Some(name.into());
        }
        self
    }

    /// Attaches per-connection data, reachable later through
    /// [`Ws::data`]; dropped when the connection's slot is freed, after
    /// [`Handler::close`].
    pub fn data<T: Any + Send>(mut self, value: T) -> Self {
        if let Verdict::Accept { data, .. } = &mut self.verdict {
            *data = Some(Box::new(value));
        }
        self
    }
}

/// Per-route bounds, after uWebSockets' `maxPayloadLength`, `idleTimeout`
/// and `maxBackpressure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes; a larger one closes the
    /// connection with 1009 (default 64 KiB).
    pub max_message: usize,
    /// Time without a byte from the peer before closing with 1001
    /// (default 120 s; zero turns it off).
    pub idle_timeout: Duration,
    /// Output a connection may have queued: a send that finds more is
    /// dropped ([`SendStatus::Dropped`](SendStatus::Dropped)), and a
    /// subscriber past it meets `backpressure` (default 1 MiB).
    pub max_backpressure: usize,
    /// What a subscriber past `max_backpressure` gets from published
    /// messages (default disconnect with 1013: a chat must not silently
    /// lose messages).
    pub backpressure: Backpressure,
    /// Topics one connection may subscribe to (default 64).
    pub max_topics: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 64 << 10,
            idle_timeout: Duration::from_secs(120),
            max_backpressure: 1 << 20,
            backpressure: Backpressure::Disconnect,
            max_topics: 64,
        }
    }
}

/// The behaviour of one route. Every method has a default, so a handler
/// implements only what it needs.
///
/// Methods run on the shard thread that owns the connection, between its
/// reads and writes: keep them short and never block (hand slow work to
/// another thread and come back through a [`Publisher`](Publisher)).
///
/// A panic in a method is caught where unwinding is enabled: the
/// connection is closed with 1011 (internal error; a panic in `upgrade`
/// is answered with HTTP 500) and the server carries on. Release builds of
/// this crate's binary set `panic = "abort"`, where a panic ends the
/// process; embedders who want the 1011 behaviour keep unwinding on.
pub trait Handler: Send + Sync + 'static {
    /// The route's bounds, read once when the server starts.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Decides an upgrade request after the server's own admission rules
    /// (Origin, token, caps, rates) let it through. Default: accept.
    /// Refusals are counted in `surge_admission_rejected_total` under
    /// `reason="hook"`.
    fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let _ = req;
        Upgrade::accept()
    }

    /// The connection is open; messages may be sent.
    fn open(&self, ws: &mut Ws<'_>) {
        let _ = ws;
    }

    /// A message arrived.
    fn message(&self, ws: &mut Ws<'_>, msg: Message<'_>) {
        let _ = (ws, msg);
    }

    /// Output that was over [`Limits::max_backpressure`] (a send said
    /// [`Backpressure`](SendStatus::Backpressure) or
    /// [`Dropped`](SendStatus::Dropped)) has drained below it.
    fn drain(&self, ws: &mut Ws<'_>) {
        let _ = ws;
    }

    /// The connection is closing or gone, called exactly once per opened
    /// connection, as soon as either side starts closing: with the peer's
    /// code (1005 when its close frame had none), the code this side
    /// closed with (the handler's, 1001 for an idle timeout or shutdown,
    /// 1013 for a subscriber past its bound, 1009 or 1002 for a message
    /// the protocol refused), or 1006 when the transport ended without a
    /// close frame. Nothing can be sent any more; publishing still works.
    fn close(&self, ws: &mut Ws<'_>, code: u16, reason: &str) {
        let _ = (ws, code, reason);
    }
}
