//! The runtime flags of the server subcommands (`surge echo`, `serve`,
//! `ticker`) and how each becomes a field of [`Config`]. They are the
//! settings' one spelling: a config file's keys are these flags (see
//! `file/`), so the file and the command line share every validator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::admission::{AdmissionConfig, Policy};
use super::bridge::RedisConfig;
use super::pubsub::{
    self, Backpressure, HistoryRule, DEFAULT_HISTORY_BYTES, DEFAULT_INBOX_BYTES,
    DEFAULT_MAX_RECOVERY,
};
use super::tls::{TlsCheck, TlsConfig};
use super::{Backend, Config, DeflateBroadcast, Routes};
use crate::protocol::deflate::DeflatePolicy;

/// The subcommands that run a server, each with its runtime flags.
#[derive(Debug, Subcommand)]
pub(crate) enum ServerCommand {
    /// Echo every message on every WebSocket path (the Autobahn and benchmark target).
    Echo(RuntimeFlags),
    /// The full server on the embedded default config: /echo, the pub/sub
    /// hub at /hub and a ticker demo at /ticker (8 symbols, 10 Hz).
    Serve(FeedFlags<8, 10>),
    /// A synthetic market feed: /ticker (every symbol) and /ticker/SYMBOL,
    /// plus /hub and /echo.
    Ticker(FeedFlags<32, 1000>),
}

impl ServerCommand {
    /// A command line of these subcommands alone, for reading one with its
    /// config file folded in (the `surge` binary's other subcommands take
    /// no config).
    pub(crate) fn command() -> clap::Command {
        Self::augment_subcommands(clap::Command::new("surge"))
    }

    /// The settings, and whether `--check-config` was given; `check_tls`
    /// refuses TLS files that make no usable certificate.
    pub(crate) fn into_config(self, check_tls: TlsCheck) -> (Result<Config, String>, bool) {
        match self {
            Self::Echo(flags) => {
                let check = flags.check_config;
                (flags.into_config(check_tls), check)
            }
            Self::Serve(flags) => {
                let check = flags.runtime.check_config;
                (flags.into_config(check_tls), check)
            }
            Self::Ticker(flags) => {
                let check = flags.runtime.check_config;
                (flags.into_config(check_tls), check)
            }
        }
    }
}

/// A server with the ticker feed; the defaults differ per subcommand.
#[derive(Debug, Args)]
pub(crate) struct FeedFlags<const SYMBOLS: usize, const RATE: u32> {
    /// Symbols in the ticker feed.
    #[arg(long, default_value_t = SYMBOLS)]
    symbols: usize,
    /// Ticks per second per symbol.
    #[arg(long, default_value_t = f64::from(RATE))]
    rate: f64,
    #[command(flatten)]
    runtime: RuntimeFlags,
}

impl<const S: usize, const R: u32> FeedFlags<S, R> {
    fn into_config(self, check_tls: TlsCheck) -> Result<Config, String> {
        if !(self.rate > 0.0 && self.rate <= 100_000.0) {
            return Err("--rate must be above 0 and at most 100000".into());
        }
        if self.symbols == 0 || self.symbols > 100_000 {
            return Err("--symbols must be 1 to 100000".into());
        }
        let mut config = self.runtime.into_config(check_tls)?;
        config.routes.echo_everywhere = false;
        config.routes.hub = true;
        config.routes.ticker_symbols = pubsub::symbols(self.symbols);
        config.ticker_rate = self.rate;
        Ok(config)
    }
}

