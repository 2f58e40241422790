//! PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy and AWS NLB
//! send them ahead of the client's bytes, parsed from untrusted input.
//!
//! Sans-IO like the rest of the core: hand in what has been read; get
//! `Ok(None)` while the header is incomplete, or the header and how many
//! bytes it took. Anything that is not a well-formed header is an error;
//! a listener configured for PROXY then closes without answering, since it
//! cannot know whom it would be answering.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: no valid v1 header or HTTP request starts with it.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header is at most 107 bytes including CRLF (the spec's bound).
const V1_MAX: usize = 107;

/// v2 addresses and TLVs past this many bytes are refused: the longest
/// real headers (AWS NLB with VPC endpoint TLVs, HAProxy with SSL TLVs)
/// stay far below it, and it bounds what an attacker makes us buffer.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// What the header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer relayed a client: use `source` as the client address.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// The balancer speaks for itself (v2 LOCAL, e.g. a health check) or
    /// does not know the addresses (v1 UNKNOWN, v2 UNSPEC): use the peer
    /// address of the connection.
    Local,
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither signature: the peer is not a PROXY-speaking balancer.
    Missing,
    /// A header that breaks the spec, and what is wrong with it.
    Malformed(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no PROXY protocol header"),
            Self::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses a PROXY header from the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first == b'P' {
        return parse_v1(buf);
    }
    if first == V2_SIGNATURE[0] {
        return parse_v2(buf);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let prefix = b"PROXY ";
    let shared = buf.len().min(prefix.len());
    if buf[..shared] != prefix[..shared] {
        return Err(ProxyError::Missing);
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[prefix.len()..end])
        .map_err(|_| ProxyError::Malformed("v1 header is not ASCII"))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    if proto == "UNKNOWN" {
        // The rest of the line is to be ignored (spec 2.1).
        return Ok(Some((ProxyHeader::Local, end + 2)));
    }
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::Malformed("v1 header needs 5 fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            parse_v4(src)
                .ok_or(ProxyError::Malformed("bad v1 IPv4 source"))?
                .into(),
            parse_v4(dst)
                .ok_or(ProxyError::Malformed("bad v1 IPv4 destination"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| ProxyError::Malformed("bad v1 IPv6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| ProxyError::Malformed("bad v1 IPv6 destination"))?
                .into(),
        ),
        _ => {
            return Err(ProxyError::Malformed(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(src, parse_port(sport)?),
        destination: SocketAddr::new(dst, parse_port(dport)?),
    };
    Ok(Some((header, end + 2)))
}

/// Dotted quad without leading zeros or signs, which `Ipv4Addr`'s parser
/// already refuses; kept separate so the error names the field.
fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// A decimal port 0-65535 without leading zeros or a sign.
fn parse_port(s: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::Malformed("bad v1 port");
    if s.is_empty()
        || s.len() > 5
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let shared = buf.len().min(V2_SIGNATURE.len());
    if buf[..shared] != V2_SIGNATURE[..shared] {
        return Err(ProxyError::Missing);
    }
    let Some(head) = buf.get(..16) else {
        return Ok(None);
    };
    let (version, command) = (head[12] >> 4, head[12] & 0x0F);
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version nibble is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::Malformed("v2 payload over the size limit"));
    }
    let Some(payload) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let total = 16 + len;
    match command {
        0x0 => return Ok(Some((ProxyHeader::Local, total))),
        0x1 => {}
        _ => return Err(ProxyError::Malformed("v2 command is not LOCAL or PROXY")),
    }
    let (family, transport) = (head[13] >> 4, head[13] & 0x0F);
    if family == 0 {
        return Ok(Some((ProxyHeader::Local, total)));
    }
    if transport != 1 {
        return Err(ProxyError::Malformed("v2 transport is not STREAM"));
    }
    let header = match family {
        0x1 => {
            let a = payload
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 block too short"))?;
            let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([a[8], a[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([a[10], a[11]])),
            }
        }
        0x2 => {
            let a = payload
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 block too short"))?;
            let ip = |at: usize| {
                let octets: [u8; 16] = a[at..at + 16].try_into().expect("16 bytes");
                IpAddr::from(octets)
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
            }
        }
        // AF_UNIX: no IP to count the client by; treat as the balancer's own.
        0x3 => ProxyHeader::Local,
        _ => return Err(ProxyError::Malformed("v2 address family unknown")),
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A v2 header as HAProxy's `send-proxy-v2` writes it for IPv4.
    fn v2_ipv4(extra_tlv: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x21, 0x11]);
        b.extend_from_slice(&((12 + extra_tlv.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 5]);
        b.extend_from_slice(&51000u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b.extend_from_slice(extra_tlv);
        b
    }

    #[test]
    fn v1_examples_from_the_spec() {
        let raw = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, n) = parse(raw).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: addr("192.168.0.1:56324"),
                destination: addr("192.168.0.11:443")
            }
        );
        assert_eq!(&raw[n..], b"GET / HTTP/1.1\r\n");
        let raw = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 9001\r\n";
        assert_eq!(
            parse(raw).unwrap().unwrap().0,
            ProxyHeader::Proxied {
                source: addr("[2001:db8::1]:4000"),
                destination: addr("[2001:db8::2]:9001")
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap(),
            (ProxyHeader::Local, 15)
        );
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse(unknown).unwrap().unwrap().0, ProxyHeader::Local);
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        // A PP2_TYPE_AWS TLV (0xEA) carrying a VPC endpoint id, as NLB sends.
        let tlv = [0xEA, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e'];
        for extra in [&[][..], &tlv[..]] {
            let mut raw = v2_ipv4(extra);
            let len = raw.len();
            raw.extend_from_slice(b"GET /");
            assert_eq!(
                parse(&raw).unwrap().unwrap(),
                (
                    ProxyHeader::Proxied {
                        source: addr("192.0.2.7:51000"),
                        destination: addr("10.0.0.5:443")
                    },
                    len
                )
            );
        }
        let mut v6 = V2_SIGNATURE.to_vec();
        v6.extend_from_slice(&[0x21, 0x21, 0, 36]);
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x1F, 0x90, 0x23, 0x29]);
        assert_eq!(
            parse(&v6).unwrap().unwrap().0,
            ProxyHeader::Proxied {
                source: addr("[2001:db8::7]:8080"),
                destination: addr("[2001:db8::1]:9001")
            }
        );
        // LOCAL (health check) with no addresses.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap(), (ProxyHeader::Local, 16));
    }

    #[test]
    fn incomplete_headers_wait_at_every_split() {
        let v1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec();
        for raw in [v1, v2_ipv4(&[1, 0, 1, 0])] {
            for cut in 0..raw.len() {
                assert_eq!(parse(&raw[..cut]), Ok(None), "cut {cut} of {raw:?}");
            }
            assert!(parse(&raw).unwrap().is_some());
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let missing: [&[u8]; 3] = [b"GET / HTTP/1.1\r\n", b"PROXZ", b"\r\n\r\n\x00\r\nQUIZ"];
        for raw in missing {
            assert_eq!(parse(raw), Err(ProxyError::Missing), "{raw:?}");
        }
        let malformed: [&[u8]; 9] = [
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 x\r\n",
            b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
            b"PROXY TCP4 ::1 192.168.0.11 1 443\r\n",
            b"PROXY UDP4 192.168.0.1 192.168.0.11 1 443\r\n",
            b"PROXY TCP6 192.168.0.1 ::1 1 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 1 +443\r\n",
        ];
        for raw in malformed {
            assert!(
                matches!(parse(raw), Err(ProxyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            parse(&endless),
            Err(ProxyError::Malformed("v1 header longer than 107 bytes"))
        );
        let mut v2 = v2_ipv4(&[]);
        v2[12] = 0x31;
        assert!(
            matches!(parse(&v2), Err(ProxyError::Malformed(_))),
            "version 3"
        );
        let mut v2 = v2_ipv4(&[]);
        v2[13] = 0x12;
        assert!(matches!(parse(&v2), Err(ProxyError::Malformed(_))), "UDP");
        let mut v2 = v2_ipv4(&[]);
        v2[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert!(
            matches!(parse(&v2), Err(ProxyError::Malformed(_))),
            "oversized"
        );
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(
            matches!(parse(&short), Err(ProxyError::Malformed(_))),
            "short IPv4 block"
        );
    }
}
