//! Starts the shards: binds every listener once per shard (SO_REUSEPORT, so
//! the kernel spreads connections and no accept lock is shared), pins each
//! shard's thread to a core and wires SIGTERM/SIGINT to every loop (and,
//! with TLS, SIGHUP to the certificate reload).

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::admission::Admission;
use crate::config::{Backend, Config};
use crate::driver::epoll::EpollLoop;
use crate::driver::probe;
use crate::driver::uring::UringLoop;
use crate::metrics::Metrics;
use crate::pubsub::hub::{Delivery, Hub, InboxReceiver};
use crate::sys;
use crate::tls::Certs;

/// Running shards and the addresses they listen on.
#[derive(Debug)]
pub struct Server {
    /// Bound addresses, in `--listen` order (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// The driver every shard runs: never `Auto`.
    pub backend: Backend,
    /// Publishes to every shard's subscribers, from any thread.
    pub hub: Arc<Hub>,
    handles: Vec<JoinHandle<io::Result<()>>>,
    /// The write ends of the shards' signal pipes, for `shutdown`.
    stop: Vec<UnixStream>,
}

/// Resolves `--backend auto` to the best driver this kernel allows, logging
/// why when it has to fall back; an explicit `uring` that cannot run is an
/// error.
pub(crate) fn resolve_backend(requested: Backend) -> Result<Backend, String> {
    match requested {
        Backend::Epoll => Ok(Backend::Epoll),
        Backend::Uring => probe_uring()
            .map(|()| Backend::Uring)
            .map_err(|why| format!("--backend uring: {why}")),
        Backend::Auto => match probe_uring() {
            Ok(()) => Ok(Backend::Uring),
            Err(why) => {
                tracing::warn!("using epoll: {why}");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// Probes io_uring on a thread of its own: tearing the probe ring down
/// leaves task work that interrupts the creating thread's next timed
/// socket call with EINTR, and that thread may be an embedder's.
fn probe_uring() -> Result<(), String> {
    std::thread::spawn(probe::uring_support)
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

impl Server {
    /// Binds and starts every shard; returns once all are running.
    pub fn start(mut config: Config) -> io::Result<Self> {
        let backend = resolve_backend(config.backend).map_err(io::Error::other)?;
        let tls = match &config.tls {
            Some(files) => {
                let certs = Arc::new(Certs::load(files).map_err(io::Error::other)?);
                // Registered before the first connection can arrive, so a
                // SIGHUP never finds the default action (exit) in place.
                crate::tls::reload_on_sighup(Arc::clone(&certs))?;
                Some(certs)
            }
            None => None,
        };
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
        let (hub, receivers) = Hub::new(shards, config.inbox_bytes)?;
        let mut receivers: Vec<Option<mpsc::Receiver<Delivery>>> =
            receivers.into_iter().map(Some).collect();
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
                        metrics,
                        admission,
                        tls,
                    };
                    run_shard(backend, listeners, signal_rx, shared, id, inbox, &ready)
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
        if let Some(redis) = &config.redis {
            let relay = crate::bridge::redis::start(
                redis.clone(),
                Arc::clone(&hub),
                Arc::clone(&hub.bridge),
            )
            .map_err(io::Error::other)?;
            hub.set_relay(relay);
        }
        if !config.routes.ticker_symbols.is_empty() {
            crate::pubsub::ticker::spawn(
                Arc::clone(&hub),
                config.routes.ticker_symbols.clone(),
                config.ticker_rate,
            )?;
        }
        Ok(Self {
            local_addrs,
            backend,
            hub,
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
    pub fn join(self) -> io::Result<()> {
        for handle in self.handles {
            handle
                .join()
                .map_err(|_| io::Error::other("a shard panicked"))??;
        }
        Ok(())
    }
}

/// Builds the loop on its own thread (an io_uring ring is single-issuer)
/// and reports the outcome before running it.
fn run_shard(
    backend: Backend,
    listeners: Vec<std::net::TcpListener>,
    signal: UnixStream,
    shared: Shared,
    id: usize,
    inbox: InboxReceiver,
    ready: &mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    if backend == Backend::Uring {
        let (shard, driver) = started(UringLoop::new(listeners, signal, shared, id, inbox), ready)?;
        shard.run(driver)
    } else {
        let (shard, driver) = started(EpollLoop::new(listeners, signal, shared, id, inbox), ready)?;
        shard.run(driver)
    }
}

/// What every shard shares: settings, published counters, admission, and
/// the certificate when listeners speak TLS.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) tls: Option<Arc<Certs>>,
}

impl Shared {
    /// The TLS state for a connection just accepted: none on plain
    /// listeners; `Err` (logged) when rustls cannot start one, and the
    /// connection is to be dropped.
    pub(crate) fn start_tls(&self) -> Result<Option<Box<crate::tls::TlsStream>>, ()> {
        match self.tls.as_deref().map(Certs::accept) {
            None => Ok(None),
            Some(Ok(tls)) => Ok(Some(Box::new(tls))),
            Some(Err(e)) => {
                tracing::warn!("cannot start TLS: {e}");
                Err(())
            }
        }
    }

    /// Whether the listener at `index` expects PROXY protocol headers.
    pub(crate) fn expects_proxy(&self, index: usize) -> bool {
        index >= self.config.listen.len()
    }
}

/// Tells `Server::start` whether a loop could be built, then hands it back.
fn started<L>(built: io::Result<L>, ready: &mpsc::Sender<io::Result<()>>) -> io::Result<L> {
    let report = built
        .as_ref()
        .map(|_| ())
        .map_err(|e| io::Error::new(e.kind(), e.to_string()));
    let _ = ready.send(report);
    built
}