/// Flags every server mode takes; each is also a config key of the same name.
#[derive(Debug, Args)]
pub(crate) struct RuntimeFlags {
    /// Read settings from this TOML file: every flag is a key of the same
    /// name; flags given here win. `surge serve` without it uses the
    /// embedded default (config/default.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration, print the effective settings as TOML and
    /// exit (0 when valid, 2 otherwise).
    #[arg(long)]
    check_config: bool,
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: Vec<SocketAddr>,
    /// Event loops, one per core by default.
    #[arg(long)]
    shards: Option<usize>,
    /// Event-loop driver.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Largest message accepted in bytes; larger ones are closed with 1009.
    #[arg(long, default_value_t = 16 << 20)]
    max_message: usize,
    /// Milliseconds from accept to a completed upgrade.
    #[arg(long, default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Milliseconds of peer silence before closing with 1001 (0: never).
    #[arg(long, default_value_t = 120_000)]
    idle_timeout_ms: u64,
    /// Milliseconds to wait for the peer's close after ours.
    #[arg(long, default_value_t = 5_000)]
    close_timeout_ms: u64,
    /// Milliseconds a message may take to arrive once its first frame has;
    /// pings do not extend it; over it: 1008 (0: no limit).
    #[arg(long, default_value_t = 10_000)]
    message_timeout_ms: u64,
    /// Bytes a shard lets messages still arriving hold, over all its
    /// connections; a message that would pass it closes with 1013 (0: no
    /// budget).
    #[arg(long, default_value_t = 64 << 20)]
    message_budget: usize,
    /// A subprotocol this server speaks (repeatable).
    #[arg(long)]
    subprotocol: Vec<String>,
    /// io_uring: sends of at least this many bytes use SEND_ZC (0: never;
    /// on loopback it only costs CPU).
    #[arg(long, default_value_t = 0)]
    zerocopy_threshold: usize,
    /// Milliseconds over which shutdown spreads its 1001 closes.
    #[arg(long, default_value_t = 1_000)]
    drain_ms: u64,
    /// Milliseconds a WebSocket or event stream may stay open; past it,
    /// within a tenth more, it is closed with 1001 so clients rebalance
    /// across nodes (0: forever).
    #[arg(long, default_value_t = 0)]
    max_lifetime_ms: u64,
    #[command(flatten)]
    admission: AdmissionFlags,
    #[command(flatten)]
    pubsub: PubSubFlags,
    /// permessage-deflate: off, on (context takeover as offered), or
    /// no-context-takeover (no compression state kept between messages).
    #[arg(long, value_enum, default_value_t = DeflatePolicy::NoContextTakeover)]
    deflate: DeflatePolicy,
    /// How broadcasts are compressed for deflate subscribers: once per
    /// shard, or per connection (a benchmark baseline).
    #[arg(long, value_enum, default_value_t = DeflateBroadcast::Once)]
    deflate_broadcast: DeflateBroadcast,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 64)]
    deflate_threshold: usize,
    /// Connections per shard that may negotiate deflate (0: no cap).
    #[arg(long, default_value_t = 0)]
    max_deflate_conns: usize,
    /// PEM certificate chain (leaf first): every listener speaks wss/https.
    /// Needs --tls-key; both files are re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    // Last: its help heading would take in the flags after it.
    #[command(flatten)]
    api: super::api::ApiFlags,
}

/// Pub/sub limits and backpressure policies.
#[derive(Debug, Args)]
#[command(next_help_heading = "Pub/sub")]
struct PubSubFlags {
    /// Output bytes a hub subscriber may have queued before its policy applies.
    #[arg(long, default_value_t = 1 << 20)]
    max_backpressure: usize,
    /// The same for ticker subscribers.
    #[arg(long, default_value_t = 64 << 10)]
    ticker_max_backpressure: usize,
    /// Kernel send buffer of ticker subscribers in bytes (0: kernel autotuning).
    #[arg(long, default_value_t = 64 << 10)]
    ticker_send_buffer: usize,
    /// What happens to a slow hub subscriber.
    #[arg(long, value_enum, default_value_t = Backpressure::Disconnect)]
    hub_backpressure: Backpressure,
    /// What happens to a slow ticker subscriber.
    #[arg(long, value_enum, default_value_t = Backpressure::Conflate)]
    ticker_backpressure: Backpressure,
    /// Topics one hub connection may subscribe to.
    #[arg(long, default_value_t = 64)]
    max_topics_per_conn: usize,
    /// Largest hub request in bytes, instead of --max-message; larger ones
    /// are closed with 1009 (a hub route's `max-message` overrides it).
    #[arg(long, default_value_t = 64 << 10)]
    hub_max_message: usize,
    /// Bytes of published messages a shard's inbox may hold; past it a
    /// stalled shard is refused further publishes (counted).
    #[arg(long, default_value_t = DEFAULT_INBOX_BYTES)]
    inbox_bytes: usize,
    /// Largest hub publish request in bytes; larger ones get an error answer.
    #[arg(long, default_value_t = 32 << 10)]
    max_publish: usize,
    /// Publishes per second one hub connection may make; past it a publish
    /// gets an error answer (0: no limit).
    #[arg(long, default_value_t = 0)]
    publish_rate: u32,
    /// Publishes above --publish-rate one connection may make at once (0:
    /// the rate itself).
    #[arg(long, default_value_t = 0)]
    publish_burst: u32,
    /// Messages each hub topic keeps for subscribers that resume with
    /// `since` (0: none; a hub route's `history-size` overrides it).
    #[arg(long, default_value_t = 0)]
    history_size: usize,
    /// Age in ms past which a kept message is dropped (0: no age limit).
    #[arg(long, default_value_t = 0)]
    history_ttl_ms: u64,
    /// Every hub topic keeps its last message and gives it to a new
    /// subscriber right after `subscribed` (a hub route's or a [[topics]]
    /// rule's `latest` overrides it).
    #[arg(long)]
    latest: bool,
    /// Bytes the history of every topic may hold together; past it the
    /// oldest messages are evicted (counted).
    #[arg(long, default_value_t = DEFAULT_HISTORY_BYTES)]
    history_bytes: usize,
    /// Messages one resuming subscription may be replayed; a larger gap
    /// answers recovered:false ("too many").
    #[arg(long, default_value_t = DEFAULT_MAX_RECOVERY)]
    max_recovery: usize,
    /// Milliseconds between the comment lines that keep an idle event
    /// stream (`GET /hub/events`) open through proxies.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    sse_heartbeat_ms: u64,
    /// Share hub topics with other nodes through this Redis
    /// (redis://HOST:PORT[/DB]): publishes, positions and history.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Prefix of the Redis names: hub topic T is channel PREFIX T, its
    /// position hash PREFIX m:T and its history list PREFIX h:T.
    #[arg(long, default_value = "surge:")]
    redis_prefix: String,
}

