//! What a load run measured: counts, failures by kind, and a latency
//! histogram; merged across threads and printed as the `RESULT` line.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Every kind of failure a run counts; none is ever silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connection refused.
    Refused,
    /// Connection reset, or closed by the server without a close frame.
    Reset,
    /// Connect or upgrade took longer than the handshake timeout.
    Timeout,
    /// The upgrade answer was not 101, or not HTTP.
    BadStatus,
    /// The 101 carried a wrong Sec-WebSocket-Accept.
    BadAccept,
    /// An echo differed from what was sent.
    BadEcho,
    /// The server broke the protocol (masked frame, bad opcode, bad tick).
    Protocol,
    /// The server closed the WebSocket before the run ended.
    ServerClose,
    /// The upgrade was refused with 503 or 429 (a cap, a rate, a drain).
    Busy,
    /// The hub answered a request with `{"op":"error"}`.
    HubError,
    /// Any other socket error.
    Io,
}

impl Failure {
    const ALL: [Self; 11] = [
        Self::Refused,
        Self::Reset,
        Self::Timeout,
        Self::BadStatus,
        Self::BadAccept,
        Self::BadEcho,
        Self::Protocol,
        Self::ServerClose,
        Self::Busy,
        Self::HubError,
        Self::Io,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::BadStatus => "bad_status",
            Self::BadAccept => "bad_accept",
            Self::BadEcho => "bad_echo",
            Self::Protocol => "protocol",
            Self::ServerClose => "server_close",
            Self::Busy => "busy",
            Self::HubError => "hub_error",
            Self::Io => "io",
        }
    }
}

/// One thread's (or the merged) measurements.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Connections that completed the upgrade.
    pub(crate) opened: u64,
    /// Messages received in the measured window (echoes or ticks).
    pub(crate) messages: u64,
    /// Ticks received over the whole run, window or not (subscribe mode).
    pub(crate) received: u64,
    /// Completed handshakes in the measured window (connect mode).
    pub(crate) handshakes: u64,
    /// Ticker: sequence numbers skipped. Hub: breaks in a topic's stream
    /// (an offset jump, an epoch change, a `recovered: false`).
    pub(crate) gaps: u64,
    /// Whether this is a hub run (the hub's counts go in the result).
    hub: bool,
    /// Hub messages at or before the last offset seen of their topic.
    pub(crate) duplicates: u64,
    /// Topics resumed with `recovered: true` / `false`.
    pub(crate) recovered: u64,
    pub(crate) not_recovered: u64,
    /// Open connections that closed and were dialled again (resume).
    pub(crate) reconnects: u64,
    /// Dials that failed and were tried again (resume).
    pub(crate) retries: u64,
    /// Publishes not sent because no connection was open (publish).
    pub(crate) unsent: u64,
    /// Hub clients live when the run ended.
    pub(crate) live: u64,
    /// From a lost connection (a client-side drop: from dialling again) to
    /// the subscribe answer that recovered every topic, in µs.
    pub(crate) recovery_us: Histogram<u64>,
    /// Length of the measured window in seconds.
    pub(crate) window_secs: f64,
    failures: [u64; Failure::ALL.len()],
    /// Round trip (echo), handshake (connect) or delivery (subscribe), in µs.
    pub(crate) latency_us: Histogram<u64>,
}

