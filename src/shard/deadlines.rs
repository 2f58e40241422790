//! When each connection must next be acted on: the shard's clock, the
//! rules that move a connection's deadline as things happen to it, and what
//! a passed deadline means.

use std::time::{Duration, Instant};

use slab::Slab;

use super::counters::Counters;
use super::gate::Gate;
use super::handler::AppRoutes;
use super::io::Transport;
use super::lifetime::Lifetimes;
use super::session::{self, Next, Phase, Session};
use super::timer::{Entry, TimerWheel, TICK_MS};
use super::Conn;
use crate::admission::stats::AdmissionStats;
use crate::admission::Admission;
use crate::config::Config;
use crate::protocol::{CloseCode, State};

/// A shard's clock in wheel ticks, read once per loop turn.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    pub(crate) now_tick: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            now_tick: 0,
        }
    }

    pub(crate) fn update(&mut self) {
        self.now_tick = self.epoch.elapsed().as_millis() as u64 / TICK_MS;
    }

    pub(crate) fn ticks(d: Duration) -> u64 {
        (d.as_millis() as u64).div_ceil(TICK_MS)
    }

    /// How long a loop may sleep before the wheel needs turning.
    pub(crate) fn tick_interval() -> Duration {
        Duration::from_millis(TICK_MS)
    }
}

/// Whether a draining shard may stop. A shard that has closed its own
/// connections keeps its listener answering (health checks see 503) until
/// every shard has, so the set of listeners stays whole through the drain;
/// `until` bounds it all. `reported` is the shard's own flag, set once it
/// has told the others it is empty.
pub(crate) fn drain_over(
    metrics: &crate::metrics::Metrics,
    empty: bool,
    reported: &mut bool,
    now: u64,
    until: u64,
) -> bool {
    if empty && !*reported {
        *reported = true;
        metrics.shard_drained();
    }
    (empty && *reported && metrics.all_drained()) || now >= until
}

/// What became of a timer entry that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The connection's deadline has passed: act on it.
    Fired,
    /// The entry was stale or early (re-armed); nothing to do.
    Ignored,
}

/// What a passed deadline (or a full waiting room) means for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// An open connection went idle: close it with 1001.
    CloseIdle,
    /// The signed token an open connection came with expired and was not
    /// refreshed: close it with [`TOKEN_EXPIRED`].
    Token,
    /// It has been open for `--max-lifetime-ms` (and its jitter): close it
    /// with 1001 (an event stream just ends).
    Lifetime,
    /// A hub connection that came without a token did not send one in
    /// time as its first message: close it with [`TOKEN_REQUIRED`].
    NoToken,
    /// A message took longer than `message_timeout` to arrive: close with
    /// [`MESSAGE_TIMEOUT`].
    MessageTimeout,
    /// Its turn in the shutdown drain came: close it with 1001 (an event
    /// stream just ends).
    Drain,
    /// An event stream's heartbeat is due.
    Heartbeat,
    /// A parked client's delay passed, or the tarpit is full: answer it.
    Answer,
    /// A peer that never finished closing, a handshake that took too long,
    /// or the oldest handshake over the in-flight bound: drop the transport.
    Drop,
}

/// The close a connection whose token expired gets.
pub(crate) const TOKEN_EXPIRED: (CloseCode, &str) = (CloseCode(4001), "token expired");

/// The close a connection that never sent its token (`auth`) gets.
pub(crate) const TOKEN_REQUIRED: (CloseCode, &str) = (CloseCode(4001), "token required");

/// Seconds since the Unix epoch, the clock tokens are timed by.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long from now until a token whose `exp` is given has expired: a
/// second past `exp`, so that the wall clock the token is timed by has
/// passed it too when a timer set for it fires.
pub(crate) fn until_expired(exp: u64) -> Duration {
    Duration::from_secs(exp.saturating_sub(unix_now()) + 1)
}

/// The tick at which the token of `session` has expired (`u64::MAX`: it
/// does not, there is none, or its `exp` is more than a day away, when a
/// later activity or deadline arms it).
fn token_due(session: &Session, now: u64) -> u64 {
    const HORIZON: Duration = Duration::from_secs(86_400 + 1);
    let Some(exp) = session.spill.as_deref().and_then(|s| s.grant.as_ref()?.exp) else {
        return u64::MAX;
    };
    match until_expired(exp) {
        wait if wait > HORIZON => u64::MAX,
        wait => now + Clock::ticks(wait),
    }
}

/// Whether the token of `session` has expired.
fn token_expired(session: &Session) -> bool {
    session
        .spill
        .as_deref()
        .and_then(|s| s.grant.as_ref()?.exp)
        .is_some_and(|exp| unix_now() >= exp)
}

