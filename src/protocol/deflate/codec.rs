//! Compressing and inflating messages (RFC 7692 §7.2) with zlib's raw
//! deflate. Compressor and decompressor state is taken from a per-thread
//! pool when a message starts and given back when it ends unless context
//! takeover keeps it, so a connection without takeover holds no zlib state
//! between messages.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::negotiate::Params;

/// What ends every compressed message and is stripped before sending.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Pooled states kept per thread, per kind.
const POOL: usize = 64;
/// Output grows by at most this much per inflate call, so a bomb is caught
/// within one step of the limit.
const INFLATE_STEP: usize = 64 * 1024;

// The boxes move between the pool and connections, which keep one pointer
// each; unboxing them in the pool would mean moving zlib state around.
thread_local! {
    #[allow(clippy::vec_box)]
    static INFLATERS: RefCell<Vec<Box<Decompress>>> = const { RefCell::new(Vec::new()) };
    /// Indexed by window bits - 9.
    #[allow(clippy::vec_box)]
    static DEFLATERS: RefCell<[Vec<Box<Compress>>; 7]> = RefCell::new(Default::default());
}

/// Where inflated output goes when it is not kept.
type Piece<'a> = &'a mut dyn FnMut(&[u8]);

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit (1009).
    TooBig,
    /// Not a valid deflate stream (1007).
    Corrupt,
}

/// One connection's permessage-deflate state.
#[derive(Debug)]
pub struct PerMessageDeflate {
    params: Params,
    /// Messages shorter than this are sent uncompressed.
    threshold: usize,
    inflater: Option<Box<Decompress>>,
    deflater: Option<Box<Compress>>,
}

impl PerMessageDeflate {
    /// State for a connection that agreed on `params`.
    pub fn new(params: Params, threshold: usize) -> Self {
        Self {
            params,
            threshold,
            inflater: None,
            deflater: None,
        }
    }

    /// Whether zlib state is held between messages.
    pub fn holds_state(&self) -> bool {
        self.inflater.is_some() || self.deflater.is_some()
    }

    /// The window of frames this connection can take from a compress-once
    /// broadcast: only without server context takeover.
    pub fn shared_window(&self) -> Option<u8> {
        self.params
            .server_no_context_takeover
            .then_some(self.params.server_max_window_bits)
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Inflates a piece of a compressed message onto `out`, failing once
    /// `out` would pass `limit` bytes. `out` grows as a vector would, but
    /// its capacity never passes `limit + 1`, so `limit` bounds the memory
    /// held, not just the length.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.inflate_into(input, out, limit, None)
    }

    /// Inflates a piece of a compressed message and hands the output to
    /// `piece` a step at a time instead of keeping it: `scratch` never holds
    /// more than one step, whatever the message inflates to.
    pub fn inflate_discarding(
        &mut self,
        input: &[u8],
        scratch: &mut Vec<u8>,
        piece: &mut dyn FnMut(&[u8]),
    ) -> Result<(), InflateError> {
        scratch.clear();
        self.inflate_into(input, scratch, usize::MAX, Some(piece))
    }

