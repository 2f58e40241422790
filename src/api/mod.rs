//! The server API: a backend's way to publish, disconnect users and look
//! at topics and connections, over plain HTTP/1.1 with JSON bodies, on a
//! listener of its own (`--api-listen`), every request carrying
//! `Authorization: Bearer KEY` (`--api-key-file`).
//!
//! ```text
//! socket ─► listener.rs ──────► request.rs ─► handlers.rs ──────► Hub
//!           accept thread,      head (sans-IO  key, path, method,  publish_positioned
//!           a thread per conn   httparse),     body (body.rs),     order ─► every shard's
//!           (capped), deadline  answers        answers             inbox ─► shard/control.rs
//! ```
//!
//! It never runs on a shard: a publish takes the path a hub WebSocket
//! client's publish takes (`Hub::publish_positioned`), and the other
//! endpoints reach the shards through their inboxes
//! ([`crate::pubsub::control`]), waiting a bounded time for each shard's
//! answer. A disconnect also goes to the other nodes through the bridge.

pub(crate) mod body;
mod handlers;
mod listener;
pub(crate) mod request;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::ApiStats;
use crate::pubsub::hub::Hub;

/// Binds the API's listener and starts serving it on threads of its own;
/// the address it is bound to (port 0 resolved). Nothing when the API is
/// off.
pub(crate) fn start(
    config: &Arc<Config>,
    hub: &Arc<Hub>,
    stats: &Arc<ApiStats>,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(api) = &config.api else {
        return Ok(None);
    };
    let socket = std::net::TcpListener::bind(api.listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("--api-listen {}: {e}", api.listen)))?;
    let addr = socket.local_addr()?;
    let handlers = handlers::Api {
        key: api.key.clone(),
        max_body: api.max_body,
        hub: Arc::clone(hub),
        config: Arc::clone(config),
    };
    let listener = Arc::new(listener::Listener::new(
        handlers,
        Arc::clone(stats),
        api.max_conns,
        api.timeout,
    ));
    std::thread::Builder::new()
        .name("surge-api".into())
        .spawn(move || listener.run(socket))?;
    Ok(Some(addr))
}
