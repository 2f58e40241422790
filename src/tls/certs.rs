//! Certificates: PEM files to a rustls `ServerConfig`, and the swappable
//! pointer that accept reads and SIGHUP replaces.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::{TlsConfig, TlsStream};

/// The certificate new connections are served, replaceable while the
/// server runs.
#[derive(Debug)]
pub(crate) struct Certs {
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl Certs {
    /// Reads both files; the error names the file at fault and why.
    pub(crate) fn load(files: &TlsConfig) -> Result<Self, String> {
        Ok(Self {
            current: ArcSwap::from(server_config(files)?),
            files: files.clone(),
        })
    }

    /// Starts TLS on a connection just accepted, with whatever certificate
    /// is current: a reload never touches connections already running.
    pub(crate) fn accept(&self) -> Result<TlsStream, String> {
        rustls::ServerConnection::new(self.current.load_full())
            .map(TlsStream::new)
            .map_err(|e| e.to_string())
    }

    /// Re-reads the files; on any error the current certificate stays.
    pub(crate) fn reload(&self) -> Result<(), String> {
        self.current.store(server_config(&self.files)?);
        Ok(())
    }

    /// Reloads (on SIGHUP) and logs what became of it.
    pub(crate) fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded"),
            Err(e) => tracing::error!("TLS reload failed, keeping the previous certificate: {e}"),
        }
    }
}

/// Checks that the files make a usable certificate, so that a bad flag is
/// refused before anything binds.
pub(crate) fn check(files: &TlsConfig) -> Result<(), String> {
    server_config(files).map(drop)
}

fn server_config(files: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let cert_name = files.cert.display();
    let key_name = files.key.display();
    let cert_pem =
        std::fs::read(&files.cert).map_err(|e| format!("--tls-cert {cert_name}: {e}"))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| format!("--tls-key {key_name}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {cert_name}: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {cert_name}: no PEM CERTIFICATE block found"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("--tls-key {key_name}: no PEM private key block found")
        }
        e => format!("--tls-key {key_name}: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-key {key_name} with --tls-cert {cert_name}: {e}"))?;
    // WebSocket upgrades are HTTP/1.1 requests; a client offering only h2
    // must fail the handshake rather than speak a protocol we lack.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No TLS 1.3 session tickets: rustls' default in-memory cache holds 256
    // sessions, which among a million clients would almost never resume,
    // while the tickets cost every handshake an extra encrypted write. They
    // also arrive just as a client sends its upgrade request, and Python's
    // `websockets` (a reader thread and a writer sharing one OpenSSL
    // object) then sometimes never sends it. Resumption worth having needs
    // stateless tickets with keys rotated across shards: future work.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, cert: &[u8], key: &[u8]) -> TlsConfig {
        let files = TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("surge-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tls_missing_file_is_named() {
        let files = TlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let e = check(&files).unwrap_err();
        assert!(e.starts_with("--tls-cert /nonexistent/cert.pem: "), "{e}");
    }

    #[test]
    fn tls_files_without_pem_blocks_are_refused() {
        let dir = temp_dir("empty");
        let e = check(&files(&dir, b"not pem", b"not pem")).unwrap_err();
        assert!(e.contains("cert.pem: no PEM CERTIFICATE"), "{e}");
    }

    #[test]
    fn tls_garbage_key_is_refused() {
        let dir = temp_dir("garbage-key");
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = check(&files(&dir, cert, b"hello")).unwrap_err();
        assert!(e.contains("key.pem"), "{e}");
    }
}
