//! A counter for every admission decision, written by any shard with
//! relaxed atomics (decisions happen once per connection, not per message).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection was turned away before or instead of its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client key already holds `--max-conns-per-ip` connections (503).
    ClientCap,
    /// The process holds `--max-conns` connections (503).
    TotalCap,
    /// The client key upgrades faster than `--handshake-rate-per-ip` (429).
    ClientRate,
    /// The process upgrades faster than `--handshake-rate` (429).
    TotalRate,
    /// Too many distinct clients are being tracked (503).
    ClientTable,
    /// The `Origin` is not on the allowlist (403).
    Origin,
    /// The required token is missing or wrong (401).
    Token,
    /// No offered subprotocol is spoken here and one is required (400).
    Subprotocol,
    /// The embedder's upgrade hook said no (its status).
    Hook,
    /// A PROXY listener got no valid PROXY header (closed, no response).
    ProxyHeader,
    /// With signed tokens on (`--jwt-*`): none came (401).
    JwtMissing,
    /// The token is not one (three base64url parts of JSON, claims of the
    /// right types) (401).
    JwtMalformed,
    /// Its signature does not verify with the key (401).
    JwtBadSignature,
    /// Its `exp` has passed (401).
    JwtExpired,
    /// Its `nbf` has not come (401).
    JwtNotYetValid,
    /// Its `alg` is not the key's (`none`, HS256 for an RSA key, ...) (401).
    JwtAlgorithm,
    /// Its `kid` names no key here (401).
    JwtUnknownKey,
    /// It lacks `sub` (401).
    JwtMissingClaim,
    /// It does not allow a topic the request names at once (an event
    /// stream's) (403).
    JwtTopic,
    /// The token's user already holds `--max-conns-per-user` connections
    /// (503).
    UserCap,
}

impl Reason {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Self; 20] = [
        Self::ClientCap,
        Self::TotalCap,
        Self::ClientRate,
        Self::TotalRate,
        Self::ClientTable,
        Self::Origin,
        Self::Token,
        Self::Subprotocol,
        Self::Hook,
        Self::ProxyHeader,
        Self::JwtMissing,
        Self::JwtMalformed,
        Self::JwtBadSignature,
        Self::JwtExpired,
        Self::JwtNotYetValid,
        Self::JwtAlgorithm,
        Self::JwtUnknownKey,
        Self::JwtMissingClaim,
        Self::JwtTopic,
        Self::UserCap,
    ];

    /// Why a signed token was refused, as counted.
    pub fn of_token(refused: Option<crate::auth::Refused>) -> Self {
        use crate::auth::Refused as R;
        match refused {
            None => Self::JwtMissing,
            Some(R::Malformed) => Self::JwtMalformed,
            Some(R::BadSignature) => Self::JwtBadSignature,
            Some(R::Expired) => Self::JwtExpired,
            Some(R::NotYetValid) => Self::JwtNotYetValid,
            Some(R::Algorithm) => Self::JwtAlgorithm,
            Some(R::UnknownKey) => Self::JwtUnknownKey,
            Some(R::MissingClaim(_)) => Self::JwtMissingClaim,
        }
    }

    /// The label value in `surge_admission_rejected_total{reason=...}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientCap => "per_ip_cap",
            Self::TotalCap => "global_cap",
            Self::ClientRate => "per_ip_rate",
            Self::TotalRate => "global_rate",
            Self::ClientTable => "client_table_full",
            Self::Origin => "origin",
            Self::Token => "token",
            Self::Subprotocol => "subprotocol",
            Self::Hook => "hook",
            Self::ProxyHeader => "proxy_header",
            Self::JwtMissing => "jwt_missing",
            Self::JwtMalformed => "jwt_malformed",
            Self::JwtBadSignature => "jwt_bad_signature",
            Self::JwtExpired => "jwt_expired",
            Self::JwtNotYetValid => "jwt_not_yet_valid",
            Self::JwtAlgorithm => "jwt_algorithm",
            Self::JwtUnknownKey => "jwt_unknown_key",
            Self::JwtMissingClaim => "jwt_missing_claim",
            Self::JwtTopic => "jwt_topic",
            Self::UserCap => "per_user_cap",
        }
    }

    /// The HTTP status the client is answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::ClientRate | Self::TotalRate => 429,
            Self::ClientCap | Self::TotalCap | Self::ClientTable | Self::UserCap => 503,
            Self::Origin | Self::Hook | Self::JwtTopic => 403,
            Self::Token
            | Self::JwtMissing
            | Self::JwtMalformed
            | Self::JwtBadSignature
            | Self::JwtExpired
            | Self::JwtNotYetValid
            | Self::JwtAlgorithm
            | Self::JwtUnknownKey
            | Self::JwtMissingClaim => 401,
            Self::Subprotocol => 400,
            Self::ProxyHeader => 0,
        }
    }
}

