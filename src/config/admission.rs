//! Admission settings: caps, pacing, the tarpit, trusted proxies and the
//! upgrade rules (Origin, token, subprotocol, the embedder's hook). Each is
//! a CLI flag of the same name but the hook. Admission (`src/admission/`)
//! enforces them: `Policy::check` and the registry live there.

use std::time::Duration;

use ipnet::IpNet;

use super::upgrade_hook::Hook;

/// Admission settings; each is a CLI flag of the same name (kebab-case).
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Connections one client (IPv4 address or IPv6 prefix) may hold
    /// (default 256; 0: no cap).
    pub max_conns_per_ip: u32,
    /// Connections the process may hold (default 0: only the descriptor
    /// limit).
    pub max_conns: usize,
    /// IPv6 clients are counted by this many leading bits (default 64).
    pub ipv6_prefix: u8,
    /// Upgrades per second one client may make (default 0: unpaced).
    pub handshake_rate_per_ip: u32,
    /// Burst allowed above that rate (default 0: the rate itself).
    pub handshake_burst_per_ip: u32,
    /// Upgrades per second for the whole process (default 0: unpaced).
    pub handshake_rate: u32,
    /// Burst allowed above that rate (default 0: the rate itself).
    pub handshake_burst: u32,
    /// Handshakes a shard lets run at once; past it the oldest of the
    /// client holding the most is dropped (default 4096), so half-open
    /// floods cannot hold every slot, nor one client's push out the rest.
    pub max_handshakes_in_flight: usize,
    /// How long a refused client waits for its answer, jittered to 50-150%
    /// (default 1 s; zero answers at once).
    pub tarpit: Duration,
    /// Refused clients a shard parks at once; when full the oldest is
    /// answered early (default 1024).
    pub tarpit_slots: usize,
    /// The `Retry-After` base for cap refusals; the header carries 1-2x it
    /// (default 5 s). Rate refusals use the time until a slot frees.
    pub retry_after: Duration,
    /// Distinct clients tracked at once (default 1,000,000).
    pub max_tracked_clients: usize,
    /// Connections one user (a signed token's `sub`) may hold, over every
    /// shard (default 0: no cap; needs signed tokens).
    pub max_conns_per_user: u32,
    /// Peers whose `X-Forwarded-For` is believed (default: none).
    pub trusted_proxies: Vec<IpNet>,
    /// Origin, token, subprotocol and embedder rules.
    pub policy: Policy,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_conns_per_ip: 256,
            max_conns: 0,
            ipv6_prefix: 64,
            handshake_rate_per_ip: 0,
            handshake_burst_per_ip: 0,
            handshake_rate: 0,
            handshake_burst: 0,
            max_handshakes_in_flight: 4096,
            tarpit: Duration::from_secs(1),
            tarpit_slots: 1024,
            retry_after: Duration::from_secs(5),
            max_tracked_clients: 1_000_000,
            max_conns_per_user: 0,
            trusted_proxies: Vec::new(),
            policy: Policy::default(),
        }
    }
}

/// The upgrade rules of a server.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Allowed `Origin` values: exact (`https://app.example.com`) or one
    /// leading wildcard label (`https://*.example.com`); empty allows all.
    /// Requests without an `Origin` (non-browser clients, which could send
    /// any value anyway) are not affected.
    pub allowed_origins: Vec<String>,
    /// Tokens that open the door, from `?token=` or
    /// `Authorization: Bearer`; empty requires none.
    pub tokens: Vec<String>,
    /// Refuse clients that offer no subprotocol this server speaks.
    pub require_subprotocol: bool,
    /// The embedder's own rule, consulted last.
    pub hook: Option<Hook>,
    /// Signed tokens (JWT) every upgrade must carry, and what they allow.
    pub jwt: Option<crate::auth::Tokens>,
}
