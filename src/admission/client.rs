//! Who a connection belongs to: the address it is counted under, and how a
//! trusted proxy's `X-Forwarded-For` names the real client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The unit every cap and rate is counted by: an IPv4 address, or an IPv6
/// prefix (one subscriber usually holds a whole /64, so counting single
/// IPv6 addresses would hand each of them 2^64 caps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses count here too).
    V4(u32),
    /// The leading `prefix` bits of an IPv6 address, the rest zero.
    V6(u128),
}

impl ClientKey {
    /// The key `ip` is counted under when IPv6 clients are grouped by
    /// their leading `v6_prefix` bits (0-128).
    pub fn new(ip: IpAddr, v6_prefix: u8) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = u32::from(v6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                Self::V6(bits & mask)
            }
        }
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client a dual-stack socket accepted.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A net written IPv4-mapped (`::ffff:10.0.0.0/104`) as the IPv4 net it
/// names (`10.0.0.0/8`), since peers are compared in [`canonical`] form: a
/// dual-stack socket's IPv4 peer and a plain IPv4 peer then match alike.
/// Other nets are kept as written (a wide IPv6 net such as `::/0` does not
/// take in IPv4 peers).
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map_or(net, IpNet::V4)
                .trunc(),
            None => net,
        },
        other => other,
    }
}

/// Whether `ip` is one of the listed proxies (nets in [`canonical_net`]
/// form).
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client a chain of trusted proxies reports. `hops` are the
/// `X-Forwarded-For` values in header order; each proxy appends the address
/// it received from, so the chain is walked from the right and the first
/// address that is not a trusted proxy is the client (anything left of it
/// could have been forged by that client). `None` when a hop does not parse:
/// a garbled chain proves nothing, and the peer address is used instead.
pub fn forwarded_client<'a>(
    hops: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let mut leftmost = None;
    for hop in hops.rev() {
        let ip = parse_hop(hop)?;
        if !is_trusted(ip, trusted) {
            return Some(canonical(ip));
        }
        leftmost = Some(canonical(ip));
    }
    leftmost
}

/// One `X-Forwarded-For` element: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`
/// or `[2001:db8::1]:5678`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn hops(header: &'static str) -> impl DoubleEndedIterator<Item = &'static [u8]> {
        header.split(',').map(str::as_bytes)
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let a = ClientKey::new(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = ClientKey::new(ip("2001:db8:1:2:ffff::9"), 64);
        let c = ClientKey::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            ClientKey::new(ip("2001:db8::1"), 128),
            ClientKey::new(ip("2001:db8::2"), 128)
        );
        assert_eq!(
            ClientKey::new(ip("2001:db8::1"), 0),
            ClientKey::new(ip("fe80::1"), 0)
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(
            ClientKey::new(ip("::ffff:192.0.2.7"), 64),
            ClientKey::new(ip("192.0.2.7"), 64)
        );
        assert_ne!(
            ClientKey::new(ip("192.0.2.7"), 64),
            ClientKey::new(ip("192.0.2.8"), 64)
        );
    }

    #[test]
    fn forwarded_chain_is_walked_from_the_right() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        // The client may forge anything left of the first untrusted hop.
        assert_eq!(
            forwarded_client(hops("6.6.6.6, 203.0.113.9, 10.1.1.1"), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            forwarded_client(hops("203.0.113.9:4711"), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            forwarded_client(hops("[2001:db8::5]:443, 2001:db8:ffff::1"), &trusted),
            Some(ip("2001:db8::5"))
        );
        // Only proxies: the one farthest away is the best guess.
        assert_eq!(
            forwarded_client(hops("10.0.0.2, 10.0.0.3"), &trusted),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(forwarded_client(hops("203.0.113.9, junk"), &trusted), None);
        assert_eq!(forwarded_client(hops("1.2.3.4:99999"), &trusted), None);
        assert_eq!(forwarded_client(std::iter::empty(), &trusted), None);
    }

    #[test]
    fn trust_covers_mapped_addresses() {
        let trusted = nets(&["127.0.0.1/32"]);
        assert!(is_trusted(ip("::ffff:127.0.0.1"), &trusted));
        assert!(!is_trusted(ip("127.0.0.2"), &trusted));
    }

    #[test]
    fn mapped_nets_are_their_ipv4_nets() {
        let canon = |s: &str| canonical_net(s.parse().unwrap()).to_string();
        assert_eq!(canon("::ffff:127.0.0.0/104"), "127.0.0.0/8");
        assert_eq!(canon("::ffff:10.1.2.3/128"), "10.1.2.3/32");
        assert_eq!(canon("::ffff:0.0.0.0/96"), "0.0.0.0/0");
        assert_eq!(canon("::/0"), "::/0");
        assert_eq!(canon("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(canon("10.0.0.0/8"), "10.0.0.0/8");
        let trusted: Vec<IpNet> = nets(&["::ffff:127.0.0.0/104"])
            .into_iter()
            .map(canonical_net)
            .collect();
        assert!(is_trusted(ip("127.0.0.1"), &trusted));
        assert!(is_trusted(ip("::ffff:127.9.9.9"), &trusted));
        assert!(!is_trusted(ip("128.0.0.1"), &trusted));
    }
}
