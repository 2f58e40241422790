//! Runtime settings shared by every shard. Each field is a CLI flag of the
//! same name (kebab-case); defaults are documented beside each one.
//! `flags.rs` holds the flags, `file/` the config file whose keys they are.
//! The settings of each area the layers above own have a file here
//! (`admission.rs`, `api.rs`, `pubsub.rs`, `bridge.rs`, `tls.rs`; `upgrade_hook.rs`
//! for the embedder's rule), so that config depends on nothing above it;
//! each owner re-exports its settings under its own path.

pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod bridge;
pub(crate) mod file;
pub(crate) mod flags;
pub(crate) mod pubsub;
pub(crate) mod tls;
pub(crate) mod upgrade_hook;

use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::deflate::DeflatePolicy;
use admission::AdmissionConfig;
use bridge::RedisConfig;
use pubsub::{
    Backpressure, HistoryRule, Limit, DEFAULT_HISTORY_BYTES, DEFAULT_INBOX_BYTES,
    DEFAULT_MAX_RECOVERY,
};
use tls::TlsConfig;

pub use api::{ApiConfig, ApiKey, DEFAULT_API_MAX_BODY, MIN_API_KEY};

/// What a configured path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteKind {
    /// Every message comes back.
    Echo,
    /// The pub/sub hub's JSON protocol.
    Hub,
    /// The ticker feed: PATH for every symbol, PATH/SYMBOL for one.
    Ticker,
    /// A handler an embedding program registered under `handler`
    /// (`App::handler`); the `surge` binary has none.
    App,
    /// Engine.IO v4 sessions (long-polling, WebSocket and the upgrade
    /// between them) whose every message comes back: to Engine.IO what
    /// `echo` is to WebSocket. The path is the prefix of every request's
    /// (`/engine.io` serves `/engine.io/?EIO=4&...`).
    #[value(name = "engineio-echo")]
    EngineIoEcho,
    /// Socket.IO v5 (on Engine.IO v4) as the protocol test suite's
    /// reference server: namespaces `/` and `/custom`, the `auth` payload
    /// echoed on connect, `message` answered `message-back`,
    /// `message-with-ack` acked, and rooms (`join`, `leave`, `to-room`).
    /// To Socket.IO what `echo` is to WebSocket.
    #[value(name = "socketio-reference")]
    SocketIoReference,
    /// Socket.IO v5 mapped onto the hub, for apps that need no code: a
    /// `subscribe` event joins rooms, `unsubscribe` leaves them,
    /// `publish` broadcasts to a room's members on every shard (and, with
    /// a feed, each ticker symbol is a room its ticks go to).
    #[value(name = "socketio")]
    SocketIo,
}

impl RouteKind {
    /// Whether the route serves Engine.IO sessions.
    pub fn is_engineio(self) -> bool {
        matches!(
            self,
            Self::EngineIoEcho | Self::SocketIoReference | Self::SocketIo
        )
    }

    /// Whether the route speaks Socket.IO on its Engine.IO sessions.
    pub fn is_socketio(self) -> bool {
        matches!(self, Self::SocketIoReference | Self::SocketIo)
    }
}

