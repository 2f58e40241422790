//! TLS (wss/https) for every listener: certificate loading, reload on
//! SIGHUP, and the per-connection record layer that sits between socket
//! bytes and a `Session`.
//!
//! The record layer is rustls' `ServerConnection`, which is sans-IO like
//! the protocol core: both drivers hand it ciphertext and drain it of
//! plaintext (epoll straight from the socket, io_uring from each completed
//! receive), so `Session` never knows whether a connection is encrypted.
//! The served certificate lives behind an atomically swapped pointer that
//! is read once per accept, never on the read/write path.

#[cfg(feature = "tls")]
mod certs;
#[cfg(not(feature = "tls"))]
mod disabled;
#[cfg(feature = "tls")]
mod stream;

#[cfg(feature = "tls")]
pub(crate) use certs::{check, Certs};
#[cfg(not(feature = "tls"))]
pub(crate) use disabled::{check, Certs, TlsStream};
#[cfg(feature = "tls")]
pub(crate) use stream::TlsStream;

pub use crate::config::tls::TlsConfig;
