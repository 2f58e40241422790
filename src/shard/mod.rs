//! A shard: one thread's connections and everything that happens to them,
//! whatever driver moves their bytes. [`Shard`] owns the slab of
//! connections, the timer wheel, the shard's pub/sub and its counters, and
//! runs the loop turn; a [`Driver`] (in `src/driver/`) waits for events and
//! does the reading and writing, behind the seam in [`io`].

mod control;
pub(crate) mod counters;
pub(crate) mod deadlines;
pub(crate) mod engineio;
pub(crate) mod events;
pub(crate) mod fanout;
pub(crate) mod gate;
pub(crate) mod handler;
pub(crate) mod io;
mod lifecycle;
pub(crate) mod lifetime;
pub(crate) mod session;
mod shared;
pub(crate) mod spill;
pub(crate) mod throttle;
pub(crate) mod timer;

use slab::Slab;

use crate::buf::pool::BufPool;
use crate::metrics::ShardStats;
use crate::pubsub::hub::InboxReceiver;
use counters::Counters;
pub(crate) use deadlines::{Clock, Deadlines, Expired, MESSAGE_TIMEOUT};
use fanout::PubSub;
pub(crate) use io::{Driver, Transport, MAX_PENDING_OUT};
use session::Session;
pub(crate) use shared::Shared;

/// What a shard is built from, on its own thread.
pub(crate) struct ShardParts {
    /// Its listeners: plain ones first, then PROXY ones.
    pub(crate) listeners: Vec<std::net::TcpListener>,
    /// The read end of its shutdown signal pipe.
    pub(crate) signal: std::os::unix::net::UnixStream,
    pub(crate) shared: Shared,
    pub(crate) shard_id: usize,
    pub(crate) inbox: InboxReceiver,
}

/// A slab slot: a connection's session and its driver's state for it.
#[derive(Debug)]
pub(crate) struct Conn<T> {
    pub(crate) session: Session,
    pub(crate) io: T,
}

impl<T: Transport> Conn<T> {
    /// Output owed to the peer and not yet written.
    pub(crate) fn backlog(&self) -> usize {
        self.io.backlog(&self.session)
    }
}

/// One shard's state. Drivers reach its fields directly (the slab, the
/// pool, the counters) while they move bytes; what happens to a connection
/// is decided by its methods.
pub(crate) struct Shard<T> {
    pub(crate) conns: Slab<Conn<T>>,
    pub(crate) pubsub: PubSub,
    pub(crate) engineio: engineio::EngineIo,
    pub(crate) shared: Shared,
    pub(crate) counters: Counters,
    pub(crate) pool: BufPool,
    pub(crate) clock: Clock,
    deadlines: Deadlines,
    shard_id: usize,
    next_generation: u32,
    /// When shutdown began, the tick by which every connection is dropped.
    draining_until: Option<u64>,
    /// This shard has told the others it has no connections left.
    drain_reported: bool,
}

impl<T: Transport> Shard<T> {
    /// A shard with no connections yet; its driver holds the listeners.
    pub(crate) fn new(shared: Shared, shard_id: usize, inbox: InboxReceiver) -> Self {
        Self {
            conns: Slab::new(),
            pubsub: PubSub::new(inbox, &shared.config.routes),
            engineio: engineio::EngineIo::new(shard_id, &shared.config),
            deadlines: Deadlines::new(&shared.config, &shared.apps, shard_id),
            shared,
            counters: Counters::default(),
            pool: BufPool::default(),
            clock: Clock::new(),
            shard_id,
            next_generation: 0,
            draining_until: None,
            drain_reported: false,
        }
    }

    /// Runs the loop until shutdown completes.
    pub(crate) fn run<D: Driver<Io = T>>(mut self, mut driver: D) -> std::io::Result<()> {
        let result = self.turns(&mut driver);
        driver.finish();
        result
    }

    /// One loop turn after another, in this order: wait, read the clock,
    /// deliver what already waited in the inbox, take the driver's events,
    /// fan out what was published meanwhile, carry out the server API's
    /// orders, act on passed deadlines, let
    /// the driver start its writes, publish the counters.
    fn turns<D: Driver<Io = T>>(&mut self, driver: &mut D) -> std::io::Result<()> {
        loop {
            let ticking = !self.deadlines.is_empty()
                || self.draining_until.is_some()
                || self.engineio.busy()
                || driver.ticking();
            driver.wait(ticking.then(Clock::tick_interval))?;
            self.clock.update();
            // Messages published before this turn go out before anything
            // read in it is acted on: a subscription made now must not
            // receive what was published before its request arrived (a
            // shard that was descheduled finds both waiting at once).
            self.pubsub.note_waiting();
            self.fan_out(driver);
            driver.dispatch(self);
            self.fan_out(driver);
            self.control_turn(driver);
            self.engineio_turn(driver);
            self.expire_deadlines(driver);
            driver.end_turn(self);
            self.publish_stats(driver);
            if self.drain_over() {
                self.release_handlers();
                return Ok(());
            }
        }
    }

    /// Copies this turn's counters and gauges into the shard's slot.
    fn publish_stats<D: Driver<Io = T>>(&self, driver: &D) {
        let stats = &self.shared.metrics.shards[self.shard_id];
        self.counters.publish(stats, self.conns.len());
        ShardStats::set(&stats.out_buffers_lent, self.pool.lent() as u64);
        let (handshaking, parked) = self.deadlines.gate.occupancy();
        ShardStats::set(&stats.handshakes_in_flight, handshaking as u64);
        ShardStats::set(&stats.tarpit_parked, parked as u64);
        self.pubsub.publish_stats(stats);
        driver.publish_stats(stats);
    }

    /// The current tick, for a driver's throttled warnings.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now_tick
    }

    /// Whether shutdown has begun.
    pub(crate) fn draining(&self) -> bool {
        self.draining_until.is_some()
    }

    /// The hub signalled this shard's inbox: pump it this turn.
    pub(crate) fn inbox_woken(&mut self) {
        self.pubsub.woken = true;
    }
}
