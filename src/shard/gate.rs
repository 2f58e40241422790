//! A shard's bounded waiting rooms: handshakes in flight and the tarpit of
//! refused clients. Each is an arrival-ordered set with a bound; when a set
//! is over its bound the oldest member is let go, so neither a flood of
//! half-open handshakes nor a reconnect storm can hold every descriptor.

use slab::Slab;

use super::conn::{Phase, Queued, Session};
use super::Slot;
use crate::admission::age_queue::{AgeQueue, Member};
use crate::admission::jitter::Jitter;

/// Members over a bound, to be let go by the loop.
#[derive(Debug, Default)]
pub(crate) struct Overflow {
    /// Oldest pending handshakes: dropped without an answer.
    pub(crate) handshakes: Vec<usize>,
    /// Oldest parked clients: answered now instead of later.
    pub(crate) tarpit: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Gate {
    handshakes: AgeQueue,
    tarpit: AgeQueue,
    max_handshakes: usize,
    tarpit_slots: usize,
    pub(crate) jitter: Jitter,
}

impl Gate {
    pub(crate) fn new(max_handshakes: usize, tarpit_slots: usize, shard_id: usize) -> Self {
        Self {
            handshakes: AgeQueue::default(),
            tarpit: AgeQueue::default(),
            max_handshakes: max_handshakes.max(1),
            tarpit_slots: tarpit_slots.max(1),
            jitter: Jitter::new(shard_id as u64),
        }
    }

    /// Moves a session between sets to match its phase: call after
    /// anything that may change the phase, and with `gone` when its slot is
    /// freed. A session enters the handshake set on its first call and the
    /// tarpit when it is refused.
    pub(crate) fn settle(&mut self, key: usize, session: &mut Session, gone: bool) {
        let now_in = if gone {
            Queued::Nowhere
        } else {
            match session.phase {
                Phase::Handshake(_) => Queued::Handshake,
                Phase::Tarpit(_) => Queued::Tarpit,
                _ => Queued::Nowhere,
            }
        };
        if session.queued == now_in {
            return;
        }
        match session.queued {
            Queued::Handshake => self.handshakes.leave(),
            Queued::Tarpit => self.tarpit.leave(),
            Queued::Nowhere => {}
        }
        let member = (key, session.generation);
        match now_in {
            Queued::Handshake => self.handshakes.push(member),
            Queued::Tarpit => self.tarpit.push(member),
            Queued::Nowhere => {}
        }
        session.queued = now_in;
    }

    /// The members over each bound, oldest first. They stay counted until
    /// the loop acts on them and settles them.
    pub(crate) fn overflow<C: Slot>(&mut self, conns: &Slab<C>) -> Overflow {
        let mut out = Overflow::default();
        self.handshakes
            .compact(|m| is_in(conns, m, Queued::Handshake));
        self.tarpit.compact(|m| is_in(conns, m, Queued::Tarpit));
        let excess = self.handshakes.len().saturating_sub(self.max_handshakes);
        for _ in 0..excess {
            match self
                .handshakes
                .oldest(|m| is_in(conns, m, Queued::Handshake))
            {
                Some((key, _)) => out.handshakes.push(key),
                None => break,
            }
        }
        let excess = self.tarpit.len().saturating_sub(self.tarpit_slots);
        for _ in 0..excess {
            match self.tarpit.oldest(|m| is_in(conns, m, Queued::Tarpit)) {
                Some((key, _)) => out.tarpit.push(key),
                None => break,
            }
        }
        out
    }

    /// Handshakes in flight, clients parked.
    pub(crate) fn occupancy(&self) -> (usize, usize) {
        (self.handshakes.len(), self.tarpit.len())
    }
}

fn is_in<C: Slot>(conns: &Slab<C>, (key, generation): Member, set: Queued) -> bool {
    conns
        .get(key)
        .map(Slot::session)
        .is_some_and(|s| s.generation == generation && s.queued == set)
}
