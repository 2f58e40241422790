//! Close codes (RFC 6455 §7.4) and close frame payloads (§5.5.1).

use super::error::ProtocolError;

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going down or the page is navigating away.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type this endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no code was present; never sent on the wire.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection dropped without a close frame; never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload inconsistent with the message type (bad UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a policy was violated.
    pub const POLICY: Self = Self(1008);
    /// 1009: the message is too big to process.
    pub const TOO_BIG: Self = Self(1009);
    /// 1010: the client needed an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: overloaded, try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Whether a peer may put this code in a close frame: 1000-1003,
    /// 1007-1014 and the 3000-4999 registered and private ranges. 1004 is
    /// reserved, 1005/1006/1015 are reserved for local reporting only.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// The parsed payload of a received close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosePayload<'a> {
    /// `None` for an empty close frame (reported locally as 1005).
    pub code: Option<CloseCode>,
    /// The UTF-8 reason, possibly empty.
    pub reason: &'a str,
}

impl<'a> ClosePayload<'a> {
    /// Validates a close frame's payload: empty, or a sendable code followed
    /// by a UTF-8 reason.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        match payload {
            [] => Ok(Self {
                code: None,
                reason: "",
            }),
            [_] => Err(ProtocolError::TruncatedCloseCode),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason =
                    simdutf8::basic::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Self {
                    code: Some(code),
                    reason,
                })
            }
        }
    }
}

/// Appends a close frame carrying `code` and `reason` to `out`. The reason
/// is cut at a character boundary so the payload stays within 125 bytes.
pub fn encode_close(out: &mut Vec<u8>, code: Option<CloseCode>, reason: &str) {
    let mut payload = [0u8; super::frame::MAX_CONTROL_PAYLOAD];
    let len = match code {
        None => 0,
        Some(code) => {
            payload[..2].copy_from_slice(&code.0.to_be_bytes());
            let mut cut = reason.len().min(payload.len() - 2);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
            2 + cut
        }
    };
    super::frame::encode_frame(out, true, super::frame::OpCode::Close, &payload[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_classified() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_sendable(), expected, "code {code}");
        }
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(ClosePayload::parse(&[]).unwrap().code, None);
        assert_eq!(
            ClosePayload::parse(&[0x03]),
            Err(ProtocolError::TruncatedCloseCode)
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let p = code.to_be_bytes();
            assert_eq!(
                ClosePayload::parse(&p),
                Err(ProtocolError::InvalidCloseCode(code))
            );
        }
        let ok = ClosePayload::parse(b"\x03\xe8bye \xce\xba").unwrap();
        assert_eq!((ok.code, ok.reason), (Some(CloseCode::NORMAL), "bye κ"));
        assert_eq!(
            ClosePayload::parse(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let reason = "κ".repeat(100);
        let mut out = Vec::new();
        encode_close(&mut out, Some(CloseCode::GOING_AWAY), &reason);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        let parsed = ClosePayload::parse(&out[2..]).unwrap();
        assert_eq!(parsed.code, Some(CloseCode::GOING_AWAY));
        assert!(reason.starts_with(parsed.reason));
    }
}
