//! Starts the shards: binds every listener once per shard (SO_REUSEPORT, so
//! the kernel spreads connections and no accept lock is shared), pins each
//! shard's thread to a core, runs its driver there and wires SIGTERM/SIGINT
//! to every loop (and SIGHUP to the reload of the TLS certificate and of the
//! signed-token keys).
//!
//! Above the drivers (it picks one and starts it) and below `crate::app`
//! and `crate::cli`, which both start servers through [`Server::start`].

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::admission::Admission;
use crate::config::RouteKind;
use crate::config::{Backend, Config};
use crate::driver::{self, probe};
use crate::metrics::Metrics;
use crate::pubsub::hub::{Hub, Inbound};
use crate::pubsub::streams::Streams;
use crate::shard::handler::AppRoutes;
use crate::shard::{ShardParts, Shared};
use crate::sys;
use crate::tls::Certs;

/// How long a stopping server waits for the Redis bridge to send what it
/// was handed.
pub(crate) const RELAY_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Running shards and the addresses they listen on.
#[derive(Debug)]
pub struct Server {
    /// Bound addresses, in `--listen` order (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// The driver every shard runs: never `Auto`.
    pub backend: Backend,
    /// Publishes to every shard's subscribers, from any thread.
    pub hub: Arc<Hub>,
    /// Where the server API listens (`--api-listen`, port 0 resolved).
    pub api_addr: Option<SocketAddr>,
    handles: Vec<JoinHandle<io::Result<()>>>,
    /// The write ends of the shards' signal pipes, for `shutdown`.
    stop: Vec<UnixStream>,
}

