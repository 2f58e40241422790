//! A connection that streams server-sent events (`GET /hub/events`): once
//! admitted it subscribes to its topics like a WebSocket hub connection,
//! in the same table and through the same fan-out, and each delivery (the
//! shared WebSocket frames every subscriber gets) is written again as
//! events for it alone. What the request may ask is `pubsub::events`'s;
//! this is how the shard answers it (the same admission as an upgrade)
//! and the phase of the connection's life that follows, whatever its
//! driver.

use std::cell::Cell;
use std::sync::Arc;

use super::session::{
    admit, hub_join, Answered, ConnLimits, Handshaking, Phase, Route, Session, Upgraded,
};
use crate::admission::stats::Reason;
use crate::config::{RouteKind, Routes, NO_SPEC};
use crate::metrics::SSE_ENDED_LABELS;
use crate::protocol::handshake::{self, HandshakeError, Request};
use crate::protocol::CloseCode;
use crate::pubsub::events::{parse_request, EventCursor, EventsRequest, HEARTBEAT, RESPONSE_HEAD};
use crate::pubsub::hub::SharedFrame;
use crate::pubsub::protocol::{self as pubsub_protocol, Subscribed};

/// The reconnect delay a stream asks browsers for, in ms: each stream's is
/// drawn from 1 to 3 s, so that streams a crash ended together do not come
/// back together (a drain spreads its closes over its window already), and
/// a balancer has time to see a node go before its clients come back.
const RETRY_MS: std::ops::Range<u64> = 1000..3000;

/// Why one event stream ended, by its slot in
/// `metrics::SSE_ENDED_LABELS`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    /// The client went away (FIN, reset, a failed write).
    Client,
    /// The server is shutting down.
    Drain,
    /// Its backlog passed the route's `max-backpressure`.
    SlowConsumer,
    /// Any other close the shard started.
    Server,
}

impl Ended {
    /// The reason a server-side close with `code` gives a stream.
    fn of_close(code: CloseCode) -> Self {
        match code {
            CloseCode::GOING_AWAY => Self::Drain,
            CloseCode::TRY_AGAIN_LATER => Self::SlowConsumer,
            _ => Self::Server,
        }
    }
}

/// A shard's event-stream counts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamCounts {
    /// Streams open now.
    pub(crate) open: u64,
    /// Events written (heartbeats not counted).
    pub(crate) events: u64,
    /// Streams ended, by `SSE_ENDED_LABELS`.
    pub(crate) ended: [u64; SSE_ENDED_LABELS.len()],
}

thread_local! {
    /// This shard's counts. A shard is one thread; they live here rather
    /// than in `Counters` because deliveries reach a stream through the
    /// fan-out's `Subscriber::push`, where no `Counters` is at hand.
    static COUNTS: Cell<StreamCounts> = Cell::new(StreamCounts::default());
}

/// This shard's event-stream counts.
pub(crate) fn counts() -> StreamCounts {
    COUNTS.with(Cell::get)
}

fn count(change: impl FnOnce(&mut StreamCounts)) {
    COUNTS.with(|c| {
        let mut counts = c.get();
        change(&mut counts);
        c.set(counts);
    });
}

/// The hub route whose event stream `path` is (the route's path followed
/// by `/events`), as its `[[routes]]` entry.
pub(super) fn route_of(path: &str, routes: &Routes) -> Option<u8> {
    let of = |hub: &str| path.strip_prefix(hub.trim_end_matches('/')) == Some("/events");
    if !routes.table.is_empty() {
        return routes
            .table
            .iter()
            .position(|spec| spec.kind == RouteKind::Hub && of(&spec.path))
            .map(|i| i as u8);
    }
    (routes.hub && of("/hub")).then_some(NO_SPEC)
}

