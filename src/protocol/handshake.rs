//! The HTTP/1.1 side of a listener: the WebSocket opening handshake
//! (RFC 6455 §4.2) parsed with httparse, and the responses surge sends.
//!
//! Everything here is a pure function of the request bytes; the caller owns
//! the socket and decides what to do with the answer.

use std::fmt;

use super::accept_key::{accept_key, is_valid_key};

/// Largest request head accepted; beyond it the answer is 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Most header lines accepted; beyond it the answer is 431.
pub const MAX_HEADERS: usize = 100;

/// Storage for parsed headers, owned by the caller so parsing never allocates.
pub type HeaderBuf<'b> = [httparse::Header<'b>; MAX_HEADERS];

/// An empty [`HeaderBuf`].
pub fn header_buf<'b>() -> HeaderBuf<'b> {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

/// A complete request head.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// Bytes the head took; anything after it belongs to the next layer.
    pub head_len: usize,
    /// The method, e.g. `GET`.
    pub method: &'b str,
    /// The request target, e.g. `/echo?token=1`.
    pub target: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The header lines in order.
    pub headers: &'h [httparse::Header<'b>],
}

/// A request that asks for a WebSocket and passed every §4.2.1 check.
#[derive(Debug)]
pub struct Upgrade<'r, 'h, 'b> {
    /// The request it came from.
    pub request: &'r Request<'h, 'b>,
    /// The validated `Sec-WebSocket-Key`.
    pub key: &'b [u8],
}

/// A handshake the server refuses, with the status that says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// 431: head over [`MAX_REQUEST_BYTES`] or over [`MAX_HEADERS`] lines.
    TooLarge,
    /// 400: not parseable as HTTP/1.x.
    Malformed(&'static str),
    /// 405: a method other than GET.
    MethodNotAllowed,
    /// 505: an upgrade over HTTP/1.0.
    HttpVersion,
    /// 426: a `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
    /// 426: a plain request on a WebSocket-only resource.
    UpgradeRequired,
    /// 404: no route for the path.
    NotFound,
}

impl HandshakeError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::Malformed(_) => 400,
            Self::MethodNotAllowed => 405,
            Self::HttpVersion => 505,
            Self::UnsupportedVersion | Self::UpgradeRequired => 426,
            Self::NotFound => 404,
        }
    }

    /// Writes the complete error response, ending the exchange.
    pub fn encode_response(self, out: &mut Vec<u8>) {
        let extra: &str = match self {
            Self::MethodNotAllowed => "Allow: GET\r\n",
            Self::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            Self::UpgradeRequired => "Upgrade: websocket\r\n",
            _ => "",
        };
        let body = format!("{self}\n");
        encode_plain_response(out, self.status(), extra, &body);
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "request head over {MAX_REQUEST_BYTES} bytes or {MAX_HEADERS} header lines"
            ),
            Self::Malformed(why) => write!(f, "bad request: {why}"),
            Self::MethodNotAllowed => f.write_str("only GET is allowed"),
            Self::HttpVersion => f.write_str("WebSocket needs HTTP/1.1 or later"),
            Self::UnsupportedVersion => f.write_str("only Sec-WebSocket-Version 13 is supported"),
            Self::UpgradeRequired => f.write_str("this resource speaks WebSocket only"),
            Self::NotFound => f.write_str("not found"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is
/// incomplete and still within the size limits.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut HeaderBuf<'b>,
) -> Result<Option<Request<'h, 'b>>, HandshakeError> {
    let mut req = httparse::Request::new(headers);
    let status = req.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HandshakeError::TooLarge,
        httparse::Error::Version => HandshakeError::Malformed("unsupported HTTP version"),
        httparse::Error::HeaderName => HandshakeError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::Malformed("invalid header value"),
        httparse::Error::Token => HandshakeError::Malformed("invalid token"),
        httparse::Error::Status => HandshakeError::Malformed("invalid status"),
        httparse::Error::NewLine => HandshakeError::Malformed("invalid line ending"),
    })?;
    match status {
        httparse::Status::Partial if buf.len() >= MAX_REQUEST_BYTES => {
            Err(HandshakeError::TooLarge)
        }
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(head_len) if head_len > MAX_REQUEST_BYTES => {
            Err(HandshakeError::TooLarge)
        }
        httparse::Status::Complete(head_len) => Ok(Some(Request {
            head_len,
            method: req.method.unwrap_or_default(),
            target: req.path.unwrap_or_default(),
            minor_version: req.version.unwrap_or_default(),
            headers: req.headers,
        })),
    }
}