/// Decision counters.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    /// Upgrades that passed every cap and rate.
    pub admitted: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    /// Refused clients parked before their answer.
    pub tarpitted: AtomicU64,
    /// Parked clients answered early because the tarpit was full.
    pub tarpit_evictions: AtomicU64,
    /// Connections dropped for not finishing the handshake in time.
    pub handshake_timeouts: AtomicU64,
    /// Oldest pending handshakes dropped to make room under
    /// `--max-handshakes-in-flight`.
    pub handshake_evictions: AtomicU64,
    /// Open connections closed with 1013 because the server is overloaded.
    pub overload_closes: AtomicU64,
}

/// A plain copy of the counters, for tests and reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`AdmissionStats::admitted`].
    pub admitted: u64,
    /// All rejections, any reason.
    pub rejected: u64,
    /// See [`AdmissionStats::tarpitted`].
    pub tarpitted: u64,
}

impl AdmissionStats {
    /// Counts one refusal.
    pub fn rejected(&self, reason: Reason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The main counters as plain numbers.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            admitted: self.admitted.load(Ordering::Relaxed),
            rejected: self
                .rejected
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum(),
            tarpitted: self.tarpitted.load(Ordering::Relaxed),
        }
    }

    /// Appends the Prometheus families; `open` and `clients` are the
    /// registry's gauges.
    pub fn render(&self, out: &mut String, open: usize, clients: usize) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP surge_admission_admitted_total Upgrades admitted past every cap and rate.\n\
             # TYPE surge_admission_admitted_total counter\n\
             surge_admission_admitted_total {}",
            get(&self.admitted)
        );
        let _ = writeln!(
            out,
            "# HELP surge_admission_rejected_total Connections refused, by reason.\n\
             # TYPE surge_admission_rejected_total counter"
        );
        for reason in Reason::ALL {
            let _ = writeln!(
                out,
                "surge_admission_rejected_total{{reason=\"{}\"}} {}",
                reason.label(),
                get(&self.rejected[reason as usize])
            );
        }
        let counters = [
            (
                "surge_admission_tarpitted_total",
                "Refused clients parked before their answer.",
                &self.tarpitted,
            ),
            (
                "surge_admission_tarpit_evictions_total",
                "Parked clients answered early because the tarpit was full.",
                &self.tarpit_evictions,
            ),
            (
                "surge_admission_handshake_timeouts_total",
                "Connections dropped for not completing the handshake in time.",
                &self.handshake_timeouts,
            ),
            (
                "surge_admission_handshake_evictions_total",
                "Oldest pending handshakes dropped to respect the in-flight bound.",
                &self.handshake_evictions,
            ),
            (
                "surge_admission_overload_closes_total",
                "Open connections closed with 1013 for overload.",
                &self.overload_closes,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP surge_admission_connections Connections counted against the caps.\n\
             # TYPE surge_admission_connections gauge\n\
             surge_admission_connections {open}\n\
             # HELP surge_admission_clients Client keys tracked (holding connections or paced).\n\
             # TYPE surge_admission_clients gauge\n\
             surge_admission_clients {clients}"
        );
    }
}
