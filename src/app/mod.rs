//! The embedding API: routes by path, each served by a [`Handler`] with
//! its [`Limits`], after uWebSockets' App. An embedder writes one struct
//! and hands it to [`App::route`]; the runtime does the rest (admission,
//! framing, compression, timeouts, fan-out, shutdown).
//!
//! ```no_run
//! use surge::app::{App, Handler, Message, Upgrade, UpgradeRequest, Ws};
//!
//! struct Room;
//!
//! impl Handler for Room {
//!     fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
//!         match req.query_param("name") {
//!             Some(name) if !name.is_empty() => Upgrade::accept().data(name.to_owned()),
//!             _ => Upgrade::reject(400),
//!         }
//!     }
//!
//!     fn open(&self, ws: &mut Ws<'_>) {
//!         ws.subscribe("room");
//!     }
//!
//!     fn message(&self, ws: &mut Ws<'_>, msg: Message<'_>) {
//!         if let Message::Text(text) = msg {
//!             let name = ws.data::<String>().cloned().unwrap_or_default();
//!             ws.publish("room", Message::Text(&format!("{name}: {text}")));
//!         }
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     App::new()
//!         .listen("127.0.0.1:9001".parse().unwrap())
//!         .route("/room", Room)
//!         .run()
//! }
//! ```
//!
//! [`App::start`] runs the server in the background instead and returns a
//! [`Running`] handle (addresses, a [`Publisher`], shutdown), which is how
//! tests drive it. `examples/chat.rs` and `examples/ticker.rs` are complete
//! servers.
//!
//! Socket.IO routes ([`App::socketio`]) are served by a [`SocketIoHandler`]
//! per namespace, gathered in [`Namespaces`]: connects (with the auth
//! payload and the [`Handshake`]), events with their [`Ack`], disconnects
//! with their [`DisconnectReason`]; a [`Socket`] emits, joins and leaves
//! rooms and [`Broadcast`]s to them, and an [`Emitter`]
//! ([`Running::emitter`]) broadcasts from any thread.
//! `examples/socketio_chat.rs` is a complete chat.
//!
//! Messages published to a topic (by [`Ws::publish`] or a [`Publisher`])
//! take the hub's path: framed once, shared by every shard and subscriber,
//! relayed to other nodes by the Redis bridge when one is configured.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::admission::policy::UpgradeRequest;
pub use crate::config::{Backend, Config};
use crate::config::{RouteKind, RouteSpec};
pub use crate::shard::engineio::handler::{
    Ack, Broadcast, Connect, ConnectRequest, DisconnectReason, Emitter, Event, Handshake,
    Namespaces, Socket, SocketIoHandler,
};
use crate::shard::handler::AppRoute;
// What handlers are and how a session calls them live with the shard that
// calls them; the embedding API is here.
pub use crate::shard::handler::{
    AppRoutes, Handler, Limits, Message, Publisher, SendStatus, Upgrade, Ws,
};

use crate::server::Server;

/// Builds a server from handlers; see the [module docs](self).
#[derive(Debug)]
pub struct App {
    config: Config,
    listen_set: bool,
    routes: Vec<AppRoute>,
    /// Handlers that config-file routes name (`kind = "app"`).
    named: Vec<(String, AppRoute)>,
    /// Socket.IO routes' namespaces, by the name their route gives.
    socketio: Vec<(Box<str>, Arc<Namespaces>)>,
}