impl<'h, 'b> Request<'h, 'b> {
    /// The path of the target, without its query.
    pub fn path(&self) -> &'b str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Every comma-separated token of every header called `name`, trimmed.
    pub fn header_tokens<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    /// How many header lines are called `name`.
    fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the client asks for a WebSocket at all (`Upgrade: websocket`).
    pub fn wants_websocket(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }

    /// Checks every §4.2.1 requirement of an opening handshake.
    pub fn validate_upgrade<'r>(&'r self) -> Result<Upgrade<'r, 'h, 'b>, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.minor_version < 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if self.header("host").is_none() {
            return Err(HandshakeError::Malformed("missing Host"));
        }
        // RFC 7230 §5.4: more than one Host is a 400.
        if self.count("host") > 1 {
            return Err(HandshakeError::Malformed("more than one Host"));
        }
        if !self.wants_websocket() {
            return Err(HandshakeError::Malformed("missing Upgrade: websocket"));
        }
        if !self.has_token("connection", "upgrade") {
            return Err(HandshakeError::Malformed("missing Connection: Upgrade"));
        }
        let mut versions = self.header_tokens("sec-websocket-version");
        match (versions.next(), versions.next()) {
            (Some(b"13"), None) => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        // RFC 6455 §11.3.1: Sec-WebSocket-Key must not appear more than once.
        if self.count("sec-websocket-key") > 1 {
            return Err(HandshakeError::Malformed("more than one Sec-WebSocket-Key"));
        }
        let key = match self.header("sec-websocket-key").map(<[u8]>::trim_ascii) {
            Some(key) if is_valid_key(key) => key,
            Some(_) => {
                return Err(HandshakeError::Malformed(
                    "Sec-WebSocket-Key is not base64 of 16 bytes",
                ))
            }
            None => return Err(HandshakeError::Malformed("missing Sec-WebSocket-Key")),
        };
        Ok(Upgrade { request: self, key })
    }
}