/// One `[[routes]]` entry: a path, what serves it, and the limits that
/// differ from the server-wide ones.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Exact path (and, for a ticker, the prefix of its per-symbol paths).
    pub path: String,
    /// What serves it.
    pub kind: RouteKind,
    /// The registered handler's name (`kind = "app"` only).
    pub handler: Option<String>,
    /// Largest message accepted here (default: `max-message`, or
    /// `hub-max-message` on a hub route).
    pub max_message: Option<usize>,
    /// Peer silence allowed here (default: `idle-timeout-ms`).
    pub idle_timeout: Option<Duration>,
    /// What happens to a slow subscriber here (default: the route kind's).
    pub backpressure: Option<Backpressure>,
    /// Output a subscriber may have queued here (default: the kind's).
    pub max_backpressure: Option<usize>,
    /// permessage-deflate here (default: `deflate`; a ticker never compresses).
    pub deflate: Option<DeflatePolicy>,
    /// Messages a topic published to here keeps for resuming subscribers
    /// (hub routes; default: `history-size`).
    pub history_size: Option<usize>,
    /// Age past which they are dropped (hub routes; default:
    /// `history-ttl-ms`; zero: no age limit).
    pub history_ttl: Option<Duration>,
    /// Topics published to here are latest-value topics (hub routes;
    /// default: `latest`).
    pub latest: Option<bool>,
    /// Messages one resuming subscription here may be replayed (hub
    /// routes; default: `max-recovery`).
    pub max_recovery: Option<usize>,
    /// Milliseconds between an Engine.IO session's pings (Engine.IO
    /// routes; default 25,000, the protocol's).
    pub ping_interval_ms: Option<u32>,
    /// Milliseconds a ping waits for its pong (Engine.IO routes; default
    /// 20,000).
    pub ping_timeout_ms: Option<u32>,
    /// The longest POST body and WebSocket message, told to clients as
    /// `maxPayload` (Engine.IO routes; default 1,000,000).
    pub max_payload: Option<u32>,
    /// `Access-Control-Allow-Origin` for polling from pages of another
    /// origin: `*`, or the one origin allowed (Engine.IO routes; default
    /// none: no CORS headers, as the reference without its `cors` option).
    pub cors_origin: Option<String>,
    /// Milliseconds a Socket.IO session may go without a namespace from
    /// its start, and a binary packet may wait for its attachments
    /// (Socket.IO routes; default 45,000, the reference's
    /// `connectTimeout`).
    pub connect_timeout_ms: Option<u32>,
    /// Milliseconds a dropped Socket.IO socket is kept, with its id, rooms
    /// and the broadcasts it misses, for a client that reconnects with
    /// connection state recovery (Socket.IO routes; default none: off).
    pub max_disconnection_ms: Option<u32>,
}

impl RouteSpec {
    /// `path` served by `kind` with the server-wide limits.
    pub fn new(path: impl Into<String>, kind: RouteKind) -> Self {
        Self {
            path: path.into(),
            kind,
            handler: None,
            max_message: None,
            idle_timeout: None,
            backpressure: None,
            max_backpressure: None,
            deflate: None,
            history_size: None,
            history_ttl: None,
            latest: None,
            max_recovery: None,
            ping_interval_ms: None,
            ping_timeout_ms: None,
            max_payload: None,
            cors_origin: None,
            connect_timeout_ms: None,
            max_disconnection_ms: None,
        }
    }
}

/// An Engine.IO route's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineIoLimits {
    pub(crate) ping_interval_ms: u32,
    pub(crate) ping_timeout_ms: u32,
    pub(crate) max_payload: u32,
    /// Bytes a session may have waiting for its client (queued packets
    /// of a polling session, a WebSocket's unwritten output): the route's
    /// `max-backpressure`. Past it the session ends, as a slow hub
    /// subscriber is disconnected.
    pub(crate) max_backlog: usize,
    /// What serves the route.
    pub(crate) kind: RouteKind,
    /// Socket.IO's connect timeout (ms).
    pub(crate) connect_timeout_ms: u32,
    /// Socket.IO's connection state recovery window (ms; 0: off).
    pub(crate) max_disconnection_ms: u32,
}

/// One `[[topics]]` entry: what hub topics whose names start with
/// `prefix` keep, whatever route they are published through. The longest
/// matching prefix wins over the route's rule; what it leaves unset comes
/// from the route, then from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    /// The start of the topic names it applies to (as clients write them).
    pub prefix: String,
    /// Messages each such topic keeps for resuming subscribers.
    pub history_size: Option<usize>,
    /// Age past which they are dropped (zero: no age limit).
    pub history_ttl: Option<Duration>,
    /// Whether they are latest-value topics.
    pub latest: Option<bool>,
}

impl TopicRule {
    /// A rule for `prefix` that sets nothing yet.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            history_size: None,
            history_ttl: None,
            latest: None,
        }
    }
}

/// How a broadcast reaches subscribers that negotiated permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeflateBroadcast {
    /// Compressed once per shard and window size, the frame shared by all.
    Once,
    /// Compressed for every subscriber on its own: what servers without
    /// shared compression do; a benchmark baseline, not for production.
    PerConnection,
}

