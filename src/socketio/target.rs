//! Who a room broadcast is for, written into its hub topic so that it
//! travels with the broadcast to every shard and, relayed, every node.
//!
//! ```text
//! sio:/chat,lobby                          the members of room `lobby` on `/chat`
//! sio:/chat,\u{1}[["a","b"],["muted"],"S"]  members of `a` or `b` (each once), not of
//!                                          `muted`, and not socket `S`; no rooms: the
//!                                          whole namespace
//! ```
//!
//! A namespace holds no comma, so the first comma ends it. A room name
//! that starts with U+0001 is never a room ([`valid_room`] refuses control
//! characters), so the two forms cannot be confused and no client can
//! forge the second by naming a room.

use std::borrow::Cow;

use super::ROOM_TOPIC_PREFIX;

/// The mark after the namespace's comma that starts a written target.
const WRITTEN: char = '\u{1}';

/// The longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 200;

/// Whether `room` may name a room: 1 to [`MAX_ROOM_NAME`] bytes, no
/// control characters.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty() && room.len() <= MAX_ROOM_NAME && !room.chars().any(char::is_control)
}

/// The hub topic of room `room` on namespace `ns`.
pub fn room_topic(ns: &str, room: &str) -> String {
    format!("{ROOM_TOPIC_PREFIX}{ns},{room}")
}

/// The start every topic of namespace `ns` shares.
pub fn namespace_prefix(ns: &str) -> String {
    room_topic(ns, "")
}

/// A broadcast's recipients on one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'t> {
    /// The namespace, `/` or `/name`.
    pub namespace: Cow<'t, str>,
    /// The rooms whose members get it; none: every socket of the namespace.
    pub to: Vec<Cow<'t, str>>,
    /// Members of these rooms do not get it.
    pub except: Vec<Cow<'t, str>>,
    /// The socket (by its id) that does not get it: the one that sent it.
    pub not: Option<Cow<'t, str>>,
}

impl<'t> Target<'t> {
    /// The hub topic that carries a broadcast to this target: a room's own
    /// topic when that is all it is, so that the common case costs nothing
    /// to route.
    pub fn topic(&self) -> String {
        if let ([room], [], None) = (&self.to[..], &self.except[..], &self.not) {
            return room_topic(&self.namespace, room);
        }
        let written = (&self.to, &self.except, &self.not);
        let json = serde_json::to_string(&written).expect("strings");
        format!("{ROOM_TOPIC_PREFIX}{},{WRITTEN}{json}", self.namespace)
    }

    /// Whether `topic` carries a written target (more than one room's
    /// topic), not a room's own.
    pub fn is_written(topic: &str) -> bool {
        topic
            .strip_prefix(ROOM_TOPIC_PREFIX)
            .and_then(|t| t.split_once(','))
            .is_some_and(|(_, rest)| rest.starts_with(WRITTEN))
    }

