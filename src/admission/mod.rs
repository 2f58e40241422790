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
pub mod users;

use std::net::IpAddr;

pub use crate::config::admission::AdmissionConfig;
use crate::protocol::handshake::Request;
use client::ClientKey;
use rate::Rate;
use registry::{Limits, Registry};

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
        let limits = Limits {
            per_client: config.max_conns_per_ip,
            total: config.max_conns,
            client_rate: Rate::with_burst_or_rate(
                config.handshake_rate_per_ip,
                config.handshake_burst_per_ip,
            ),
            total_rate: Rate::with_burst_or_rate(config.handshake_rate, config.handshake_burst),
            max_clients: config.max_tracked_clients.max(1),
            per_user: config.max_conns_per_user,
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