impl Server {
    /// Binds and starts every shard, serving `apps` beside the routes
    /// `config` declares; returns once all are running.
    pub fn start(mut config: Config, apps: AppRoutes) -> io::Result<Self> {
        for spec in &config.routes.table {
            if let (RouteKind::SocketIo, Some(name)) = (spec.kind, &spec.handler) {
                if apps.socketio(name).is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "route {:?} names Socket.IO handler {name:?}, which \
                             App::socketio_handler did not register",
                            spec.path
                        ),
                    ));
                }
            }
        }
        let backend = probe::resolve_backend(config.backend).map_err(io::Error::other)?;
        let tls = match &config.tls {
            Some(files) => {
                let certs = Arc::new(Certs::load(files).map_err(io::Error::other)?);
                let reloaded = Arc::clone(&certs);
                on_every_sighup("surge-tls-reload", move || reloaded.reload_logged())?;
                Some(certs)
            }
            None => None,
        };
        if let Some(tokens) = config.admission.policy.jwt.clone() {
            if let Some(file) = tokens.key_file().map(|p| p.display().to_string()) {
                on_every_sighup("surge-key-reload", move || match tokens.reload() {
                    Ok(()) => tracing::info!(%file, "token keys reloaded"),
                    Err(e) => {
                        tracing::error!("token key reload failed, keeping the previous keys: {e}")
                    }
                })?;
            }
        }
        config.backend = backend;
        let shards = config.shards.max(1);
        let reuse_port = shards > 1;
        // Bind shard 0 first so that port 0 resolves to one port that the
        // other shards then share.
        let mut per_shard: Vec<Vec<std::net::TcpListener>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::with_capacity(config.listen.len());
        // Plain listeners first, then PROXY ones: a loop tells them apart
        // by index.
        for addr in config.listen.iter().chain(&config.proxy_listen) {
            let first = sys::listener(*addr, reuse_port)?;
            let bound = first.local_addr()?;
            per_shard[0].push(first);
            for listeners in per_shard.iter_mut().skip(1) {
                listeners.push(sys::listener(bound, reuse_port)?);
            }
            local_addrs.push(bound);
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let backend_name = if backend == Backend::Uring {
            "uring"
        } else {
            "epoll"
        };
        let metrics = Arc::new(Metrics::new(shards, backend_name));
        let admission = Arc::new(Admission::new(config.admission.clone()));
        let streams = Streams::new(config.history_bytes);
        let (hub, receivers) = Hub::with_streams(shards, config.inbox_bytes, streams)?;
        let mut receivers: Vec<Option<mpsc::Receiver<Inbound>>> =
            receivers.into_iter().map(Some).collect();
        // Before any shard accepts: see `bridge::redis::start`.
        if let Some(redis) = &config.redis {
            let relay = crate::bridge::redis::start(redis, &hub).map_err(io::Error::other)?;
            hub.set_relay(Box::new(relay));
        }
        let config = Arc::new(config);
        let mut handles = Vec::with_capacity(shards);
        let mut stop = Vec::with_capacity(shards);
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        for (id, listeners) in per_shard.into_iter().enumerate() {
            let (signal_rx, signal_tx) = UnixStream::pair()?;
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::low_level::pipe::register(sig, signal_tx.try_clone()?)?;
            }
            signal_tx.set_nonblocking(true)?;
            stop.push(signal_tx);
            let config = Arc::clone(&config);
            let metrics = Arc::clone(&metrics);
            let admission = Arc::clone(&admission);
            let apps = apps.clone();
            let tls = tls.clone();
            let inbox = hub.receiver(id, receivers[id].take().expect("one receiver per shard"));
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("surge-shard-{id}"))
                .spawn(move || {
                    if let Err(e) = sys::pin_current_thread(id % cpus) {
                        tracing::warn!("shard {id}: could not pin to cpu {}: {e}", id % cpus);
                    }
                    let shared = Shared {
                        config,
                        apps,
                        metrics,
                        admission,
                        tls,
                    };
                    let parts = ShardParts {
                        listeners,
                        signal: signal_rx,
                        shared,
                        shard_id: id,
                        inbox,
                    };
                    driver::run(backend, parts, &ready)
                })?;
            handles.push(handle);
        }
        drop(ready_tx);
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a shard died while starting")),
            }
        }
        // Once every shard takes orders from its inbox.
        let api_addr = crate::api::start(&config, &hub, &metrics.api)?;
        if !config.routes.ticker_symbols.is_empty() {
            let socketio = config
                .routes
                .table
                .iter()
                .any(|r| r.kind == crate::config::RouteKind::SocketIo);
            crate::pubsub::ticker::spawn(
                Arc::clone(&hub),
                config.routes.ticker_symbols.clone(),
                config.ticker_rate,
                socketio,
            )?;
        }
        Ok(Self {
            local_addrs,
            backend,
            hub,
            api_addr,
            handles,
            stop,
        })
    }

    /// Begins the shutdown SIGTERM begins, for this server only: stop
    /// accepting, close every connection with 1001 over the drain window.
    pub fn shutdown(&self) {
        for tx in &self.stop {
            // A full pipe already holds a wake-up; a closed one means the
            // shard is gone.
            // MSG_NOSIGNAL: an embedder may not ignore SIGPIPE.
            let _ = socket2::SockRef::from(tx).send_with_flags(&[1], libc::MSG_NOSIGNAL);
        }
    }

    /// Waits for every shard to finish (after SIGTERM/SIGINT).
    /// Last, what the Redis bridge still holds goes out (for at most
    /// 5 s), so a rolling restart loses no publish a client made.
    pub fn join(self) -> io::Result<()> {
        for handle in self.handles {
            handle
                .join()
                .map_err(|_| io::Error::other("a shard panicked"))??;
        }
        if !self.hub.flush_relay(RELAY_FLUSH) {
            tracing::warn!("redis bridge: publishes still queued at exit were not sent");
        }
        Ok(())
    }
}

/// Calls `reload` on every SIGHUP, from a thread of its own named `name`:
/// shards only ever load the pointers it replaces. Registered before the
/// first connection can arrive, so a SIGHUP never finds the default action
/// (exit) in place.
fn on_every_sighup(name: &str, mut reload: impl FnMut() + Send + 'static) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || signals.forever().for_each(|_| reload()))?;
    Ok(())
}
