//! The server's side of signed tokens: the rule it was started with
//! ([`Tokens`]: the keys, and what a token that names no topics may do),
//! and what one verified token lets its connection do ([`Grant`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{allows, token_from, Keys, Refused, TopicPattern};

/// Signed tokens are required: the keys that verify them, and the topic
/// patterns a token without a `subscribe` or `publish` claim gets for it
/// (none: it may do neither). Clones share the keys, which
/// [`Tokens::reload`] replaces for all of them at once.
#[derive(Clone)]
pub struct Tokens {
    keys: Arc<ArcSwap<Keys>>,
    default_topics: Arc<[TopicPattern]>,
    file: Option<Arc<KeyFile>>,
    first_message_secs: u64,
}

/// Where the keys were read from, and how, to read them again.
struct KeyFile {
    path: PathBuf,
    read: fn(&Path) -> Result<Keys, String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("default_topics", &self.default_topics.len())
            .finish()
    }
}

impl Tokens {
    /// Requires tokens `keys` verify; `default_topics` for the claims a
    /// token leaves out.
    pub fn new(keys: Keys, default_topics: Vec<TopicPattern>) -> Self {
        Self {
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            default_topics: default_topics.into(),
            file: None,
            first_message_secs: 0,
        }
    }

    /// Lets a hub WebSocket that comes without a token send it as its
    /// first message within `secs` (0: a token is needed at the upgrade).
    pub fn with_first_message(mut self, secs: u64) -> Self {
        self.first_message_secs = secs;
        self
    }

    /// The grant of a hub WebSocket that came without a token, at `now`:
    /// one that allows nothing and expires when its first message is
    /// due, or `None` when a token is needed at the upgrade.
    pub fn awaiting(&self, now: u64) -> Option<Grant> {
        (self.first_message_secs > 0).then(|| Grant {
            sub: "".into(),
            exp: Some(now + self.first_message_secs),
            subscribe: Arc::from([]),
            publish: Arc::from([]),
            awaiting: true,
        })
    }

    /// Requires tokens the keys `read` finds in `path` verify, reading
    /// them now and again on every [`Tokens::reload`].
    pub fn from_file(
        path: &Path,
        read: fn(&Path) -> Result<Keys, String>,
        default_topics: Vec<TopicPattern>,
    ) -> Result<Self, String> {
        let mut tokens = Self::new(read(path)?, default_topics);
        tokens.file = Some(Arc::new(KeyFile {
            path: path.to_owned(),
            read,
        }));
        Ok(tokens)
    }

    /// The file the keys come from, when they do.
    pub fn key_file(&self) -> Option<&Path> {
        self.file.as_deref().map(|f| f.path.as_path())
    }

    /// Reads the key file again (rotating keys in a JWKS, say): tokens
    /// verified from now on use what it holds. On any error the keys in
    /// use stay, and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        self.keys.store(Arc::new((file.read)(&file.path)?));
        Ok(())
    }

    /// The grant of the token a request carries (`Authorization: Bearer`,
    /// else `?token=`) at `now` (Unix seconds): `Err(None)` when it carries
    /// none.
    pub fn grant(
        &self,
        query: Option<&str>,
        authorization: Option<&[u8]>,
        now: u64,
    ) -> Result<Grant, Option<Refused>> {
        self.grant_of(token_from(query, authorization).ok_or(None)?, now)
    }

    /// The grant of `token` as a client sent it in a message (`auth`,
    /// `refresh`, a Socket.IO CONNECT's `auth.token`) at `now`:
    /// `Err(None)` when it is empty.
    pub fn grant_of(&self, token: &str, now: u64) -> Result<Grant, Option<Refused>> {
        let token = Some(token.trim()).filter(|t| !t.is_empty()).ok_or(None)?;
        let claims = self.keys.load().verify(token, now).map_err(Some)?;
        let or_default = |claim: Option<Vec<TopicPattern>>| {
            claim.map_or_else(|| self.default_topics.clone(), Arc::from)
        };
        Ok(Grant {
            sub: claims.sub.into(),
            exp: claims.exp,
            subscribe: or_default(claims.subscribe),
            publish: or_default(claims.publish),
            awaiting: false,
        })
    }
}

/// Why a token was refused, in words for the client: `refused` as
/// [`Tokens::grant`] gives it.
pub fn why_refused(refused: Option<Refused>) -> String {
    refused.map_or_else(|| "no token".to_owned(), |r| r.to_string())
}

/// What a verified token lets its connection do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the holder is (`sub`).
    pub sub: Box<str>,
    /// When the token expires, in Unix seconds, if it does.
    pub exp: Option<u64>,
    subscribe: Arc<[TopicPattern]>,
    publish: Arc<[TopicPattern]>,
    awaiting: bool,
}

impl Grant {
    /// Whether it stands in for a token still to come as the connection's
    /// first message ([`Tokens::awaiting`]).
    pub fn is_awaiting(&self) -> bool {
        self.awaiting
    }

    /// Whether it may subscribe to hub topic `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        allows(&self.subscribe, topic)
    }

    /// Whether it may publish to hub topic `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        allows(&self.publish, topic)
    }
}