impl Report {
    pub(crate) fn new(hub: bool) -> Self {
        Self {
            opened: 0,
            messages: 0,
            received: 0,
            handshakes: 0,
            gaps: 0,
            hub,
            duplicates: 0,
            recovered: 0,
            not_recovered: 0,
            reconnects: 0,
            retries: 0,
            unsent: 0,
            live: 0,
            recovery_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            window_secs: 0.0,
            failures: [0; Failure::ALL.len()],
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    pub(crate) fn fail(&mut self, kind: Failure) {
        self.failures[kind as usize] += 1;
    }

    pub(crate) fn errors(&self) -> u64 {
        self.failures.iter().sum()
    }

    pub(crate) fn record_latency(&mut self, us: u64) {
        let _ = self.latency_us.record(us.clamp(1, 60_000_000));
    }

    pub(crate) fn record_recovery(&mut self, us: u64) {
        let _ = self.recovery_us.record(us.clamp(1, 3_600_000_000));
    }

    /// Adds another thread's measurements; rates add up because every
    /// thread measures over the same wall-clock window.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.opened += other.opened;
        self.messages += other.messages;
        self.received += other.received;
        self.handshakes += other.handshakes;
        self.gaps += other.gaps;
        self.hub |= other.hub;
        self.duplicates += other.duplicates;
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.reconnects += other.reconnects;
        self.retries += other.retries;
        self.unsent += other.unsent;
        self.live += other.live;
        let _ = self.recovery_us.add(&other.recovery_us);
        self.window_secs = self.window_secs.max(other.window_secs);
        for (a, b) in self.failures.iter_mut().zip(other.failures) {
            *a += b;
        }
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// `ERRORS refused=0 reset=0 ...`
    pub(crate) fn errors_line(&self) -> String {
        let mut line = "ERRORS".to_owned();
        for kind in Failure::ALL {
            let _ = write!(line, " {}={}", kind.name(), self.failures[kind as usize]);
        }
        line
    }

    /// `dups= recovered= not_recovered= reconnects= retries= live=
    /// recovery_p50_ms= recovery_p99_ms= recovery_max_ms=` (0 when none
    /// recovered).
    fn hub_fields(&self, line: &mut String) {
        let r = &self.recovery_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = write!(
            line,
            " dups={} recovered={} not_recovered={} reconnects={} retries={} live={} \
             recovery_p50_ms={:.1} recovery_p99_ms={:.1} recovery_max_ms={:.1}",
            self.duplicates,
            self.recovered,
            self.not_recovered,
            self.reconnects,
            self.retries,
            self.live,
            ms(r.value_at_quantile(0.5)),
            ms(r.value_at_quantile(0.99)),
            ms(r.max()),
        );
    }

    fn per_second(&self, n: u64) -> u64 {
        if self.window_secs > 0.0 {
            (n as f64 / self.window_secs).round() as u64
        } else {
            0
        }
    }

    /// The machine-readable last line of a run.
    pub(crate) fn result_line(&self, mode: &str, conns: usize, size: usize) -> String {
        let h = &self.latency_us;
        let mut line = format!(
            "RESULT mode={mode} conns={conns} open={} size={size}",
            self.opened
        );
        let _ = write!(line, " msgs_per_s={}", self.per_second(self.messages));
        match mode {
            "connect" => {
                let _ = write!(
                    line,
                    " handshakes={} handshakes_per_s={}",
                    self.handshakes,
                    self.per_second(self.handshakes)
                );
            }
            "subscribe" => {
                let _ = write!(line, " msgs={} gaps={}", self.received, self.gaps);
            }
            "publish" => {
                let _ = write!(line, " msgs={} unsent={}", self.received, self.unsent);
            }
            _ => {}
        }
        if self.hub {
            self.hub_fields(&mut line);
        }
        let _ = write!(
            line,
            " p50_us={} p99_us={} p999_us={} secs={:.2} errors={}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            self.window_secs,
            self.errors()
        );
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_has_every_key() {
        let mut r = Report::new(false);
        r.opened = 3;
        r.messages = 300;
        r.window_secs = 2.0;
        r.record_latency(100);
        r.fail(Failure::BadEcho);
        let line = r.result_line("echo", 3, 16);
        assert!(
            line.starts_with("RESULT mode=echo conns=3 open=3 size=16 msgs_per_s=150 p50_us=100"),
            "{line}"
        );
        assert!(line.ends_with(" errors=1"), "{line}");
        assert!(r.errors_line().contains("bad_echo=1"));
    }

    #[test]
    fn hub_runs_report_resumption() {
        let mut r = Report::new(true);
        r.received = 10;
        r.duplicates = 1;
        r.recovered = 4;
        r.record_recovery(2_500);
        let mut other = Report::new(true);
        other.record_recovery(9_000);
        other.reconnects = 4;
        r.merge(&other);
        let line = r.result_line("subscribe", 4, 16);
        assert!(
            line.contains(" msgs=10 gaps=0 dups=1 recovered=4 not_recovered=0 reconnects=4"),
            "{line}"
        );
        assert!(line.contains(" recovery_max_ms=9.0"), "{line}");
        assert!(r.errors_line().contains(" busy=0 hub_error=0"));
    }
}