/// Whether `session` still waits for its token as its first message.
fn token_awaited(session: &Session) -> bool {
    session
        .spill
        .as_deref()
        .and_then(|s| s.grant.as_deref())
        .is_some_and(crate::auth::Grant::is_awaiting)
}

/// The close a message that did not arrive in time gets.
pub(crate) const MESSAGE_TIMEOUT: (CloseCode, &str) = (CloseCode::POLICY, "message timeout");

/// The tick by which the message `session` is receiving must be complete
/// when messages get `ticks` (0: no deadline), or `u64::MAX` when none is
/// in progress. Counted from the message's start, however much arrives
/// meanwhile.
fn message_due(session: &mut Session, now: u64, ticks: u64) -> u64 {
    let Phase::Open(ws) = &mut session.phase else {
        return u64::MAX;
    };
    match ws.message_stamp(now) {
        Some(_) if ticks == 0 => u64::MAX,
        // The stamp keeps the low 32 bits of its tick: the age, signed,
        // is right for 248 days either way, which covers a stamp taken at
        // a tick whose low bits were zero (it reads one tick later, since
        // a stamp is never zero).
        Some(stamp) => {
            let age = (now as u32).wrapping_sub(stamp) as i32;
            now.saturating_add_signed(-i64::from(age))
                .saturating_add(ticks)
        }
        None => u64::MAX,
    }
}

/// Deadlines for every connection of a shard, and the bounded sets
/// (pending handshakes, tarpit) whose members leave by deadline.
#[derive(Debug)]
pub(crate) struct Deadlines {
    wheel: TimerWheel,
    due: Vec<Entry>,
    pub(crate) gate: Gate,
    /// Shutdown began: activity no longer postpones a connection's close.
    draining: bool,
    /// `message_timeout` in ticks (0: none).
    message_ticks: u64,
    /// The handlers' routes, whose limits set their idle timeouts.
    apps: AppRoutes,
    /// When open connections have lived out `--max-lifetime-ms`.
    lifetimes: Lifetimes,
    /// Scratch for the lifetimes that ended in a turn.
    lived: Vec<(usize, u32)>,
}

impl Deadlines {
    pub(crate) fn new(config: &Config, apps: &AppRoutes, shard_id: usize) -> Self {
        let admission = &config.admission;
        Self {
            wheel: TimerWheel::new(0),
            due: Vec::new(),
            gate: Gate::new(
                admission.max_handshakes_in_flight,
                admission.tarpit_slots,
                admission.ipv6_prefix,
                shard_id,
            ),
            draining: false,
            message_ticks: Clock::ticks(config.message_timeout),
            apps: apps.clone(),
            lifetimes: Lifetimes::new(Clock::ticks(config.max_lifetime), shard_id),
            lived: Vec::new(),
        }
    }

    /// A connection was just accepted: arms its handshake deadline and
    /// counts it among the shard's pending handshakes.
    pub(crate) fn accepted(
        &mut self,
        key: usize,
        session: &mut Session,
        now: u64,
        config: &Config,
    ) {
        self.gate.settle(key, session, false);
        self.set(key, session, now + Clock::ticks(config.handshake_timeout));
    }

