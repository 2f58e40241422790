//! Redis bridge settings (`--redis-url`, `--redis-prefix`); the bridge
//! itself is in `src/bridge/`.

/// Where and how to bridge.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Prefix of the Redis channels and keys (default `surge:`).
    pub prefix: String,
}
