//! Connection state recovery (Socket.IO 4.6+), free of I/O: the offsets
//! every event carries, the private id (`pid`) a client presents to get
//! its socket back, and a shard's record of recent room broadcasts that
//! a recovered socket missed.
//!
//! A socket whose Engine.IO session drops is kept by the shard that owned
//! it for the route's `max-disconnection-ms`, with its id and rooms. The
//! client reconnects (on any shard) with `{"pid", "offset"}` in its
//! `CONNECT`; the pid names the shard that keeps the socket, which
//! replays, in the order that socket saw them, the broadcasts to its rooms
//! after that offset. A broadcast is recorded once per shard, not per
//! member, so a socket costs nothing extra while it is connected.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine;

/// The offset of the next event the server sends: unique in this
/// process (a random prefix, then a counter), and across nodes but for a
/// 2^-32 chance.
pub fn new_offset() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        // Without randomness, a fixed prefix: offsets stay unique here.
        let _ = getrandom::fill(&mut b);
        u32::from_le_bytes(b)
    });
    format!("{prefix:08x}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A private id naming the shard that keeps the socket: 20 characters of
/// base64url, 2 bytes of shard and 13 random. `None` without randomness.
pub fn new_pid(shard: u16) -> Option<String> {
    let mut bytes = [0u8; 15];
    bytes[..2].copy_from_slice(&shard.to_be_bytes());
    getrandom::fill(&mut bytes[2..]).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The shard a pid [`new_pid`] made names, if it is one.
pub fn pid_shard(pid: &str) -> Option<u16> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(pid)
        .ok()?;
    (bytes.len() == 15).then(|| u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// The `pid` and `offset` strings of a `CONNECT`'s auth payload, if both
/// are there.
pub fn recovery_request(auth: &str) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Ask {
        pid: String,
        offset: String,
    }
    let ask: Ask = serde_json::from_str(auth).ok()?;
    Some((ask.pid, ask.offset))
}

/// The offset a room broadcast carries: its event's last argument, a
/// string, as the shard's `publish` writes it (`…,"OFFSET"]` ending the
/// first frame's text).
pub fn offset_of(frames: &[u8]) -> Option<&str> {
    let mut first = None;
    super::broadcast::messages_in(frames, |m| {
        if first.is_none() {
            if let crate::engineio::Data::Text(std::borrow::Cow::Borrowed(t)) = m {
                first = Some(t);
            }
        }
    });
    let body = first?.strip_suffix("\"]")?;
    let start = body.rfind('"')? + 1;
    let offset = &body[start..];
    offset
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some(offset)
}

/// One room broadcast as a shard received it.
#[derive(Debug)]
struct Entry {
    seq: u64,
    offset: Box<str>,
    topic: Arc<str>,
    frames: Arc<[u8]>,
    at: u64,
}

/// A shard's recent room broadcasts, in the order it received them,
/// bounded in age and bytes.
#[derive(Debug, Default)]
pub struct Recent {
    entries: VecDeque<Entry>,
    next_seq: u64,
    bytes: usize,
    max_bytes: usize,
    max_age_ms: u64,
}

impl Recent {
    /// Keeps broadcasts for at least `age_ms` (ms), within `max_bytes`.
    pub fn keep(&mut self, age_ms: u64, max_bytes: usize) {
        self.max_age_ms = self.max_age_ms.max(age_ms);
        self.max_bytes = self.max_bytes.max(max_bytes);
    }

    /// Whether it records anything.
    pub fn on(&self) -> bool {
        self.max_age_ms > 0
    }

    /// The sequence number the next broadcast gets: a socket dropped now
    /// missed everything from it on.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records a broadcast to `topic` received at `now` (ms).
    pub fn record(&mut self, topic: &Arc<str>, frames: &Arc<[u8]>, now: u64) {
        if !self.on() {
            return;
        }
        let Some(offset) = offset_of(frames) else {
            return;
        };
        let cost = frames.len() + topic.len() + offset.len() + 64;
        self.entries.push_back(Entry {
            seq: self.next_seq,
            offset: offset.into(),
            topic: Arc::clone(topic),
            frames: Arc::clone(frames),
            at: now,
        });
        self.next_seq += 1;
        self.bytes += cost;
        self.prune(now);
    }

    /// Drops what is older than the age bound, and the oldest past the
    /// byte bound.
    pub fn prune(&mut self, now: u64) {
        while let Some(e) = self.entries.front() {
            let old = e.at + self.max_age_ms < now;
            if !old && self.bytes <= self.max_bytes {
                break;
            }
            let cost = e.frames.len() + e.topic.len() + e.offset.len() + 64;
            self.bytes -= cost;
            self.entries.pop_front();
        }
    }

    /// The sequence number of the broadcast that carried `offset`, if it
    /// is still held.
    pub fn seq_of(&self, offset: &str) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|e| &*e.offset == offset)
            .map(|e| e.seq)
    }

    /// Whether everything from `seq` on is still held (nothing after it
    /// was dropped for the bounds).
    pub fn holds_from(&self, seq: u64) -> bool {
        self.entries
            .front()
            .map_or(seq >= self.next_seq, |e| e.seq <= seq)
    }

    /// The broadcasts from `from` (inclusive) to `until` (exclusive)
    /// whose topic `reaches`, oldest first.
    pub fn between(&self, from: u64, until: u64, reaches: impl Fn(&str) -> bool) -> Vec<Arc<[u8]>> {
        self.entries
            .iter()
            .filter(|e| e.seq >= from && e.seq < until && reaches(&e.topic))
            .map(|e| Arc::clone(&e.frames))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socketio::broadcast::frames;
    use crate::socketio::Packet;

    fn broadcast(offset: &str) -> Arc<[u8]> {
        let data = format!(r#"["e","x","{offset}"]"#);
        frames(&Packet::event("/", data, None, vec![]).unwrap()).into()
    }

    #[test]
    fn offsets_differ_and_are_read_back_from_a_broadcast() {
        let (a, b) = (new_offset(), new_offset());
        assert_ne!(a, b);
        assert_eq!(offset_of(&broadcast(&a)), Some(a.as_str()));
        let plain = frames(&Packet::event("/", r#"["e",1]"#, None, vec![]).unwrap());
        assert_eq!(offset_of(&plain), None);
    }

    #[test]
    fn a_pid_names_its_shard() {
        let pid = new_pid(513).unwrap();
        assert_eq!(pid.len(), 20);
        assert_eq!(pid_shard(&pid), Some(513));
        assert_eq!(pid_shard("not a pid"), None);
        assert_eq!(
            recovery_request(r#"{"token":1,"pid":"p","offset":"o"}"#),
            Some(("p".into(), "o".into()))
        );
        assert_eq!(recovery_request(r#"{"pid":"p"}"#), None);
    }

    #[test]
    fn recent_broadcasts_are_replayed_by_room_within_their_bounds() {
        let mut recent = Recent::default();
        let (r1, r2): (Arc<str>, Arc<str>) = ("sio:/,r1".into(), "sio:/,r2".into());
        recent.record(&r1, &broadcast("a1"), 0);
        assert_eq!(recent.next_seq(), 0, "nothing is kept until asked");
        recent.keep(1000, 1 << 20);
        for (i, (topic, offset)) in [(&r1, "b1"), (&r2, "b2"), (&r1, "b3")].iter().enumerate() {
            recent.record(topic, &broadcast(offset), i as u64);
        }
        let from = recent.seq_of("b1").unwrap() + 1;
        let missed = recent.between(from, recent.next_seq(), |t| *t == *r1);
        assert_eq!(missed.len(), 1);
        assert_eq!(offset_of(&missed[0]), Some("b3"));
        assert!(recent.holds_from(from));
        // Past its age, gone, and a replay from before it is not whole.
        recent.record(&r2, &broadcast("c1"), 5000);
        assert_eq!(recent.seq_of("b1"), None);
        assert!(!recent.holds_from(from));
        // The byte bound drops the oldest.
        let mut small = Recent::default();
        small.keep(1000, 300);
        for i in 0..10 {
            small.record(&r1, &broadcast(&format!("{i:x}")), 0);
        }
        assert!(small.bytes() <= 300);
        assert_eq!(small.seq_of("9"), Some(9));
        assert_eq!(small.seq_of("0"), None);
    }
}
