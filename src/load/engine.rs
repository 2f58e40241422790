//! One load thread: a mio loop that opens client connections, upgrades
//! them (checking Sec-WebSocket-Accept), and drives the chosen mode over
//! the crate's own frame encoder, decoder and mask kernels. Hub runs keep a
//! `Client` per subscriber that outlives its connections, so a resuming
//! run redials and resubscribes from its positions.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::client::{Client, Schedule};
use super::hub::{self, Event, Fit};
use super::report::{Failure, Report};
use super::{CloseKind, Mode, Plan};
use crate::protocol::accept_key::accept_key;
use crate::protocol::frame::{encode_masked_frame, FrameHeader, OpCode};
use crate::sys;

/// Progress every thread publishes for the once-a-second line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) open: AtomicU64,
    /// Hub clients subscribed (or, publishing, connected) right now.
    pub(crate) live: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) handshakes: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// A tiny xorshift: masking keys and upgrade keys need to be unpredictable
/// to a proxy, not cryptographic, and must cost nothing per frame.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Upgrading,
    Open,
    /// We sent a close and wait for the server's.
    Closing,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    id: u64,
    key: [u8; 24],
    started: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Next message number to send / to expect back (echo mode).
    next_send: u64,
    next_echo: u64,
    in_flight: VecDeque<Instant>,
    /// Last sequence number seen per symbol (subscribe mode).
    last_seq: HashMap<Box<str>, u64>,
    /// Which hub client this connection serves (hub runs).
    client: u32,
}

/// Buffers a connection keeps between reads and writes; larger ones (a
/// replay's burst) are freed once empty, so ten thousand idle subscribers
/// hold no burst-sized memory.
const KEEP_BUFFER: usize = 4096;

