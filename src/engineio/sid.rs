//! Session ids that name their owner: the shard and slot that hold the
//! session and the slot's generation, so any shard can route a request
//! to the owner without a shared table, plus 112 random bits so that an
//! id cannot be guessed from another.
//!
//! The routing fields are readable by anyone who holds the id; only the
//! secret makes it unguessable. The owner must therefore compare the
//! whole id it issued (`==` on [`Sid`], which looks at every byte, the
//! secret included, without stopping at the first difference) before it
//! acts on a request: a matching slot and generation alone prove nothing.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Random bytes in an id: 112 bits.
const SECRET_LEN: usize = 14;
/// shard (2) + slot (4) + generation (4) + secret, big-endian. 24 bytes
/// are exactly 32 base64 characters, so every id has one spelling.
const RAW_LEN: usize = 2 + 4 + 4 + SECRET_LEN;
/// The length of an id's text.
pub const SID_LEN: usize = RAW_LEN / 3 * 4;

/// A session id. Its text ([`Sid::encode`], [`fmt::Display`]) is URL-safe
/// base64 without padding, 32 characters, safe in a query string as is.
#[derive(Clone, Copy)]
pub struct Sid {
    raw: [u8; RAW_LEN],
}

impl Sid {
    /// An id for the session in `slot` (of `generation`) on `shard`, with
    /// a fresh secret from the operating system's random source.
    pub fn generate(shard: u16, slot: u32, generation: u32) -> Result<Self, getrandom::Error> {
        let mut secret = [0; SECRET_LEN];
        getrandom::fill(&mut secret)?;
        Ok(Self::from_parts(shard, slot, generation, secret))
    }

    /// An id from its parts (tests, and replaying a known id).
    pub fn from_parts(shard: u16, slot: u32, generation: u32, secret: [u8; SECRET_LEN]) -> Self {
        let mut raw = [0; RAW_LEN];
        raw[..2].copy_from_slice(&shard.to_be_bytes());
        raw[2..6].copy_from_slice(&slot.to_be_bytes());
        raw[6..10].copy_from_slice(&generation.to_be_bytes());
        raw[10..].copy_from_slice(&secret);
        Self { raw }
    }

    /// Reads an id's text: exactly [`SID_LEN`] characters of the URL-safe
    /// alphabet. Anything else, of any length and any bytes, is `None`.
    pub fn parse(text: &[u8]) -> Option<Self> {
        if text.len() != SID_LEN {
            return None;
        }
        let mut raw = [0; RAW_LEN];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut raw) {
            Ok(RAW_LEN) => Some(Self { raw }),
            _ => None,
        }
    }

    /// The id's text.
    pub fn encode(&self) -> SidText {
        let mut text = [0; SID_LEN];
        // 24 bytes are always exactly 32 characters.
        let _ = URL_SAFE_NO_PAD.encode_slice(self.raw, &mut text);
        SidText(text)
    }

    /// The shard that owns the session.
    pub fn shard(&self) -> u16 {
        u16::from_be_bytes([self.raw[0], self.raw[1]])
    }

    /// The owner's slot for the session.
    pub fn slot(&self) -> u32 {
        u32::from_be_bytes([self.raw[2], self.raw[3], self.raw[4], self.raw[5]])
    }

    /// The slot's generation when the session was made.
    pub fn generation(&self) -> u32 {
        u32::from_be_bytes([self.raw[6], self.raw[7], self.raw[8], self.raw[9]])
    }

    /// The random part.
    pub fn secret(&self) -> [u8; SECRET_LEN] {
        let mut secret = [0; SECRET_LEN];
        secret.copy_from_slice(&self.raw[10..]);
        secret
    }
}

/// Every byte is compared, whatever the first difference, so the time
/// taken does not tell a guesser how much of the secret it got right.
impl PartialEq for Sid {
    fn eq(&self, other: &Self) -> bool {
        self.raw
            .iter()
            .zip(other.raw)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl Eq for Sid {}

/// Shows the routing fields, never the secret (ids end up in logs).
impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sid")
            .field("shard", &self.shard())
            .field("slot", &self.slot())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

/// An id's text, held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SidText([u8; SID_LEN]);

impl SidText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // The URL-safe alphabet is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for SidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SidText(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_id_carries_its_route_and_reads_back() {
        let sid = Sid::from_parts(0xbeef, 7, u32::MAX, [0xa5; SECRET_LEN]);
        let text = sid.encode();
        assert_eq!(text.as_str().len(), 32);
        assert_eq!(sid.to_string(), text.as_str());
        let back = Sid::parse(text.as_str().as_bytes()).unwrap();
        assert_eq!(back, sid);
        assert_eq!(
            (back.shard(), back.slot(), back.generation()),
            (0xbeef, 7, u32::MAX)
        );
        assert_eq!(back.secret(), [0xa5; SECRET_LEN]);
        assert!(
            !format!("{sid:?}").contains("a5"),
            "the secret is not logged"
        );
    }

    #[test]
    fn generated_ids_differ_in_their_secret() {
        let a = Sid::generate(1, 2, 3).unwrap();
        let b = Sid::generate(1, 2, 3).unwrap();
        assert_ne!(a, b);
        assert_ne!(a.secret(), b.secret());
        assert_eq!((a.shard(), a.slot(), a.generation()), (1, 2, 3));
    }

    #[test]
    fn anything_else_is_refused() {
        let good = Sid::from_parts(1, 2, 3, [9; SECRET_LEN]).encode();
        let good = good.as_str().as_bytes();
        assert!(Sid::parse(&good[..31]).is_none());
        assert!(Sid::parse(&[good, b"A"].concat()).is_none());
        assert!(Sid::parse(b"").is_none());
        for bad in [b'+', b'/', b'=', b'%', b' ', 0, 0xff] {
            let mut t = good.to_vec();
            t[5] = bad;
            assert!(Sid::parse(&t).is_none(), "{bad}");
        }
        // One differing secret byte is a different id.
        let other = Sid::from_parts(1, 2, 3, [8; SECRET_LEN]);
        assert_ne!(Sid::parse(good).unwrap(), other);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_its_own_spelling(text in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(sid) = Sid::parse(&text) {
                let again = sid.encode();
                prop_assert_eq!(again.as_str().as_bytes(), &text[..]);
            }
        }

        #[test]
        fn every_id_round_trips(shard: u16, slot: u32, generation: u32, secret: [u8; SECRET_LEN]) {
            let sid = Sid::from_parts(shard, slot, generation, secret);
            let back = Sid::parse(sid.encode().as_str().as_bytes()).unwrap();
            prop_assert_eq!(back, sid);
            prop_assert_eq!((back.shard(), back.slot(), back.generation(), back.secret()),
                (shard, slot, generation, secret));
        }
    }
}
