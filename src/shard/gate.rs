//! A shard's bounded waiting rooms: handshakes in flight and the tarpit of
//! refused clients. Each is an arrival-ordered set with a bound; when a set
//! is over its bound the oldest member is let go, so neither a flood of
//! half-open handshakes nor a reconnect storm can hold every descriptor.
//! Pending handshakes are let go per client first: the oldest of the client
//! holding the most goes, so one address's flood only pushes out its own.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use slab::Slab;

use super::session::{Phase, Queued, Session};
use super::{Conn, Transport};
use crate::admission::age_queue::{AgeQueue, Member};
use crate::admission::client::ClientKey;
use crate::admission::fair_queue::FairQueue;
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
    handshakes: FairQueue,
    tarpit: AgeQueue,
    max_handshakes: usize,
    tarpit_slots: usize,
    /// How pending handshakes are grouped into clients (`--ipv6-prefix`).
    ipv6_prefix: u8,
    pub(crate) jitter: Jitter,
}

impl Gate {
    pub(crate) fn new(
        max_handshakes: usize,
        tarpit_slots: usize,
        ipv6_prefix: u8,
        shard_id: usize,
    ) -> Self {
        Self {
            handshakes: FairQueue::default(),
            tarpit: AgeQueue::default(),
            max_handshakes: max_handshakes.max(1),
            tarpit_slots: tarpit_slots.max(1),
            ipv6_prefix,
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
            Queued::Handshake => self.handshakes.leave((key, session.generation)),
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

    /// The members over each bound: for handshakes the oldest of the
    /// client holding the most, for the tarpit the oldest. They stay
    /// counted until the loop acts on them and settles them.
    pub(crate) fn overflow<T: Transport>(&mut self, conns: &mut Slab<Conn<T>>) -> Overflow {
        let mut out = Overflow::default();
        self.handshakes
            .compact(|m| is_in(conns, m, Queued::Handshake));
        self.tarpit.compact(|m| is_in(conns, m, Queued::Tarpit));
        let excess = self
            .handshakes
            .waiting()
            .saturating_sub(self.max_handshakes);
        if excess > 0 {
            let prefix = self.ipv6_prefix;
            self.handshakes.sort(|m| pending_client(conns, m, prefix));
        }
        for _ in 0..excess {
            match self.handshakes.pick() {
                Some(key) => out.handshakes.push(key),
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

/// The client a pending handshake is counted under when one must be let
/// go: the peer accept reported (epoll) or a PROXY header named, else the
/// socket's peer, asked once and kept for admission (io_uring's multishot
/// accept reports none). `None` when the entry is no longer a member.
fn pending_client<T: Transport>(
    conns: &mut Slab<Conn<T>>,
    member: Member,
    ipv6_prefix: u8,
) -> Option<ClientKey> {
    if !is_in(conns, member, Queued::Handshake) {
        return None;
    }
    let slot = conns.get_mut(member.0)?;
    let ip = match slot.session.handshake_peer() {
        Some(ip) => ip,
        None => {
            let asked = socket_peer(slot.io.socket());
            if let Some(ip) = asked {
                slot.session.remember_peer(ip);
            }
            // A socket that cannot say (already reset) joins the unknowns.
            asked.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        }
    };
    Some(ClientKey::new(ip, ipv6_prefix))
}

/// A connected socket's peer address (one getpeername).
pub(crate) fn socket_peer(socket: BorrowedFd<'_>) -> Option<IpAddr> {
    socket2::SockRef::from(&socket)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.ip())
}

fn is_in<T: Transport>(conns: &Slab<Conn<T>>, (key, generation): Member, set: Queued) -> bool {
    conns
        .get(key)
        .map(|c| &c.session)
        .is_some_and(|s| s.generation == generation && s.queued == set)
}
