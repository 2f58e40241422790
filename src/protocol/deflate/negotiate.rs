//! Negotiating permessage-deflate (RFC 7692 §5, §7): every offer in
//! `Sec-WebSocket-Extensions` is parsed, invalid ones are declined, and the
//! first acceptable one is answered with parameters the client allowed.

/// Which deflate offers the server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeflatePolicy {
    /// Never negotiate compression.
    Off,
    /// Accept offers as made: context takeover where the client allows it
    /// (better ratios, about 300 KiB of zlib state per connection while
    /// it lives).
    On,
    /// Accept, but always without context takeover in both directions, so
    /// no connection keeps compression state between messages and a
    /// broadcast compresses once for every subscriber.
    #[default]
    NoContextTakeover,
}

/// What was agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// We reset our compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so our
    /// decompressor need not keep its window.
    pub client_no_context_takeover: bool,
    /// The LZ77 window we compress with (9-15).
    pub server_max_window_bits: u8,
    /// A window limit we announced for the client, if it offered one.
    pub client_max_window_bits: Option<u8>,
    /// Whether the response must name `server_max_window_bits`.
    announce_server_window: bool,
}

impl Params {
    /// No context takeover either way, with a `bits` window: what a shared
    /// (compress-once) frame is made with.
    pub fn without_context_takeover(bits: u8) -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: bits,
            client_max_window_bits: None,
            announce_server_window: false,
        }
    }

    /// The `Sec-WebSocket-Extensions` value of the response.
    pub fn response(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.announce_server_window {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if let Some(bits) = self.client_max_window_bits {
            s.push_str(&format!("; client_max_window_bits={bits}"));
        }
        s
    }
}

/// One parsed offer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Picks the first acceptable permessage-deflate offer among `values` (each
/// a `Sec-WebSocket-Extensions` header value, in order), or `None`.
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    policy: DeflatePolicy,
) -> Option<Params> {
    if policy == DeflatePolicy::Off {
        return None;
    }
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for element in value.split(',') {
            let mut parts = element.split(';');
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                continue;
            }
            let Some(offer) = parse_offer(parts) else {
                continue; // declined: invalid
            };
            if let Some(params) = accept(offer, policy) {
                return Some(params);
            }
        }
    }
    None
}

/// Parses an offer's parameters; `None` if the RFC says to decline it.
fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let index = match key {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None; // the same parameter twice
        }
        match (index, value) {
            (0, None) => offer.server_no_context_takeover = true,
            (1, None) => offer.client_no_context_takeover = true,
            (2, Some(v)) => offer.server_max_window_bits = Some(window_bits(v)?),
            (3, None) => offer.client_max_window_bits = Some(None),
            (3, Some(v)) => offer.client_max_window_bits = Some(Some(window_bits(v)?)),
            _ => return None, // a value where none belongs, or none where one must be
        }
    }
    Some(offer)
}

/// A quoted-string value is allowed where a token is (RFC 7692 §7.1);
/// what is inside must still be a token.
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|inner| !inner.contains('"')),
        None => Some(v),
    }
}

/// `1*DIGIT` from 8 to 15, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

fn accept(offer: Offer, policy: DeflatePolicy) -> Option<Params> {
    let forced = policy == DeflatePolicy::NoContextTakeover;
    // zlib cannot produce a raw deflate stream with a 256-byte window: an
    // offer that insists on 8 bits is declined rather than broken.
    let server_window = match offer.server_max_window_bits {
        Some(8) => return None,
        Some(bits) => bits,
        None => 15,
    };
    Some(Params {
        server_no_context_takeover: offer.server_no_context_takeover || forced,
        // Asking the client to reset is allowed unrequested (§7.1.1.2).
        client_no_context_takeover: offer.client_no_context_takeover || forced,
        server_max_window_bits: server_window,
        // We inflate with a full window, so we never need to limit the
        // client's; echo its own value back when it named one.
        client_max_window_bits: offer.client_max_window_bits.flatten(),
        announce_server_window: offer.server_max_window_bits.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(value: &str, policy: DeflatePolicy) -> Option<String> {
        negotiate([value.as_bytes()], policy).map(|p| p.response())
    }

    #[test]
    fn chrome_and_firefox_offers() {
        let chrome = "permessage-deflate; client_max_window_bits";
        assert_eq!(
            pick(chrome, DeflatePolicy::On).as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            pick(chrome, DeflatePolicy::NoContextTakeover).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(pick(chrome, DeflatePolicy::Off), None);
    }

    #[test]
    fn parameters_are_answered_within_what_was_offered() {
        let p = negotiate(
            [
                b"permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"
                    .as_slice(),
            ],
            DeflatePolicy::On,
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(
            p.response(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"
        );
        let quoted = pick(
            r#"permessage-deflate; server_max_window_bits="9""#,
            DeflatePolicy::On,
        );
        assert_eq!(
            quoted.as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
        // No client_max_window_bits offered: never answered with one.
        let p = negotiate([b"permessage-deflate".as_slice()], DeflatePolicy::On).unwrap();
        assert_eq!(p.client_max_window_bits, None);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            r#"permessage-deflate; server_max_window_bits="1"0""#,
            // A valid offer zlib cannot honour.
            "permessage-deflate; server_max_window_bits=8",
        ] {
            assert_eq!(pick(bad, DeflatePolicy::On), None, "{bad}");
            let two = format!("{bad}, permessage-deflate; client_no_context_takeover");
            assert_eq!(
                pick(&two, DeflatePolicy::On).as_deref(),
                Some("permessage-deflate; client_no_context_takeover"),
                "{bad}"
            );
        }
    }

    #[test]
    fn offers_in_several_header_lines_and_other_extensions() {
        let lines: [&[u8]; 2] = [
            b"x-webkit-deflate-frame",
            b"foo; bar=1, permessage-deflate; server_no_context_takeover",
        ];
        let p = negotiate(lines, DeflatePolicy::On).unwrap();
        assert!(p.server_no_context_takeover && !p.client_no_context_takeover);
        assert_eq!(negotiate([b"foo".as_slice()], DeflatePolicy::On), None);
    }
}