/// What each WebSocket path serves.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Paths and what serves them; when not empty, it replaces the fixed
    /// paths below (`echo_everywhere`, `/echo`, `/hub`, `/ticker`).
    pub table: Vec<RouteSpec>,
    /// Every path echoes (`surge echo`); otherwise only `/echo` does.
    pub echo_everywhere: bool,
    /// `/hub` takes JSON subscribe/unsubscribe/publish requests.
    pub hub: bool,
    /// The ticker's symbols: `/ticker` and `/ticker/SYMBOL` serve them
    /// (empty: no ticker route).
    pub ticker_symbols: Vec<String>,
    /// Topics one hub connection may hold (default 64).
    pub max_topics_per_conn: usize,
    /// Largest hub publish request, in bytes (default 32 KiB, half the hub's
    /// message limit so that a publish over it is answered, not closed with
    /// 1009); a larger one is refused with an error answer. Every shard
    /// holds a published message until its subscribers have written it, so
    /// one publish must not cost a topic more than this.
    pub max_publish: usize,
    /// Publishes per second one hub connection may make (default 0: no
    /// limit); past it (and its burst) a publish gets an error answer and
    /// the connection stays open.
    pub publish_rate: u32,
    /// Publishes above that rate a connection may make at once (default
    /// 0: the rate itself).
    pub publish_burst: u32,
    /// Output a hub subscriber may have queued before its policy applies
    /// (default 1 MiB).
    pub max_backpressure: usize,
    /// The same for ticker subscribers (default 64 KiB: a feed is worth
    /// little once it is late).
    pub ticker_max_backpressure: usize,
    /// Kernel send buffer of ticker subscribers (default 64 KiB; 0: the
    /// kernel's autotuning, which lets a slow reader buffer seconds of
    /// ticks before conflation can start).
    pub ticker_send_buffer: usize,
    /// Policy for hub subscribers (default disconnect: a chat or event
    /// stream must not silently lose messages).
    pub hub_backpressure: Backpressure,
    /// permessage-deflate for /echo and /hub (default: without context
    /// takeover, so idle connections hold no compression state).
    pub deflate: DeflatePolicy,
    /// How broadcasts are compressed for deflate subscribers (default once).
    pub deflate_broadcast: DeflateBroadcast,
    /// Messages shorter than this are sent uncompressed (default 64 bytes).
    pub deflate_threshold: usize,
    /// Connections per shard that may negotiate deflate; later ones are
    /// answered without it (default 0: no cap, since without context
    /// takeover a connection holds no zlib state between messages; set one
    /// with `DeflatePolicy::On`).
    pub max_deflate_conns: usize,
    /// Policy for ticker subscribers (default conflate: a slow client gets
    /// the latest price per symbol, not a backlog).
    pub ticker_backpressure: Backpressure,
    /// Largest message on hub routes, instead of `max_message` (default
    /// 64 KiB: a request is a few hundred bytes of JSON, and every byte of
    /// a publish is copied to each subscriber); a `[[routes]]` entry's
    /// `max-message` overrides it.
    pub hub_max_message: usize,
    /// Memory a shard lets messages still arriving hold, across all its
    /// connections (default 64 MiB: four full 16 MiB messages at once; 0:
    /// no budget). Only `max_message` bounds one connection; without this,
    /// a few thousand slow or fragmented messages, or compressed ones that
    /// inflate 1000-fold, would hold gigabytes. A connection whose message
    /// would take it past the budget is closed with 1013.
    pub message_budget: usize,
    /// What hub topics keep for resuming subscribers (default: nothing);
    /// a `[[routes]]` entry's `history-size`, `history-ttl-ms` and
    /// `latest` override it for the topics published through it, and a
    /// `[[topics]]` rule for the topics it names.
    pub history: HistoryRule,
    /// Per topic prefix rules (`[[topics]]`), in file order.
    pub topic_rules: Vec<TopicRule>,
    /// Messages one resuming subscription may be replayed (default 1000;
    /// a hub route's `max-recovery` overrides it); a larger gap answers
    /// `recovered: false` ("too many").
    pub max_recovery: usize,
    /// How often an idle event stream (`GET /hub/events`) gets a comment
    /// line (default 15 s): proxies and balancers close connections that
    /// stay silent for 30 to 60 s, and a peer that vanished is found by
    /// the write that fails.
    pub sse_heartbeat: Duration,
}

/// A connection whose route has no `[[routes]]` entry.
pub(crate) const NO_SPEC: u8 = u8::MAX;

impl Routes {
    /// The `[[routes]]` entry at `index`, if any.
    pub(crate) fn spec(&self, index: u8) -> Option<&RouteSpec> {
        self.table.get(usize::from(index))
    }

    /// The backpressure limit of hub subscribers on route `index`.
    pub(crate) fn hub_limit(&self, index: u8) -> Limit {
        let spec = self.spec(index);
        Limit {
            policy: spec
                .and_then(|s| s.backpressure)
                .unwrap_or(self.hub_backpressure),
            bound: spec
                .and_then(|s| s.max_backpressure)
                .unwrap_or(self.max_backpressure),
            compress: None,
        }
    }

