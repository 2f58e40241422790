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
    use proptest::sample::Index;

    use super::*;

    /// Index of the byte at which `input` stops being a prefix of valid
    /// UTF-8: the shortest prefix std calls invalid rather than cut short.
    /// Built on std alone so that it does not share this module's table.
    fn first_bad_byte(input: &[u8]) -> Option<usize> {
        let start = std::str::from_utf8(input).err()?.valid_up_to();
        (start..input.len()).find(|&end| {
            std::str::from_utf8(&input[start..=end]).is_err_and(|e| e.error_len().is_some())
        })
    }

    /// Feeds `input` cut at `cuts` (ascending) and holds it to std: the same
    /// verdict, and a failure in exactly the piece holding the first
    /// impossible byte. Then checks that `finish` leaves a clean validator.
    fn check_pieces(input: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(cuts.iter().copied())
            .chain(std::iter::once(input.len()))
            .collect();
        let holder = first_bad_byte(input).map(|bad| {
            let holds = |w: &[usize]| w[0] <= bad && bad < w[1];
            bounds
                .windows(2)
                .position(holds)
                .expect("every byte is in a piece")
        });
        let mut v = Utf8Validator::new();
        let failed = bounds
            .windows(2)
            .position(|w| v.feed(&input[w[0]..w[1]]).is_err());
        prop_assert_eq!(failed, holder, "{:02x?} cut at {:?}", input, cuts);
        let finished = v.finish();
        if failed.is_none() {
            prop_assert_eq!(
                finished.is_ok(),
                std::str::from_utf8(input).is_ok(),
                "{:02x?} cut at {:?}",
                input,
                cuts
            );
        }
        prop_assert_eq!(v.feed("a€𐍈".as_bytes()).and_then(|()| v.finish()), Ok(()));
        Ok(())
    }

    fn every_split(input: &[u8]) -> Result<(), TestCaseError> {
        (0..=input.len()).try_for_each(|cut| check_pieces(input, &[cut]))
    }

    /// Three pieces at every pair of cuts, so a carried code point can also
    /// be completed by a piece shorter than what it still needs.
    fn every_two_splits(input: &[u8]) -> Result<(), TestCaseError> {
        (0..=input.len())
            .try_for_each(|a| (a..=input.len()).try_for_each(|b| check_pieces(input, &[a, b])))
    }

    fn byte_at_a_time(input: &[u8]) -> Result<(), TestCaseError> {
        check_pieces(input, &(1..input.len()).collect::<Vec<_>>())
    }

    fn cut_points(len: usize, picks: &[Index]) -> Vec<usize> {
        let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    /// Autobahn section 6 payloads and RFC 3629 boundaries, each with a
    /// verdict written out by hand rather than taken from std.
    const VECTORS: &[(&[u8], bool)] = &[
        // 6.2.1, 6.5.1: valid text.
        (
            b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
            true,
        ),
        (b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true),
        // 6.3.1 (surrogate U+D800), 6.4.x (U+110000) inside valid text.
        (
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            false,
        ),
        (
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited",
            false,
        ),
        // 6.6: κόσμε cut short.
        (b"\xce", false),
        (b"\xce\xba\xe1", false),
        (b"\xce\xba\xe1\xbd", false),
        (b"\xce\xba\xe1\xbd\xb9\xcf", false),
        // 6.7, 6.9: first and last code point of each length.
        (b"\x00", true),
        (b"\xc2\x80", true),
        (b"\xe0\xa0\x80", true),
        (b"\xf0\x90\x80\x80", true),
        (b"\x7f", true),
        (b"\xdf\xbf", true),
        (b"\xef\xbf\xbf", true),
        (b"\xf4\x8f\xbf\xbf", true),
        // 6.8, 6.10: five- and six-byte forms, and past U+10FFFF.
        (b"\xf8\x88\x80\x80\x80", false),
        (b"\xfc\x84\x80\x80\x80\x80", false),
        (b"\xf4\x90\x80\x80", false),
        (b"\xf7\xbf\xbf\xbf", false),
        (b"\xfb\xbf\xbf\xbf\xbf", false),
        (b"\xfd\xbf\xbf\xbf\xbf\xbf", false),
        // 6.11: either side of the surrogates, and U+FFFD.
        (b"\xed\x9f\xbf", true),
        (b"\xee\x80\x80", true),
        (b"\xef\xbf\xbd", true),
        // 6.12: continuation bytes with no lead.
        (b"\x80", false),
        (b"\xbf", false),
        (b"\x80\xbf", false),
        (b"\x80\xbf\x80\xbf", false),
        // 6.13: lone leads followed by a space.
        (b"\xc0 ", false),
        (b"\xc2 ", false),
        (b"\xe0 ", false),
        (b"\xf0 ", false),
        (b"\xf8 ", false),
        // 6.14, 6.15: last byte missing, alone and concatenated.
        (b"\xc0", false),
        (b"\xe0\x80", false),
        (b"\xf0\x80\x80", false),
        (b"\xdf", false),
        (b"\xef\xbf", false),
        (b"\xf4\x8f\xbf", false),
        (b"\xc0\xe0\x80\xf0\x80\x80\xdf\xef\xbf\xf7\xbf\xbf", false),
        // 6.16: bytes that never occur.
        (b"\xfe", false),
        (b"\xff", false),
        (b"\xfe\xfe\xff\xff", false),
        // 6.17, 6.18: overlong forms.
        (b"\xc0\xaf", false),
        (b"\xe0\x80\xaf", false),
        (b"\xf0\x80\x80\xaf", false),
        (b"\xc1\xbf", false),
        (b"\xe0\x9f\xbf", false),
        (b"\xf0\x8f\xbf\xbf", false),
        // 6.19, 6.20: lone and paired surrogates.
        (b"\xed\xa0\x80", false),
        (b"\xed\xad\xbf", false),
        (b"\xed\xb0\x80", false),
        (b"\xed\xbf\xbf", false),
        (b"\xed\xa0\x80\xed\xb0\x80", false),
        // 6.22: noncharacters are valid.
        (b"\xef\xbf\xbe", true),
        (b"\xef\xb7\x90", true),
        (b"\xf4\x8f\xbf\xbe", true),
    ];

    #[test]
    fn vectors_at_every_cut() {
        for &(input, valid) in VECTORS {
            assert_eq!(std::str::from_utf8(input).is_ok(), valid, "{input:02x?}");
            every_split(input).unwrap();
            every_two_splits(input).unwrap();
            byte_at_a_time(input).unwrap();
        }
    }

    /// Pins the reference itself: these indices are worked out by hand.
    #[test]
    fn first_bad_byte_by_hand() {
        for (input, bad) in [
            (
                &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..],
                Some(12),
            ),
            (
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited",
                Some(12),
            ),
            (b"\xf4\x90", Some(1)),
            (b"\xf4\x8f", None),
            (b"\xed\xa0", Some(1)),
            (b"\xed\x9f", None),
            (b"\xe0\x80", Some(1)),
            (b"\xe0\xa0", None),
            (b"\xf0\x8f", Some(1)),
            (b"\xc0", Some(0)),
            (b"\xc1", Some(0)),
            (b"\xf5", Some(0)),
            (b"\x80", Some(0)),
            (b"ab\xe2\x82", None),
            (b"ab\xe2\x82 ", Some(4)),
            (b"\xf0\x90\x80\xc0", Some(3)),
        ] {
            assert_eq!(first_bad_byte(input), bad, "{input:02x?}");
        }
    }

    #[test]
    fn fails_fast_inside_a_carried_prefix() {
        for bad in [
            &b"\xF4\x90"[..],
            b"\xED\xA0",
            b"\xE0\x80",
            b"\xF0\x8F",
            b"\xC0",
            b"\xC1",
            b"\xF5",
            b"\xFF",
            b"\x80",
        ] {
            assert_eq!(
                Utf8Validator::new().feed(bad),
                Err(InvalidUtf8),
                "{bad:02x?}"
            );
            // Carried first, then found impossible by the next piece.
            let mut v = Utf8Validator::new();
            let first = v.feed(&bad[..1]);
            let then = first.and_then(|()| v.feed(&bad[1..]));
            assert_eq!(then, Err(InvalidUtf8), "{bad:02x?} split");
        }
    }

    #[test]
    fn autobahn_6_4_fails_in_the_fragment_that_breaks_it() {
        let kosme: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
        let lead = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4";
        // 6.4.1/6.4.3 send the bad code point whole in the middle piece;
        // 6.4.2/6.4.4 end the first piece on its lead, which is still fine.
        for parts in [
            [kosme, b"\xf4\x90\x80\x80", b"edited"],
            [lead, b"\x90", b"\x80\x80edited"],
        ] {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(parts[0]), Ok(()), "{parts:02x?}");
            assert_eq!(v.feed(parts[1]), Err(InvalidUtf8), "{parts:02x?}");
        }
    }

    #[test]
    fn boundary_code_points() {
        for c in [
            '\u{7F}',
            '\u{80}',
            '\u{7FF}',
            '\u{800}',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            let mut buf = [0u8; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            every_two_splits(bytes).unwrap();
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(bytes).and_then(|()| v.finish()), Ok(()), "{c:?}");
        }
        // U+110000 would be F4 90 80 80: impossible from the second byte on.
        for cut in 0..=4 {
            let mut v = Utf8Validator::new();
            let (a, b) = b"\xF4\x90\x80\x80".split_at(cut);
            let first = v.feed(a);
            assert_eq!(first.is_ok(), cut < 2, "cut {cut}");
            assert_eq!(first.and_then(|()| v.feed(b)), Err(InvalidUtf8));
        }
    }

    #[test]
    fn dangling_code_point_fails_at_finish_and_resets() {
        let euro = "€".as_bytes();
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&euro[..2]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // Had the carry survived, this last byte would complete it.
        assert_eq!(v.feed(&euro[2..]), Err(InvalidUtf8));
        v.reset();
        assert_eq!(v.feed(b"fresh"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn reset_forgets_the_carry() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xF0\x9F"), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"\x98\x80"), Err(InvalidUtf8));
        v.reset();
        assert_eq!(v.feed(b"ok").and_then(|()| v.finish()), Ok(()));
    }

    #[test]
    fn empty_pieces_change_nothing() {
        let mut v = Utf8Validator::new();
        for piece in [&b""[..], b"\xE2", b"", b"\x82", b"", b"\xAC", b""] {
            assert_eq!(v.feed(piece), Ok(()));
        }
        assert_eq!(v.finish(), Ok(()));
    }

    /// Valid code points, code points cut short and lone bytes from where
    /// UTF-8's rules change, so near misses are common.
    fn near_utf8() -> impl Strategy<Value = Vec<u8>> {
        const EDGES: &[u8] = &[
            b'a', 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
            0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF,
        ];
        let token = prop_oneof![
            4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            2 => (any::<char>(), 1usize..4).prop_map(|(c, n)| {
                let mut b = c.to_string().into_bytes();
                b.truncate(n);
                b
            }),
            2 => proptest::sample::select(EDGES).prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(token, 0..16).prop_map(|t| t.concat())
    }

    proptest! {
        #[test]
        fn valid_text_at_every_split(s in "\\PC{0,40}") {
            every_split(s.as_bytes())?;
        }

        #[test]
        fn valid_text_in_random_pieces(
            s in any::<String>(),
            picks in proptest::collection::vec(any::<Index>(), 0..8),
        ) {
            check_pieces(s.as_bytes(), &cut_points(s.len(), &picks))?;
        }

        #[test]
        fn arbitrary_bytes_at_every_split(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            every_split(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_in_random_pieces(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            picks in proptest::collection::vec(any::<Index>(), 0..8),
        ) {
            check_pieces(&bytes, &cut_points(bytes.len(), &picks))?;
        }

        #[test]
        fn near_misses_at_every_split(bytes in near_utf8()) {
            every_split(&bytes)?;
        }

        #[test]
        fn near_misses_in_random_pieces(
            bytes in near_utf8(),
            picks in proptest::collection::vec(any::<Index>(), 0..8),
        ) {
            check_pieces(&bytes, &cut_points(bytes.len(), &picks))?;
        }

        #[test]
        fn text_with_one_corrupted_byte(
            s in "[a-zκόσμε€𐍈\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}]{1,30}",
            at: Index,
            byte: u8,
            picks in proptest::collection::vec(any::<Index>(), 0..8),
        ) {
            let mut bytes = s.into_bytes();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            check_pieces(&bytes, &cut_points(bytes.len(), &picks))?;
        }
    }
}
