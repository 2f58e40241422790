//! The server's side of signed tokens: the rule it was started with
//! ([`Tokens`]: the keys, and what a token that names no topics may do),
//! and what one verified token lets its connection do ([`Grant`]).

use std::sync::Arc;

use super::{allows, token_from, Keys, Refused, TopicPattern};

/// Signed tokens are required: the keys that verify them, and the topic
/// patterns a token without a `subscribe` or `publish` claim gets for it
/// (none: it may do neither).
#[derive(Clone)]
pub struct Tokens {
    keys: Arc<Keys>,
    default_topics: Arc<[TopicPattern]>,
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
            keys: Arc::new(keys),
            default_topics: default_topics.into(),
        }
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
        let token = token_from(query, authorization).ok_or(None)?;
        let claims = self.keys.verify(token, now).map_err(Some)?;
        let or_default = |claim: Option<Vec<TopicPattern>>| {
            claim.map_or_else(|| self.default_topics.clone(), Arc::from)
        };
        Ok(Grant {
            sub: claims.sub.into(),
            exp: claims.exp,
            subscribe: or_default(claims.subscribe),
            publish: or_default(claims.publish),
        })
    }
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
}

impl Grant {
    /// Whether it may subscribe to hub topic `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        allows(&self.subscribe, topic)
    }

    /// Whether it may publish to hub topic `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        allows(&self.publish, topic)
    }
}