impl std::fmt::Debug for AppRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRoute")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// The default [`Config`] with `echo_everywhere` off: the routes added
    /// here, plus the default config's `/echo` (a route added at `/echo`
    /// replaces it); any other path gets 404.
    pub fn new() -> Self {
        let mut config = Config::default();
        config.routes.echo_everywhere = false;
        Self {
            config,
            listen_set: false,
            routes: Vec::new(),
            named: Vec::new(),
            socketio: Vec::new(),
        }
    }

    /// Starts from a TOML config file, read exactly as `surge serve
    /// --config FILE` reads it (every runtime flag is a key; `[[routes]]`
    /// map paths to echo, hub, ticker or app). A route with `kind = "app"`
    /// and `handler = "NAME"` is served by the handler registered with
    /// [`App::handler`] under that name, its limits overridden by the
    /// route's own keys. Errors name the file, the line and the key.
    ///
    /// ```toml
    /// listen = ["0.0.0.0:9001"]
    ///
    /// [[routes]]
    /// path = "/chat"
    /// kind = "app"
    /// handler = "chat"
    /// max-message = 4096
    /// ```
    pub fn config_file(path: impl AsRef<std::path::Path>) -> Result<Self, String> {
        let mut app = Self::new();
        app.config = crate::config::file::load(path.as_ref(), crate::tls::check)?;
        Ok(app)
    }

    /// Registers `handler` under `name` for the config file's app routes
    /// that name it.
    pub fn handler(mut self, name: &str, handler: impl Handler) -> Self {
        let limits = handler.limits();
        self.named.push((
            name.into(),
            AppRoute {
                path: "".into(),
                handler: Arc::new(handler),
                limits,
            },
        ));
        self
    }

    /// Starts from a full configuration (listeners, admission, timeouts,
    /// built-in routes) instead of the default.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.listen_set = false;
        self
    }

    /// Listens on `addr` (port 0 picks a free port); the first call
    /// replaces the configured addresses, later ones add to them.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        if !std::mem::replace(&mut self.listen_set, true) {
            self.config.listen.clear();
        }
        self.config.listen.push(addr);
        self
    }

    /// Runs `n` shards (event loops, one thread each; default one per core).
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }

    /// Chooses the event-loop driver (default: io_uring when the kernel
    /// allows it, otherwise epoll).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.config.backend = backend;
        self
    }

    /// Serves WebSocket upgrades of exactly `path` (query excluded) with
    /// `handler`, under its [`Handler::limits`]. A path added twice keeps
    /// the first handler.
    pub fn route(mut self, path: &str, handler: impl Handler) -> Self {
        let limits = handler.limits();
        self.routes.push(AppRoute {
            path: path.into(),
            handler: Arc::new(handler),
            limits,
        });
        self
    }

    /// Serves Socket.IO v5 (on Engine.IO v4: long-polling, WebSocket and
    /// the upgrade between them) under `path` (the prefix of every
    /// request's: `/socket.io/` serves `/socket.io/?EIO=4&...`), each
    /// namespace by its handler. It replaces a route the configuration had
    /// at that path; set its keys (`ping-interval-ms`,
    /// `max-disconnection-ms`, ...) with a config file route of
    /// `kind = "socketio"` naming a handler registered with
    /// [`App::socketio_handler`] instead.
    pub fn socketio(mut self, path: &str, namespaces: Namespaces) -> Self {
        let table = &mut self.config.routes.table;
        table.retain(|r| r.path.trim_end_matches('/') != path.trim_end_matches('/'));
        let mut spec = RouteSpec::new(path, RouteKind::SocketIo);
        spec.handler = Some(path.to_owned());
        table.insert(0, spec);
        self.socketio.push((path.into(), Arc::new(namespaces)));
        self
    }

    /// Registers `namespaces` under `name` for the config file's Socket.IO
    /// routes (`kind = "socketio"`) that name it with `handler = "NAME"`.
    pub fn socketio_handler(mut self, name: &str, namespaces: Namespaces) -> Self {
        self.socketio.push((name.into(), Arc::new(namespaces)));
        self
    }

    /// Starts every shard in the background and returns once they listen.
    pub fn start(self) -> io::Result<Running> {
        let config = self.config;
        let mut routes = self.routes;
        for spec in config
            .routes
            .table
            .iter()
            .filter(|r| r.kind == RouteKind::App)
        {
            let name = spec.handler.as_deref().unwrap_or_default();
            let Some((_, named)) = self.named.iter().find(|(n, _)| n == name) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "route {:?} names handler {name:?}, which App::handler did not register",
                        spec.path
                    ),
                ));
            };
            let mut limits = named.limits;
            limits.max_message = spec.max_message.unwrap_or(limits.max_message);
            limits.idle_timeout = spec.idle_timeout.unwrap_or(limits.idle_timeout);
            limits.max_backpressure = spec.max_backpressure.unwrap_or(limits.max_backpressure);
            limits.backpressure = spec.backpressure.unwrap_or(limits.backpressure);
            routes.push(AppRoute {
                path: spec.path.as_str().into(),
                handler: Arc::clone(&named.handler),
                limits,
            });
        }
        if routes.len() > usize::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at most 65535 routes",
            ));
        }
        let apps = AppRoutes {
            ws: routes.into(),
            socketio: self.socketio.into(),
        };
        let server = Server::start(config.clone(), apps)?;
        let shards = config.shards.max(1);
        Ok(Running {
            publisher: Publisher {
                hub: Arc::clone(&server.hub),
            },
            config,
            shards,
            server: Some(server),
        })
    }

    /// Starts, prints `surge listening on ADDR backend=B shards=N` to
    /// stderr for each listener, and blocks until SIGTERM or SIGINT has
    /// drained every connection.
    pub fn run(self) -> io::Result<()> {
        let running = self.start()?;
        running.announce();
        running.join()
    }
}

/// A server started by [`App::start`]. Dropping it begins shutdown
/// without waiting; [`Running::join`] waits.
#[derive(Debug)]
pub struct Running {
    server: Option<Server>,
    config: Config,
    publisher: Publisher,
    shards: usize,
}

impl Running {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("present until joined")
    }

    /// Bound addresses, in the order they were configured (port 0
    /// resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.server().local_addrs
    }

    /// The driver every shard runs (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.server().backend
    }

    fn backend_name(&self) -> &'static str {
        match self.backend() {
            Backend::Uring => "uring",
            _ => "epoll",
        }
    }

    /// Prints `surge listening on ADDR backend=B shards=N` to stderr for
    /// each listener, as the `surge` binary does when it is ready.
    pub fn announce(&self) {
        if let Some(addr) = self.server().api_addr {
            eprintln!("surge api listening on {addr}");
        }
        for addr in self.local_addrs() {
            eprintln!(
                "surge listening on {addr} backend={} shards={}",
                self.backend_name(),
                self.shards
            );
        }
    }

    /// A publisher to every shard's subscribers, for any thread.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// A thread-safe broadcaster to the sockets of the Socket.IO route at
    /// `path`; `None` if no Socket.IO route is there.
    pub fn emitter(&self, path: &str) -> Option<Emitter> {
        let spec = self.config.routes.table.iter().find(|r| {
            r.kind == RouteKind::SocketIo
                && r.path.trim_end_matches('/') == path.trim_end_matches('/')
        })?;
        Some(Emitter {
            hub: Arc::clone(&self.publisher.hub),
            recovers: spec.max_disconnection_ms.unwrap_or(0) > 0,
        })
    }

    /// Begins the same drain SIGTERM does: stop accepting, close every
    /// connection with 1001 over the drain window, flush, stop.
    pub fn shutdown(&self) {
        if let Some(server) = &self.server {
            server.shutdown();
        }
    }

    /// Waits for every shard to finish (after [`Running::shutdown`],
    /// SIGTERM or SIGINT).
    pub fn join(mut self) -> io::Result<()> {
        self.server.take().map_or(Ok(()), Server::join)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}
