//! What every shard has whatever its driver: connection sessions, the timer
//! wheel and the rules that set deadlines, and the code that starts shards.
//! The event loops themselves live in `crate::driver`.

pub(crate) mod conn;
pub(crate) mod spawn;
pub(crate) mod timer;

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::protocol::State;
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

    /// Entries due by `now`, to be checked one by one with [`Self::check`].
    pub(crate) fn take_due(&mut self, now: u64) -> Vec<Entry> {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(now, &mut due);
        due
    }

    /// Gives the buffer from [`Self::take_due`] back for reuse.
    pub(crate) fn recycle(&mut self, mut due: Vec<Entry>) {
        due.clear();
        self.due = due;
    }

    /// Decides what a due entry means for the session now in its slot.
    pub(crate) fn check(&mut self, entry: Entry, session: Option<&mut Session>, now: u64) -> Due {
        let Some(session) = session else {
            return Due::Ignored;
        };
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
