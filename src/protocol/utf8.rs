//! Streaming UTF-8 validation of text messages across fragments and reads.
//!
//! Bulk bytes go through simdutf8; a code point cut by a fragment or read
//! boundary is carried (at most 3 bytes, no allocation) and completed from
//! the next piece. Validation fails as soon as the bytes seen can no longer
//! begin valid UTF-8, which is what Autobahn's 6.4.x "fail fast" cases ask.

/// The bytes fed so far can never become valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a text message fed in arbitrary pieces.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a code point cut off by the end of the last piece.
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece; fails as soon as the message can no longer be valid.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let width = sequence_width(self.partial[0]);
            while usize::from(self.partial_len) < width {
                let Some((&b, rest)) = bytes.split_first() else {
                    return Ok(());
                };
                self.partial[usize::from(self.partial_len)] = b;
                self.partial_len += 1;
                bytes = rest;
                if !is_valid_prefix(&self.partial[..usize::from(self.partial_len)]) {
                    return Err(InvalidUtf8);
                }
            }
            // A whole, prefix-checked sequence: it is valid.
            self.partial_len = 0;
        }
        match simdutf8::compat::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &bytes[e.valid_up_to()..];
                // std's (and simdutf8's) "incomplete" already implies a
                // valid prefix; checking again costs 3 bytes and keeps this
                // module correct on its own.
                if tail.len() > 3 || !is_valid_prefix(tail) {
                    return Err(InvalidUtf8);
                }
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: an incomplete code point left over is an error.
    /// The validator is reset for the next message either way.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any carried bytes.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// Bytes in the sequence a lead byte starts (1 for anything that cannot
/// lead; such bytes never reach the carry).
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// Whether `bytes` (1 to 4 of them) can begin a valid sequence, per the
/// RFC 3629 table: the second byte's range depends on the lead, which is
/// what rules out overlongs, surrogates and code points past U+10FFFF.
fn is_valid_prefix(bytes: &[u8]) -> bool {
    let Some(&lead) = bytes.first() else {
        return true;
    };
    let width = sequence_width(lead);
    if width == 1 || bytes.len() > width {
        return false;
    }
    let second = match lead {
        0xE0 => 0xA0..=0xBF,
        0xED => 0x80..=0x9F,
        0xF0 => 0x90..=0xBF,
        0xF4 => 0x80..=0x8F,
        _ => 0x80..=0xBF,
    };
    bytes.get(1).is_none_or(|b| second.contains(b))
        && bytes.iter().skip(2).all(|b| (0x80..=0xBF).contains(b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The index of the first byte at which `input` stops being a prefix of
    /// valid UTF-8, if it does: the reference for fail-fast behaviour.
    fn first_bad_byte(input: &[u8]) -> Option<usize> {
        match std::str::from_utf8(input) {
            Ok(_) => None,
            Err(e) => match e.error_len() {
                // std reports where the bad sequence starts; the byte that
                // makes it bad is the first that no valid prefix allows.
                Some(_) => {
                    let start = e.valid_up_to();
                    (start..input.len()).find(|&end| !is_valid_prefix(&input[start..=end]))
                }
                None => None,
            },
        }
    }

    fn feed_pieces(pieces: &[&[u8]]) -> (Result<(), InvalidUtf8>, Option<usize>) {
        let mut v = Utf8Validator::new();
        for (i, piece) in pieces.iter().enumerate() {
            if v.feed(piece).is_err() {
                return (Err(InvalidUtf8), Some(i));
            }
        }
        (v.finish(), None)
    }

    #[test]
    fn fails_fast_inside_a_carried_prefix() {
        for bad in [
            &b"\xF4\x90"[..],
            b"\xED\xA0",
            b"\xE0\x80",
            b"\xC0",
            b"\xF5",
            b"\xC1",
            b"\x80",
            b"\xF0\x8F",
        ] {
            assert_eq!(
                Utf8Validator::new().feed(bad),
                Err(InvalidUtf8),
                "{bad:02x?}"
            );
            // Carried first, completed by the next piece.
            let mut v = Utf8Validator::new();
            let first = v.feed(&bad[..1]);
            let then = first.and_then(|()| v.feed(&bad[1..]));
            assert_eq!(then, Err(InvalidUtf8), "{bad:02x?} split");
        }
    }

    #[test]
    fn autobahn_6_4_vector_fails_at_the_bad_byte() {
        let msg: &[u8] =
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&msg[..12]), Ok(()), "ends in a valid prefix \\xed");
        assert_eq!(
            v.feed(&msg[12..13]),
            Err(InvalidUtf8),
            "\\xed\\xa0 is a surrogate"
        );
    }

    #[test]
    fn boundary_code_points() {
        for c in [
            '\u{7F}',
            '\u{80}',
            '\u{7FF}',
            '\u{800}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            let mut buf = [0u8; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            for cut in 0..=bytes.len() {
                assert_eq!(
                    feed_pieces(&[&bytes[..cut], &bytes[cut..]]).0,
                    Ok(()),
                    "U+{:X} cut {cut}",
                    c as u32
                );
            }
        }
        // U+110000 would be F4 90 80 80.
        assert_eq!(feed_pieces(&[b"\xF4\x90\x80\x80"]).0, Err(InvalidUtf8));
    }

    #[test]
    fn dangling_code_point_fails_at_finish_and_resets() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed("€".as_bytes().get(..2).unwrap()), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert_eq!(v.feed(b"fresh"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    proptest! {
        #[test]
        fn agrees_with_std_at_every_split(s in "\\PC{0,40}") {
            let bytes = s.as_bytes();
            for cut in 0..=bytes.len() {
                prop_assert_eq!(feed_pieces(&[&bytes[..cut], &bytes[cut..]]).0, Ok(()));
            }
        }

        #[test]
        fn arbitrary_bytes_in_arbitrary_pieces(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut bounds = vec![0];
            bounds.extend(&cuts);
            bounds.push(bytes.len());
            let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let (result, failed_piece) = feed_pieces(&pieces);
            prop_assert_eq!(result.is_ok(), std::str::from_utf8(&bytes).is_ok());
            // Fail fast: exactly the piece holding the first impossible byte;
            // a failure only at `finish` means the input merely ended early.
            match (failed_piece, first_bad_byte(&bytes)) {
                (Some(piece), Some(bad)) => {
                    let holder = bounds.windows(2).position(|w| w[0] <= bad && bad < w[1]).unwrap();
                    prop_assert_eq!(piece, holder);
                }
                (None, bad) => prop_assert_eq!(bad, None),
                (Some(piece), None) => prop_assert!(false, "failed at piece {} but no byte is impossible", piece),
            }
        }

        #[test]
        fn mostly_valid_text_with_one_corruption(s in "[a-zκόσμε€𐍈]{0,30}", at in 0usize..200, byte: u8, cut in 0usize..200) {
            let mut bytes = s.into_bytes();
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let cut = cut.min(bytes.len());
            let (result, _) = feed_pieces(&[&bytes[..cut], &bytes[cut..]]);
            prop_assert_eq!(result.is_ok(), std::str::from_utf8(&bytes).is_ok());
        }
    }
}
