//! What each endpoint does, once its request is in: the checks that need
//! only the head come first ([`Api::admit`]: key, path, method, body
//! size and type), so that a refused request's body is never read.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::body;
use super::request::{bearer, query_param, Answer, Head, Method};
use crate::config::{ApiKey, Config, RouteKind};
use crate::pubsub::control::{Control, Reply, UserConn};
use crate::pubsub::hub::Hub;
use crate::pubsub::streams::epoch_hex;

/// How long a question waits for every shard's answer: a shard answers
/// within its loop turn, so only a stalled one takes longer.
const SHARD_ANSWER: Duration = Duration::from_secs(2);

/// A topic's position in a publish answer.
#[derive(Serialize)]
struct Positioned<'a> {
    topic: &'a str,
    epoch: String,
    offset: u64,
}

#[derive(Serialize)]
struct Published<'a> {
    published: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    positions: Vec<Positioned<'a>>,
}

#[derive(Serialize)]
struct Disconnected<'a> {
    user: &'a str,
    closed: usize,
    relayed: bool,
}

#[derive(Serialize)]
struct TopicCount {
    topic: String,
    subscribers: usize,
}

#[derive(Serialize)]
struct Topics {
    topics: Vec<TopicCount>,
}

#[derive(Serialize)]
struct Conns<'a> {
    user: &'a str,
    count: usize,
    connections: Vec<UserConn>,
}

/// `value` as the JSON body of a 200.
fn ok(value: &impl Serialize) -> Answer {
    Answer::ok(serde_json::to_string(value).expect("plain data serializes"))
}

/// The endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Publish,
    Disconnect,
    Topics,
    Connections,
}

impl Endpoint {
    fn at(path: &str) -> Option<Self> {
        Some(match path {
            "/api/publish" => Self::Publish,
            "/api/disconnect" => Self::Disconnect,
            "/api/topics" => Self::Topics,
            "/api/connections" => Self::Connections,
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Self::Publish | Self::Disconnect => Method::Post,
            Self::Topics | Self::Connections => Method::Get,
        }
    }
}

/// What the handlers work with.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) key: ApiKey,
    pub(crate) max_body: usize,
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Arc<Config>,
}

impl Api {
    /// The endpoint a head asks for and the body bytes to read, or the
    /// answer that refuses it, checked in this order: the key (401), the
    /// path (404), the method (405), then for a POST the body's length
    /// (411, 413) and type (415).
    pub(crate) fn admit(&self, head: &Head) -> Result<(Endpoint, usize), Answer> {
        let given = bearer(head.authorization.as_deref())?;
        if !self.key.matches(given) {
            return Err(Answer::error(401, "wrong API key").with_header(
                "WWW-Authenticate",
                "Bearer realm=\"surge-api\", error=\"invalid_token\"",
            ));
        }
        let endpoint = Endpoint::at(&head.path)
            .ok_or_else(|| Answer::error(404, &format!("no endpoint {}", head.path)))?;
        let allowed = endpoint.method();
        if head.method != allowed {
            let name = if allowed == Method::Post {
                "POST"
            } else {
                "GET"
            };
            return Err(
                Answer::error(405, &format!("{} takes {name} only", head.path))
                    .with_header("Allow", name),
            );
        }
        if allowed == Method::Get {
            if head.content_length.is_some_and(|n| n > 0) || head.transfer_encoding {
                return Err(Answer::error(400, "a GET carries no body"));
            }
            return Ok((endpoint, 0));
        }
        if head.transfer_encoding {
            return Err(Answer::error(
                411,
                "chunked bodies are not taken: send the body with Content-Length",
            ));
        }
        let len = head
            .content_length
            .ok_or_else(|| Answer::error(411, "a POST needs Content-Length"))?;
        if len > self.max_body {
            return Err(Answer::error(
                413,
                &format!(
                    "the body is at most {} bytes; this one is {len}",
                    self.max_body
                ),
            ));
        }
        if head.content_type.as_deref() != Some("application/json") {
            return Err(Answer::error(
                415,
                "the body must be Content-Type: application/json",
            ));
        }
        Ok((endpoint, len))
    }

    /// Carries out an admitted request.
    pub(crate) fn handle(&self, endpoint: Endpoint, head: &Head, body: &[u8]) -> Answer {
        let done = match endpoint {
            Endpoint::Publish => self.publish(body),
            Endpoint::Disconnect => self.disconnect(body),
            Endpoint::Topics => self.topics(),
            Endpoint::Connections => self.connections(head),
        };
        done.unwrap_or_else(|refused| refused)
    }

    /// The `[[routes]]` entry of the first hub route, whose history rules
    /// an API publish follows as a WebSocket publish there would.
    fn hub_spec(&self) -> u8 {
        let routes = &self.config.routes;
        routes
            .table
            .iter()
            .position(|r| r.kind == RouteKind::Hub)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(crate::config::NO_SPEC)
    }