impl Upgrade<'_, '_, '_> {
    /// The first subprotocol the client offered that `supported` contains;
    /// the server never picks one the client did not offer.
    pub fn choose_subprotocol<'s>(&self, supported: &'s [String]) -> Option<&'s str> {
        self.request
            .header_tokens("sec-websocket-protocol")
            .find_map(|offered| supported.iter().find(|s| s.as_bytes() == offered))
            .map(String::as_str)
    }

    /// Writes the `101 Switching Protocols` response, naming the chosen
    /// subprotocol and the agreed extensions, if any.
    pub fn encode_accept(
        &self,
        out: &mut Vec<u8>,
        subprotocol: Option<&str>,
        extensions: Option<&str>,
    ) {
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        out.extend_from_slice(&accept_key(self.key));
        if let Some(protocol) = subprotocol {
            out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
            out.extend_from_slice(protocol.as_bytes());
        }
        if let Some(extensions) = extensions {
            out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
            out.extend_from_slice(extensions.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// A query value as a form writes it, decoded: `+` is a space, the rest
/// percent-encoded UTF-8; `None` when the bytes are not UTF-8.
pub fn form_decode(value: &str) -> Option<String> {
    let value: std::borrow::Cow<'_, str> = if value.contains('+') {
        value.replace('+', " ").into()
    } else {
        value.into()
    };
    let decoded = percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
}

/// Writes a complete non-upgrade response that closes the connection.
pub fn encode_plain_response(out: &mut Vec<u8>, status: u16, extra_headers: &str, body: &str) {
    encode_response(
        out,
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body,
    );
}

/// Writes a complete non-upgrade response of any content type that closes
/// the connection; `extra_headers` are whole lines, each ending in CRLF.
pub fn encode_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &str,
) {
    use std::io::Write;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn check(raw: &str) -> Result<Vec<u8>, HandshakeError> {
        let mut headers = header_buf();
        let req = parse_request(raw.as_bytes(), &mut headers)?.expect("complete");
        let up = req.validate_upgrade()?;
        let mut out = Vec::new();
        up.encode_accept(
            &mut out,
            up.choose_subprotocol(&["superchat".into(), "chat".into()]),
            None,
        );
        Ok(out)
    }

    #[test]
    fn accepts_the_rfc_example() {
        let out = String::from_utf8(check(GOOD).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(out.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        // The client's preference order wins among protocols both sides know.
        assert!(out.contains("Sec-WebSocket-Protocol: chat\r\n"));
    }

    #[test]
    fn partial_heads_wait_at_every_split() {
        for cut in 0..GOOD.len() {
            let mut headers = header_buf();
            let parsed = parse_request(&GOOD.as_bytes()[..cut], &mut headers).unwrap();
            assert!(parsed.is_none(), "cut {cut}");
        }
    }

    #[test]
    fn rejections_carry_the_right_status() {
        let cases: &[(&str, &str, u16)] = &[
            ("GET /chat?x=1 HTTP/1.1", "POST /chat HTTP/1.1", 405),
            ("GET /chat?x=1 HTTP/1.1", "GET /chat HTTP/1.0", 505),
            ("Host: server.example.com\r\n", "", 400),
            ("Upgrade: websocket", "Upgrade: h2c", 400),
            (
                "Connection: keep-alive, Upgrade",
                "Connection: keep-alive",
                400,
            ),
            (
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Version: 12",
                426,
            ),
            ("Sec-WebSocket-Version: 13\r\n", "", 426),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", 400),
        ];
        for (from, to, status) in cases {
            let raw = GOOD.replacen(from, to, 1);
            assert_eq!(
                check(&raw).map(|_| ()).err().map(HandshakeError::status),
                Some(*status),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn repeated_host_or_key_is_400() {
        let two_keys = GOOD.replacen(
            "Origin:",
            "Sec-WebSocket-Key: YmJiYmJiYmJiYmJiYmJiYg==\r\nOrigin:",
            1,
        );
        assert_eq!(
            check(&two_keys).unwrap_err(),
            HandshakeError::Malformed("more than one Sec-WebSocket-Key")
        );
        let two_hosts = GOOD.replacen("Origin:", "Host: other\r\nOrigin:", 1);
        assert_eq!(
            check(&two_hosts).unwrap_err(),
            HandshakeError::Malformed("more than one Host")
        );
    }

    #[test]
    fn oversized_heads_are_431() {
        let big = GOOD.replacen(
            "Origin:",
            &format!("X-Pad: {}\r\nOrigin:", "a".repeat(9000)),
            1,
        );
        assert_eq!(check(&big).unwrap_err(), HandshakeError::TooLarge);
        let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
        let raw = GOOD.replacen("Origin:", &format!("{many}Origin:"), 1);
        assert_eq!(check(&raw).unwrap_err(), HandshakeError::TooLarge);
        let mut headers = header_buf();
        let endless = "GET / HTTP/1.1\r\nX: ".to_string() + &"a".repeat(MAX_REQUEST_BYTES);
        assert_eq!(
            parse_request(endless.as_bytes(), &mut headers).unwrap_err(),
            HandshakeError::TooLarge
        );
    }

    #[test]
    fn never_picks_an_unoffered_subprotocol() {
        let raw = GOOD.replacen("chat, superchat", "mqtt", 1);
        let out = String::from_utf8(check(&raw).unwrap()).unwrap();
        assert!(!out.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn error_responses_are_complete_http() {
        let mut out = Vec::new();
        HandshakeError::UnsupportedVersion.encode_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn responses_carry_their_content_type_and_headers() {
        let mut out = Vec::new();
        encode_response(
            &mut out,
            200,
            "text/html; charset=utf-8",
            "X-A: b\r\n",
            "<p>é</p>",
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: 9\r\nX-A: b\r\n\r\n<p>é</p>"
        );
    }
}