/// Admission control: caps, pacing, tarpit, client addresses, policy.
#[derive(Debug, Args)]
#[command(next_help_heading = "Admission")]
struct AdmissionFlags {
    /// Address to listen on behind an L4 balancer: connections must start
    /// with a PROXY protocol v1/v2 header (repeatable).
    #[arg(long, value_name = "ADDR")]
    proxy_listen: Vec<SocketAddr>,
    /// Connections one client may hold (IPv4 address or IPv6 prefix; 0: no cap).
    #[arg(long, default_value_t = 256)]
    max_conns_per_ip: u32,
    /// Connections the process may hold (0: no cap but the descriptor limit).
    #[arg(long, default_value_t = 0)]
    max_conns: usize,
    /// Connections one user (a signed token's sub) may hold over every
    /// shard; more get 503 (0: no cap; needs a --jwt-* key).
    #[arg(long, default_value_t = 0)]
    max_conns_per_user: u32,
    /// IPv6 clients are counted by this many leading bits.
    #[arg(long, default_value_t = 64)]
    ipv6_prefix: u8,
    /// Upgrades per second one client may make (0: unpaced).
    #[arg(long, default_value_t = 0)]
    handshake_rate_per_ip: u32,
    /// Burst above the per-client rate (0: equal to the rate).
    #[arg(long, default_value_t = 0)]
    handshake_burst_per_ip: u32,
    /// Upgrades per second for the whole process (0: unpaced).
    #[arg(long, default_value_t = 0)]
    handshake_rate: u32,
    /// Burst above the process rate (0: equal to the rate).
    #[arg(long, default_value_t = 0)]
    handshake_burst: u32,
    /// Handshakes a shard runs at once; past it the oldest of the client
    /// with the most pending handshakes is dropped.
    #[arg(long, default_value_t = 4096)]
    max_handshakes_in_flight: usize,
    /// Milliseconds a refused client waits for its answer (jittered 50-150%).
    #[arg(long, default_value_t = 1_000)]
    tarpit_ms: u64,
    /// Refused clients a shard parks at once; when full the oldest is answered.
    #[arg(long, default_value_t = 1024)]
    tarpit_slots: usize,
    /// Retry-After base in seconds for cap refusals (sent as 1-2x).
    #[arg(long, default_value_t = 5)]
    retry_after_s: u64,
    /// Distinct clients tracked at once.
    #[arg(long, default_value_t = 1_000_000)]
    max_tracked_clients: usize,
    /// A proxy (address or CIDR) whose X-Forwarded-For is believed (repeatable).
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    trusted_proxy: Vec<ipnet::IpNet>,
    /// An allowed Origin, e.g. https://app.example.com or https://*.example.com
    /// (repeatable; none: any). Other origins get 403.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// A token that must come as ?token= or Authorization: Bearer
    /// (repeatable; none: no token needed). Others get 401.
    #[arg(long, value_name = "TOKEN")]
    auth_token: Vec<String>,
    /// Refuse (400) clients that offer no subprotocol from --subprotocol.
    #[arg(long)]
    require_subprotocol: bool,
    /// Require a signed token (JWT, HS256) on every upgrade, verified with
    /// the secret in FILE (32 bytes or more). Without one: 401.
    #[arg(long, value_name = "FILE")]
    jwt_hs256_secret: Option<std::path::PathBuf>,
    /// The same, verified with the RS256 or ES256 public key in PEM FILE.
    #[arg(long, value_name = "FILE")]
    jwt_public_key: Option<std::path::PathBuf>,
    /// The same, verified with the key of the JWKS FILE the token's kid names.
    #[arg(long, value_name = "FILE")]
    jwt_jwks: Option<std::path::PathBuf>,
    /// A topic pattern (a topic, or prefix.*) a token without a subscribe or
    /// publish claim gets in its place (repeatable; none: it may do neither).
    #[arg(long, value_name = "PATTERN")]
    jwt_default_topics: Vec<String>,
    /// A hub WebSocket may come without a token and send it as its first
    /// message, {"op":"auth","token":"..."}, and a socketio session in its
    /// CONNECT's auth.token, within SECS seconds; else it is closed (4001
    /// for a WebSocket). 0: a token is needed at the upgrade.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    jwt_first_message_s: u64,
}