    /// The backpressure limit of ticker subscribers on route `index`.
    pub(crate) fn ticker_limit(&self, index: u8) -> Limit {
        let spec = self.spec(index);
        Limit {
            policy: spec
                .and_then(|s| s.backpressure)
                .unwrap_or(self.ticker_backpressure),
            bound: spec
                .and_then(|s| s.max_backpressure)
                .unwrap_or(self.ticker_max_backpressure),
            compress: None,
        }
    }

    /// Bytes a ticker topic's snapshot may hold: the largest bound of a
    /// ticker subscriber on any route, so that it reaches every one whole.
    pub(crate) fn feed_bound(&self) -> usize {
        (0..self.table.len())
            .filter(|&i| self.table[i].kind == RouteKind::Ticker)
            .map(|i| self.ticker_limit(i as u8).bound)
            .fold(self.ticker_max_backpressure, usize::max)
    }

    /// Peer silence allowed on route `index`.
    pub(crate) fn idle_timeout(&self, index: u8, default: Duration) -> Duration {
        self.spec(index)
            .and_then(|s| s.idle_timeout)
            .unwrap_or(default)
    }

    /// Largest message on route `index`.
    pub(crate) fn max_message(&self, index: u8, default: usize) -> usize {
        self.spec(index)
            .and_then(|s| s.max_message)
            .unwrap_or(default)
    }

    /// Largest message on hub route `index`: its entry's, or
    /// `hub_max_message` (never the server-wide `max_message`).
    pub(crate) fn max_hub_message(&self, index: u8) -> usize {
        self.max_message(index, self.hub_max_message)
    }

    /// What hub topic `topic` keeps when it is published through hub
    /// route `index`: each setting from the longest `[[topics]]` prefix
    /// that matches and sets it, else from the route, else the flags'.
    pub(crate) fn history(&self, index: u8, topic: &str) -> HistoryRule {
        let spec = self.spec(index);
        let rule = self.topic_rule(topic);
        let ttl = rule
            .and_then(|r| r.history_ttl)
            .or_else(|| spec.and_then(|s| s.history_ttl))
            .map_or(self.history.ttl, |t| (!t.is_zero()).then_some(t));
        HistoryRule {
            size: rule
                .and_then(|r| r.history_size)
                .or_else(|| spec.and_then(|s| s.history_size))
                .unwrap_or(self.history.size),
            ttl,
            latest: rule
                .and_then(|r| r.latest)
                .or_else(|| spec.and_then(|s| s.latest))
                .unwrap_or(self.history.latest),
        }
    }

    /// The `[[topics]]` rule with the longest prefix of `topic`.
    fn topic_rule(&self, topic: &str) -> Option<&TopicRule> {
        self.topic_rules
            .iter()
            .filter(|r| topic.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len())
    }

    /// Messages one resuming subscription on hub route `index` may be
    /// replayed.
    pub(crate) fn max_recovery(&self, index: u8) -> usize {
        self.spec(index)
            .and_then(|s| s.max_recovery)
            .unwrap_or(self.max_recovery)
    }

