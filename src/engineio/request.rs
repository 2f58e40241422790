//! What an Engine.IO HTTP request asks for, read from its method, its
//! query (`EIO`, `transport`, `sid`; others such as the cache-busting `t`
//! are ignored) and whether it asks for a WebSocket upgrade.
//!
//! The checks run in the reference server's order: the transport, then
//! the session id or (without one) the handshake's method and upgrade,
//! then the protocol version. Unlike the reference, `EIO=4` is required
//! on every request, not only on the handshake, as the v4 spec says.

use crate::protocol::handshake::form_decode;

use super::refusal::Refusal;
use super::sid::Sid;

/// A session's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling: `GET` to receive, `POST` to send.
    Polling,
    /// One WebSocket connection.
    WebSocket,
}

/// A valid Engine.IO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET transport=polling` without a `sid`: open a polling session
    /// and answer with its `open` packet.
    OpenPolling,
    /// `GET transport=polling&sid=...`: a poll, to answer now or hold.
    Poll(Sid),
    /// `POST transport=polling&sid=...`: a body of packets.
    Post(Sid),
    /// A WebSocket upgrade `transport=websocket` without a `sid`: open a
    /// WebSocket-only session.
    OpenWebSocket,
    /// A WebSocket upgrade `transport=websocket&sid=...`: a polling
    /// session's upgrade.
    Upgrade(Sid),
}

impl Request {
    /// The session the request names, if it names one.
    pub fn sid(&self) -> Option<Sid> {
        match *self {
            Self::Poll(sid) | Self::Post(sid) | Self::Upgrade(sid) => Some(sid),
            Self::OpenPolling | Self::OpenWebSocket => None,
        }
    }
}

