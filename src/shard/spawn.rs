//! Starts the shards: binds every listener once per shard (SO_REUSEPORT, so
//! the kernel spreads connections and no accept lock is shared), pins each
//! shard's thread to a core and wires SIGTERM/SIGINT to every loop.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::Config;
use crate::sys;

use crate::driver::epoll::EpollLoop;

/// Running shards and the addresses they listen on.
#[derive(Debug)]
pub struct Server {
    /// Bound addresses, in `--listen` order (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    handles: Vec<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Binds and starts every shard; returns once all listeners are bound.
    pub fn start(config: Config) -> io::Result<Self> {
        let shards = config.shards.max(1);
        let reuse_port = shards > 1;
        // Bind shard 0 first so that port 0 resolves to one port that the
        // other shards then share.
        let mut per_shard: Vec<Vec<std::net::TcpListener>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            let first = sys::listener(*addr, reuse_port)?;
            let bound = first.local_addr()?;
            per_shard[0].push(first);
            for listeners in per_shard.iter_mut().skip(1) {
                listeners.push(sys::listener(bound, reuse_port)?);
            }
            local_addrs.push(bound);
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let config = Arc::new(config);
        let mut handles = Vec::with_capacity(shards);
        for (id, listeners) in per_shard.into_iter().enumerate() {
            let (signal_rx, signal_tx) = UnixStream::pair()?;
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::low_level::pipe::register(sig, signal_tx.try_clone()?)?;
            }
            let shard = EpollLoop::new(listeners, signal_rx, Arc::clone(&config))?;
            let handle = std::thread::Builder::new()
                .name(format!("surge-shard-{id}"))
                .spawn(move || {
                    if let Err(e) = sys::pin_current_thread(id % cpus) {
                        tracing::warn!("shard {id}: could not pin to cpu {}: {e}", id % cpus);
                    }
                    shard.run()
                })?;
            handles.push(handle);
        }
        Ok(Self {
            local_addrs,
            handles,
        })
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
