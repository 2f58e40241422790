//! One Engine.IO session's state machine, free of I/O: the shard tells it
//! what arrived (a poll, a POST body, a WebSocket message, a connection
//! that ended, the time) and it says what to write and when it ended.
//!
//! How the shard drives it: after **every** call, drain
//! [`Session::transmit`] until it gives `None` (a held poll's answer,
//! WebSocket messages, or the end of a failed upgrade's WebSocket), then
//! check [`Session::closed`]: once it is `Some`, end every connection of
//! the session and free it; a later request with its id is
//! [`Refusal::UnknownSid`]. Call [`Session::on_timer`] once the time
//! passes [`Session::next_deadline`].
//!
//! Behaviour follows the reference server (`engine.io`, v4) where the
//! spec is silent: a held poll is answered `6` (noop) when the client
//! closes the session or a WebSocket probe succeeds, and `1` (close) when
//! the server ends it; the heartbeat is the server's ping every
//! `pingInterval` and a pong due within `pingTimeout`; a ping from the
//! client on an open session is the wrong direction and closes it.

use std::collections::VecDeque;

use super::packet::{Data, Frame, Packet, PacketType};
use super::payload::{self, Packets, Payload, PayloadError};
use super::refusal::Refusal;
use super::request::Transport;
use super::sid::Sid;

/// A session's settings (the route's, copied into each session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Milliseconds between the server's pings. Default 25,000, as the
    /// reference.
    pub ping_interval_ms: u32,
    /// Milliseconds a ping waits for its pong before the session ends.
    /// Default 20,000, as the reference.
    pub ping_timeout_ms: u32,
    /// The longest `POST` body, in bytes, told to the client as
    /// `maxPayload`. Default 1,000,000, as the reference.
    pub max_payload: u32,
    /// The most bytes of packets queued for the client (each packet's
    /// data plus one). Past it the session ends with
    /// [`CloseReason::BufferFull`]: a client that stops polling cannot
    /// make the server hold more. Default 1 MiB, about one full answer.
    pub max_queued_bytes: u32,
    /// Milliseconds a WebSocket has to complete an upgrade before it is
    /// dropped (the session stays on polling). Default 10,000, as the
    /// reference.
    pub upgrade_timeout_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
            max_queued_bytes: 1 << 20,
            upgrade_timeout_ms: 10_000,
        }
    }
}

/// Why a session ended; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent a `close` packet.
    ClientClose,
    /// The session's connection ended: its WebSocket, or a held poll
    /// (the reference calls both a transport close or error).
    TransportClose,
    /// The client broke the transport's rules: a second concurrent `GET`
    /// or `POST`, or a ping from the client.
    TransportError,
    /// A packet or payload that does not decode.
    ParseError,
    /// A `POST` body over `maxPayload`.
    PayloadTooLarge,
    /// No pong within `pingTimeout` of a ping.
    PingTimeout,
    /// More than `max_queued_bytes` waited for the client.
    BufferFull,
    /// The server ended it (shutdown or drain).
    ServerClose,
}

impl CloseReason {
    /// A label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose => "client_close",
            Self::TransportClose => "transport_close",
            Self::TransportError => "transport_error",
            Self::ParseError => "parse_error",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PingTimeout => "ping_timeout",
            Self::BufferFull => "buffer_full",
            Self::ServerClose => "server_close",
        }
    }
}

/// Something for the shard to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Answer the held `GET`: 200, `Content-Type`
    /// [`payload::CONTENT_TYPE`], this body. The poll is no longer held.
    Poll(Vec<u8>),
    /// Write this packet ([`Packet::encode_frame`]) as one message on the
    /// session's WebSocket (the probing one during an upgrade).
    Frame(Packet<'static>),
    /// Close the WebSocket that tried to upgrade the session; the session
    /// goes on polling.
    EndProbe,
}

/// How far a WebSocket upgrading a polling session got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// The WebSocket is open; `2probe` not yet seen.
    Attached,
    /// `3probe` answered; waiting for `5`. Polls are answered at once.
    Probed,
}

