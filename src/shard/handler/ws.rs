//! What a handler holds while it runs: [`Ws`], one connection; and
//! [`Publisher`], which any thread may keep.

use std::any::Any;
use std::sync::Arc;

use super::dispatch::{AppConn, Ctx};
use super::{Limits, Message};
use crate::protocol::frame::OpCode;
use crate::protocol::{CloseCode, ServerConn, State};
use crate::pubsub::hub::Hub;
use crate::pubsub::hub_topic;
use crate::pubsub::topics::{Limit, SubscribeError};
use crate::shard::spill::Spill;

/// What became of a message handed to [`Ws::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued; the output queue is within [`Limits::max_backpressure`].
    Sent,
    /// Queued, and the queue is now over the bound: hold off until
    /// [`Handler::drain`](super::Handler::drain).
    Backpressure,
    /// Not queued: the queue was already over the bound.
    /// [`Handler::drain`](super::Handler::drain) follows once it drains.
    Dropped,
    /// Not sent: the connection is closing.
    Closed,
}

/// One WebSocket connection, lent to a [`Handler`](super::Handler) method.
pub struct Ws<'a> {
    pub(crate) conn: Option<&'a mut ServerConn>,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) spill: &'a mut Spill,
    pub(crate) generation: u32,
    pub(crate) limits: &'a Limits,
    pub(crate) ctx: Ctx<'a>,
}

impl std::fmt::Debug for Ws<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ws")
            .field("open", &self.is_open())
            .field("buffered", &self.buffered())
            .finish()
    }
}

impl Ws<'_> {
    /// Whether messages may still be sent (no close frame sent or received).
    pub fn is_open(&self) -> bool {
        self.conn
            .as_deref()
            .is_some_and(|c| c.state() == State::Open)
    }

    /// Output bytes queued for this connection and not yet written to its
    /// socket.
    pub fn buffered(&self) -> usize {
        let here = (self.spill.queued + self.out.len()) as isize;
        (self.ctx.held + here).max(0) as usize
    }

    /// Sends a message; see [`SendStatus`] for what may become of it.
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        let (opcode, payload) = match msg {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let bound = self.limits.max_backpressure;
        let Some(conn) = self.conn.as_deref().filter(|c| c.state() == State::Open) else {
            return SendStatus::Closed;
        };
        if self.buffered() > bound {
            self.app().wants_drain = true;
            return SendStatus::Dropped;
        }
        conn.send(self.out, opcode, payload, self.spill.deflate.as_mut());
        self.ctx.counters.messages_sent += 1;
        if self.buffered() > bound {
            self.app().wants_drain = true;
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send(Message::Text(text))
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> SendStatus {
        self.send(Message::Binary(bytes))
    }

    /// Subscribes to `topic`: whatever is published to it from now on, by
    /// any connection, shard, [`Publisher`] or (for text) node behind the
    /// Redis bridge, reaches this connection. True when subscribed (already
    /// or now); false when [`Limits::max_topics`] refused it.
    ///
    /// Topics are the hub's: a `/hub` client on the same topic sees these
    /// messages, and its own publishes arrive as the hub's JSON envelope.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        let limit = Limit {
            policy: self.limits.backpressure,
            bound: self.limits.max_backpressure,
            compress: self.spill.deflate.as_ref().and_then(|d| d.shared_window()),
        };
        let result = self.ctx.pubsub.topics.subscribe(
            self.ctx.key,
            self.generation,
            &hub_topic(topic),
            limit,
            &mut self.spill.subs,
            self.limits.max_topics,
            0,
        );
        result != Err(SubscribeError::TooManyTopics)
    }

    /// Ends a subscription; false if there was none.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.ctx
            .pubsub
            .topics
            .unsubscribe(&hub_topic(topic), &mut self.spill.subs)
    }

    /// Publishes to every subscriber of `topic` (this connection included,
    /// if subscribed), as [`Publisher::publish`] does.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) {
        publish(self.ctx.pubsub.hub(), topic, msg);
    }

    /// A publisher for other threads.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            hub: Arc::clone(self.ctx.pubsub.hub()),
        }
    }

    /// Starts the close handshake; [`Handler::close`](super::Handler::close)
    /// follows at once with this code. A code that may not be sent
    /// (RFC 6455 §7.4: e.g. 1005, 1006, 1015 or under 1000) is replaced by
    /// 1011, and the reason is cut to fit a control frame (123 bytes, at a
    /// character boundary). Does nothing once closing.
    pub fn close(&mut self, code: u16, reason: &str) {
        let code = if CloseCode(code).is_sendable() {
            code
        } else {
            tracing::warn!(code, "handler closed with an unsendable code; sending 1011");
            CloseCode::INTERNAL_ERROR.0
        };
        let Some(conn) = self
            .conn
            .as_deref_mut()
            .filter(|c| c.state() == State::Open)
        else {
            return;
        };
        conn.close(self.out, CloseCode(code), reason);
        self.app().closing = Some((code, reason.into()));
    }

    /// The data [`Upgrade::data`](super::Upgrade::data) attached, if it is
    /// a `T`.
    pub fn data<T: Any>(&mut self) -> Option<&mut T> {
        self.spill.app.as_mut()?.data.as_mut()?.downcast_mut()
    }

    fn app(&mut self) -> &mut AppConn {
        self.spill.app.get_or_insert_with(Box::default)
    }
}

/// Publishes to topics from any thread; clones share one hub.
#[derive(Clone)]
pub struct Publisher {
    pub(crate) hub: Arc<Hub>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher(..)")
    }
}

impl Publisher {
    /// Publishes `msg` to every subscriber of `topic` on every shard. The
    /// message is framed once and shared; text also goes to other nodes
    /// through the Redis bridge when one is configured (the bridge carries
    /// text only, so binary stays on this node).
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        publish(&self.hub, topic, msg);
    }

    /// Publishes a text message.
    pub fn publish_text(&self, topic: &str, text: &str) {
        self.publish(topic, Message::Text(text));
    }

    /// Publishes a binary message.
    pub fn publish_binary(&self, topic: &str, bytes: &[u8]) {
        self.publish(topic, Message::Binary(bytes));
    }
}

fn publish(hub: &Hub, topic: &str, msg: Message<'_>) {
    match msg {
        Message::Text(t) => hub.publish_to_hub(topic, t),
        Message::Binary(b) => hub.publish_local(&hub_topic(topic), OpCode::Binary, b),
    }
}
