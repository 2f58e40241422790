//! Publish/subscribe fan-out: topics, the hub every thread publishes
//! through, the in-band JSON protocol of the hub route, and the synthetic
//! ticker feed.
//!
//! Path of a message: a publisher frames it once ([`hub::Hub::frame`]) and
//! the same reference-counted frame goes to every shard's inbox (one
//! wake-up per batch). Each shard appends the turn's messages to each
//! topic's batch, then queues one shared reference to that batch to every
//! subscriber (`topics`); the driver writes each subscriber's queue with
//! one vectored write per turn. No byte is copied per subscriber in user
//! space. A hub route's publish goes through its topic's stream first
//! (`streams`), which gives it its position and keeps it for subscribers
//! that resume. `events` writes the same messages as server-sent events.

pub mod control;
pub mod events;
pub mod hub;
pub mod protocol;
pub mod relay;
pub mod streams;
pub mod ticker;
pub(crate) mod topics;

pub use crate::config::pubsub::Backpressure;

/// Hub topics live in their own namespace, so a hub client can neither
/// read nor forge the ticker's raw feed.
pub fn hub_topic(name: &str) -> String {
    format!("hub:{name}")
}
