//! What every shard of one server shares, built once per shard thread by
//! `Server::start` and handed to its driver.

use std::sync::Arc;

use crate::admission::Admission;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shard::handler::AppRoutes;
use crate::tls::Certs;

/// What every shard shares: settings, the embedder's handlers, published
/// counters, admission, and the certificate when listeners speak TLS.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    /// Paths served by embedder handlers (`App::route`), matched before the
    /// configured routes. Runtime state, not a setting, so not in `config`.
    pub(crate) apps: AppRoutes,
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