    /// The Engine.IO route serving `path`: its path is the prefix of every
    /// request's (`/engine.io` serves `/engine.io/` and what follows).
    pub(crate) fn engineio_route(&self, path: &str) -> Option<u8> {
        self.table
            .iter()
            .position(|spec| {
                spec.kind.is_engineio()
                    && path
                        .strip_prefix(spec.path.trim_end_matches('/'))
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|i| i as u8)
    }

    /// Engine.IO route `index`'s settings, with the protocol's defaults.
    pub(crate) fn engineio(&self, index: u8) -> EngineIoLimits {
        let spec = self.spec(index);
        EngineIoLimits {
            ping_interval_ms: spec.and_then(|s| s.ping_interval_ms).unwrap_or(25_000),
            ping_timeout_ms: spec.and_then(|s| s.ping_timeout_ms).unwrap_or(20_000),
            max_payload: spec.and_then(|s| s.max_payload).unwrap_or(1_000_000),
            max_backlog: spec
                .and_then(|s| s.max_backpressure)
                .unwrap_or(self.max_backpressure),
            kind: spec.map_or(RouteKind::EngineIoEcho, |s| s.kind),
            connect_timeout_ms: spec.and_then(|s| s.connect_timeout_ms).unwrap_or(45_000),
            max_disconnection_ms: spec.and_then(|s| s.max_disconnection_ms).unwrap_or(0),
        }
    }

    /// permessage-deflate policy on route `index`.
    pub(crate) fn deflate(&self, index: u8) -> DeflatePolicy {
        self.spec(index)
            .and_then(|s| s.deflate)
            .unwrap_or(self.deflate)
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            table: Vec::new(),
            echo_everywhere: true,
            hub: false,
            ticker_symbols: Vec::new(),
            max_topics_per_conn: 64,
            max_publish: 32 << 10,
            publish_rate: 0,
            publish_burst: 0,
            max_backpressure: 1 << 20,
            ticker_max_backpressure: 64 << 10,
            ticker_send_buffer: 64 << 10,
            hub_backpressure: Backpressure::Disconnect,
            ticker_backpressure: Backpressure::Conflate,
            deflate: DeflatePolicy::NoContextTakeover,
            deflate_broadcast: DeflateBroadcast::Once,
            deflate_threshold: 64,
            max_deflate_conns: 0,
            hub_max_message: 64 << 10,
            message_budget: 64 << 20,
            history: HistoryRule::default(),
            topic_rules: Vec::new(),
            max_recovery: DEFAULT_MAX_RECOVERY,
            sse_heartbeat: Duration::from_secs(15),
        }
    }
}

/// Which event-loop driver a shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// io_uring when the kernel allows it, otherwise epoll.
    Auto,
    /// epoll through mio.
    Epoll,
    /// io_uring.
    Uring,
}

