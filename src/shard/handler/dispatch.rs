//! Where a connection's session meets its route's [`Handler`]: the route
//! table every shard shares, the state an App connection carries, and the
//! calls into handler code, each behind `catch_unwind`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::ws::Ws;
use super::{Handler, Limits, Message, Upgrade, Verdict};
use crate::admission::policy::UpgradeRequest;
use crate::protocol::{CloseCode, ServerConn, State};
use crate::shard::counters::Counters;
use crate::shard::fanout::PubSub;
use crate::shard::session::{Next, Phase, Route, Session};
use crate::shard::spill::Spill;

/// Routes served by [`Handler`]s, matched by exact path before the
/// built-in ones. Set by the `App` builder; empty by default.
#[derive(Clone, Default)]
pub struct AppRoutes {
    pub(crate) ws: Arc<[AppRoute]>,
    /// Socket.IO routes' namespaces, by the name their route's `handler`
    /// gives.
    pub(crate) socketio: Arc<[(Box<str>, Arc<crate::shard::engineio::Namespaces>)]>,
}

pub(crate) struct AppRoute {
    pub(crate) path: Box<str>,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for AppRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ws.iter().map(|r| &r.path))
            .entries(self.socketio.iter().map(|(name, _)| name))
            .finish()
    }
}

impl AppRoutes {
    /// Whether no route is served by a handler.
    pub fn is_empty(&self) -> bool {
        self.ws.is_empty()
    }

    /// The index of the route serving exactly `path`.
    pub(crate) fn find(&self, path: &str) -> Option<u16> {
        self.ws
            .iter()
            .position(|r| &*r.path == path)
            .map(|i| i as u16)
    }

    pub(crate) fn get(&self, index: u16) -> &AppRoute {
        &self.ws[usize::from(index)]
    }

    /// The namespaces registered under `name`, for a Socket.IO route.
    pub(crate) fn socketio(&self, name: &str) -> Option<&Arc<crate::shard::engineio::Namespaces>> {
        self.socketio
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, ns)| ns)
    }
}

/// What an App connection carries beyond a built-in one, boxed in its
/// spill area so built-in connections pay nothing for it.
#[derive(Default)]
pub(crate) struct AppConn {
    pub(crate) data: Option<Box<dyn Any + Send>>,
    /// The close code and reason this side sent, if it closed first.
    pub(crate) closing: Option<(u16, Box<str>)>,
    /// `Handler::close` has run.
    pub(crate) notified: bool,
    /// A send met the backpressure bound: call `Handler::drain` once the
    /// queue is back under it.
    pub(crate) wants_drain: bool,
}

impl std::fmt::Debug for AppConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConn")
            .field("data", &self.data.is_some())
            .field("closing", &self.closing)
            .field("notified", &self.notified)
            .field("wants_drain", &self.wants_drain)
            .finish()
    }
}

/// The shard state a handler call may touch.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) pubsub: &'a mut PubSub,
    pub(crate) counters: &'a mut Counters,
    /// The connection's slot.
    pub(crate) key: usize,
    /// Output bytes the driver holds beyond the session's queue and `out`
    /// (in flight), minus those of the queue's head already written.
    pub(crate) held: isize,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        pubsub: &'a mut PubSub,
        counters: &'a mut Counters,
        key: usize,
        held: isize,
    ) -> Self {
        Self {
            pubsub,
            counters,
            key,
            held,
        }
    }
}

/// A handler method to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'m> {
    Open,
    Message(Message<'m>),
    Drain,
}

type AppData = Option<Box<dyn Any + Send>>;

/// Asks an App route's handler about an upgrade: `Ok` with the
/// subprotocol it chose (if it overrode the server's) and its data, or the
/// HTTP status to refuse with.
pub(crate) fn upgrade(
    route: &AppRoute,
    request: &UpgradeRequest<'_>,
) -> Result<(Option<String>, AppData), u16> {
    let handler = &*route.handler;
    let answer = catch_unwind(AssertUnwindSafe(|| handler.upgrade(request)));
    let Ok(Upgrade { verdict }) = answer else {
        tracing::error!(
            path = &*route.path,
            "upgrade handler panicked; answering 500"
        );
        return Err(500);
    };
    match verdict {
        Verdict::Reject(status) if (400..=599).contains(&status) => Err(status),
        Verdict::Reject(_) => Err(403),
        Verdict::Accept { protocol, data } => {
            if let Some(p) = &protocol {
                if !request.offered_subprotocols().any(|o| o == p) {
                    tracing::warn!(
                        path = &*route.path,
                        protocol = p.as_str(),
                        "upgrade handler chose a subprotocol the client did not offer; answering 500"
                    );
                    return Err(500);
                }
            }
            Ok((protocol, data))
        }
    }
}

