//! Server API settings (`--api-listen`, `--api-key-file`, `--api-max-body`,
//! `--api-max-conns`, `--api-timeout-ms`; in a config file the keys of the
//! same names, or `listen`, `key-file`, ... in an `[api]` section). The
//! API itself is in `src/api/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The shortest API key accepted, in bytes: 16 random bytes in hex or
/// base64 are 22 to 32 characters, so anything shorter is a password.
pub const MIN_API_KEY: usize = 16;

/// Default largest request body (`--api-max-body`): a publish carries
/// one message for many topics, and a hub message is at most 64 KiB by
/// default, so 1 MiB leaves room without letting one request pin much.
pub const DEFAULT_API_MAX_BODY: usize = 1 << 20;

/// The server API's flags, flattened into every server subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Server API")]
pub(crate) struct ApiFlags {
    /// Serve the server API (POST /api/publish, POST /api/disconnect,
    /// GET /api/topics, GET /api/connections) on this address; off
    /// without it. Needs --api-key-file.
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<SocketAddr>,
    /// File holding the API key every request must carry as
    /// `Authorization: Bearer KEY` (surrounding whitespace trimmed; at
    /// least 16 bytes).
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Largest API request body in bytes; a longer one is answered 413
    /// without being read.
    #[arg(long, default_value_t = DEFAULT_API_MAX_BODY as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    api_max_body: u64,
    /// API connections served at once, half of them (rounded up) at most
    /// from one client address; more are answered 503 at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    api_max_conns: u32,
    /// Milliseconds an API request may take to arrive in full, from its
    /// connection's accept (the slowloris bound); over it: 408.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    api_timeout_ms: u64,
}

/// The API key: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<[u8]>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// The key in `text` (a key file's contents), trimmed; refused when
    /// it is shorter than [`MIN_API_KEY`] or holds whitespace or a control
    /// character (it would not survive an `Authorization` header).
    pub fn new(text: &[u8]) -> Result<Self, String> {
        let key = text.trim_ascii();
        if key.is_empty() {
            return Err("is empty".into());
        }
        if key.len() < MIN_API_KEY {
            return Err(format!(
                "holds a {}-byte key; at least {MIN_API_KEY} bytes are needed",
                key.len()
            ));
        }
        if key.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
            return Err("holds a key with a space, a control or a non-ASCII byte".into());
        }
        Ok(Self(key.into()))
    }

    /// Reads the key from `file`.
    pub fn from_file(file: &std::path::Path) -> Result<Self, String> {
        let text =
            std::fs::read(file).map_err(|e| format!("--api-key-file {}: {e}", file.display()))?;
        Self::new(&text).map_err(|e| format!("--api-key-file {}: {e}", file.display()))
    }

    /// Whether `given` is the key, in time that depends only on the
    /// lengths: every byte is looked at whatever the first difference.
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(&self.0, given)
    }
}

/// `a == b`, taking the same time for every `b` of a given length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box: the optimiser may not turn the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// Where and how the server API listens.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `--api-listen`.
    pub listen: SocketAddr,
    /// From `--api-key-file`, read as the flags are.
    pub key: ApiKey,
    /// `--api-max-body` (default 1 MiB).
    pub max_body: usize,
    /// `--api-max-conns` (default 64).
    pub max_conns: usize,
    /// `--api-timeout-ms` (default 10 s).
    pub timeout: Duration,
}

impl ApiFlags {
    /// The API's settings, or `None` when it is off; the key file is
    /// read now, so `--check-config` and the start refuse a bad one.
    pub(crate) fn into_config(self) -> Result<Option<ApiConfig>, String> {
        let (listen, file) = match (self.api_listen, self.api_key_file) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err("--api-key-file needs --api-listen".into()),
            (Some(_), None) => {
                return Err(
                    "--api-listen needs --api-key-file (every request needs the key)".into(),
                )
            }
            (Some(listen), Some(file)) => (listen, file),
        };
        Ok(Some(ApiConfig {
            listen,
            key: ApiKey::from_file(&file)?,
            max_body: usize::try_from(self.api_max_body).unwrap_or(usize::MAX),
            max_conns: self.api_max_conns as usize,
            timeout: Duration::from_millis(self.api_timeout_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_trimmed_checked_and_compared_whole() {
        let key = ApiKey::new(b"  0123456789abcdef0123\n").unwrap();
        assert!(key.matches(b"0123456789abcdef0123"));
        assert!(!key.matches(b"0123456789abcdef0124"));
        assert!(!key.matches(b"0123456789abcdef012"));
        assert!(!key.matches(b""));
        assert_eq!(ApiKey::new(b" \n").unwrap_err(), "is empty");
        assert!(ApiKey::new(b"short").unwrap_err().contains("at least 16"));
        assert!(ApiKey::new(b"0123456789 abcdef0123").is_err());
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
    }
}
