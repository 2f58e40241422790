//! TLS settings (`--tls-cert`, `--tls-key`). Loading and checking the
//! files is the TLS layer's (`src/tls/`): whoever reads the flags passes
//! its check in ([`TlsCheck`]), so a bad file is still refused as the
//! flags are read, before anything binds.

use std::path::PathBuf;

/// Where the PEM certificate chain and private key live; both files are
/// read at start and again on every SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--tls-cert`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `--tls-key`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Checks that the files make a usable certificate; the error names what
/// is wrong. The TLS layer's `check` is the one in use (built without
/// the `tls` feature, it refuses any file).
pub(crate) type TlsCheck = fn(&TlsConfig) -> Result<(), String>;