/// Runs one handler method. A panic closes the connection with 1011; a
/// handler that closed the connection hears `close` at once.
pub(crate) fn call(
    route: &AppRoute,
    conn: Option<&mut ServerConn>,
    out: &mut Vec<u8>,
    spill: &mut Spill,
    generation: u32,
    ctx: Ctx<'_>,
    what: Call<'_>,
) {
    let was_open = conn.as_deref().is_some_and(|c| c.state() == State::Open);
    let mut ws = Ws {
        conn,
        out,
        spill,
        generation,
        limits: &route.limits,
        ctx,
    };
    let handler = &*route.handler;
    let outcome = catch_unwind(AssertUnwindSafe(|| match what {
        Call::Open => handler.open(&mut ws),
        Call::Message(msg) => handler.message(&mut ws, msg),
        Call::Drain => handler.drain(&mut ws),
    }));
    if outcome.is_err() {
        tracing::error!(path = &*route.path, "handler panicked; closing with 1011");
        ws.close(CloseCode::INTERNAL_ERROR.0, "internal error");
    }
    if was_open && !ws.is_open() {
        let app = ws.spill.app.get_or_insert_with(Box::default);
        let (code, reason) = app.closing.clone().unwrap_or((1005, "".into()));
        notify_close(route, &mut ws, code, &reason);
    }
}

/// Calls `Handler::close` unless it has run already.
fn notify_close(route: &AppRoute, ws: &mut Ws<'_>, code: u16, reason: &str) {
    let app = ws.spill.app.get_or_insert_with(Box::default);
    if std::mem::replace(&mut app.notified, true) {
        return;
    }
    let handler = &*route.handler;
    if catch_unwind(AssertUnwindSafe(|| handler.close(ws, code, reason))).is_err() {
        tracing::error!(path = &*route.path, "handler panicked in close");
    }
}

/// The WebSocket left the open state while reading: tells the handler,
/// with the code this side sent if it closed first, else what ended it
/// (`ended`: the peer's close or a protocol violation).
pub(crate) fn ended(
    route: &AppRoute,
    conn: &mut ServerConn,
    out: &mut Vec<u8>,
    spill: &mut Spill,
    generation: u32,
    ctx: Ctx<'_>,
    ended: Option<(u16, String)>,
) {
    let app = spill.app.get_or_insert_with(Box::default);
    if app.notified {
        return;
    }
    let (code, reason) = match (&app.closing, ended) {
        (Some((code, reason)), _) => (*code, reason.to_string()),
        (None, Some(e)) => e,
        (None, None) => (1006, String::new()),
    };
    let mut ws = Ws {
        conn: Some(conn),
        out,
        spill,
        generation,
        limits: &route.limits,
        ctx,
    };
    notify_close(route, &mut ws, code, &reason);
}

