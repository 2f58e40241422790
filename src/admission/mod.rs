//! Admission: who may connect, how many at once and how fast, and what a
//! refused client experiences (a late, jittered answer rather than an
//! instant one that invites a tight retry loop).
//!
//! The process-wide parts (counts per client, rates, decision counters) are
//! in [`registry`] and shared by every shard; the per-shard parts (pending
//! handshakes, the tarpit, drain spreading) live with the shard's timers.

pub mod age_queue;
pub mod client;
pub mod fair_queue;
pub mod jitter;
pub mod policy;
pub mod proxy_protocol;
pub mod rate;
pub mod registry;
pub mod stats;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::protocol::handshake::Request;
use client::ClientKey;
use policy::Policy;
use rate::Rate;
use registry::{Limits, Registry};

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
            trusted_proxies: Vec::new(),
            policy: Policy::default(),
        }
    }
}

/// The process-wide admission state every shard consults.
#[derive(Debug)]
pub struct Admission {
    /// Counts, rates and decision counters.
    pub registry: Registry,
    /// The settings it was built from.
    pub config: AdmissionConfig,
}

impl Admission {
    /// Builds the shared state for `config`.
    pub fn new(mut config: AdmissionConfig) -> Self {
        // Peers are compared as IPv4 when they are IPv4-mapped; so are nets.
        for net in &mut config.trusted_proxies {
            *net = client::canonical_net(*net);
        }
        let burst = |burst: u32, rate: u32| if burst == 0 { rate } else { burst };
        let limits = Limits {
            per_client: config.max_conns_per_ip,
            total: config.max_conns,
            client_rate: Rate::new(
                config.handshake_rate_per_ip,
                burst(config.handshake_burst_per_ip, config.handshake_rate_per_ip),
            ),
            total_rate: Rate::new(
                config.handshake_rate,
                burst(config.handshake_burst, config.handshake_rate),
            ),
            max_clients: config.max_tracked_clients.max(1),
        };
        Self {
            registry: Registry::new(limits),
            config,
        }
    }

    /// The client a request comes from: `peer` (the socket's peer or the
    /// PROXY header's source) unless `peer` is a trusted proxy that says
    /// otherwise in `X-Forwarded-For`.
    pub fn client_ip(&self, peer: IpAddr, request: &Request<'_, '_>) -> IpAddr {
        let trusted = &self.config.trusted_proxies;
        if trusted.is_empty() || !client::is_trusted(peer, trusted) {
            return client::canonical(peer);
        }
        let hops: Vec<&[u8]> = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .collect();
        client::forwarded_client(hops.into_iter(), trusted).unwrap_or(client::canonical(peer))
    }

    /// Whether a decision depends on the client's address: per-client caps
    /// or rates, trusted proxies, or an upgrade hook (which may look).
    pub fn needs_client_ip(&self) -> bool {
        self.registry.tracks_clients()
            || !self.config.trusted_proxies.is_empty()
            || self.config.policy.hook.is_some()
    }

    /// The key `ip` is counted under.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::new(ip, self.config.ipv6_prefix)
    }
}