/// The byte at `i` of message `seq` on connection `id`: every echo can be
/// checked without keeping a copy of what was sent.
fn pattern(id: u64, seq: u64, i: usize) -> u8 {
    b'a' + ((id
        .wrapping_mul(31)
        .wrapping_add(seq.wrapping_mul(7))
        .wrapping_add(i as u64))
        % 26) as u8
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(crate) struct Engine<'a> {
    plan: &'a Plan,
    /// Connections this thread should keep (open or opening).
    target: usize,
    poll: Poll,
    conns: Slab<Conn>,
    rng: Rng,
    report: Report,
    progress: &'a Progress,
    stop: &'a AtomicBool,
    next_id: u64,
    /// Connections started; outside connect mode each is tried once, so a
    /// server that refuses everything ends the run instead of looping.
    attempts: usize,
    source: usize,
    payload: Vec<u8>,
    /// When the measured window began (all connections open).
    window_start: Option<Instant>,
    /// Connections not open (connecting, upgrading or closing).
    pending: usize,
    /// Hub runs: every client of this thread, those waiting to dial, how
    /// many have dialled at least once, and how many are live.
    clients: Vec<Client>,
    schedule: Schedule,
    fresh: usize,
    live: usize,
    /// The run is over: connections that end now are not redialled.
    ending: bool,
    /// The client-side storm has happened; the clients it dropped and when
    /// they all dial again.
    dropped: bool,
    storm_back: Option<(Instant, Vec<u32>)>,
    /// Publish mode: rounds (a message to every topic) sent since the window
    /// began, the next connection to send one, and the sequence number.
    rounds: u64,
    next_publisher: usize,
    seq: u64,
    started: Instant,
    /// Inflates compressed frames (`--deflate`); reset per message, since
    /// no context takeover was offered.
    inflater: flate2::Decompress,
    inflated: Vec<u8>,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(
        plan: &'a Plan,
        target: usize,
        seed: u64,
        progress: &'a Progress,
        stop: &'a AtomicBool,
    ) -> Self {
        Self {
            plan,
            target,
            poll: Poll::new().expect("epoll"),
            conns: Slab::with_capacity(target),
            rng: Rng(seed | 1),
            report: Report::new(plan.hub()),
            progress,
            stop,
            next_id: seed << 32,
            attempts: 0,
            source: seed as usize,
            payload: Vec::with_capacity(plan.size),
            window_start: None,
            pending: 0,
            clients: if plan.hub() {
                (0..target)
                    .map(|_| Client::new(plan.topics.len()))
                    .collect()
            } else {
                Vec::new()
            },
            schedule: Schedule::default(),
            fresh: 0,
            live: 0,
            ending: false,
            dropped: false,
            storm_back: None,
            rounds: 0,
            next_publisher: 0,
            seq: 0,
            started: Instant::now(),
            inflater: flate2::Decompress::new(false),
            inflated: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) -> Report {
        let mut events = Events::with_capacity(1024);
        // The connect phase of echo/hold/subscribe is capped so a dead
        // server ends the run; connect mode measures from the start.
        let connect_cap = self.plan.connect_timeout + Duration::from_secs(5);
        if self.plan.mode == Mode::Connect {
            self.window_start = Some(self.started);
        }
        let mut last_timeout_scan = Instant::now();
        loop {
            self.open_more();
            let now = Instant::now();
            if self.window_start.is_none() && (self.ready() || now - self.started > connect_cap) {
                self.window_start = Some(now);
            }
            if let Some(start) = self.window_start {
                if now - start >= self.plan.duration {
                    break;
                }
                self.storm(now - start);
                self.publish_due(now - start);
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let storm = self.storm_back.as_ref().map(|(at, _)| *at);
            let wait = self
                .schedule
                .until_next(now)
                .into_iter()
                .chain(storm.map(|at| at.saturating_duration_since(now)))
                .min()
                .map_or(Duration::from_millis(10), |d| {
                    d.clamp(Duration::from_millis(1), Duration::from_millis(10))
                });
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("load: poll failed: {e}");
                    break;
                }
            }
            for event in &events {
                self.service(event.token().0);
            }
            if last_timeout_scan.elapsed() > Duration::from_millis(100) {
                last_timeout_scan = Instant::now();
                self.expire_handshakes();
            }
            self.show_progress();
        }
        let end = Instant::now();
        self.report.window_secs = self.window_start.map_or(0.0, |s| (end - s).as_secs_f64());
        self.report.live = self.live as u64;
        self.close_all();
        self.show_progress();
        self.report
    }

    /// Every connection has been tried and each is open or gone; in a hub
    /// run, every client is live.
    fn ready(&self) -> bool {
        if self.plan.hub() {
            return self.live >= self.target;
        }
        self.attempts >= self.target && self.pending == 0
    }

    fn show_progress(&self) {
        let p = self.progress;
        p.open.store(self.report.opened, Ordering::Relaxed);
        p.live.store(self.live as u64, Ordering::Relaxed);
        p.messages.store(self.report.messages, Ordering::Relaxed);
        p.handshakes
            .store(self.report.handshakes, Ordering::Relaxed);
        p.errors.store(self.report.errors(), Ordering::Relaxed);
    }

    /// Keeps up to `target` connections, with at most `in_flight` upgrades
    /// pending so the server's accept queue is not overrun.
    fn open_more(&mut self) {
        if self.plan.hub() {
            return self.dial_due();
        }
        if self.window_start.is_some() && self.plan.mode != Mode::Connect {
            return;
        }
        let mut room = self.plan.in_flight.saturating_sub(self.pending);
        let retry = self.plan.mode == Mode::Connect;
        while room > 0 && self.conns.len() < self.target && (retry || self.attempts < self.target) {
            room -= 1;
            self.attempts += 1;
            self.open_one(0);
        }
    }

    /// Hub runs: dials every client once, then (resuming) those whose
    /// wait is over, within the same in-flight bound.
    fn dial_due(&mut self) {
        let now = Instant::now();
        // A storm's redial is all at once: --conns-in-flight paces the
        // ramp-up and ordinary reconnects, not this.
        if self.storm_back.as_ref().is_some_and(|(at, _)| *at <= now) {
            let (_, clients) = self.storm_back.take().expect("checked");
            for client in clients {
                self.attempts += 1;
                self.open_one(client as usize);
            }
        }
        while self.pending < self.plan.in_flight && !self.ending {
            let client = if self.fresh < self.target {
                self.fresh += 1;
                self.fresh - 1
            } else {
                match self.schedule.next_due(now) {
                    Some(c) => c,
                    None => return,
                }
            };
            if self.clients[client].retired {
                continue;
            }
            self.attempts += 1;
            self.open_one(client);
        }
    }

    fn open_one(&mut self, client: usize) {
        let from: Option<IpAddr> = (!self.plan.sources.is_empty()).then(|| {
            self.source = (self.source + 1) % self.plan.sources.len();
            self.plan.sources[self.source]
        });
        let std_stream = match sys::connect_from(from, self.plan.target) {
            Ok(s) => s,
            Err(e) => {
                self.dial_failed(client, classify(&e));
                return;
            }
        };
        let mut stream = TcpStream::from_std(std_stream);
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key());
        if self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.dial_failed(client, Failure::Io);
            return;
        }
        self.pending += 1;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.rng.next().to_ne_bytes());
        raw[8..].copy_from_slice(&self.rng.next().to_ne_bytes());
        let mut key = [0u8; 24];
        STANDARD
            .encode_slice(raw, &mut key)
            .expect("24 bytes hold base64 of 16");
        self.next_id += 1;
        entry.insert(Conn {
            stream,
            phase: Phase::Connecting,
            id: self.next_id,
            key,
            started: Instant::now(),
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            next_send: 0,
            next_echo: 0,
            in_flight: VecDeque::new(),
            last_seq: HashMap::new(),
            client: client as u32,
        });
    }

    /// A dial that never got a connection registered.
    fn dial_failed(&mut self, client: usize, kind: Failure) {
        if self.plan.resume && transient(kind) {
            self.report.retries += 1;
            self.redial_later(client, false);
        } else {
            self.report.fail(kind);
        }
    }

    /// Puts a client back in the schedule: after a lost connection (`lost`)
    /// a short jittered wait, after a failed dial a growing one.
    fn redial_later(&mut self, client: usize, lost: bool) {
        let random = self.rng.next();
        let c = &mut self.clients[client];
        if lost {
            c.failures = 0;
        } else {
            c.failures += 1;
        }
        // At least a millisecond: a dial that fails at once is not retried
        // within the same turn.
        let wait = c
            .delay(self.plan.reconnect_delay, random)
            .max(Duration::from_millis(1));
        self.schedule.at(Instant::now() + wait, client);
    }

    fn expire_handshakes(&mut self) {
        let limit = self.plan.connect_timeout;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.phase, Phase::Connecting | Phase::Upgrading)
                    && c.started.elapsed() > limit
            })
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            self.drop_conn(key, Some(Failure::Timeout));
        }
    }

    fn service(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Connecting {
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    let kind = classify(&e);
                    self.drop_conn(key, Some(kind));
                    return;
                }
            }
            if conn.stream.peer_addr().is_err() {
                return; // still connecting
            }
            conn.phase = Phase::Upgrading;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
                self.plan.path,
                self.plan.host,
                std::str::from_utf8(&conn.key).expect("base64 is ASCII"),
                if self.plan.deflate {
                    "Sec-WebSocket-Extensions: permessage-deflate; \
                     server_no_context_takeover; client_no_context_takeover\r\n"
                } else {
                    ""
                }
            );
            conn.out.extend_from_slice(request.as_bytes());
        }
        if let Err(kind) = self.read(key) {
            self.drop_conn(key, kind);
            return;
        }
        if let Err(kind) = self.flush(key) {
            self.drop_conn(key, kind);
        }
    }

    /// Reads everything available and acts on it; `Err(None)` is a normal end.
    fn read(&mut self, key: usize) -> Result<(), Option<Failure>> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let conn = &mut self.conns[key];
            match (&conn.stream).read(&mut buf) {
                Ok(0) => {
                    return Err(match conn.phase {
                        Phase::Closing => None,
                        Phase::Open if self.plan.mode == Mode::Connect => None,
                        _ => Some(Failure::Reset),
                    })
                }
                Ok(n) => {
                    conn.inbuf.extend_from_slice(&buf[..n]);
                    self.process(key)?;
                    if n < buf.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if self.conns[key].phase == Phase::Closing => {
                    let _ = e;
                    return Err(None);
                }
                Err(e) => return Err(Some(classify(&e))),
            }
        }
    }

    fn process(&mut self, key: usize) -> Result<(), Option<Failure>> {
        if self.conns[key].phase == Phase::Upgrading {
            let conn = &mut self.conns[key];
            let Some(end) = conn.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return if conn.inbuf.len() > 16 * 1024 {
                    Err(Some(Failure::BadStatus))
                } else {
                    Ok(())
                };
            };
            let checked = check_upgrade(&conn.inbuf[..end + 4], &conn.key);
            let client = conn.client as usize;
            if let Err(refusal) = checked {
                if let (Some(wait), Some(c)) = (refusal.retry_after, self.clients.get_mut(client)) {
                    c.hint = Some(wait);
                }
                return Err(Some(refusal.failure));
            }
            conn.inbuf.drain(..end + 4);
            conn.phase = Phase::Open;
            self.pending -= 1;
            self.report.opened += 1;
            self.on_open(key)?;
        }
        let mut pos = 0;
        loop {
            let conn = &self.conns[key];
            let Some((header, head_len)) =
                FrameHeader::decode(&conn.inbuf[pos..]).map_err(|_| Some(Failure::Protocol))?
            else {
                break;
            };
            let end = pos + head_len + header.payload_len as usize;
            if conn.inbuf.len() < end {
                break;
            }
            let compressed = header.rsv == 0b100 && self.plan.deflate;
            if header.mask.is_some() || (header.rsv != 0 && !compressed) {
                return Err(Some(Failure::Protocol));
            }
            let payload = std::mem::take(&mut self.conns[key].inbuf);
            let result = if compressed {
                let mut inflated = std::mem::take(&mut self.inflated);
                let result = self
                    .inflate(&payload[pos + head_len..end], &mut inflated)
                    .and_then(|()| self.on_frame(key, header.opcode, &inflated));
                self.inflated = inflated;
                result
            } else {
                self.on_frame(key, header.opcode, &payload[pos + head_len..end])
            };
            self.conns[key].inbuf = payload;
            result?;
            pos = end;
        }
        let inbuf = &mut self.conns[key].inbuf;
        inbuf.drain(..pos);
        if inbuf.is_empty() && inbuf.capacity() > KEEP_BUFFER {
            *inbuf = Vec::new();
        }
        Ok(())
    }

    /// One compressed message (a single frame: the servers measured do not
    /// fragment them) into `out`.
    fn inflate(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Option<Failure>> {
        const TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];
        out.clear();
        self.inflater.reset(false);
        for part in [data, &TAIL[..]] {
            let mut input = part;
            while !input.is_empty() {
                out.reserve(input.len() * 4 + 64);
                let before = self.inflater.total_in();
                self.inflater
                    .decompress_vec(input, out, flate2::FlushDecompress::Sync)
                    .map_err(|_| Some(Failure::Protocol))?;
                let used = (self.inflater.total_in() - before) as usize;
                if used == 0 && out.len() < out.capacity() {
                    // No progress with room to spare: the stream is broken.
                    return Err(Some(Failure::Protocol));
                }
                input = &input[used..];
            }
        }
        Ok(())
    }

    fn on_open(&mut self, key: usize) -> Result<(), Option<Failure>> {
        match self.plan.mode {
            Mode::Echo => {
                for _ in 0..self.plan.pipeline {
                    self.send_next(key);
                }
            }
            Mode::Connect => {
                self.report.handshakes += 1;
                let us = self.conns[key].started.elapsed().as_micros() as u64;
                self.report.record_latency(us);
                return match self.plan.close {
                    CloseKind::Abrupt => Err(None),
                    CloseKind::Clean => {
                        self.start_close(key);
                        Ok(())
                    }
                };
            }
            Mode::Subscribe if self.plan.hub() => self.subscribe(key),
            Mode::Publish => {
                let c = &mut self.clients[self.conns[key].client as usize];
                c.live = true;
                c.failures = 0;
                self.live += 1;
            }
            Mode::Hold | Mode::Subscribe => {}
        }
        Ok(())
    }

    /// Subscribes to every topic, resuming those with a position.
    fn subscribe(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let client = &mut self.clients[conn.client as usize];
        client.failures = 0;
        let request = hub::subscribe_request(&self.plan.topics, &client.positions);
        let mask = (self.rng.next() as u32).to_ne_bytes();
        encode_masked_frame(&mut conn.out, true, OpCode::Text, request.as_bytes(), mask);
    }

    /// A text message on a hub connection.
    fn on_hub(
        &mut self,
        key: usize,
        payload: &[u8],
        measuring: bool,
    ) -> Result<(), Option<Failure>> {
        let event = hub::read(payload, &self.plan.topics).ok_or(Some(Failure::Protocol))?;
        let client = self.conns[key].client as usize;
        match event {
            Event::Message {
                topic,
                position,
                sent_us,
            } => {
                let c = &mut self.clients[client];
                match hub::fit(&mut c.positions[topic], position) {
                    Fit::Next => {}
                    Fit::Gap => self.report.gaps += 1,
                    Fit::Duplicate => self.report.duplicates += 1,
                }
                self.report.received += 1;
                if measuring {
                    self.report.messages += 1;
                    if let Some(sent) = sent_us {
                        self.report.record_latency(now_us().saturating_sub(sent));
                    }
                }
            }
            Event::Subscribed(answers) => self.on_subscribed(client, &answers),
            Event::Error => return Err(Some(Failure::HubError)),
            Event::Other => {}
        }
        Ok(())
    }

    /// The subscribe answer: positions to go on from, recoveries counted,
    /// and the time it took to be live again after a lost connection.
    fn on_subscribed(&mut self, client: usize, answers: &[hub::Answer]) {
        let c = &mut self.clients[client];
        let mut all_recovered = !answers.is_empty();
        for answer in answers {
            let last = &mut c.positions[answer.topic];
            match answer.recovered {
                // The replay that follows moves the position on.
                Some(true) => self.report.recovered += 1,
                Some(false) => {
                    self.report.not_recovered += 1;
                    self.report.gaps += 1;
                }
                // Not resumed: a stream that moved on (or changed epoch)
                // since the last message seen lost what lies between.
                None => {
                    if let (Some(seen), Some(now)) = (*last, answer.position) {
                        if now.epoch != seen.epoch || now.offset > seen.offset {
                            self.report.gaps += 1;
                        }
                    }
                }
            }
            all_recovered &= answer.recovered == Some(true);
            if answer.recovered != Some(true) {
                if let Some(p) = answer.position {
                    *last = Some(p);
                }
            }
        }
        if let Some(since) = c.away_since.take() {
            if all_recovered {
                let us = Instant::now().saturating_duration_since(since).as_micros() as u64;
                self.report.record_recovery(us);
            }
        }
        if !c.live {
            c.live = true;
            self.live += 1;
        }
    }

    /// The client-side storm: once, `drop_after` into the window, every
    /// connection is reset and its client dials again `drop_for` later,
    /// all together, with the positions it had.
    fn storm(&mut self, into_window: Duration) {
        let Some(after) = self.plan.drop_after else {
            return;
        };
        if self.dropped || into_window < after {
            return;
        }
        self.dropped = true;
        eprintln!(
            "storm: dropping {} connections for {} ms",
            self.conns.len(),
            self.plan.drop_for.as_millis()
        );
        let back = Instant::now() + self.plan.drop_for;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        let mut dropped = Vec::with_capacity(keys.len());
        for key in keys {
            let Some((client, was_open)) = self.forget(key) else {
                continue;
            };
            // A dial in progress was counted when its connection was lost.
            if was_open {
                self.report.reconnects += 1;
            }
            self.clients[client].away_since = Some(back);
            dropped.push(client as u32);
        }
        self.storm_back = Some((back, dropped));
    }

    /// Publish mode: sends every round due by now, each round from the next
    /// open connection in turn; rounds due while none is open are skipped
    /// and counted.
    fn publish_due(&mut self, into_window: Duration) {
        if self.plan.mode != Mode::Publish {
            return;
        }
        let share = self.target as f64 / self.plan.conns as f64;
        let due = (into_window.as_secs_f64() * self.plan.rate * share) as u64;
        let mut touched = Vec::new();
        while self.rounds < due {
            self.rounds += 1;
            let Some(key) = self.next_open_publisher() else {
                self.report.unsent += self.plan.topics.len() as u64;
                continue;
            };
            self.seq += 1;
            let ts = now_us();
            for topic in &self.plan.topics {
                let request = hub::publish_request(topic, self.seq, ts);
                let mask = (self.rng.next() as u32).to_ne_bytes();
                encode_masked_frame(
                    &mut self.conns[key].out,
                    true,
                    OpCode::Text,
                    request.as_bytes(),
                    mask,
                );
                self.report.received += 1;
                self.report.messages += 1;
            }
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        for key in touched {
            if let Err(kind) = self.flush(key) {
                self.drop_conn(key, kind);
            }
        }
    }

    fn next_open_publisher(&mut self) -> Option<usize> {
        let n = self.conns.capacity().max(1);
        for step in 0..n {
            let key = (self.next_publisher + step) % n;
            if self.conns.get(key).is_some_and(|c| c.phase == Phase::Open) {
                self.next_publisher = key + 1;
                return Some(key);
            }
        }
        None
    }

    fn send_next(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let seq = conn.next_send;
        conn.next_send += 1;
        self.payload.clear();
        self.payload
            .extend((0..self.plan.size).map(|i| pattern(conn.id, seq, i)));
        let opcode = if self.plan.binary {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        let mask = (self.rng.next() as u32).to_ne_bytes();
        encode_masked_frame(&mut conn.out, true, opcode, &self.payload, mask);
        conn.in_flight.push_back(Instant::now());
    }

    fn start_close(&mut self, key: usize) {
        let mask = (self.rng.next() as u32).to_ne_bytes();
        let conn = &mut self.conns[key];
        encode_masked_frame(
            &mut conn.out,
            true,
            OpCode::Close,
            &1000u16.to_be_bytes(),
            mask,
        );
        conn.phase = Phase::Closing;
        self.pending += 1;
    }

    /// Keeps what a server's close frame asks of a resuming client: a
    /// 1013's "retry in N s" is waited out (plus jitter, so those closed
    /// together spread out); a 1001 or any other close, a short jittered
    /// wait.
    fn note_close(&mut self, key: usize, payload: &[u8]) {
        let code = payload
            .get(..2)
            .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
        let reason = payload
            .get(2..)
            .and_then(|r| std::str::from_utf8(r).ok())
            .unwrap_or("");
        if let Some(secs) = hub::retry_hint(code, reason) {
            let jitter = self.rng.next() % (self.plan.reconnect_delay.as_millis() as u64).max(1);
            let wait = Duration::from_secs_f64(secs.min(3600.0)) + Duration::from_millis(jitter);
            self.clients[self.conns[key].client as usize].hint = Some(wait);
        }
    }

    fn on_frame(
        &mut self,
        key: usize,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), Option<Failure>> {
        let measuring = self.window_start.is_some();
        match opcode {
            OpCode::Text | OpCode::Binary => match self.plan.mode {
                Mode::Echo => {
                    let conn = &mut self.conns[key];
                    let seq = conn.next_echo;
                    conn.next_echo += 1;
                    let expected_op = if self.plan.binary {
                        OpCode::Binary
                    } else {
                        OpCode::Text
                    };
                    let intact = opcode == expected_op
                        && payload.len() == self.plan.size
                        && payload
                            .iter()
                            .enumerate()
                            .all(|(i, &b)| b == pattern(conn.id, seq, i));
                    let sent = conn.in_flight.pop_front();
                    if !intact {
                        return Err(Some(Failure::BadEcho));
                    }
                    if measuring {
                        self.report.messages += 1;
                        if let Some(sent) = sent {
                            self.report
                                .record_latency(sent.elapsed().as_micros() as u64);
                        }
                    }
                    self.send_next(key);
                }
                Mode::Subscribe | Mode::Publish if self.plan.hub() => {
                    self.on_hub(key, payload, measuring)?;
                }
                Mode::Subscribe => self.on_tick(key, payload, measuring)?,
                Mode::Hold | Mode::Connect | Mode::Publish => {}
            },
            OpCode::Ping => {
                let mask = (self.rng.next() as u32).to_ne_bytes();
                encode_masked_frame(&mut self.conns[key].out, true, OpCode::Pong, payload, mask);
            }
            OpCode::Close => {
                if self.conns[key].phase == Phase::Closing {
                    return Err(None);
                }
                if self.plan.resume {
                    self.note_close(key, payload);
                }
                return Err(Some(Failure::ServerClose));
            }
            OpCode::Pong => {}
            OpCode::Continuation => return Err(Some(Failure::Protocol)),
        }
        Ok(())
    }

    /// `SYMBOL SEQ SEND_TS_US PRICE`: counts gaps per symbol and latency.
    fn on_tick(
        &mut self,
        key: usize,
        payload: &[u8],
        measuring: bool,
    ) -> Result<(), Option<Failure>> {
        let text = std::str::from_utf8(payload).map_err(|_| Some(Failure::Protocol))?;
        let mut fields = text.split(' ');
        let (Some(symbol), Some(seq), Some(ts)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(Some(Failure::Protocol));
        };
        let seq: u64 = seq.parse().map_err(|_| Some(Failure::Protocol))?;
        let ts: u64 = ts.parse().map_err(|_| Some(Failure::Protocol))?;
        let conn = &mut self.conns[key];
        let first = match conn.last_seq.get_mut(symbol) {
            Some(last) => {
                if seq > *last + 1 {
                    self.report.gaps += seq - *last - 1;
                }
                *last = (*last).max(seq);
                false
            }
            None => {
                conn.last_seq.insert(symbol.into(), seq);
                true
            }
        };
        self.report.received += 1;
        if measuring {
            self.report.messages += 1;
            // A connection's first tick of a symbol is the feed's snapshot,
            // sent before it subscribed: its age is no delivery latency.
            if !first {
                self.report.record_latency(now_us().saturating_sub(ts));
            }
        }
        Ok(())
    }

    fn flush(&mut self, key: usize) -> Result<(), Option<Failure>> {
        let conn = &mut self.conns[key];
        while conn.out_pos < conn.out.len() {
            match (&conn.stream).write(&conn.out[conn.out_pos..]) {
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Some(classify(&e))),
            }
        }
        conn.out.clear();
        conn.out_pos = 0;
        if conn.out.capacity() > KEEP_BUFFER {
            conn.out = Vec::new();
        }
        Ok(())
    }

    /// Ends a connection; a resuming hub client whose connection failed
    /// for a reason that may pass (refused, reset, timed out, closed by the
    /// server, a 503 or 429) dials again later instead of counting an error.
    fn drop_conn(&mut self, key: usize, failure: Option<Failure>) {
        let Some((client, was_open)) = self.forget(key) else {
            return;
        };
        let redial = self.plan.resume && !self.ending && failure.is_none_or(transient);
        if !redial {
            if let Some(kind) = failure {
                self.report.fail(kind);
                if let Some(c) = self.clients.get_mut(client) {
                    c.retired = true;
                }
            }
            return;
        }
        if was_open {
            self.report.reconnects += 1;
            let c = &mut self.clients[client];
            c.away_since.get_or_insert_with(Instant::now);
        } else {
            self.report.retries += 1;
        }
        self.redial_later(client, was_open);
    }

    /// Closes a connection's socket (RST: no TIME_WAIT pile-up on either
    /// side of a long run) and takes its client off the live count; its
    /// client and whether it had been open.
    fn forget(&mut self, key: usize) -> Option<(usize, bool)> {
        let mut conn = self.conns.try_remove(key)?;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        if conn.phase != Phase::Open {
            self.pending -= 1;
        }
        let client = conn.client as usize;
        if let Some(c) = self.clients.get_mut(client) {
            if std::mem::take(&mut c.live) {
                self.live -= 1;
            }
        }
        Some((
            client,
            conn.phase != Phase::Connecting && conn.phase != Phase::Upgrading,
        ))
    }

    fn close_all(&mut self) {
        self.ending = true;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drop_conn(key, None);
        }
    }
}

