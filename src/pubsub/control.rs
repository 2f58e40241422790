//! Orders for every shard that are not messages: the server API's
//! disconnect of a user and its questions (topics, a user's connections).
//! They travel through the shards' inboxes like publishes (within the same
//! byte bound, with the same wake-up), and each shard answers on the
//! order's reply channel once it has acted. A disconnect also travels to
//! the other nodes through the bridge, as [`Disconnect::relay_text`].

use std::net::IpAddr;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The close code a connection disconnected by the server API gets
/// unless the request names another.
pub const DISCONNECT_CODE: u16 = 4010;
/// Its reason unless the request gives one.
pub const DISCONNECT_REASON: &str = "disconnected by the server";
/// The longest close reason: a close frame's payload is at most 125
/// bytes, two of them the code.
pub const MAX_REASON: usize = 123;

/// Close every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// The `sub` of the connections' tokens.
    pub user: String,
    /// Their close code: 1000 or 3000 to 4999.
    pub code: u16,
    /// Their close reason (at most [`MAX_REASON`] bytes).
    pub reason: String,
}

impl Disconnect {
    /// Whether `code` may be sent: 1000 (normal) or an application code
    /// (3000-4999); the others are the protocol's.
    pub fn code_allowed(code: u16) -> bool {
        code == 1000 || (3000..=4999).contains(&code)
    }

    /// As the bridge carries it to other nodes.
    pub fn relay_text(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// What [`Disconnect::relay_text`] wrote, if `text` is one and
    /// within bounds.
    pub fn from_relay(text: &[u8]) -> Option<Self> {
        let d: Self = serde_json::from_slice(text).ok()?;
        let ok = !d.user.is_empty() && Self::code_allowed(d.code) && d.reason.len() <= MAX_REASON;
        ok.then_some(d)
    }
}

/// One connection of a user, as a shard sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserConn {
    /// The shard it is on.
    pub shard: usize,
    /// The peer address of its socket (a proxy's, behind one).
    pub peer: Option<IpAddr>,
    /// Hub topics it subscribes to.
    pub topics: usize,
    /// Its token's `exp` (seconds since the Unix epoch), if any.
    pub exp: Option<u64>,
}

/// A shard's answer to a [`Control`].
#[derive(Debug)]
pub enum Reply {
    /// Connections closed by a disconnect.
    Closed(usize),
    /// Hub topics (without namespace) with their subscribers here.
    Topics(Vec<(String, usize)>),
    /// A user's connections here.
    Conns(Vec<UserConn>),
}

/// What a shard is asked.
#[derive(Debug, Clone)]
pub enum Control {
    /// Close a user's connections; answers [`Reply::Closed`] when there
    /// is someone to tell.
    Disconnect(Arc<Disconnect>, Option<Sender<Reply>>),
    /// Answers [`Reply::Topics`].
    Topics(Sender<Reply>),
    /// Answers [`Reply::Conns`] for this user.
    Conns(Arc<str>, Sender<Reply>),
}

impl Control {
    /// About what it costs an inbox that holds it, beyond the queue slot.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Disconnect(d, _) => d.user.len() + d.reason.len(),
            Self::Topics(_) => 0,
            Self::Conns(user, _) => user.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_disconnect_reads_back_and_bad_ones_do_not() {
        let d = Disconnect {
            user: "alice".into(),
            code: DISCONNECT_CODE,
            reason: DISCONNECT_REASON.into(),
        };
        assert_eq!(Disconnect::from_relay(d.relay_text().as_bytes()), Some(d));
        assert!(Disconnect::from_relay(br#"{"user":"a","code":1006,"reason":""}"#).is_none());
        assert!(Disconnect::from_relay(br#"{"user":"","code":4000,"reason":""}"#).is_none());
        assert!(Disconnect::from_relay(b"nonsense").is_none());
        assert!(Disconnect::code_allowed(1000) && Disconnect::code_allowed(4999));
        assert!(!Disconnect::code_allowed(1001) && !Disconnect::code_allowed(5000));
    }
}