/// One Engine.IO session.
#[derive(Debug)]
pub struct Session {
    sid: Sid,
    config: Config,
    /// Packets for the client, oldest first. Emptied, it gives its memory
    /// back, so an idle session holds no buffer.
    queue: VecDeque<Packet<'static>>,
    queued_bytes: u32,
    /// When the next ping is due, or (awaiting a pong) when it is late.
    heartbeat_at: u64,
    /// When an upgrade in progress is given up.
    upgrade_by: u64,
    transport: Transport,
    upgrade: Upgrade,
    closed: Option<CloseReason>,
    awaiting_pong: bool,
    get_held: bool,
    post_open: bool,
    /// `3probe` is owed to the probing WebSocket.
    probe_pong: bool,
    /// [`Transmit::EndProbe`] is owed.
    end_probe: bool,
    /// The packet that ends the held poll's answer, when one is owed
    /// (noop or close).
    poll_end: Option<PacketType>,
}

impl Session {
    /// A session opened at `now` (milliseconds on the shard's clock) on
    /// `transport`. Its `open` packet is the first thing it transmits:
    /// the handshake poll's answer, or the WebSocket's first message.
    pub fn new(sid: Sid, config: Config, transport: Transport, now: u64) -> Self {
        let mut session = Self {
            sid,
            config,
            queue: VecDeque::new(),
            queued_bytes: 0,
            heartbeat_at: now + u64::from(config.ping_interval_ms),
            upgrade_by: 0,
            transport,
            upgrade: Upgrade::None,
            closed: None,
            awaiting_pong: false,
            get_held: false,
            post_open: false,
            probe_pong: false,
            end_probe: false,
            poll_end: None,
        };
        let open = Packet::text(PacketType::Open, session.handshake());
        // Always queued, whatever the bound: the session starts with it.
        session.queued_bytes = u32::try_from(open.queued_len()).unwrap_or(u32::MAX);
        session.queue.push_back(open);
        session
    }

