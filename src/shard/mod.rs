//! What every shard has whatever its driver: connection sessions, the timer
//! wheel and the rules that set deadlines, and the code that starts shards.
//! The event loops themselves live in `crate::driver`.

pub(crate) mod conn;
pub(crate) mod spawn;
pub(crate) mod timer;

use std::time::{Duration, Instant};

use slab::Slab;

use crate::config::Config;
use crate::protocol::{CloseCode, State};
use conn::{Next, Phase, Session};
use timer::{Entry, TimerWheel, TICK_MS};

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

/// What became of a timer entry that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The connection's deadline has passed: act on it.
    Fired,
    /// The entry was stale or early (re-armed); nothing to do.
    Ignored,
}

/// What a passed deadline means for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// An open connection went idle: close it with 1001.
    CloseIdle,
    /// A handshake that took too long, or a peer that never finished
    /// closing: drop the transport.
    Drop,
}

/// Deadlines for every connection of a shard.
#[derive(Debug)]
pub(crate) struct Deadlines {
    wheel: TimerWheel,
    due: Vec<Entry>,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        Self {
            wheel: TimerWheel::new(0),
            due: Vec::new(),
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
            session.armed_tick = tick;
            self.wheel.arm(key, session.generation, tick);
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
        let idle = config.idle_timeout;
        let tick = match next {
            // Activity on an open connection pushes the idle deadline out;
            // while closing, the peer cannot buy time by talking.
            Next::Continue => match &session.phase {
                Phase::Open(ws) if ws.state() == State::Open && !idle.is_zero() => {
                    now + Clock::ticks(idle)
                }
                _ => return,
            },
            Next::Upgraded if idle.is_zero() => u64::MAX,
            Next::Upgraded => now + Clock::ticks(idle),
            Next::AwaitClose | Next::Linger => now + Clock::ticks(config.close_timeout),
        };
        self.set(key, session, tick);
    }

    /// Connections whose deadline has passed by `now`, with what to do
    /// about each; `session` finds a connection's session in its slot.
    pub(crate) fn expire<C>(
        &mut self,
        now: u64,
        conns: &mut Slab<C>,
        session: impl Fn(&mut C) -> &mut Session,
    ) -> Vec<(usize, Expired)> {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(now, &mut due);
        let mut fired = Vec::new();
        for entry in due.drain(..) {
            let Some(s) = conns.get_mut(entry.key).map(&session) else {
                continue;
            };
            if self.check(entry, s, now) == Due::Fired {
                let open = matches!(&s.phase, Phase::Open(ws) if ws.state() == State::Open);
                fired.push((
                    entry.key,
                    if open {
                        Expired::CloseIdle
                    } else {
                        Expired::Drop
                    },
                ));
            }
        }
        self.due = due;
        fired
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
