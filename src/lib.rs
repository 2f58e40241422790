//! surge: a sharded, per-core WebSocket server runtime.

pub mod protocol;
