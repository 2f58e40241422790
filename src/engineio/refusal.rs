//! The HTTP answers to Engine.IO requests that are refused, as the Node
//! `engine.io` server gives them: a status and a JSON body
//! `{"code":N,"message":"..."}`.

/// A refused Engine.IO request. The first six are the reference server's
/// error codes 0 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Code 0: `transport` is missing or names no transport.
    TransportUnknown,
    /// Code 1: the `sid` names no live session (or is malformed).
    UnknownSid,
    /// Code 2: a handshake (no `sid`) that is not a `GET`.
    BadHandshakeMethod,
    /// Code 3: anything else wrong with the request: a WebSocket
    /// handshake without an upgrade, a polling request to an upgraded
    /// session, a concurrent `GET` or `POST`, a bad payload.
    BadRequest,
    /// Code 4: admission refused the request (403).
    Forbidden,
    /// Code 5: `EIO` is missing or not `4`.
    UnsupportedProtocolVersion,
    /// A `POST` body over `maxPayload` (413, with an empty body, as the
    /// reference answers it).
    PayloadTooLarge,
}

impl Refusal {
    /// The `Content-Type` of [`body`](Self::body).
    pub const CONTENT_TYPE: &'static str = "application/json";

    /// The reference server's error code, for all but
    /// [`PayloadTooLarge`](Self::PayloadTooLarge).
    pub const fn code(self) -> Option<u8> {
        match self {
            Self::TransportUnknown => Some(0),
            Self::UnknownSid => Some(1),
            Self::BadHandshakeMethod => Some(2),
            Self::BadRequest => Some(3),
            Self::Forbidden => Some(4),
            Self::UnsupportedProtocolVersion => Some(5),
            Self::PayloadTooLarge => None,
        }
    }

    /// The HTTP status: 403 for `Forbidden`, 413 for an over-long body,
    /// 400 for the rest.
    pub const fn status(self) -> u16 {
        match self {
            Self::Forbidden => 403,
            Self::PayloadTooLarge => 413,
            _ => 400,
        }
    }

    /// The error's message, as the JSON body names it (and the body of a
    /// refused WebSocket upgrade).
    pub const fn message(self) -> &'static str {
        match self {
            Self::TransportUnknown => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::Forbidden => "Forbidden",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::PayloadTooLarge => "Payload Too Large",
        }
    }

    /// The response body.
    pub const fn body(self) -> &'static str {
        match self {
            Self::TransportUnknown => r#"{"code":0,"message":"Transport unknown"}"#,
            Self::UnknownSid => r#"{"code":1,"message":"Session ID unknown"}"#,
            Self::BadHandshakeMethod => r#"{"code":2,"message":"Bad handshake method"}"#,
            Self::BadRequest => r#"{"code":3,"message":"Bad request"}"#,
            Self::Forbidden => r#"{"code":4,"message":"Forbidden"}"#,
            Self::UnsupportedProtocolVersion => {
                r#"{"code":5,"message":"Unsupported protocol version"}"#
            }
            Self::PayloadTooLarge => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_body() {
        let all = [
            (Refusal::TransportUnknown, 400, "Transport unknown"),
            (Refusal::UnknownSid, 400, "Session ID unknown"),
            (Refusal::BadHandshakeMethod, 400, "Bad handshake method"),
            (Refusal::BadRequest, 400, "Bad request"),
            (Refusal::Forbidden, 403, "Forbidden"),
            (
                Refusal::UnsupportedProtocolVersion,
                400,
                "Unsupported protocol version",
            ),
        ];
        for (i, (refusal, status, message)) in all.into_iter().enumerate() {
            assert_eq!(refusal.status(), status);
            assert_eq!(refusal.code(), Some(i as u8));
            assert_eq!(refusal.message(), message);
            let body: serde_json::Value = serde_json::from_str(refusal.body()).unwrap();
            assert_eq!(body, serde_json::json!({ "code": i, "message": message }));
        }
        assert_eq!(Refusal::PayloadTooLarge.status(), 413);
        assert_eq!(
            (
                Refusal::PayloadTooLarge.code(),
                Refusal::PayloadTooLarge.body()
            ),
            (None, "")
        );
    }
}