/// Settings for one server process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (default 127.0.0.1:9001).
    pub listen: Vec<SocketAddr>,
    /// Addresses to listen on behind an L4 balancer: every connection must
    /// start with a PROXY protocol v1 or v2 header naming the client, or it
    /// is closed without a response.
    pub proxy_listen: Vec<SocketAddr>,
    /// Event loops, one per core by default.
    pub shards: usize,
    /// Requested driver.
    pub backend: Backend,
    /// Largest message accepted, in bytes (default 16 MiB, as most browsers
    /// and proxies allow); larger ones are closed with 1009. Hub routes
    /// take `Routes::hub_max_message` instead.
    pub max_message: usize,
    /// Time from accept to a complete upgrade (default 10 s): the slowloris
    /// bound.
    pub handshake_timeout: Duration,
    /// Time without a byte from the peer before closing with 1001 (default
    /// 120 s; zero turns it off).
    pub idle_timeout: Duration,
    /// How long to wait for the peer's close frame or FIN after ours
    /// (default 5 s), so a silent peer cannot hold a descriptor.
    pub close_timeout: Duration,
    /// Subprotocols this server speaks, in no particular order; the client's
    /// preference decides among them.
    pub subprotocols: Vec<String>,
    /// io_uring sends of at least this many bytes use SEND_ZC (default 0:
    /// never). Zero-copy pins pages instead of copying them and pays an
    /// extra completion. Measured here on loopback (where the receiver
    /// copies anyway) it cost 12-52% more server CPU per echoed message at
    /// every size from 16 KiB to 1 MiB, so it is off unless a deployment
    /// behind a real NIC measures a win (64 KiB is a sensible start).
    pub zerocopy_threshold: usize,
    /// On shutdown, open connections are closed with 1001 at random points
    /// over this window (default 1 s), so their clients do not all
    /// reconnect in the same instant. Raise it with the connection count.
    pub drain: Duration,
    /// Caps, pacing, tarpit and upgrade policy.
    pub admission: AdmissionConfig,
    /// What each path serves.
    pub routes: Routes,
    /// Ticks per second per symbol of the ticker feed, when it runs.
    pub ticker_rate: f64,
    /// Share hub topics (publishes, positions, history) with other nodes through Redis.
    pub redis: Option<RedisConfig>,
    /// Bytes of published messages a shard's hub inbox may hold (default
    /// 64 MiB, [`DEFAULT_INBOX_BYTES`]); past it a
    /// stalled shard is refused further publishes, counted in
    /// `surge_pubsub_inbox_dropped_total`. A message larger than this never
    /// reaches any shard.
    pub inbox_bytes: usize,
    /// Bytes the history of every hub topic may hold together (default
    /// 64 MiB, [`DEFAULT_HISTORY_BYTES`]); past it the oldest kept messages
    /// are evicted, counted in `surge_history_evicted_total`.
    pub history_bytes: usize,
    /// Serve every listener over TLS (wss/https) with this certificate,
    /// re-read on SIGHUP (default: none, plain ws/http).
    pub tls: Option<TlsConfig>,
    /// Time a message may take to arrive once its first frame has (default
    /// 10 s; zero turns it off). Pings and other control frames in between
    /// do not extend it, so a peer cannot hold a partial message, and the
    /// memory it pins, for as long as it keeps the connection alive. Over
    /// it the connection is closed with 1008.
    pub message_timeout: Duration,
    /// How long a WebSocket or an event stream may stay open (default
    /// zero: forever). Past it the connection is closed with 1001 (a stream
    /// just ends) at a moment spread over the tenth of the lifetime after
    /// it, so that after a scale-out long-lived clients move over to the
    /// new nodes a few at a time instead of never, or all at once.
    pub max_lifetime: Duration,
    /// The server API's listener, key and bounds (default: off).
    pub api: Option<ApiConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 9001))],
            proxy_listen: Vec::new(),
            shards: std::thread::available_parallelism().map_or(1, usize::from),
            backend: Backend::Auto,
            max_message: 16 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            close_timeout: Duration::from_secs(5),
            subprotocols: Vec::new(),
            zerocopy_threshold: 0,
            drain: Duration::from_secs(1),
            admission: AdmissionConfig::default(),
            routes: Routes::default(),
            ticker_rate: 1000.0,
            redis: None,
            inbox_bytes: DEFAULT_INBOX_BYTES,
            history_bytes: DEFAULT_HISTORY_BYTES,
            tls: None,
            message_timeout: Duration::from_secs(10),
            max_lifetime: Duration::ZERO,
            api: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_entry_overrides_only_what_it_sets() {
        let mut spec = RouteSpec::new("/chat", RouteKind::Hub);
        spec.backpressure = Some(Backpressure::Conflate);
        spec.idle_timeout = Some(Duration::from_secs(3));
        let routes = Routes {
            table: vec![spec, RouteSpec::new("/plain", RouteKind::Hub)],
            ..Routes::default()
        };
        let chat = routes.hub_limit(0);
        assert_eq!(chat.policy, Backpressure::Conflate);
        assert_eq!(chat.bound, routes.max_backpressure);
        let plain = routes.hub_limit(1);
        assert_eq!(plain.policy, routes.hub_backpressure);
        assert_eq!(routes.hub_limit(NO_SPEC).policy, routes.hub_backpressure);
        let default = Duration::from_secs(120);
        assert_eq!(routes.idle_timeout(0, default), Duration::from_secs(3));
        assert_eq!(routes.idle_timeout(1, default), default);
        assert_eq!(routes.max_message(0, 77), 77);
        assert_eq!(routes.max_hub_message(1), 64 << 10);
        assert_eq!(routes.deflate(0), routes.deflate);
    }

    #[test]
    fn the_longest_topic_prefix_wins_over_the_route_setting_by_setting() {
        let mut spec = RouteSpec::new("/hub", RouteKind::Hub);
        spec.history_size = Some(10);
        spec.history_ttl = Some(Duration::from_secs(9));
        spec.max_recovery = Some(5);
        let mut scores = TopicRule::new("scores.");
        scores.history_size = Some(100);
        let mut live = TopicRule::new("scores.live.");
        live.latest = Some(true);
        live.history_ttl = Some(Duration::ZERO);
        let routes = Routes {
            table: vec![spec],
            topic_rules: vec![live, scores],
            history: HistoryRule {
                size: 1,
                ttl: None,
                latest: false,
            },
            ..Routes::default()
        };
        let nine = Some(Duration::from_secs(9));
        let rule = |topic| {
            let r = routes.history(0, topic);
            (r.size, r.ttl, r.latest)
        };
        assert_eq!(rule("chat"), (10, nine, false));
        assert_eq!(rule("scores.a"), (100, nine, false));
        // Only the longest prefix applies; what it leaves out is the route's.
        assert_eq!(rule("scores.live.a"), (10, None, true));
        assert_eq!(routes.history(NO_SPEC, "scores.b").size, 100);
        assert_eq!(routes.history(NO_SPEC, "other").size, 1);
        assert_eq!(routes.max_recovery(0), 5);
        assert_eq!(routes.max_recovery(NO_SPEC), DEFAULT_MAX_RECOVERY);
    }
}