    /// The inflate loop: output lands on `out`, or with `piece` is handed
    /// over and dropped after every step.
    fn inflate_into(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        mut piece: Option<Piece<'_>>,
    ) -> Result<(), InflateError> {
        let d = self.inflater.get_or_insert_with(|| {
            INFLATERS
                .with(|p| p.borrow_mut().pop())
                .unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, 15)))
        });
        let mut consumed = 0;
        loop {
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            // Inflate into at most `room` fresh bytes, so output never runs
            // more than one step past the limit, whatever the ratio. `out`
            // is within `limit` here; the `+ 1` saturates for an unlimited
            // (`usize::MAX`) limit.
            let room = (limit - out.len()).saturating_add(1).min(INFLATE_STEP);
            let start = out.len();
            grow_within(out, room, limit.saturating_add(1));
            out.resize(start + room, 0);
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d.decompress(&input[consumed..], &mut out[start..], FlushDecompress::Sync);
            let produced = (d.total_out() - out_before) as usize;
            out.truncate(start + produced);
            status.map_err(|_| InflateError::Corrupt)?;
            consumed += (d.total_in() - in_before) as usize;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if let Some(piece) = piece.as_deref_mut() {
                piece(&out[start..]);
                out.truncate(start);
            }
            let filled = produced == room;
            if consumed == input.len() && !filled {
                return Ok(());
            }
            if d.total_in() == in_before && produced == 0 {
                // No progress with room to spare: the stream is stuck.
                return Err(InflateError::Corrupt);
            }
        }
    }

    /// Ends a compressed message: inflates the stripped trailer and lets
    /// the state go unless the client keeps its context.
    pub fn finish_inflate(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let result = self.inflate(&TRAILER, out, limit);
        self.end_inflate(result)
    }

    /// [`Self::finish_inflate`] for a message read by
    /// [`Self::inflate_discarding`].
    pub fn finish_inflate_discarding(
        &mut self,
        scratch: &mut Vec<u8>,
        piece: &mut dyn FnMut(&[u8]),
    ) -> Result<(), InflateError> {
        let result = self.inflate_discarding(&TRAILER, scratch, piece);
        self.end_inflate(result)
    }

    /// A message ended (or failed): its inflater goes back to the pool
    /// unless the client keeps its context.
    fn end_inflate(&mut self, result: Result<(), InflateError>) -> Result<(), InflateError> {
        if self.params.client_no_context_takeover || result.is_err() {
            if let Some(mut d) = self.inflater.take() {
                if result.is_ok() {
                    d.reset(false);
                    INFLATERS.with(|p| {
                        let mut p = p.borrow_mut();
                        if p.len() < POOL {
                            p.push(d);
                        }
                    });
                }
            }
        }
        result
    }

    /// Appends `payload` compressed (trailer stripped) to `out`.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let bits = self.params.server_max_window_bits.clamp(9, 15);
        let slot = usize::from(bits - 9);
        let c = self.deflater.get_or_insert_with(|| {
            DEFLATERS
                .with(|p| p.borrow_mut()[slot].pop())
                .unwrap_or_else(|| {
                    Box::new(Compress::new_with_window_bits(
                        Compression::new(6),
                        false,
                        bits,
                    ))
                })
        });
        let start = out.len();
        let mut consumed = 0;
        loop {
            out.reserve((payload.len() - consumed) / 2 + 64);
            let before = c.total_in();
            c.compress_vec(&payload[consumed..], out, FlushCompress::Sync)
                .expect("compressing into a vector cannot fail");
            consumed += (c.total_in() - before) as usize;
            if consumed == payload.len() && out.capacity() > out.len() {
                break;
            }
        }
        if out[start..].ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.len() == start {
            // An empty message is one empty stored block (§7.2.3.6).
            out.push(0x00);
        }
        if self.params.server_no_context_takeover {
            if let Some(mut c) = self.deflater.take() {
                c.reset();
                DEFLATERS.with(|p| {
                    let mut p = p.borrow_mut();
                    if p[slot].len() < POOL {
                        p[slot].push(c);
                    }
                });
            }
        }
    }
}