/// Why an upgrade failed, and how long the server asked to wait.
struct Refusal {
    failure: Failure,
    retry_after: Option<Duration>,
}

impl From<Failure> for Refusal {
    fn from(failure: Failure) -> Self {
        Self {
            failure,
            retry_after: None,
        }
    }
}

/// Checks the 101 and its accept value; a 503 or 429 is `Busy`, with its
/// `Retry-After` in seconds.
fn check_upgrade(head: &[u8], key: &[u8; 24]) -> Result<(), Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) if response.code == Some(101) => {}
        Ok(httparse::Status::Complete(_)) if matches!(response.code, Some(503 | 429)) => {
            let retry_after = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(3600)));
            return Err(Refusal {
                failure: Failure::Busy,
                retry_after,
            });
        }
        _ => return Err(Failure::BadStatus.into()),
    }
    let expected = accept_key(key);
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value.trim_ascii());
    if accept != Some(&expected[..]) {
        return Err(Failure::BadAccept.into());
    }
    Ok(())
}

/// Failures a resuming client rides out by dialling again.
fn transient(kind: Failure) -> bool {
    matches!(
        kind,
        Failure::Refused
            | Failure::Reset
            | Failure::Timeout
            | Failure::Io
            | Failure::Busy
            | Failure::ServerClose
    )
}

fn classify(e: &std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Failure::Reset
        }
        ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Io,
    }
}

/// Shares a stop flag with SIGINT so Ctrl-C prints the partial result.
pub(crate) fn stop_on_sigint() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop));
    stop
}