/// Reads a request: `method` as the request line has it, `query` the
/// target's part after `?` (percent-encoded), and whether the request
/// asks for a WebSocket upgrade. A malformed `sid` is an unknown one; an
/// empty `sid` is none (as the reference reads it). A parameter given
/// twice is a bad request.
pub fn parse(method: &str, query: &str, upgrade: bool) -> Result<Request, Refusal> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "EIO" => &mut eio,
            "transport" => &mut transport,
            "sid" => &mut sid,
            _ => continue,
        };
        if slot.replace(form_decode(value)).is_some() {
            return Err(Refusal::BadRequest);
        }
    }
    let transport = match transport.as_ref().and_then(|t| t.as_deref()) {
        Some("polling") => Transport::Polling,
        Some("websocket") => Transport::WebSocket,
        _ => return Err(Refusal::TransportUnknown),
    };
    let request = match sid {
        Some(Some(text)) if !text.is_empty() => {
            let sid = Sid::parse(text.as_bytes()).ok_or(Refusal::UnknownSid)?;
            match (transport, method, upgrade) {
                (Transport::Polling, "GET", false) => Request::Poll(sid),
                (Transport::Polling, "POST", false) => Request::Post(sid),
                (Transport::WebSocket, "GET", true) => Request::Upgrade(sid),
                _ => return Err(Refusal::BadRequest),
            }
        }
        Some(None) => return Err(Refusal::UnknownSid),
        _ => {
            if method != "GET" {
                return Err(Refusal::BadHandshakeMethod);
            }
            match (transport, upgrade) {
                (Transport::Polling, false) => Request::OpenPolling,
                (Transport::WebSocket, true) => Request::OpenWebSocket,
                _ => return Err(Refusal::BadRequest),
            }
        }
    };
    match eio.as_ref().and_then(|v| v.as_deref()) {
        Some("4") => Ok(request),
        _ => Err(Refusal::UnsupportedProtocolVersion),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 14] = [7; 14];

    fn sid() -> Sid {
        Sid::from_parts(3, 9, 1, SECRET)
    }

    fn q(rest: &str) -> String {
        rest.replace("SID", sid().encode().as_str())
    }

    #[test]
    fn the_five_requests() {
        let get = |query: &str| parse("GET", &q(query), false);
        assert_eq!(get("EIO=4&transport=polling"), Ok(Request::OpenPolling));
        assert_eq!(
            get("EIO=4&transport=polling&t=Nx1&sid="),
            Ok(Request::OpenPolling)
        );
        assert_eq!(
            get("EIO=4&transport=polling&sid=SID"),
            Ok(Request::Poll(sid()))
        );
        assert_eq!(
            parse("POST", &q("transport=polling&sid=SID&EIO=4"), false),
            Ok(Request::Post(sid()))
        );
        assert_eq!(
            parse("GET", "EIO=4&transport=websocket", true),
            Ok(Request::OpenWebSocket)
        );
        assert_eq!(
            parse("GET", &q("EIO=4&transport=websocket&sid=SID"), true),
            Ok(Request::Upgrade(sid()))
        );
        assert_eq!(Request::Upgrade(sid()).sid(), Some(sid()));
        assert_eq!(Request::OpenPolling.sid(), None);
    }

    #[test]
    fn the_test_suites_bad_handshakes() {
        let get = |query: &str| parse("GET", query, false);
        assert_eq!(
            get("transport=polling"),
            Err(Refusal::UnsupportedProtocolVersion)
        );
        assert_eq!(
            get("EIO=abc&transport=polling"),
            Err(Refusal::UnsupportedProtocolVersion)
        );
        assert_eq!(
            get("EIO=3&transport=polling"),
            Err(Refusal::UnsupportedProtocolVersion)
        );
        assert_eq!(get("EIO=4"), Err(Refusal::TransportUnknown));
        assert_eq!(get("EIO=4&transport=abc"), Err(Refusal::TransportUnknown));
        assert_eq!(get(""), Err(Refusal::TransportUnknown));
        for method in ["POST", "PUT"] {
            assert_eq!(
                parse(method, "EIO=4&transport=polling", false),
                Err(Refusal::BadHandshakeMethod)
            );
        }
        assert_eq!(
            parse("GET", "transport=websocket", true),
            Err(Refusal::UnsupportedProtocolVersion)
        );
        assert_eq!(
            parse("GET", "EIO=4&transport=abc", true),
            Err(Refusal::TransportUnknown)
        );
    }

    #[test]
    fn transports_and_methods_must_match() {
        // A WebSocket handshake that is not an upgrade, and the reverse.
        assert_eq!(
            parse("GET", "EIO=4&transport=websocket", false),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            parse("GET", "EIO=4&transport=polling", true),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            parse("PUT", &q("EIO=4&transport=polling&sid=SID"), false),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            parse("GET", &q("EIO=4&transport=websocket&sid=SID"), false),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            parse("GET", &q("EIO=4&transport=polling&sid=SID"), true),
            Err(Refusal::BadRequest)
        );
    }

    #[test]
    fn sids_and_encodings() {
        let get = |query: &str| parse("GET", &q(query), false);
        assert_eq!(
            get("EIO=4&transport=polling&sid=nope"),
            Err(Refusal::UnknownSid)
        );
        assert_eq!(
            get("EIO=4&transport=polling&sid=%ff"),
            Err(Refusal::UnknownSid)
        );
        // Percent-encoded names still count.
        assert_eq!(
            get("EIO=%34&transport=poll%69ng&sid=SID"),
            Ok(Request::Poll(sid()))
        );
        assert_eq!(
            get("EIO=4&EIO=4&transport=polling"),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            get("EIO=4&transport=polling&sid=SID&sid=SID"),
            Err(Refusal::BadRequest)
        );
        assert_eq!(get("EIO=4&transport=polling&sid"), Ok(Request::OpenPolling));
        assert_eq!(
            get("EIO=4&transport=polling&&x&sid=SID"),
            Ok(Request::Poll(sid()))
        );
    }
}