/// Makes room for `additional` more bytes in `buf`, doubling its capacity
/// the way `Vec` does but never past `cap` bytes: false (and `buf`
/// untouched) when they do not fit within `cap`. A buffer grown only
/// through here holds at most `cap` bytes of memory.
pub(crate) fn grow_within(buf: &mut Vec<u8>, additional: usize, cap: usize) -> bool {
    let needed = buf.len().saturating_add(additional);
    if needed <= buf.capacity() {
        return true;
    }
    if needed > cap {
        return false;
    }
    let target = needed.max(buf.capacity().saturating_mul(2)).min(cap);
    buf.reserve_exact(target - buf.len());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::negotiate::{negotiate, DeflatePolicy};

    fn params(offer: &str, policy: DeflatePolicy) -> Params {
        negotiate([offer.as_bytes()], policy).unwrap()
    }

    fn roundtrip(pmd: &mut PerMessageDeflate, msg: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        pmd.compress(msg, &mut wire);
        let mut out = Vec::new();
        // Inflate in awkward pieces, as frames would bring it.
        for piece in wire.chunks(7) {
            pmd.inflate(piece, &mut out, 1 << 20).unwrap();
        }
        pmd.finish_inflate(&mut out, 1 << 20).unwrap();
        out
    }

    #[test]
    fn messages_survive_with_and_without_context_takeover() {
        for (offer, policy) in [
            ("permessage-deflate", DeflatePolicy::On),
            ("permessage-deflate", DeflatePolicy::NoContextTakeover),
            (
                "permessage-deflate; server_max_window_bits=9",
                DeflatePolicy::On,
            ),
        ] {
            let mut pmd = PerMessageDeflate::new(params(offer, policy), 0);
            for msg in [
                &b""[..],
                b"a",
                &b"hello hello hello ".repeat(500),
                &[0u8, 255, 7].repeat(3000),
            ] {
                assert_eq!(roundtrip(&mut pmd, msg), msg, "{offer} {policy:?}");
            }
            assert_eq!(
                pmd.holds_state(),
                policy == DeflatePolicy::On,
                "{offer} {policy:?}"
            );
        }
    }

    #[test]
    fn the_rfc_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let mut pmd = PerMessageDeflate::new(params("permessage-deflate", DeflatePolicy::On), 0);
        let mut out = Vec::new();
        pmd.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        pmd.finish_inflate(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn a_bomb_is_stopped_at_the_limit() {
        let mut pmd = PerMessageDeflate::new(params("permessage-deflate", DeflatePolicy::On), 0);
        let mut wire = Vec::new();
        pmd.compress(&vec![0u8; 50 << 20], &mut wire);
        assert!(wire.len() < 100 << 10, "{}", wire.len());
        let mut out = Vec::new();
        assert_eq!(
            pmd.inflate(&wire, &mut out, 1 << 20),
            Err(InflateError::TooBig)
        );
        // Stopped within a step of the limit (a vector at most doubles).
        assert!(out.len() <= (1 << 20) + INFLATE_STEP, "{}", out.len());
        assert!(
            out.capacity() <= 2 * ((1 << 20) + INFLATE_STEP),
            "{}",
            out.capacity()
        );
    }

    #[test]
    fn an_unlimited_limit_does_not_overflow() {
        let mut pmd = PerMessageDeflate::new(params("permessage-deflate", DeflatePolicy::On), 0);
        let message = vec![7u8; 3 * INFLATE_STEP];
        let mut wire = Vec::new();
        pmd.compress(&message, &mut wire);
        let mut out = Vec::new();
        pmd.inflate(&wire, &mut out, usize::MAX).unwrap();
        pmd.finish_inflate(&mut out, usize::MAX).unwrap();
        assert_eq!(out, message);
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut pmd = PerMessageDeflate::new(params("permessage-deflate", DeflatePolicy::On), 0);
        let mut out = Vec::new();
        let r = pmd
            .inflate(&[0xff; 16], &mut out, 1 << 20)
            .and_then(|()| pmd.finish_inflate(&mut out, 1 << 20));
        assert_eq!(r, Err(InflateError::Corrupt));
    }
}

#[cfg(test)]
mod growth_tests {
    use super::grow_within;

    #[test]
    fn growth_doubles_but_never_past_the_cap() {
        let mut buf = Vec::new();
        assert!(grow_within(&mut buf, 100, 1000));
        buf.resize(100, 0);
        assert!(grow_within(&mut buf, 10, 1000));
        assert_eq!(buf.capacity(), 200);
        buf.resize(600, 0);
        assert!(grow_within(&mut buf, 10, 1000));
        assert_eq!(buf.capacity(), 1000);
        buf.resize(1000, 0);
        assert!(!grow_within(&mut buf, 1, 1000));
        assert_eq!(buf.capacity(), 1000);
    }
}