impl Session {
    /// The App route this connection is on, if any.
    fn app_route<'r>(&self, apps: &'r AppRoutes) -> Option<&'r AppRoute> {
        match self.route {
            Route::App(i) => Some(apps.get(i)),
            _ => None,
        }
    }

    /// Runs `Handler::open` on a connection that has just upgraded.
    pub(crate) fn app_open(&mut self, route: &AppRoute, ctx: Ctx<'_>) {
        let Phase::Open(conn) = &mut self.phase else {
            return;
        };
        let spill = self.spill.get_or_insert_with(Box::default);
        call(
            route,
            Some(conn),
            &mut self.out,
            spill,
            self.generation,
            ctx,
            Call::Open,
        );
    }

    /// Runs `Handler::drain` (see `drain_now`) with an output buffer
    /// borrowed from `pool` while it runs, so an idle connection keeps none.
    pub(crate) fn app_drain(
        &mut self,
        apps: &AppRoutes,
        backlog: usize,
        pool: &mut crate::buf::pool::BufPool,
        ctx: Ctx<'_>,
    ) -> Next {
        let borrowed = self.out.capacity() == 0;
        if borrowed {
            self.out = pool.take();
        }
        let next = self.drain_now(apps, backlog, ctx);
        if borrowed && self.out.is_empty() {
            pool.give(std::mem::take(&mut self.out));
        }
        next
    }

    /// Runs `Handler::drain` if a send met the bound and the output queue
    /// (`backlog` bytes) is back under it.
    fn drain_now(&mut self, apps: &AppRoutes, backlog: usize, mut ctx: Ctx<'_>) -> Next {
        let Some(route) = self.app_route(apps) else {
            return Next::Continue;
        };
        let wants = self
            .spill
            .as_deref()
            .and_then(|s| s.app.as_deref())
            .is_some_and(|a| a.wants_drain);
        if !wants || backlog > route.limits.max_backpressure || !self.is_open() {
            return Next::Continue;
        }
        ctx.held = self.held(backlog);
        let Phase::Open(conn) = &mut self.phase else {
            return Next::Continue;
        };
        let spill = self.spill.get_or_insert_with(Box::default);
        if let Some(app) = spill.app.as_deref_mut() {
            app.wants_drain = false;
        }
        call(
            route,
            Some(conn),
            &mut self.out,
            spill,
            self.generation,
            ctx,
            Call::Drain,
        );
        if self.is_open() {
            Next::Continue
        } else {
            Next::AwaitClose
        }
    }

    /// This side started closing (idle timeout, shutdown, a slow
    /// subscriber): the handler hears `close` with that code now rather
    /// than when the peer answers.
    pub(crate) fn app_closing(&mut self, apps: &AppRoutes, ctx: Ctx<'_>) {
        let Some(route) = self.app_route(apps) else {
            return;
        };
        let Phase::Open(conn) = &mut self.phase else {
            return;
        };
        if conn.state() == State::Open {
            return;
        }
        let spill = self.spill.get_or_insert_with(Box::default);
        ended(
            route,
            conn,
            &mut self.out,
            spill,
            self.generation,
            ctx,
            None,
        );
    }

    /// The slot is being freed: a handler not yet told hears `close`, with
    /// the code this side sent or 1006 (the transport ended first).
    pub(crate) fn app_release(&mut self, apps: &AppRoutes, ctx: Ctx<'_>) {
        let Some(route) = self.app_route(apps) else {
            return;
        };
        let spill = self.spill.get_or_insert_with(Box::default);
        let app = spill.app.get_or_insert_with(Box::default);
        if app.notified {
            return;
        }
        let (code, reason) = app.closing.clone().unwrap_or((1006, "".into()));
        let mut ws = Ws {
            conn: None,
            out: &mut self.out,
            spill,
            generation: self.generation,
            limits: &route.limits,
            ctx,
        };
        notify_close(route, &mut ws, code, &reason);
        // Whatever the handler kept per connection goes with the slot.
        if let Some(app) = ws.spill.app.as_deref_mut() {
            app.data = None;
        }
    }

    /// Bytes the driver holds beyond the session's own, given the driver's
    /// whole backlog.
    pub(crate) fn held(&self, backlog: usize) -> isize {
        backlog as isize - (self.queued() + self.out.len()) as isize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from the path: `/status/N` refuses with N, `/proto/P`
    /// picks P, `/panic` panics, `/data` attaches a number.
    struct ByPath;

    impl Handler for ByPath {
        fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
            let mut parts = req.path.trim_start_matches('/').splitn(2, '/');
            match (parts.next(), parts.next()) {
                (Some("status"), Some(n)) => Upgrade::reject(n.parse().unwrap()),
                (Some("proto"), Some(p)) => Upgrade::accept().protocol(p),
                (Some("panic"), _) => panic!("upgrade panics on purpose"),
                (Some("data"), _) => Upgrade::accept().data(7u32),
                _ => Upgrade::accept(),
            }
        }
    }

    fn answer(target: &str, offered: &str) -> Result<(Option<String>, AppData), u16> {
        let route = AppRoute {
            path: "/".into(),
            handler: Arc::new(ByPath),
            limits: Limits::default(),
        };
        let headers = [httparse::Header {
            name: "Sec-WebSocket-Protocol",
            value: offered.as_bytes(),
        }];
        let request = UpgradeRequest::new(target, &headers, "192.0.2.1".parse().unwrap(), None);
        upgrade(&route, &request)
    }

    #[test]
    fn refusals_read_as_refusals() {
        assert_eq!(answer("/status/401", "").unwrap_err(), 401);
        assert_eq!(answer("/status/599", "").unwrap_err(), 599);
        for odd in ["0", "101", "200", "302", "399", "600"] {
            assert_eq!(answer(&format!("/status/{odd}"), "").unwrap_err(), 403);
        }
        assert_eq!(answer("/panic", "").unwrap_err(), 500);
    }

    #[test]
    fn subprotocols_must_have_been_offered() {
        let (protocol, _) = answer("/proto/b", " a ,b").unwrap();
        assert_eq!(protocol.as_deref(), Some("b"));
        assert_eq!(answer("/proto/c", "a, b").unwrap_err(), 500);
        assert_eq!(answer("/proto/a", "").unwrap_err(), 500);
        let (protocol, data) = answer("/", "a").unwrap();
        assert!(protocol.is_none() && data.is_none());
    }

    #[test]
    fn data_comes_back_by_type() {
        let (_, data) = answer("/data", "").unwrap();
        let mut data = data.unwrap();
        assert!(data.downcast_mut::<u64>().is_none());
        assert_eq!(data.downcast_mut::<u32>(), Some(&mut 7));
    }
}