    /// The `open` packet's JSON: `sid`, `upgrades` (`["websocket"]` on
    /// polling, `[]` on a WebSocket-only session), `pingInterval`,
    /// `pingTimeout`, `maxPayload`.
    pub fn handshake(&self) -> String {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Handshake<'a> {
            sid: &'a str,
            upgrades: &'a [&'a str],
            ping_interval: u32,
            ping_timeout: u32,
            max_payload: u32,
        }
        let sid = self.sid.encode();
        let upgrades: &[&str] = match self.transport {
            Transport::Polling => &["websocket"],
            Transport::WebSocket => &[],
        };
        serde_json::to_string(&Handshake {
            sid: sid.as_str(),
            upgrades,
            ping_interval: self.config.ping_interval_ms,
            ping_timeout: self.config.ping_timeout_ms,
            max_payload: self.config.max_payload,
        })
        .unwrap_or_default()
    }

    /// The session's id. Compare a request's whole id with it (`==`)
    /// before acting: the routing fields alone prove nothing.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The session's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport the session is on now.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Why the session ended, once it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Whether a `GET` is held, waiting for something to carry.
    pub fn poll_held(&self) -> bool {
        self.get_held
    }

    /// Bytes queued for the client.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes as usize
    }

    /// A `GET` arrived. `Ok`: the poll is held, and
    /// [`transmit`](Self::transmit) answers it now if there is anything
    /// to carry (always during an upgrade, `6` when nothing else), later
    /// otherwise. A second concurrent `GET` is refused and ends the
    /// session (the held one is answered `1`); after an upgrade a poll is
    /// refused, the session untouched.
    pub fn poll(&mut self) -> Result<(), Refusal> {
        self.may_poll(self.get_held)?;
        self.get_held = true;
        if self.upgrade == Upgrade::Probed {
            // The client is pausing polling: let it go at once.
            self.poll_end = Some(PacketType::Noop);
        }
        Ok(())
    }

    /// The held `GET`'s connection ended before it was answered. As the
    /// reference, that ends the session.
    pub fn poll_dropped(&mut self) {
        if self.get_held {
            self.get_held = false;
            self.poll_end = None;
            self.close(CloseReason::TransportClose);
        }
    }

    /// A `POST`'s head arrived; its body follows in [`post`](Self::post)
    /// (or [`post_dropped`](Self::post_dropped)). A second concurrent
    /// `POST` is refused and ends the session; after an upgrade a `POST`
    /// is refused, the session untouched.
    pub fn begin_post(&mut self) -> Result<(), Refusal> {
        self.may_poll(self.post_open)?;
        self.post_open = true;
        Ok(())
    }

    /// Whether a polling request may go on, given whether one of its kind
    /// is already in flight (which ends the session: the client broke the
    /// one-at-a-time rule that keeps packets in order).
    fn may_poll(&mut self, one_in_flight: bool) -> Result<(), Refusal> {
        if self.closed.is_some() {
            return Err(Refusal::UnknownSid);
        }
        if self.transport == Transport::WebSocket {
            return Err(Refusal::BadRequest);
        }
        if one_in_flight {
            self.close(CloseReason::TransportError);
            return Err(Refusal::BadRequest);
        }
        Ok(())
    }

    /// The `POST`'s connection ended before its body did.
    pub fn post_dropped(&mut self) {
        self.post_open = false;
    }

    /// The body of the `POST` begun with [`begin_post`](Self::begin_post)
    /// arrived (whole, or more than `max_payload` bytes of it). `Ok`:
    /// answer 200 `ok`, and hand the messages to the application, in
    /// order; pongs and a `close` took effect already (a `close` ends the
    /// session and whatever follows it in the body is ignored). `Err`:
    /// answer the refusal; the session has ended (413 for an over-long
    /// body, 400 for one that is not a payload or holds a ping). Nothing
    /// of a refused body is delivered.
    pub fn post<'a>(&mut self, body: &'a [u8], now: u64) -> Result<Messages<'a>, Refusal> {
        if self.closed.is_some() {
            return Err(Refusal::UnknownSid);
        }
        if !std::mem::take(&mut self.post_open) {
            return Err(Refusal::BadRequest);
        }
        let payload = match Payload::parse(body, self.config.max_payload as usize) {
            Ok(payload) => payload,
            Err(PayloadError::TooLarge { .. }) => {
                self.close(CloseReason::PayloadTooLarge);
                return Err(Refusal::PayloadTooLarge);
            }
            Err(_) => {
                self.close(CloseReason::ParseError);
                return Err(Refusal::BadRequest);
            }
        };
        let mut kinds = payload.kinds().take_while(|&k| k != PacketType::Close);
        if kinds.any(|k| k == PacketType::Ping) {
            self.close(CloseReason::TransportError);
            return Err(Refusal::BadRequest);
        }
        for kind in payload.kinds() {
            match kind {
                PacketType::Pong => self.pong(now),
                PacketType::Close => {
                    self.close(CloseReason::ClientClose);
                    break;
                }
                _ => {}
            }
        }
        Ok(Messages {
            packets: Some(payload.packets()),
        })
    }

    /// A `POST` was refused before its body was read: over `maxPayload`
    /// (`too_large`, 413) or not a text payload (400). Like a refused
    /// body, that ends the session; returns the refusal to answer. On a
    /// WebSocket session a `POST` is only a bad request.
    pub fn post_refused(&mut self, too_large: bool) -> Refusal {
        if self.closed.is_some() {
            return Refusal::UnknownSid;
        }
        if self.transport == Transport::WebSocket {
            return Refusal::BadRequest;
        }
        self.post_open = false;
        if too_large {
            self.close(CloseReason::PayloadTooLarge);
            Refusal::PayloadTooLarge
        } else {
            self.close(CloseReason::ParseError);
            Refusal::BadRequest
        }
    }

    /// A WebSocket message arrived on the session's WebSocket (or, during
    /// an upgrade, on the probing one). Returns the application's
    /// message, if it was one. A packet that does not decode ends the
    /// session (or, on a probing WebSocket, the upgrade).
    pub fn on_frame<'a>(&mut self, frame: Frame<'a>, now: u64) -> Option<Data<'a>> {
        if self.closed.is_some() {
            return None;
        }
        let packet = Packet::decode_frame(frame);
        if self.transport == Transport::Polling {
            if self.upgrade != Upgrade::None {
                match packet {
                    Ok(packet) => self.probe(&packet),
                    Err(_) => self.abort_upgrade(),
                }
            }
            return None;
        }
        let Ok(packet) = packet else {
            self.close(CloseReason::ParseError);
            return None;
        };
        match packet.kind() {
            PacketType::Message => return Some(packet.into_data()),
            PacketType::Pong => self.pong(now),
            PacketType::Close => self.close(CloseReason::ClientClose),
            PacketType::Ping => self.close(CloseReason::TransportError),
            PacketType::Open | PacketType::Upgrade | PacketType::Noop => {}
        }
        None
    }

    /// The session's WebSocket ended: on a WebSocket session that ends
    /// the session; a probing WebSocket's end only ends the upgrade.
    pub fn websocket_closed(&mut self) {
        if self.closed.is_some() {
            return;
        }
        match self.transport {
            Transport::WebSocket => self.close(CloseReason::TransportClose),
            Transport::Polling => {
                self.upgrade = Upgrade::None;
                self.probe_pong = false;
                self.end_probe = false;
            }
        }
    }

    /// A WebSocket asks to upgrade this polling session, at `now`. `Ok`:
    /// accept it (101) and feed its messages to
    /// [`on_frame`](Self::on_frame). Refused (400, the session untouched)
    /// on a WebSocket session and while another WebSocket is upgrading.
    pub fn begin_upgrade(&mut self, now: u64) -> Result<(), Refusal> {
        if self.closed.is_some() {
            return Err(Refusal::UnknownSid);
        }
        if self.transport == Transport::WebSocket || self.upgrade != Upgrade::None {
            return Err(Refusal::BadRequest);
        }
        self.upgrade = Upgrade::Attached;
        self.upgrade_by = now + u64::from(self.config.upgrade_timeout_ms);
        Ok(())
    }

    /// The application sends a message. Fails once the session has ended,
    /// and ends it with [`CloseReason::BufferFull`] when the message would
    /// take the queue past `max_queued_bytes`.
    pub fn send(&mut self, message: Data<'_>) -> Result<(), CloseReason> {
        if let Some(reason) = self.closed {
            return Err(reason);
        }
        self.push(Packet::message(message.into_owned()))
    }

    /// What the session sent could not be delivered to its connection:
    /// it ends as a full buffer does, since its client would otherwise
    /// miss packets without knowing.
    pub fn undeliverable(&mut self) {
        self.close(CloseReason::BufferFull);
    }

    /// The server ends the session. What is queued still goes out: in the
    /// held poll's answer before a `1`, or as WebSocket messages (then
    /// the shard closes the WebSocket).
    pub fn close_by_server(&mut self) {
        self.close(CloseReason::ServerClose);
    }

    /// The protocol carried on the session (Socket.IO) was broken: the
    /// session ends at once, as one whose packets do not decode, and what
    /// is queued is dropped.
    pub fn protocol_error(&mut self) {
        self.close(CloseReason::ParseError);
    }

    /// When [`on_timer`](Self::on_timer) is next due; `None` once closed.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.closed.is_some() {
            return None;
        }
        Some(match self.upgrade {
            Upgrade::None => self.heartbeat_at,
            _ => self.heartbeat_at.min(self.upgrade_by),
        })
    }

    /// The time is `now`: sends a ping when one is due, ends the session
    /// when a pong is late, and drops an upgrade that took too long.
    pub fn on_timer(&mut self, now: u64) {
        if self.closed.is_some() {
            return;
        }
        if self.upgrade != Upgrade::None && now >= self.upgrade_by {
            self.abort_upgrade();
        }
        if now < self.heartbeat_at {
            return;
        }
        if self.awaiting_pong {
            self.close(CloseReason::PingTimeout);
        } else if self.push(Packet::bare(PacketType::Ping)).is_ok() {
            self.awaiting_pong = true;
            // From when it is sent, not when it was due: a late timer
            // must not shorten the client's time to answer.
            self.heartbeat_at = now + u64::from(self.config.ping_timeout_ms);
        }
    }

    /// The next thing to write, if any. Call until `None` after every
    /// other call.
    pub fn transmit(&mut self) -> Option<Transmit> {
        if std::mem::take(&mut self.probe_pong) {
            return Some(Transmit::Frame(Packet::text(PacketType::Pong, "probe")));
        }
        if std::mem::take(&mut self.end_probe) {
            return Some(Transmit::EndProbe);
        }
        let polling = self.transport == Transport::Polling;
        if self.get_held && (self.poll_end.is_some() || polling && !self.queue.is_empty()) {
            self.get_held = false;
            let mut body = Vec::new();
            let end = self.poll_end.take().map(Packet::bare);
            if polling {
                payload::encode(self.queue.iter().chain(&end), &mut body);
                self.release_queue();
            } else {
                payload::encode(&end, &mut body);
            }
            return Some(Transmit::Poll(body));
        }
        if polling {
            return None;
        }
        let packet = self.queue.pop_front()?;
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(u32::try_from(packet.queued_len()).unwrap_or(u32::MAX));
        if self.queue.is_empty() {
            self.release_queue();
        }
        Some(Transmit::Frame(packet))
    }

    /// A packet on a probing WebSocket.
    fn probe(&mut self, packet: &Packet<'_>) {
        if packet.is(PacketType::Ping, "probe") {
            self.upgrade = Upgrade::Probed;
            self.probe_pong = true;
            if self.get_held {
                self.poll_end = Some(PacketType::Noop);
            }
        } else if packet.kind() == PacketType::Upgrade {
            // As the reference, `5` completes the upgrade even unprobed.
            self.upgrade = Upgrade::None;
            self.transport = Transport::WebSocket;
            if self.get_held {
                self.poll_end = Some(PacketType::Noop);
            }
        } else {
            self.abort_upgrade();
        }
    }

    fn abort_upgrade(&mut self) {
        self.upgrade = Upgrade::None;
        self.probe_pong = false;
        self.end_probe = true;
    }

    fn pong(&mut self, now: u64) {
        // An unasked-for pong changes nothing: one ping at a time.
        if self.awaiting_pong {
            self.awaiting_pong = false;
            self.heartbeat_at = now + u64::from(self.config.ping_interval_ms);
        }
    }

    fn push(&mut self, packet: Packet<'static>) -> Result<(), CloseReason> {
        let len = u32::try_from(packet.queued_len()).unwrap_or(u32::MAX);
        match self.queued_bytes.checked_add(len) {
            Some(total) if total <= self.config.max_queued_bytes => {
                self.queued_bytes = total;
                self.queue.push_back(packet);
                Ok(())
            }
            _ => {
                self.close(CloseReason::BufferFull);
                Err(CloseReason::BufferFull)
            }
        }
    }

    fn release_queue(&mut self) {
        self.queue = VecDeque::new();
        self.queued_bytes = 0;
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason);
        if reason != CloseReason::ServerClose {
            // Nobody is left to read it.
            self.release_queue();
        }
        if self.get_held {
            self.poll_end = Some(match reason {
                // The reference's polling transport ends itself with a
                // noop when the client asks; the server's ends say close.
                CloseReason::ClientClose => PacketType::Noop,
                _ => PacketType::Close,
            });
        }
        self.upgrade = Upgrade::None;
        self.probe_pong = false;
        self.end_probe = false;
        self.post_open = false;
    }
}