    fn publish(&self, body: &[u8]) -> Result<Answer, Answer> {
        let publish = body::publish(body)?;
        // About what the framed message costs an inbox: its topic (twice:
        // in the frame and beside it), the data and the position's JSON.
        let longest = publish.topics.iter().map(String::len).max().unwrap_or(0);
        let full = self.hub.full_inboxes(publish.data.len() + 2 * longest + 96);
        if full > 0 {
            return Err(Answer::error(
                503,
                &format!(
                    "{full} of {} shards' inboxes are full; nothing was published, try again",
                    self.hub.shards()
                ),
            )
            .with_header("Retry-After", "1"));
        }
        let spec = self.hub_spec();
        // Per topic with history: its position, or where the shared store
        // will tell it.
        let mut kept = Vec::new();
        for topic in &publish.topics {
            let rule = self.config.routes.history(spec, topic);
            if !rule.keeps() {
                self.hub.publish_positioned(topic, publish.data, rule);
                continue;
            }
            let (tx, rx) = mpsc::channel();
            let given = self
                .hub
                .publish_positioned_told(topic, publish.data, rule, Some(tx));
            kept.push((topic, given.ok_or(rx)));
        }
        let deadline = Instant::now() + SHARD_ANSWER;
        let positions: Vec<Positioned<'_>> = kept
            .into_iter()
            .filter_map(|(topic, given)| {
                let p = given.or_else(|rx| {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                });
                // Not told in time (a slow store): left out.
                let p = p.ok()?;
                Some(Positioned {
                    topic,
                    epoch: epoch_hex(p.epoch),
                    offset: p.offset,
                })
            })
            .collect();
        Ok(ok(&Published {
            published: publish.topics.len(),
            positions,
        }))
    }

    fn disconnect(&self, body: &[u8]) -> Result<Answer, Answer> {
        let order = Arc::new(body::disconnect(body)?);
        let relayed = self.hub.relay_disconnect(&order);
        let replies = self.ask(|tx| Control::Disconnect(Arc::clone(&order), Some(tx)))?;
        let closed: usize = replies
            .iter()
            .map(|r| match r {
                Reply::Closed(n) => *n,
                _ => 0,
            })
            .sum();
        Ok(ok(&Disconnected {
            user: &order.user,
            closed,
            relayed,
        }))
    }

    fn topics(&self) -> Result<Answer, Answer> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for reply in self.ask(Control::Topics)? {
            if let Reply::Topics(topics) = reply {
                for (name, n) in topics {
                    *counts.entry(name).or_default() += n;
                }
            }
        }
        let topics = counts
            .into_iter()
            .map(|(topic, subscribers)| TopicCount { topic, subscribers })
            .collect();
        Ok(ok(&Topics { topics }))
    }

    fn connections(&self, head: &Head) -> Result<Answer, Answer> {
        let user = query_param(head.query.as_deref(), "user")?
            .ok_or_else(|| Answer::error(400, "missing query parameter \"user\""))?;
        if user.is_empty() {
            return Err(Answer::error(422, "\"user\" is empty"));
        }
        let name: Arc<str> = user.as_str().into();
        let mut conns: Vec<UserConn> = Vec::new();
        for reply in self.ask(|tx| Control::Conns(Arc::clone(&name), tx))? {
            if let Reply::Conns(mut some) = reply {
                conns.append(&mut some);
            }
        }
        conns.sort_by_key(|c| c.shard);
        Ok(ok(&Conns {
            user: &user,
            count: conns.len(),
            connections: conns,
        }))
    }

    /// Asks every shard and waits (at most [`SHARD_ANSWER`]) for every
    /// answer; 503 when an inbox was full or a shard did not answer.
    fn ask(&self, make: impl FnOnce(mpsc::Sender<Reply>) -> Control) -> Result<Vec<Reply>, Answer> {
        let (tx, rx) = mpsc::channel();
        let shards = self.hub.shards();
        let took = self.hub.order(&make(tx));
        let deadline = Instant::now() + SHARD_ANSWER;
        let mut replies = Vec::with_capacity(took);
        while replies.len() < took {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) => replies.push(r),
                Err(_) => break,
            }
        }
        if took < shards {
            return Err(Answer::error(
                503,
                &format!(
                    "{} of {shards} shards' inboxes are full; try again",
                    shards - took
                ),
            )
            .with_header("Retry-After", "1"));
        }
        if replies.len() < shards {
            return Err(Answer::error(
                503,
                &format!(
                    "{} of {shards} shards did not answer within {} s",
                    shards - replies.len(),
                    SHARD_ANSWER.as_secs()
                ),
            )
            .with_header("Retry-After", "1"));
        }
        Ok(replies)
    }
}
