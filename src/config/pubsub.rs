//! Pub/sub settings: what happens to a slow subscriber, the bound of a
//! shard's hub inbox, and the ticker feed's symbol names. The hub, the
//! topic tables and the ticker that act on them live in `src/pubsub/`.

/// What happens to a subscriber whose queued output passes the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backpressure {
    /// Close it with 1013 (try again later).
    Disconnect,
    /// Skip what it cannot take; send the latest value per key when it
    /// has room again.
    Conflate,
}

/// How a subscriber is treated when it falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// What happens past the bound.
    pub(crate) policy: Backpressure,
    /// Queued output bytes at which the policy applies: a subscriber
    /// with less queued takes the next batch, whatever its size.
    pub(crate) bound: usize,
    /// The subscriber negotiated permessage-deflate without server context
    /// takeover, with this window: it gets the turn's messages compressed,
    /// once per shard for all such subscribers.
    pub(crate) compress: Option<u8>,
}

/// Bytes a shard's inbox may hold by default (`--inbox-bytes`) before
/// publishes to it are refused and counted: a stalled shard must not grow
/// memory without bound. A shard that keeps up drains its inbox every loop
/// turn and holds next to nothing; 64 MiB rides out a turn that stalls on
/// a burst of the largest messages (four of 16 MiB).
pub const DEFAULT_INBOX_BYTES: usize = 64 << 20;

/// How much of a hub topic's stream is kept for subscribers that resume
/// (`history-size`, `history-ttl-ms`) and whether it is a latest-value
/// topic (`latest`): a topic keeps nothing by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRule {
    /// Most messages kept per topic (0: no history).
    pub size: usize,
    /// Age past which a kept message is dropped (`None`: kept until the
    /// count or the byte budget pushes it out).
    pub ttl: Option<std::time::Duration>,
    /// A latest-value topic: it keeps at least its last message, however
    /// old (only the byte budget evicts it), and a subscription without
    /// `since` gets that message right after its `subscribed` answer.
    pub latest: bool,
}

impl HistoryRule {
    /// Whether a topic under this rule keeps anything.
    pub fn keeps(&self) -> bool {
        self.most() > 0
    }

    /// Most messages a topic under this rule keeps.
    pub fn most(&self) -> usize {
        self.size.max(usize::from(self.latest))
    }
}

/// Bytes every topic's history may hold together by default
/// (`--history-bytes`); past it the oldest messages are evicted (counted).
pub const DEFAULT_HISTORY_BYTES: usize = 64 << 20;

/// Messages one resuming subscription may be replayed by default
/// (`--max-recovery`); a larger gap answers `recovered: false`.
pub const DEFAULT_MAX_RECOVERY: usize = 1000;

const NAMES: [&str; 32] = [
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AVGO", "BRK", "JPM", "LLY", "V",
    "UNH", "XOM", "MA", "JNJ", "PG", "HD", "COST", "MRK", "ABBV", "CVX", "KO", "PEP", "ADBE",
    "WMT", "BAC", "CRM", "NFLX", "AMD", "TMO", "ORCL",
];

/// The first `n` symbol names: well-known tickers, then `S0032`, ...
/// (`--symbols N` of the ticker feed).
pub fn symbols(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            NAMES
                .get(i)
                .map_or_else(|| format!("S{i:04}"), |s| (*s).to_owned())
        })
        .collect()
}

/// Whether `name` is one of [`symbols`]`(n)`, without making the list.
pub(crate) fn is_symbol(name: &str, n: usize) -> bool {
    if let Some(i) = NAMES.iter().position(|s| *s == name) {
        return i < n;
    }
    name.strip_prefix('S')
        .filter(|d| d.len() >= 4 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<usize>().ok())
        .is_some_and(|i| i >= NAMES.len() && i < n && format!("S{i:04}") == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_is_known_without_its_list() {
        for n in [0, 1, 8, 32, 40] {
            let list = symbols(n);
            for name in list.iter().map(String::as_str).chain([
                "AAPL", "ORCL", "S0032", "S0039", "S0040", "S32", "S00032", "x",
            ]) {
                assert_eq!(
                    is_symbol(name, n),
                    list.iter().any(|s| s == name),
                    "{name} {n}"
                );
            }
        }
    }

    #[test]
    fn symbol_names_are_unique() {
        let s = symbols(40);
        assert_eq!(s[0], "AAPL");
        assert_eq!(s[39], "S0039");
        let unique: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!(unique.len(), 40);
    }
}