    /// The slot is being freed: the session leaves every set and gives its
    /// admission count back, exactly once.
    pub(crate) fn released(&mut self, key: usize, session: &mut Session, admission: &Admission) {
        self.gate.settle(key, session, true);
        if let Some(ticket) = session.ticket.take() {
            admission.registry.release(ticket);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.wheel.is_empty()
    }

    /// Sets a connection's deadline; arms the wheel only when the deadline
    /// moves earlier than anything armed, so extensions cost nothing.
    pub(crate) fn set(&mut self, key: usize, session: &mut Session, tick: u64) {
        session.deadline_tick = tick;
        if tick < session.armed_tick {
            // The wheel may move a past tick forward; remember where the
            // entry really is, or `check` would not recognise it.
            session.armed_tick = self.wheel.arm(key, session.generation, tick);
        }
    }

    /// Moves the deadline to match what just happened to a connection.
    pub(crate) fn after(
        &mut self,
        key: usize,
        session: &mut Session,
        next: Next,
        now: u64,
        config: &Config,
    ) {
        if next != Next::Continue {
            self.gate.settle(key, session, false);
        }
        if next == Next::Upgraded && !self.draining {
            self.lifetimes.opened(key, session.generation, now);
        }
        let idle = match session.route {
            session::Route::App(i) => self.apps.get(i).limits.idle_timeout,
            // The session's heartbeat finds a dead peer.
            session::Route::EngineIo => Duration::ZERO,
            _ => config
                .routes
                .idle_timeout(session.spec, config.idle_timeout),
        };
        let message = message_due(session, now, self.message_ticks);
        let tick = match next {
            // While draining, the drain deadline stands, and a handshake
            // that completes now is closed at once.
            Next::Continue if self.draining => return,
            Next::Upgraded if self.draining => now + 1,
            // A stream's client says nothing: its deadline is the next
            // heartbeat.
            Next::Upgraded if session.is_streaming() => self.heartbeat_due(session, now, config),
            // Activity on an open connection pushes the idle deadline out,
            // never past the end of the message in progress; while
            // closing, the peer cannot buy time by talking.
            Next::Continue => match &session.phase {
                Phase::Open(ws) if ws.state() == State::Open && !idle.is_zero() => {
                    message.min(now + Clock::ticks(idle))
                }
                Phase::Open(ws) if ws.state() == State::Open => message,
                _ => return,
            },
            Next::Upgraded if idle.is_zero() => message,
            Next::Upgraded => message.min(now + Clock::ticks(idle)),
            Next::AwaitClose | Next::Linger => now + Clock::ticks(config.close_timeout),
            Next::Tarpit => {
                let delay = self.gate.jitter.around(config.admission.tarpit);
                now + Clock::ticks(delay)
            }
            Next::EngineIo => {
                let eio = config.routes.engineio(session.spec);
                let heartbeat = Duration::from_millis(
                    u64::from(eio.ping_interval_ms) + u64::from(eio.ping_timeout_ms),
                );
                now + Clock::ticks(heartbeat + config.close_timeout)
            }
            Next::KeepAlive => now + Clock::ticks(config.handshake_timeout),
        };
        let tick = match &session.phase {
            Phase::Open(ws) if ws.state() == State::Open => tick.min(token_due(session, now)),
            _ => tick,
        };
        self.set(key, session, tick);
    }

    /// The peer shut its side (a FIN, or TLS close_notify): an open
    /// connection's end counts as 1006, whatever is owed is still delivered,
    /// and the close timeout bounds how long that may take, so a peer that
    /// also stops reading cannot hold the slot.
    pub(crate) fn peer_finished(
        &mut self,
        key: usize,
        session: &mut Session,
        counters: &mut Counters,
        now: u64,
        config: &Config,
    ) {
        counters.dropped(session);
        let next = session.peer_finished();
        self.after(key, session, next, now, config);
    }

    /// Answers a parked client now, with a jittered `Retry-After`.
    pub(crate) fn answer(&mut self, key: usize, session: &mut Session, now: u64, config: &Config) {
        let base = match session.phase {
            Phase::Tarpit(r) if r.wait_secs > 0 => u64::from(r.wait_secs),
            _ => config.admission.retry_after.as_secs(),
        };
        let retry_after = self.gate.jitter.retry_after(base);
        let next = session.answer_refusal(retry_after);
        self.after(key, session, next, now, config);
    }

    /// Shutdown: from now on activity does not postpone closes. Returns the
    /// tick by which the drain must be over.
    pub(crate) fn begin_drain(&mut self, now: u64, config: &Config) -> u64 {
        self.draining = true;
        now + Clock::ticks(config.drain) + Clock::ticks(config.close_timeout) + 1
    }

    /// Gives an open connection its turn to be closed, at a random point of
    /// the drain window so that clients do not all reconnect at once.
    /// Returns false when the connection should be closed now.
    pub(crate) fn schedule_drain(
        &mut self,
        key: usize,
        session: &mut Session,
        now: u64,
        config: &Config,
    ) -> bool {
        let open = match &session.phase {
            Phase::Open(ws) => ws.state() == State::Open,
            Phase::Events(_) => true,
            // A request the signal caught half-read is still answered (a
            // health check hears 503, an upgrade 503 with Retry-After)
            // within the handshake and tarpit deadlines it already has;
            // cutting it would look like a crash to the client.
            // An idle kept-alive Engine.IO connection has no request to
            // answer: it goes now, so the drain ends without waiting on it.
            Phase::Handshake(_)
                if session.route == session::Route::EngineIo && session.carried().is_empty() =>
            {
                false
            }
            Phase::Handshake(_) | Phase::Tarpit(_) => return true,
            // Answered as their sessions end, which the drain starts.
            Phase::EngineIo(_) => return true,
            Phase::Lingering => false,
        };
        if !open {
            return false;
        }
        let window = Clock::ticks(config.drain);
        let tick = now + self.gate.jitter.below(window + 1);
        self.set(key, session, tick);
        true
    }

    /// Connections whose deadline has passed by `now`, or that are over a
    /// waiting room's bound, with what to do about each.
    pub(crate) fn expire<T: Transport>(
        &mut self,
        now: u64,
        conns: &mut Slab<Conn<T>>,
        stats: &AdmissionStats,
    ) -> Vec<(usize, Expired)> {
        let mut fired = Vec::new();
        let overflow = self.gate.overflow(conns);
        fired.extend(overflow.tarpit.into_iter().map(|key| {
            AdmissionStats::bump(&stats.tarpit_evictions);
            (key, Expired::Answer)
        }));
        fired.extend(overflow.handshakes.into_iter().map(|key| {
            AdmissionStats::bump(&stats.handshake_evictions);
            (key, Expired::Drop)
        }));
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(now, &mut due);
        for entry in due.drain(..) {
            let Some(s) = conns.get_mut(entry.key).map(|c| &mut c.session) else {
                continue;
            };
            if self.check(entry, s, now) == Due::Fired {
                let message_overdue = message_due(s, now, self.message_ticks) <= now;
                let what = match &s.phase {
                    Phase::Open(ws) if ws.state() == State::Open => {
                        if self.draining {
                            Expired::Drain
                        } else if token_expired(s) {
                            if token_awaited(s) {
                                Expired::NoToken
                            } else {
                                Expired::Token
                            }
                        } else if message_overdue {
                            Expired::MessageTimeout
                        } else {
                            Expired::CloseIdle
                        }
                    }
                    Phase::Events(_) if self.draining => Expired::Drain,
                    Phase::Events(_) if token_expired(s) => Expired::Token,
                    Phase::Events(_) => Expired::Heartbeat,
                    Phase::Tarpit(_) => Expired::Answer,
                    Phase::Handshake(_) => {
                        AdmissionStats::bump(&stats.handshake_timeouts);
                        Expired::Drop
                    }
                    _ => Expired::Drop,
                };
                fired.push((entry.key, what));
            }
        }
        self.due = due;
        if !self.draining {
            self.lifetimes.compact(conns.len(), |k, g| {
                conns.get(k).is_some_and(|c| c.session.generation == g)
            });
            let mut lived = std::mem::take(&mut self.lived);
            self.lifetimes.due(now, &mut lived);
            for (key, generation) in lived.drain(..) {
                let open = conns.get(key).is_some_and(|c| {
                    let s = &c.session;
                    s.generation == generation && (s.is_open() || s.is_streaming())
                });
                if open {
                    fired.push((key, Expired::Lifetime));
                }
            }
            self.lived = lived;
        }
        fired
    }

    /// The tick of an event stream's next heartbeat, or of its token's
    /// expiry if that comes first.
    pub(crate) fn heartbeat_due(&self, session: &Session, now: u64, config: &Config) -> u64 {
        let heartbeat = now + Clock::ticks(config.routes.sse_heartbeat).max(1);
        heartbeat.min(token_due(session, now))
    }

    /// Starts a server-side close and gives the peer `close_timeout` to answer.
    pub(crate) fn close(
        &mut self,
        key: usize,
        session: &mut Session,
        code: CloseCode,
        reason: &str,
        now: u64,
        config: &Config,
    ) {
        let next = session.close(code, reason);
        self.after(key, session, next, now, config);
    }

    /// Decides what a due entry means for the session now in its slot.
    fn check(&mut self, entry: Entry, session: &mut Session, now: u64) -> Due {
        if session.generation != entry.generation || session.armed_tick != entry.tick {
            return Due::Ignored;
        }
        session.armed_tick = u64::MAX;
        if session.deadline_tick > now {
            let tick = session.deadline_tick;
            self.set(entry.key, session, tick);
            return Due::Ignored;
        }
        Due::Fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerConn;

    /// A session in the middle of a text message.
    fn mid_message() -> Session {
        let mut session = Session::new(0, false, None);
        let mut ws = ServerConn::new(1024);
        // Text without FIN, masked with a zero key: "hi".
        let mut wire = [0x01, 0x82, 0, 0, 0, 0, b'h', b'i'];
        ws.receive(&mut wire, &mut Vec::new(), None).unwrap();
        session.phase = Phase::Open(ws);
        session
    }

    #[test]
    fn a_message_deadline_counts_from_its_start_whatever_the_clock_reads() {
        for start in [7, 1 << 32, (1 << 33) - 3] {
            let mut session = mid_message();
            let due = message_due(&mut session, start, 100);
            assert!((start + 100..=start + 101).contains(&due), "{start}: {due}");
            for later in [1, 50, 99] {
                assert_eq!(
                    message_due(&mut session, start + later, 100),
                    due,
                    "{start}"
                );
            }
            assert_eq!(message_due(&mut session, start + 5, 0), u64::MAX);
        }
        let mut idle = Session::new(0, false, None);
        idle.phase = Phase::Open(ServerConn::new(1024));
        assert_eq!(message_due(&mut idle, 5, 100), u64::MAX);
    }
}