/// An address (a /32 or /128) or a CIDR block.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is neither an address nor a CIDR block"))
}

impl AdmissionFlags {
    fn into_config(self) -> Result<AdmissionConfig, String> {
        if self.ipv6_prefix > 128 {
            return Err("--ipv6-prefix must be at most 128".into());
        }
        if self.tarpit_slots == 0 || self.max_handshakes_in_flight == 0 {
            return Err("--tarpit-slots and --max-handshakes-in-flight must be at least 1".into());
        }
        let jwt = self.jwt_tokens()?;
        if self.max_conns_per_user != 0 && jwt.is_none() {
            return Err("--max-conns-per-user needs a key (--jwt-hs256-secret, --jwt-public-key or --jwt-jwks)".into());
        }
        Ok(AdmissionConfig {
            max_conns_per_user: self.max_conns_per_user,
            max_conns_per_ip: self.max_conns_per_ip,
            max_conns: self.max_conns,
            ipv6_prefix: self.ipv6_prefix,
            handshake_rate_per_ip: self.handshake_rate_per_ip,
            handshake_burst_per_ip: self.handshake_burst_per_ip,
            handshake_rate: self.handshake_rate,
            handshake_burst: self.handshake_burst,
            max_handshakes_in_flight: self.max_handshakes_in_flight,
            tarpit: Duration::from_millis(self.tarpit_ms),
            tarpit_slots: self.tarpit_slots,
            retry_after: Duration::from_secs(self.retry_after_s),
            max_tracked_clients: self.max_tracked_clients,
            trusted_proxies: self.trusted_proxy,
            policy: Policy {
                allowed_origins: self.allow_origin,
                tokens: self.auth_token,
                require_subprotocol: self.require_subprotocol,
                hook: None,
                jwt,
            },
        })
    }

