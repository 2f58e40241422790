//! What the hub needs of a bridge to other nodes, and nothing more: it
//! hands publishes over and takes back the ones that cannot go. The Redis
//! bridge (`crate::bridge::redis`) is the one there is.

use std::time::Duration;

use super::streams::{HistoryRule, Position};

/// A publish on its way to the other nodes.
#[derive(Debug)]
pub struct Outgoing {
    /// The hub topic, without namespace.
    pub topic: String,
    /// A hub route's message: its `data` (JSON text), to be positioned by
    /// the shared store and kept there under this rule. `None`: an
    /// embedder's text, delivered as it is, without a position.
    pub rule: Option<HistoryRule>,
    /// The data (positioned) or the whole message (not).
    pub text: String,
    /// An order for the other nodes' shards rather than a publish
    /// (`topic` empty, `rule` none, `text` a
    /// [`Disconnect::relay_text`](super::control::Disconnect::relay_text)).
    pub order: bool,
    /// Who waits for the position the shared store gives a positioned
    /// publish (the server API's publish): told once it is known, or when
    /// the publish is delivered on this node alone instead.
    pub reply: Option<std::sync::mpsc::Sender<Position>>,
}

impl Outgoing {
    /// What it holds while queued, in bytes.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.text.len()
    }
}

/// Carries hub publishes to the other nodes.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// Takes `publish` for the other nodes; never blocks. A positioned
    /// publish it cannot take now (the store is away, its queue is full) is
    /// handed back, and the hub delivers it on this node alone.
    fn forward(&self, publish: Outgoing) -> Result<(), Outgoing>;

    /// Waits at most `within` until everything taken so far is sent (or
    /// handed back); whether it all was.
    fn flush(&self, within: Duration) -> bool;

    /// Writes its metrics in Prometheus text.
    fn render(&self, out: &mut String);
}