/// Whether `Accept` names `text/event-stream` (with any parameters).
pub(super) fn wanted(req: &Request<'_, '_>) -> bool {
    req.header_tokens("accept").any(|t| {
        let media = t.split(|&b| b == b';').next().unwrap_or_default();
        media
            .trim_ascii()
            .eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// Answers a request for an event stream: refused with the status that
/// says why, or admitted with its 200 head in `out`.
pub(super) fn answer(
    req: &Request<'_, '_>,
    hs: Handshaking,
    spec: u8,
    limits: &ConnLimits<'_>,
    out: &mut Vec<u8>,
) -> Result<Upgraded, Answered> {
    if req.method != "GET" {
        return Err(Answered::Refused(HandshakeError::MethodNotAllowed));
    }
    let refuse = |out: &mut Vec<u8>, status, extra, why: &str| {
        handshake::encode_plain_response(out, status, extra, &format!("{why}\n"));
        Err(Answered::Plain)
    };
    if !wanted(req) {
        return refuse(
            out,
            406,
            "",
            "this resource is an event stream: send Accept: text/event-stream",
        );
    }
    if limits.metrics.is_draining() {
        return refuse(out, 503, "Retry-After: 1\r\n", "server shutting down");
    }
    let request = match parse_request(req.target, req.header("last-event-id")) {
        Ok(request) => request,
        Err(why) => return refuse(out, 400, "", &why),
    };
    let max = limits.routes.max_topics_per_conn;
    if request.topics.len() > max {
        return refuse(
            out,
            400,
            "",
            &format!("at most {max} topics per connection"),
        );
    }
    // An event stream has no subprotocol: a policy that requires one
    // refuses it, as it would such an upgrade.
    let super::session::Admitted {
        ticket,
        grant,
        user,
        ..
    } = admit(req, hs, Route::Hub, None, limits)?;
    if let Some(topic) = grant.as_ref().and_then(|g| {
        let refused = request.topics.iter().find(|t| !g.may_subscribe(t));
        refused.cloned()
    }) {
        let registry = &limits.admission.registry;
        registry.release(ticket);
        registry.stats.rejected(Reason::JwtTopic);
        return refuse(
            out,
            403,
            "",
            &format!("this token may not subscribe to {topic}"),
        );
    }
    encode_head(req, out);
    Ok(Upgraded {
        head_len: req.head_len,
        ticket,
        route: Route::Hub,
        feed: None,
        deflate: None,
        app: None,
        spec,
        events: Some(request),
        grant,
        user,
    })
}

/// The response head of an admitted stream. `Origin` comes back as
/// `Access-Control-Allow-Origin`: admission's allow-list (if any) has
/// already let it through, and without credentials (EventSource sends none
/// by default) a page reads only what a WebSocket of its own could.
fn encode_head(req: &Request<'_, '_>, out: &mut Vec<u8>) {
    out.extend_from_slice(RESPONSE_HEAD.as_bytes());
    if let Some(origin) = req.header("origin") {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(origin);
        out.extend_from_slice(b"\r\nVary: Origin\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

impl Session {
    /// An admitted stream (its head is in `out`) subscribes to its topics,
    /// resuming those it has positions for, and opens with the `subscribed`
    /// event; deliveries follow as events.
    pub(super) fn start_events(&mut self, request: &EventsRequest, limits: &mut ConnLimits<'_>) {
        let limit = limits.routes.hub_limit(self.spec);
        let generation = self.generation;
        let spec = self.spec;
        let mut answers = Vec::with_capacity(request.topics.len());
        let mut start = Vec::with_capacity(request.topics.len());
        let subs = &mut self.spill_mut().subs;
        for name in &request.topics {
            let from = request
                .since
                .iter()
                .find(|(t, _)| t == name)
                .map(|(_, p)| *p);
            // Distinct names, as many as the connection may hold: checked
            // before admission.
            let Ok(joined) = hub_join(name, from, (limit, spec), generation, subs, limits) else {
                continue;
            };
            // A resumed topic's client is where it said it was: the replay
            // moves it on.
            let at = match joined.recovered {
                Some(Ok(())) => from,
                _ => Some(joined.position),
            };
            start.push((name.clone(), at));
            answers.push(Subscribed {
                topic: name,
                position: Some(joined.position),
                recovered: joined.recovered,
            });
        }
        let answer = pubsub_protocol::subscribed(&request.topics, &answers);
        let cursor = EventCursor::new(start);
        let retry = RETRY_MS.start + limits.jitter.below(RETRY_MS.end - RETRY_MS.start);
        cursor.subscribed(&answer, retry, &mut self.out);
        self.phase = Phase::Events(Box::new(cursor));
        count(|c| c.open += 1);
    }

    /// A delivery for a stream: its frames written again as events, queued
    /// as this connection's own shared segment so that a slow consumer's
    /// backlog is dropped as a WebSocket one's is. Anything else passes.
    pub(super) fn as_events(&mut self, frame: SharedFrame) -> SharedFrame {
        let Phase::Events(cursor) = &mut self.phase else {
            return frame;
        };
        // An event adds its id and field names to the message: a quarter
        // more covers the common case without a second allocation.
        let mut events = Vec::with_capacity(frame.len() + frame.len() / 4 + 128);
        let n = cursor.encode_frames(&frame, &mut events);
        count(|c| c.events += n);
        events.into()
    }

    /// A stream's heartbeat is due: a comment line goes out. False if the
    /// connection is no stream.
    pub(crate) fn heartbeat(&mut self) -> bool {
        if !matches!(self.phase, Phase::Events(_)) {
            return false;
        }
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.push_shared(&mut self.out, Arc::from(HEARTBEAT));
        true
    }

    /// Whether this connection is an event stream still being written.
    pub(crate) fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Events(_))
    }

    /// Counts a stream's end: call as it leaves its phase.
    pub(super) fn stream_ended(&self, why: Ended) {
        if self.is_streaming() {
            count(|c| {
                c.open -= 1;
                c.ended[why as usize] += 1;
            });
        }
    }

    /// Counts the end of a stream the shard closes with `code`.
    pub(super) fn stream_closed(&self, code: CloseCode) {
        self.stream_ended(Ended::of_close(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming() -> Session {
        let mut session = Session::new(1, false, None);
        session.phase = Phase::Events(Box::new(EventCursor::new([])));
        count(|c| c.open += 1);
        session
    }

    #[test]
    fn a_stream_ends_once_counted_by_why() {
        let before = counts();
        let mut drained = streaming();
        drained.close(CloseCode::GOING_AWAY, "server shutting down");
        assert!(!drained.is_streaming());
        // A second close, or the peer's FIN after it, counts nothing more.
        drained.close(CloseCode::GOING_AWAY, "server shutting down");
        drained.peer_finished();
        let mut slow = streaming();
        slow.close(CloseCode::TRY_AGAIN_LATER, "slow consumer; retry in 5 s");
        let mut gone = streaming();
        gone.peer_finished();
        assert!(!gone.heartbeat(), "a stream that ended beats no more");
        let after = counts();
        assert_eq!(after.open, before.open);
        let ended: Vec<u64> = (0..SSE_ENDED_LABELS.len())
            .map(|i| after.ended[i] - before.ended[i])
            .collect();
        assert_eq!(ended, [1, 1, 1, 0], "client, drain, slow_consumer, server");
    }

    #[test]
    fn a_heartbeat_is_a_comment_queued_behind_what_is_owed() {
        let mut session = streaming();
        session.out.extend_from_slice(b"id: x\ndata: 1\n\n");
        assert!(session.heartbeat());
        let spill = session.spill.as_deref().unwrap();
        let queued: Vec<u8> = spill
            .queue
            .iter()
            .flat_map(|s| s.bytes().iter().copied())
            .collect();
        assert_eq!(queued, b"id: x\ndata: 1\n\n:\n\n");
        session.stream_ended(Ended::Server);
    }
}
