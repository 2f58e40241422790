//! What an embedder's upgrade rule sees and how the config carries it.
//! Admission (`admission/policy.rs`) consults the rule, last of the upgrade
//! rules; its interface lives here so that [`super::admission::Policy`],
//! a setting, can hold one.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// What an upgrade hook sees of the request.
#[derive(Debug)]
pub struct UpgradeRequest<'a> {
    /// The request path, without its query.
    pub path: &'a str,
    /// The query string after `?`, if any.
    pub query: Option<&'a str>,
    /// The client address admission counts it under (after PROXY protocol
    /// and trusted `X-Forwarded-For`).
    pub client: IpAddr,
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<&'a str>,
    /// Who the request's signed token says the client is (its `sub`), once
    /// it verified (with `--jwt-*`; the upgrade hook runs before it is).
    pub user: Option<Box<str>>,
    headers: &'a [httparse::Header<'a>],
}

impl<'a> UpgradeRequest<'a> {
    pub(crate) fn new(
        target: &'a str,
        headers: &'a [httparse::Header<'a>],
        client: IpAddr,
        subprotocol: Option<&'a str>,
    ) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        Self {
            path,
            query,
            client,
            subprotocol,
            user: None,
            headers,
        }
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Every header line, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn offered_subprotocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// The value of a query parameter, as sent (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        query_param(self.query?, name)
    }
}

/// The value of parameter `name` in a query string, as sent (not
/// percent-decoded).
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// An embedder's rule for upgrades: `Err(status)` refuses with that HTTP
/// status (403 if it is not a 4xx or 5xx).
pub trait UpgradeHook: Send + Sync {
    /// Decides one upgrade; runs on the shard thread, so keep it quick.
    fn check(&self, request: &UpgradeRequest<'_>) -> Result<(), u16>;
}

/// A shareable hook (`Debug` so configs stay printable).
#[derive(Clone)]
pub struct Hook(pub Arc<dyn UpgradeHook>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook(..)")
    }
}