    /// The signed-token rule the `--jwt-*` flags ask for: one key source
    /// at most, its file read now.
    fn jwt_tokens(&self) -> Result<Option<crate::auth::Tokens>, String> {
        use crate::auth::{Keys, TopicPattern};
        let sources = [
            ("--jwt-hs256-secret", &self.jwt_hs256_secret),
            ("--jwt-public-key", &self.jwt_public_key),
            ("--jwt-jwks", &self.jwt_jwks),
        ];
        let given: Vec<_> = sources
            .iter()
            .filter_map(|(flag, file)| file.as_ref().map(|f| (*flag, f)))
            .collect();
        type Read = fn(&std::path::Path) -> Result<Keys, String>;
        let (file, read): (_, Read) = match given[..] {
            [] if self.jwt_default_topics.is_empty() && self.jwt_first_message_s == 0 => {
                return Ok(None)
            }
            [] if self.jwt_first_message_s != 0 => return Err("--jwt-first-message-s needs a key (--jwt-hs256-secret, --jwt-public-key or --jwt-jwks)".into()),
            [] => return Err("--jwt-default-topics needs a key (--jwt-hs256-secret, --jwt-public-key or --jwt-jwks)".into()),
            [("--jwt-hs256-secret", file)] => (file, |p| Keys::hs256_secret_file(p)),
            [("--jwt-public-key", file)] => (file, |p| Keys::public_key_file(p)),
            [(_, file)] => (file, |p| Keys::jwks_file(p)),
            _ => {
                let names: Vec<&str> = given.iter().map(|(flag, _)| *flag).collect();
                return Err(format!("{} are exclusive: give one key source", names.join(" and ")));
            }
        };
        let defaults = self
            .jwt_default_topics
            .iter()
            .map(|p| TopicPattern::parse(p).map_err(|e| format!("--jwt-default-topics {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = crate::auth::Tokens::from_file(file, read, defaults)?;
        Ok(Some(tokens.with_first_message(self.jwt_first_message_s)))
    }
}

impl RuntimeFlags {
    fn require_subprotocol_without_any(&self) -> bool {
        self.admission.require_subprotocol && self.subprotocol.is_empty()
    }

    /// The TLS files, if any: both flags or neither, and files that
    /// `check` accepts.
    fn tls(&mut self, check: TlsCheck) -> Result<Option<TlsConfig>, String> {
        let files = match (self.tls_cert.take(), self.tls_key.take()) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
            (Some(cert), Some(key)) => TlsConfig { cert, key },
        };
        check(&files)?;
        Ok(Some(files))
    }

    fn into_config(mut self, check_tls: TlsCheck) -> Result<Config, String> {
        if self.shards == Some(0) {
            return Err("--shards must be at least 1".into());
        }
        if self.max_message == 0 {
            return Err("--max-message must be at least 1".into());
        }
        if self.pubsub.hub_max_message == 0 {
            return Err("--hub-max-message must be at least 1".into());
        }
        if self.pubsub.inbox_bytes == 0 {
            return Err("--inbox-bytes must be at least 1".into());
        }
        if self.pubsub.max_publish == 0 {
            return Err("--max-publish must be at least 1".into());
        }
        if self.require_subprotocol_without_any() {
            return Err("--require-subprotocol needs at least one --subprotocol".into());
        }
        let tls = self.tls(check_tls)?;
        let api = self.api.into_config()?;
        let defaults = Config::default();
        Ok(Config {
            listen: self.listen,
            shards: self.shards.unwrap_or(defaults.shards),
            backend: self.backend,
            max_message: self.max_message,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            close_timeout: Duration::from_millis(self.close_timeout_ms),
            subprotocols: self.subprotocol,
            zerocopy_threshold: self.zerocopy_threshold,
            drain: Duration::from_millis(self.drain_ms),
            proxy_listen: self.admission.proxy_listen.clone(),
            admission: self.admission.into_config()?,
            redis: self.pubsub.redis_url.clone().map(|url| RedisConfig {
                url,
                prefix: self.pubsub.redis_prefix.clone(),
            }),
            inbox_bytes: self.pubsub.inbox_bytes,
            history_bytes: self.pubsub.history_bytes,
            routes: Routes {
                max_backpressure: self.pubsub.max_backpressure,
                ticker_max_backpressure: self.pubsub.ticker_max_backpressure,
                ticker_send_buffer: self.pubsub.ticker_send_buffer,
                hub_backpressure: self.pubsub.hub_backpressure,
                ticker_backpressure: self.pubsub.ticker_backpressure,
                max_topics_per_conn: self.pubsub.max_topics_per_conn,
                max_publish: self.pubsub.max_publish,
                publish_rate: self.pubsub.publish_rate,
                publish_burst: self.pubsub.publish_burst,
                deflate: self.deflate,
                deflate_threshold: self.deflate_threshold,
                deflate_broadcast: self.deflate_broadcast,
                max_deflate_conns: self.max_deflate_conns,
                hub_max_message: self.pubsub.hub_max_message,
                message_budget: self.message_budget,
                history: HistoryRule {
                    size: self.pubsub.history_size,
                    ttl: (self.pubsub.history_ttl_ms > 0)
                        .then(|| Duration::from_millis(self.pubsub.history_ttl_ms)),
                    latest: self.pubsub.latest,
                },
                max_recovery: self.pubsub.max_recovery,
                sse_heartbeat: Duration::from_millis(self.pubsub.sse_heartbeat_ms),
                ..Routes::default()
            },
            tls,
            message_timeout: Duration::from_millis(self.message_timeout_ms),
            max_lifetime: Duration::from_millis(self.max_lifetime_ms),
            api,
            ..defaults
        })
    }
}