/// The application's messages in a `POST` body, in order, up to a
/// `close` packet. Borrows only the body, so the caller may use the
/// session (to answer, say) while reading them.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    /// `None` once a `close` was read.
    packets: Option<Packets<'a>>,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Data<'a>;

    fn next(&mut self) -> Option<Data<'a>> {
        loop {
            let packet = self.packets.as_mut()?.next()?;
            match packet.kind() {
                PacketType::Message => return Some(packet.into_data()),
                PacketType::Close => {
                    // Nothing after a close counts.
                    self.packets = None;
                    return None;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn session(transport: Transport) -> Session {
        Session::new(
            Sid::from_parts(0, 1, 2, [3; 14]),
            Config::default(),
            transport,
            0,
        )
    }

    /// An idle session is a slab slot's worth of plain fields: its queue
    /// holds no memory once drained.
    #[test]
    fn an_idle_session_is_small_and_holds_no_buffer() {
        assert_eq!(std::mem::size_of::<Session>(), 112);
        let mut s = session(Transport::Polling);
        s.poll().unwrap();
        assert!(matches!(s.transmit(), Some(Transmit::Poll(_))));
        assert_eq!(s.queue.capacity(), 0);
        s.send(Data::Text(Cow::Borrowed("hi"))).unwrap();
        s.poll().unwrap();
        assert!(s.transmit().is_some());
        assert_eq!((s.queue.capacity(), s.queued_bytes), (0, 0));

        let mut s = session(Transport::WebSocket);
        for _ in 0..3 {
            s.send(Data::Binary(Cow::Borrowed(&[1, 2]))).unwrap();
        }
        while s.transmit().is_some() {}
        assert_eq!((s.queue.capacity(), s.queued_bytes), (0, 0));
    }

    #[test]
    fn queued_bytes_count_data_plus_the_type_byte() {
        let mut s = session(Transport::WebSocket);
        while s.transmit().is_some() {}
        s.send(Data::Text(Cow::Borrowed("abc"))).unwrap();
        s.send(Data::Binary(Cow::Borrowed(&[0; 10]))).unwrap();
        assert_eq!(s.queued_bytes(), 4 + 11);
        assert!(s.transmit().is_some());
        assert_eq!(s.queued_bytes(), 11);
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let reasons = [
            CloseReason::ClientClose,
            CloseReason::TransportClose,
            CloseReason::TransportError,
            CloseReason::ParseError,
            CloseReason::PayloadTooLarge,
            CloseReason::PingTimeout,
            CloseReason::BufferFull,
            CloseReason::ServerClose,
        ];
        let mut labels: Vec<_> = reasons.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), reasons.len());
    }
}