    /// The target a hub topic carries; `None` if it is not a Socket.IO
    /// topic or its written target does not read.
    pub fn of_topic(topic: &'t str) -> Option<Self> {
        let (namespace, rest) = topic.strip_prefix(ROOM_TOPIC_PREFIX)?.split_once(',')?;
        let namespace = Cow::Borrowed(namespace);
        let Some(json) = rest.strip_prefix(WRITTEN) else {
            return Some(Self {
                namespace,
                to: vec![Cow::Borrowed(rest)],
                except: Vec::new(),
                not: None,
            });
        };
        type Written<'a> = (Vec<Cow<'a, str>>, Vec<Cow<'a, str>>, Option<Cow<'a, str>>);
        let (to, except, not): Written<'t> = serde_json::from_str(json).ok()?;
        Some(Self {
            namespace,
            to,
            except,
            not,
        })
    }

    /// Whether it reaches the socket with id `sid` on its namespace, in
    /// the rooms for which `in_room` is true.
    pub fn reaches(&self, sid: &str, in_room: impl Fn(&str) -> bool) -> bool {
        (self.to.is_empty() || self.to.iter().any(|r| in_room(r)))
            && !self.except.iter().any(|r| in_room(r))
            && self.not.as_deref() != Some(sid)
    }

    /// Whether it reaches a socket of namespace `ns` with id `sid` whose
    /// rooms are the hub topics `rooms`.
    pub fn reaches_member(&self, ns: &str, sid: &str, rooms: &[std::sync::Arc<str>]) -> bool {
        if ns != self.namespace {
            return false;
        }
        let prefix = namespace_prefix(ns);
        self.reaches(sid, |room| {
            rooms
                .iter()
                .any(|t| t.strip_prefix(prefix.as_str()) == Some(room))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn target(to: &[&str], except: &[&str], not: Option<&str>) -> Target<'static> {
        Target {
            namespace: Cow::Owned("/chat".into()),
            to: to.iter().map(|r| Cow::Owned(r.to_string())).collect(),
            except: except.iter().map(|r| Cow::Owned(r.to_string())).collect(),
            not: not.map(|s| Cow::Owned(s.to_owned())),
        }
    }

    #[test]
    fn one_room_is_its_own_topic() {
        let t = target(&["lobby"], &[], None);
        assert_eq!(t.topic(), "sio:/chat,lobby");
        assert_eq!(Target::of_topic("sio:/chat,lobby"), Some(t));
        assert_eq!(Target::of_topic("hub:lobby"), None);
        assert!(!Target::is_written("sio:/chat,lobby"));
        assert!(Target::is_written(&target(&["a", "b"], &[], None).topic()));
        assert_eq!(Target::of_topic("sio:/chat,\u{1}[oops"), None);
    }

    #[test]
    fn a_written_target_reaches_each_member_once_and_skips_the_excepted() {
        let t = target(&["a", "b"], &["muted"], Some("S"));
        let topic = t.topic();
        let back = Target::of_topic(&topic).unwrap();
        assert_eq!(back, t);
        let rooms = |names: &[&str]| -> Vec<Arc<str>> {
            names
                .iter()
                .map(|r| Arc::from(room_topic("/chat", r)))
                .collect()
        };
        assert!(back.reaches_member("/chat", "X", &rooms(&["a", "b"])));
        assert!(!back.reaches_member("/chat", "X", &rooms(&["c"])));
        assert!(!back.reaches_member("/chat", "X", &rooms(&["a", "muted"])));
        assert!(!back.reaches_member("/chat", "S", &rooms(&["a"])));
        assert!(!back.reaches_member("/other", "X", &rooms(&["a"])));
        let everyone = target(&[], &[], Some("S"));
        assert!(Target::of_topic(&everyone.topic())
            .unwrap()
            .reaches_member("/chat", "X", &[]));
    }

    #[test]
    fn room_names_are_bounded_and_have_no_control_characters() {
        assert!(valid_room("lobby"));
        assert!(!valid_room(""));
        assert!(!valid_room("\u{1}[[],[],null]"));
        assert!(!valid_room("a\nb"));
        assert!(!valid_room(&"x".repeat(MAX_ROOM_NAME + 1)));
    }

    proptest! {
        #[test]
        fn any_target_reads_back(
            to in proptest::collection::vec("[^\u{0}-\u{1f}]{1,8}", 0..4),
            except in proptest::collection::vec("\\PC{1,8}", 0..3),
            not in proptest::option::of("[a-zA-Z0-9_-]{20}"),
        ) {
            let t = Target {
                namespace: Cow::Borrowed("/n"),
                to: to.into_iter().map(Cow::Owned).collect(),
                except: except.into_iter().map(Cow::Owned).collect(),
                not: not.map(Cow::Owned),
            };
            let topic = t.topic();
            prop_assert_eq!(Target::of_topic(&topic), Some(t));
        }
    }
}
