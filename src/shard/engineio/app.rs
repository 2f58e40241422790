//! What an Engine.IO session's messages go to: back to the client (the
//! `engineio-echo` route), or the Socket.IO layer with the route's
//! behaviour (`socketio-reference`: the protocol test suite's server).
//!
//! A Socket.IO room is a hub topic (`sio:` + namespace + `,` + room), so
//! a broadcast reaches the members on every shard: it is published once,
//! as the WebSocket frames of its Engine.IO messages, and those frames
//! are shared by every member on a WebSocket; a polling member gets the
//! messages read back out of them.

use std::any::Any;
use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::counts::count;
use super::handler::{
    Ack, ConnectRequest, DisconnectReason, Event as AppEvent, Handshake, Namespaces, Socket,
    SocketIoHandler,
};
use crate::admission::rate::Rate;
use crate::auth::{Grant, Tokens};
use crate::config::pubsub::is_symbol;
use crate::config::{EngineIoLimits, RouteKind, Routes};
use crate::engineio::handoff::RecoveredSocket;
use crate::engineio::{Data, Session};
use crate::pubsub::hub::{Delivery, Hub, SharedFrame};
use crate::socketio::session::{self as sio, Connection, Settings, Violation};
use crate::socketio::target::{namespace_prefix, room_topic, valid_room, MAX_ROOM_NAME};
use crate::socketio::{broadcast, recovery};
use crate::socketio::{EventName, Packet, PacketType};

/// The most rooms one session's sockets may be in, together.
pub(crate) const MAX_ROOMS: usize = 64;

pub(crate) use crate::socketio::ROOM_TOPIC_PREFIX as ROOM_PREFIX;

/// What a route does with its sessions' messages.
#[derive(Debug, Clone)]
pub(crate) enum Behaviour {
    /// Every message comes back.
    Echo,
    /// Socket.IO as the protocol test suite's reference server: `/` and
    /// `/custom`, `auth` echoed on connect, `message` → `message-back`,
    /// `message-with-ack` acked, and the room events `join`, `leave`,
    /// `to-room`.
    Reference(Settings),
    /// Socket.IO mapped onto the hub: `subscribe`, `unsubscribe` and
    /// `publish` events, on any namespace.
    Hub(HubRules),
    /// Socket.IO served by an embedder's handlers, one per namespace.
    App(AppRules),
}

/// A Socket.IO route an embedder's handlers serve.
#[derive(Debug, Clone)]
pub(crate) struct AppRules {
    pub(crate) settings: Settings,
    pub(crate) max_rooms: usize,
    pub(crate) namespaces: Arc<Namespaces>,
}

/// The bounds of a `socketio` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HubRules {
    pub(crate) settings: Settings,
    /// The largest `publish` (its arguments' JSON and attachments).
    pub(crate) max_publish: usize,
    /// The most rooms a session may be in.
    pub(crate) max_rooms: usize,
    /// The feed's symbols (the first this many): rooms only it publishes to.
    pub(crate) feed_symbols: usize,
}

impl Behaviour {
    /// What the Engine.IO route with these settings does, served by
    /// `app` when an embedder registered namespaces for it.
    pub(crate) fn of(
        limits: &EngineIoLimits,
        routes: &Routes,
        app: Option<&Arc<Namespaces>>,
    ) -> Self {
        let settings = Settings {
            connect_timeout_ms: limits.connect_timeout_ms,
            recovery_ms: limits.max_disconnection_ms,
            ..Settings::default()
        };
        match (limits.kind, app) {
            (RouteKind::SocketIo, Some(namespaces)) => Self::App(AppRules {
                settings,
                max_rooms: routes.max_topics_per_conn,
                namespaces: Arc::clone(namespaces),
            }),
            (RouteKind::SocketIoReference, _) => Self::Reference(settings),
            (RouteKind::SocketIo, None) => Self::Hub(HubRules {
                settings,
                max_publish: routes.max_publish,
                max_rooms: routes.max_topics_per_conn,
                feed_symbols: routes.ticker_symbols.len(),
            }),
            _ => Self::Echo,
        }
    }

    /// The Socket.IO settings, unless the route echoes.
    pub(crate) fn socketio(&self) -> Option<Settings> {
        match self {
            Self::Echo => None,
            Self::Reference(s)
            | Self::Hub(HubRules { settings: s, .. })
            | Self::App(AppRules { settings: s, .. }) => Some(*s),
        }
    }

    /// Whether its sessions keep the request that opened them.
    pub(crate) fn keeps_handshake(&self) -> bool {
        matches!(self, Self::App(_))
    }
}

/// A Socket.IO session's state beyond the packet rules: the rooms it is
/// in, as hub topics.
#[derive(Debug)]
pub(crate) struct SocketIo {
    pub(crate) conn: Connection,
    pub(crate) rooms: Vec<Arc<str>>,
    mode: Mode,
    /// With recovery on: each connected socket's private id.
    pub(crate) pids: Vec<SocketPid>,
    /// Its token and publish bucket, boxed: most sessions have neither,
    /// and every idle session pays for what is inline here.
    extras: Option<Box<Extras>>,
}

/// When `grant`'s token has expired, on the owner's clock (`now`, in ms;
/// `u64::MAX`: never), as for a WebSocket.
fn token_until(grant: &Grant, now: u64) -> u64 {
    grant.exp.map_or(u64::MAX, |exp| {
        let wait = crate::shard::deadlines::until_expired(exp);
        now.saturating_add(wait.as_millis() as u64)
    })
}

/// What a session holds only with `--jwt-*` or `--publish-rate`.
#[derive(Debug, Default)]
struct Extras {
    /// What the signed token of the session's handshake allows: on a
    /// `socketio` route, the rooms its sockets may join (`subscribe`) and
    /// publish to (`publish`).
    grant: Option<Grant>,
    /// When that token expires, on the owner's clock in ms (`u64::MAX`:
    /// never): the session is then closed by the server.
    token_until: u64,
    /// Its `--publish-rate` bucket (see `admission::rate`), in ns on the
    /// owner's clock.
    publish_tat: u64,
}

/// A socket's private id, and the last event sent to it alone (not a
/// broadcast, so not recorded): its offset and the sequence number of the
/// next broadcast then.
#[derive(Debug)]
pub(crate) struct SocketPid {
    pub(crate) namespace: Box<str>,
    pub(crate) pid: Box<str>,
    pub(crate) last_direct: Option<(Box<str>, u64)>,
}

impl SocketIo {
    /// The Socket.IO state of a session opened at `now` by `handshake`,
    /// unless the route echoes.
    pub(crate) fn new(
        behaviour: &Behaviour,
        now: u64,
        handshake: Option<Handshake>,
        grant: Option<Grant>,
    ) -> Option<Self> {
        let token_until = grant.as_ref().map_or(u64::MAX, |g| token_until(g, now));
        Some(Self {
            extras: grant.map(|grant| {
                Box::new(Extras {
                    grant: Some(grant),
                    token_until,
                    publish_tat: 0,
                })
            }),
            conn: Connection::new(behaviour.socketio()?, now),
            rooms: Vec::new(),
            mode: match behaviour {
                Behaviour::App(rules) => Mode::App(Box::new(AppSession {
                    namespaces: Arc::clone(&rules.namespaces),
                    handshake: handshake.unwrap_or_else(Handshake::none),
                    sockets: Vec::new(),
                    max_rooms: u32::try_from(rules.max_rooms).unwrap_or(u32::MAX),
                })),
                Behaviour::Hub(rules) => Mode::Hub {
                    max_publish: u32::try_from(rules.max_publish).unwrap_or(u32::MAX),
                    max_rooms: u32::try_from(rules.max_rooms).unwrap_or(u32::MAX),
                    feed_symbols: u32::try_from(rules.feed_symbols).unwrap_or(u32::MAX),
                },
                _ => Mode::Reference,
            },
            pids: Vec::new(),
        })
    }

    /// Who the handshake's token says the client is, with `--jwt-*`.
    pub(crate) fn user(&self) -> Option<&str> {
        self.grant().map(|g| &*g.sub)
    }

    /// Takes one publish from the session's bucket under `rate` at `now`
    /// (ms, the owner's clock): false when it is empty.
    fn take_publish(&mut self, rate: Rate, now: u64) -> bool {
        if !rate.is_limited() {
            return true;
        }
        let extras = self.extras.get_or_insert_with(|| {
            Box::new(Extras {
                token_until: u64::MAX,
                ..Extras::default()
            })
        });
        match rate.take(extras.publish_tat, now.saturating_mul(1_000_000)) {
            Ok(tat) => {
                extras.publish_tat = tat;
                true
            }
            Err(_) => false,
        }
    }

    /// A CONNECT's `auth` (`{"token": "..."}`) for a session whose
    /// handshake came without a token, at `now` (ms, the owner's clock):
    /// once it verifies, it is the session's as if the handshake had
    /// carried it. The error is the CONNECT_ERROR's message; the session
    /// goes on waiting, until its time is up.
    fn authenticate(
        &mut self,
        auth: &str,
        now: u64,
        tokens: Option<&Tokens>,
    ) -> Result<(), String> {
        let (Some(extras), Some(tokens)) = (self.extras.as_deref_mut(), tokens) else {
            return Ok(());
        };
        if !extras.grant.as_ref().is_some_and(Grant::is_awaiting) {
            return Ok(());
        }
        #[derive(serde::Deserialize)]
        struct Auth {
            token: String,
        }
        let token = serde_json::from_str::<Auth>(auth)
            .map_err(|_| "a token is needed (auth.token)".to_owned())?
            .token;
        let grant = tokens
            .grant_of(&token, crate::shard::deadlines::unix_now())
            .map_err(|refused| format!("token refused: {}", crate::auth::why_refused(refused)))?;
        extras.token_until = token_until(&grant, now);
        extras.grant = Some(grant);
        Ok(())
    }

    /// What the handshake's token allows, with `--jwt-*`.
    fn grant(&self) -> Option<&Grant> {
        self.extras.as_deref()?.grant.as_ref()
    }

    /// When the handshake's token expires, on the owner's clock in ms
    /// (`u64::MAX`: never).
    pub(crate) fn token_until(&self) -> u64 {
        self.extras.as_deref().map_or(u64::MAX, |e| e.token_until)
    }

    /// Milliseconds a dropped socket is kept for recovery (0: it is not).
    pub(crate) fn recovery_ms(&self) -> u32 {
        self.conn.settings().recovery_ms
    }

    fn recovers(&self) -> bool {
        self.recovery_ms() > 0
    }

    /// An app route's per-session state.
    pub(crate) fn app(&self) -> Option<&AppSession> {
        match &self.mode {
            Mode::App(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn app_mut(&mut self) -> Option<&mut AppSession> {
        match &mut self.mode {
            Mode::App(a) => Some(a),
            _ => None,
        }
    }

    /// The topics of the rooms of the socket on `ns`.
    pub(crate) fn rooms_on(&self, ns: &str) -> Vec<Arc<str>> {
        let prefix = room_topic(ns, "");
        self.rooms
            .iter()
            .filter(|t| t.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

/// What a session's Socket.IO packets go to, kept with the session (its
/// settings are the connection's).
#[derive(Debug)]
enum Mode {
    Reference,
    Hub {
        max_publish: u32,
        max_rooms: u32,
        feed_symbols: u32,
    },
    App(Box<AppSession>),
}

/// What a session of an app route keeps beyond the protocol's state.
pub(crate) struct AppSession {
    namespaces: Arc<Namespaces>,
    pub(crate) handshake: Handshake,
    /// Each accepted namespace's socket, as the handlers know it.
    pub(crate) sockets: Vec<AppSocket>,
    pub(crate) max_rooms: u32,
}

/// A socket of an app route, beyond the protocol's state: what its
/// handler calls still need once the client has left the namespace.
pub(crate) struct AppSocket {
    pub(crate) namespace: Box<str>,
    pub(crate) id: Box<str>,
    /// What [`Connect::data`](super::handler::Connect::data) kept.
    pub(crate) data: Option<Box<dyn Any + Send>>,
}

impl AppSession {
    pub(crate) fn socket(&self, namespace: &str) -> Option<&AppSocket> {
        self.sockets.iter().find(|s| &*s.namespace == namespace)
    }

    pub(crate) fn socket_mut(&mut self, namespace: &str) -> Option<&mut AppSocket> {
        self.sockets.iter_mut().find(|s| &*s.namespace == namespace)
    }
}

impl std::fmt::Debug for AppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSession")
            .field("namespaces", &self.namespaces)
            .field("handshake", &self.handshake)
            .finish()
    }
}

/// A change to the owner's room index that a message asked for.
#[derive(Debug)]
pub(crate) enum RoomChange {
    Joined(Arc<str>),
    Left(Arc<str>),
}

/// Where a message's consequences go.
pub(crate) struct Effects<'a> {
    pub(crate) hub: &'a Hub,
    pub(crate) rooms: &'a mut Vec<RoomChange>,
    /// `CONNECT`s that asked to recover a socket: (namespace, pid,
    /// offset, auth), for the owner to pass to the shard that keeps it.
    pub(crate) recoveries: &'a mut Vec<(String, String, String, String)>,
    /// This shard, named in the pids it gives.
    pub(crate) shard: u16,
    /// The sequence number of the next room broadcast this shard records.
    pub(crate) next_seq: u64,
    /// `--publish-rate` (with `--publish-burst`) for each `socketio`
    /// session.
    pub(crate) publish_rate: Rate,
    /// The server's signed-token rule (`--jwt-*`), for a token that comes
    /// in a CONNECT's `auth`.
    pub(crate) tokens: Option<&'a Tokens>,
}

impl Effects<'_> {
    /// The same effects, lent for a shorter while.
    pub(crate) fn reborrow(&mut self) -> Effects<'_> {
        Effects {
            hub: self.hub,
            rooms: &mut *self.rooms,
            recoveries: &mut *self.recoveries,
            shard: self.shard,
            next_seq: self.next_seq,
            publish_rate: self.publish_rate,
            tokens: self.tokens,
        }
    }
}

/// A `CONNECT` the route accepts: with recovery on and a `pid` in its
/// payload, the shard that keeps that socket is asked first; otherwise the
/// socket connects now.
fn connect(
    session: &mut Session,
    state: &mut SocketIo,
    ns: &str,
    auth: &str,
    fx: &mut Effects<'_>,
) {
    if state.recovers() {
        if let Some((pid, offset)) = recovery::recovery_request(auth) {
            if recovery::pid_shard(&pid).is_some() {
                fx.recoveries
                    .push((ns.to_owned(), pid, offset, auth.to_owned()));
                return;
            }
        }
    }
    connected(session, state, ns, auth, None, fx);
}

/// Connects the socket on `ns`: a new one, or one recovered with the
/// broadcasts it missed (written first, as the reference writes them).
pub(crate) fn connected(
    session: &mut Session,
    state: &mut SocketIo,
    ns: &str,
    auth: &str,
    recovered: Option<(String, RecoveredSocket)>,
    fx: &mut Effects<'_>,
) {
    if state.conn.socket(ns).is_some() {
        // Connected meanwhile (a second CONNECT while the first waited).
        return;
    }
    let (sid, pid) = match recovered {
        Some((pid, socket)) => {
            for frames in &socket.missed {
                broadcast::messages_in(frames, |m| {
                    let _ = session.send(m);
                });
            }
            // Rooms the session's token (a new one, maybe narrower) no
            // longer allows are not joined again.
            let prefix = namespace_prefix(ns);
            for topic in socket.rooms {
                let allowed = state.grant().is_none_or(|g| {
                    topic
                        .strip_prefix(&*prefix)
                        .is_some_and(|room| g.may_subscribe(room))
                });
                if allowed {
                    join_within(state, topic, usize::MAX, fx);
                }
            }
            (socket.sid, Some(pid))
        }
        None => {
            let Some(id) = sio::new_socket_id() else {
                send(session, &sio::refusal(ns, "server busy"));
                return;
            };
            let pid = if state.recovers() {
                recovery::new_pid(fx.shard)
            } else {
                None
            };
            (id, pid)
        }
    };
    let extra = pid
        .as_ref()
        .map_or(String::new(), |p| format!("\"pid\":{}", json_string(p)));
    let accepted = state.conn.accept(ns, sid, &extra);
    send(session, &accepted);
    count(|c| c.sockets += 1);
    if let Some(pid) = pid {
        state.pids.reserve_exact(1);
        state.pids.push(SocketPid {
            namespace: ns.into(),
            pid: pid.into(),
            last_direct: None,
        });
    }
    match &state.mode {
        Mode::Reference => emit(session, state, fx, ns, "auth", auth, &[], None),
        Mode::App(_) => {
            let id = state.conn.socket(ns).map(|s| s.sid().into());
            let a = state.app_mut().expect("an app route's session");
            if let (Some(socket), Some(id)) = (a.socket_mut(ns), id) {
                socket.id = id;
            }
            if let Some(handler) = a.namespaces.get(ns).cloned() {
                call(session, state, ns, fx, &handler, |h, s| h.connected(s));
            }
        }
        Mode::Hub { .. } => {}
    }
}

/// An event's JSON array text, still open (`[name,args…`), closed with
/// an offset argument when the route recovers sockets.
fn with_offset(state: &SocketIo, mut data: String) -> String {
    if state.recovers() {
        data.push_str(&format!(",\"{}\"", recovery::new_offset()));
    }
    data.push(']');
    data
}

/// Acts on one message of a Socket.IO session. A violation ends the
/// Engine.IO session as the reference ends it: closed, with no Socket.IO
/// packet first.
pub(crate) fn receive(
    session: &mut Session,
    state: &mut SocketIo,
    message: Data<'_>,
    now: u64,
    fx: &mut Effects<'_>,
) {
    match state.conn.receive(message, now) {
        Ok(None) => {}
        Ok(Some(packet)) => match &state.mode {
            &Mode::Hub {
                max_publish,
                max_rooms,
                feed_symbols,
            } => {
                let limits = HubLimits {
                    max_publish: max_publish as usize,
                    max_rooms: max_rooms as usize,
                    feed_symbols: feed_symbols as usize,
                    now,
                };
                hub(session, state, &packet, limits, fx)
            }
            Mode::Reference => reference(session, state, &packet, fx),
            Mode::App(_) => app(session, state, &packet, fx),
        },
        Err(v) => violated(session, v),
    }
}

/// Ends a session whose client broke a rule.
pub(crate) fn violated(session: &mut Session, v: Violation) {
    tracing::debug!(violation = %v, "Socket.IO session closed");
    count(|c| c.violations[v.index()] += 1);
    session.protocol_error();
}

fn send(session: &mut Session, packet: &Packet<'_>) {
    // A message the queue cannot take ended the session (buffer full).
    sio::messages(packet, |m| {
        let _ = session.send(m);
    });
}

/// The reference server's behaviour for one checked packet.
fn reference(
    session: &mut Session,
    state: &mut SocketIo,
    packet: &Packet<'_>,
    fx: &mut Effects<'_>,
) {
    let ns = packet.namespace();
    match packet.kind() {
        PacketType::Connect => {
            if ns != "/" && ns != "/custom" {
                count(|c| c.connects_refused += 1);
                send(session, &sio::refusal(ns, "Invalid namespace"));
                return;
            }
            connect(session, state, ns, packet.data().unwrap_or("{}"), fx);
        }
        PacketType::Disconnect => {
            leave_all(state, ns, fx);
            state.pids.retain(|p| &*p.namespace != ns);
            count(|c| c.sockets_gone += 1);
        }
        PacketType::Event | PacketType::BinaryEvent if ns == "/" => {
            let Some(event) = packet.as_event() else {
                return;
            };
            let EventName::Str(name) = &event.name else {
                return;
            };
            let (args, attachments) = renumbered(event.args, packet.attachments());
            let id = packet.id();
            match &**name {
                "message" => {
                    // The handler passes the client's ack function on: the
                    // server asks for an ack of its own and forwards it.
                    let ask = id.and_then(|client| state.conn.await_ack(ns, client));
                    emit(
                        session,
                        state,
                        fx,
                        ns,
                        "message-back",
                        &args,
                        &attachments,
                        ask,
                    );
                }
                "message-with-ack" => {
                    if let Some(id) = id {
                        ack(session, ns, id, &args, &attachments);
                    }
                }
                "join" | "leave" => {
                    let Some(room) = first_string(&args).filter(|r| valid_room(r)) else {
                        return;
                    };
                    let topic: Arc<str> = room_topic(ns, &room).into();
                    if &**name == "join" {
                        join(state, topic, fx);
                    } else {
                        leave(state, &topic, fx);
                    }
                    if let Some(id) = id {
                        let list = rooms_of(state, ns);
                        ack(session, ns, id, &list, &[]);
                    }
                }
                "to-room" => {
                    let Some(room) = first_string(&args).filter(|r| valid_room(r)) else {
                        return;
                    };
                    let data = with_offset(state, format!("[\"room-event\",{args}"));
                    if let Ok(event) = Packet::event(ns, data, None, attachments) {
                        publish(fx.hub, &room_topic(ns, &room), &event);
                    }
                    if let Some(id) = id {
                        ack(session, ns, id, "", &[]);
                    }
                }
                _ => {}
            }
        }
        PacketType::Ack | PacketType::BinaryAck => {
            let Some(id) = packet.id() else { return };
            let Some(client) = state.conn.answered(ns, id) else {
                return;
            };
            let data = packet.data().unwrap_or("[]");
            let inner = data
                .trim()
                .strip_prefix('[')
                .and_then(|d| d.strip_suffix(']'));
            let (args, attachments) = renumbered(inner.unwrap_or(""), packet.attachments());
            ack(session, ns, client, &args, &attachments);
        }
        _ => {}
    }
}

/// A `socketio` route's bounds, as one packet is handled.
struct HubLimits {
    max_publish: usize,
    max_rooms: usize,
    feed_symbols: usize,
    /// The owner's clock (ms), for the publish bucket and the token.
    now: u64,
}

/// The `socketio` route's behaviour for one checked packet: the hub's
/// verbs as events. A mistake is answered in the event's ack when it asks
/// for one (`{"error": …}`), else with an `error` event; the session goes
/// on.
fn hub(
    session: &mut Session,
    state: &mut SocketIo,
    packet: &Packet<'_>,
    limits: HubLimits,
    fx: &mut Effects<'_>,
) {
    let HubLimits {
        max_publish,
        max_rooms,
        feed_symbols,
        now,
    } = limits;
    let ns = packet.namespace();
    match packet.kind() {
        PacketType::Connect => {
            let auth = packet.data().unwrap_or("{}");
            match state.authenticate(auth, now, fx.tokens) {
                Ok(()) => connect(session, state, ns, auth, fx),
                Err(why) => {
                    count(|c| c.connects_refused += 1);
                    send(session, &sio::refusal(ns, &why));
                }
            }
        }
        PacketType::Disconnect => {
            leave_all(state, ns, fx);
            state.pids.retain(|p| &*p.namespace != ns);
            count(|c| c.sockets_gone += 1);
        }
        PacketType::Event | PacketType::BinaryEvent => {
            let Some(event) = packet.as_event() else {
                return;
            };
            let id = packet.id();
            let outcome = match &event.name {
                EventName::Str(name) if name == "subscribe" || name == "unsubscribe" => {
                    rooms_named(event.args).and_then(|rooms| {
                        let grant = state.grant();
                        if let Some(room) = rooms.iter().find(|r| {
                            name == "subscribe" && grant.is_some_and(|g| !g.may_subscribe(r))
                        }) {
                            return Err(format!("this token may not subscribe to {room}"));
                        }
                        for room in rooms {
                            let topic: Arc<str> = room_topic(ns, &room).into();
                            if name == "unsubscribe" {
                                leave(state, &topic, fx);
                            } else if !join_within(state, topic, max_rooms, fx) {
                                return Err(format!("at most {} rooms", max_rooms));
                            }
                        }
                        Ok(format!("{{\"rooms\":{}}}", rooms_of(state, ns)))
                    })
                }
                EventName::Str(name) if name == "publish" => {
                    let size = event.args.len()
                        + packet.attachments().iter().map(|a| a.len()).sum::<usize>();
                    match first_string(event.args).filter(|r| valid_room(r)) {
                        _ if size > max_publish => {
                            Err(format!("a publish is at most {} bytes", max_publish))
                        }
                        None => Err("publish needs a room name first".to_owned()),
                        Some(room) if ns == "/" && is_symbol(&room, feed_symbols) => {
                            Err(format!("{room} is the feed's: only it publishes there"))
                        }
                        Some(room) if state.grant().is_some_and(|g| !g.may_publish(&room)) => {
                            Err(format!("this token may not publish to {room}"))
                        }
                        Some(_) if !state.take_publish(fx.publish_rate, now) => Err(format!(
                            "publish rate exceeded: at most {} per second",
                            fx.publish_rate.per_second()
                        )),
                        Some(room) => {
                            let (args, attachments) = renumbered(event.args, packet.attachments());
                            let data = with_offset(state, format!("[\"publish\",{args}"));
                            match Packet::event(ns, data, None, attachments) {
                                Ok(event) => {
                                    publish(fx.hub, &room_topic(ns, &room), &event);
                                    Ok(String::new())
                                }
                                Err(e) => Err(e.to_string()),
                            }
                        }
                    }
                }
                _ => Err("unknown event (subscribe, unsubscribe, publish)".to_owned()),
            };
            match (outcome, id) {
                (Ok(answer), Some(id)) => ack(session, ns, id, &answer, &[]),
                (Ok(_), None) => {}
                (Err(message), Some(id)) => {
                    let answer = format!("{{\"error\":{}}}", json_string(&message));
                    ack(session, ns, id, &answer, &[]);
                }
                (Err(message), None) => {
                    let args = format!("{{\"message\":{}}}", json_string(&message));
                    emit(session, state, fx, ns, "error", &args, &[], None);
                }
            }
        }
        _ => {}
    }
}

/// An app route's behaviour for one checked packet: the namespace's
/// handler decides connects and takes events.
fn app(session: &mut Session, state: &mut SocketIo, packet: &Packet<'_>, fx: &mut Effects<'_>) {
    let ns = packet.namespace();
    let Some(handler) = state.app().and_then(|a| a.namespaces.get(ns)).cloned() else {
        if packet.kind() == PacketType::Connect {
            count(|c| c.connects_refused += 1);
            send(session, &sio::refusal(ns, "Invalid namespace"));
        }
        return;
    };
    match packet.kind() {
        PacketType::Connect => {
            let auth = packet.data().unwrap_or("{}");
            let verdict = {
                let a = state.app().expect("an app route's session");
                let request = ConnectRequest {
                    namespace: ns,
                    auth,
                    handshake: &a.handshake,
                };
                catch_unwind(AssertUnwindSafe(|| handler.connect(&request)))
            };
            match verdict.map(|c| c.verdict) {
                Err(_) => panicked(session, "connect"),
                Ok(Err(message)) => {
                    count(|c| c.connects_refused += 1);
                    send(session, &sio::refusal(ns, &message));
                }
                Ok(Ok(data)) => {
                    let a = state.app_mut().expect("an app route's session");
                    a.sockets.retain(|s| &*s.namespace != ns);
                    a.sockets.push(AppSocket {
                        namespace: ns.into(),
                        id: "".into(),
                        data,
                    });
                    connect(session, state, ns, auth, fx);
                }
            }
        }
        PacketType::Disconnect => {
            let reason = DisconnectReason::ClientNamespaceDisconnect;
            call(session, state, ns, fx, &handler, |h, s| {
                s.leaving = true;
                h.disconnect(s, reason);
            });
            gone(state, ns, fx);
        }
        PacketType::Event | PacketType::BinaryEvent if state.conn.socket(ns).is_some() => {
            let Some(event) = packet.as_event() else {
                return;
            };
            let name = match event.name {
                EventName::Str(name) => name,
                EventName::Number(n) => Cow::Borrowed(n),
            };
            let event = AppEvent {
                name,
                args: event.args,
                attachments: packet.attachments(),
            };
            let ack = packet.id().map(|id| Ack { id });
            call(session, state, ns, fx, &handler, |h, s| {
                h.event(s, &event, ack)
            });
        }
        _ => {}
    }
}

/// Calls `f` on the socket of namespace `ns`, then disconnects it if the
/// handler asked to. A panic ends the session.
fn call(
    session: &mut Session,
    state: &mut SocketIo,
    ns: &str,
    fx: &mut Effects<'_>,
    handler: &Arc<dyn SocketIoHandler>,
    f: impl FnOnce(&dyn SocketIoHandler, &mut Socket<'_>),
) {
    let mut socket = Socket {
        session,
        state,
        fx: fx.reborrow(),
        namespace: ns,
        leaving: false,
        disconnect: false,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| f(&**handler, &mut socket)));
    let disconnect = socket.disconnect && !socket.leaving;
    if outcome.is_err() {
        panicked(session, "a Socket.IO handler");
        return;
    }
    if disconnect && state.conn.socket(ns).is_some() {
        let reason = DisconnectReason::ServerNamespaceDisconnect;
        let mut socket = Socket {
            session,
            state,
            fx: fx.reborrow(),
            namespace: ns,
            leaving: true,
            disconnect: false,
        };
        if catch_unwind(AssertUnwindSafe(|| handler.disconnect(&mut socket, reason))).is_err() {
            panicked(session, "disconnect");
        }
        if let Some(p) = state.conn.leave(ns) {
            send(session, &p);
        }
        gone(state, ns, fx);
    }
}

fn panicked(session: &mut Session, what: &str) {
    tracing::error!("{what} panicked; closing the session");
    session.close_by_server();
}

/// The socket on `ns` is gone: out of its rooms, its data dropped.
fn gone(state: &mut SocketIo, ns: &str, fx: &mut Effects<'_>) {
    leave_all(state, ns, fx);
    state.pids.retain(|p| &*p.namespace != ns);
    if let Some(a) = state.app_mut() {
        a.sockets.retain(|s| &*s.namespace != ns);
    }
    count(|c| c.sockets_gone += 1);
}

/// The session ended for `reason`: an app route's handlers hear of each
/// socket it had.
pub(crate) fn ended(
    session: &mut Session,
    state: &mut SocketIo,
    reason: crate::engineio::CloseReason,
    fx: &mut Effects<'_>,
) {
    let Some(a) = state.app() else { return };
    let namespaces = Arc::clone(&a.namespaces);
    let connected: Vec<String> = state
        .conn
        .sockets()
        .iter()
        .map(|s| s.namespace().to_owned())
        .collect();
    let reason = DisconnectReason::of(reason);
    for ns in connected {
        if let Some(handler) = namespaces.get(&ns) {
            call(session, state, &ns, fx, handler, |h, s| {
                s.leaving = true;
                h.disconnect(s, reason);
            });
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// The rooms a `subscribe` or `unsubscribe` names: its first argument, a
/// name or an array of names.
fn rooms_named(args: &str) -> Result<Vec<String>, String> {
    let array = format!("[{args}]");
    let first = serde_json::from_str::<Vec<serde_json::Value>>(&array)
        .ok()
        .and_then(|items| items.into_iter().next());
    let names = match first {
        Some(serde_json::Value::String(name)) => vec![name],
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(name) => Ok(name),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| "room names must be strings".to_owned())?,
        _ => return Err("name a room, or an array of rooms, first".to_owned()),
    };
    match names.iter().find(|r| !valid_room(r)) {
        Some(_) => Err(format!(
            "a room name is 1 to {MAX_ROOM_NAME} bytes, without control characters"
        )),
        None => Ok(names),
    }
}

/// Sends the event `name` with `args` (JSON text of the arguments after
/// the name) on namespace `ns`.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit(
    session: &mut Session,
    state: &mut SocketIo,
    fx: &Effects<'_>,
    ns: &str,
    name: &str,
    args: &str,
    attachments: &[Cow<'_, [u8]>],
    id: Option<u64>,
) {
    let name = serde_json::to_string(name).expect("a string");
    let mut data = if args.is_empty() {
        format!("[{name}")
    } else {
        format!("[{name},{args}")
    };
    if state.recovers() {
        // With recovery every event carries an offset; a client whose
        // last one is this resumes from the broadcasts after it.
        let offset = recovery::new_offset();
        data.push_str(&format!(",\"{offset}\""));
        if let Some(p) = state.pids.iter_mut().find(|p| &*p.namespace == ns) {
            p.last_direct = Some((offset.into(), fx.next_seq));
        }
    }
    data.push(']');
    if let Ok(p) = Packet::event(ns, data, id, attachments.to_vec()) {
        send(session, &p);
    }
}

pub(super) fn ack(
    session: &mut Session,
    ns: &str,
    id: u64,
    args: &str,
    attachments: &[Cow<'_, [u8]>],
) {
    let kind = if attachments.is_empty() {
        PacketType::Ack
    } else {
        PacketType::BinaryAck
    };
    let data = format!("[{args}]");
    if let Ok(p) = Packet::new(kind, ns, Some(id), Some(data.into()), attachments.to_vec()) {
        send(session, &p);
    }
}

/// The arguments with their placeholders numbered in document order and
/// the attachments they name, in that order: what the reference sends on
/// when it re-encodes them. Attachments no placeholder names are dropped.
fn renumbered<'a>(
    args: &'a str,
    attachments: &'a [Cow<'a, [u8]>],
) -> (Cow<'a, str>, Vec<Cow<'a, [u8]>>) {
    if attachments.is_empty() {
        return (Cow::Borrowed(args), Vec::new());
    }
    let array = format!("[{args}]");
    let nums = crate::socketio::packet::placeholders(&array);
    if nums.iter().enumerate().all(|(i, &n)| n == i as u64) {
        let used = attachments[..nums.len().min(attachments.len())].to_vec();
        return (Cow::Borrowed(args), used);
    }
    // Out of document order (no stock client writes this): rebuilt
    // through a tree.
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&array) else {
        return (Cow::Borrowed(args), attachments.to_vec());
    };
    let mut used = Vec::new();
    number(&mut value, attachments, &mut used);
    let text = serde_json::to_string(&value).expect("a JSON value");
    let inner = text[1..text.len() - 1].to_owned();
    (Cow::Owned(inner), used)
}

fn number<'a>(
    value: &mut serde_json::Value,
    attachments: &[Cow<'a, [u8]>],
    used: &mut Vec<Cow<'a, [u8]>>,
) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| number(v, attachments, used)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                if let Some(n) = map.get("num").and_then(Value::as_u64) {
                    if let Some(a) = attachments.get(n as usize) {
                        map.insert("num".into(), Value::from(used.len()));
                        used.push(a.clone());
                    }
                }
                return;
            }
            map.values_mut().for_each(|v| number(v, attachments, used));
        }
        _ => {}
    }
}

/// The first argument, if it is a string (a room's name).
fn first_string(args: &str) -> Option<String> {
    let array = format!("[{args}]");
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(&array).ok()?;
    serde_json::from_str(items.first()?.get()).ok()
}

/// Joins a room's topic; `false` if the session is in `max` rooms.
pub(super) fn join_within(
    state: &mut SocketIo,
    topic: Arc<str>,
    max: usize,
    fx: &mut Effects<'_>,
) -> bool {
    if state.rooms.contains(&topic) {
        return true;
    }
    if state.rooms.len() >= max {
        return false;
    }
    state.rooms.reserve_exact(1);
    state.rooms.push(Arc::clone(&topic));
    fx.rooms.push(RoomChange::Joined(topic));
    true
}

fn join(state: &mut SocketIo, topic: Arc<str>, fx: &mut Effects<'_>) {
    join_within(state, topic, MAX_ROOMS, fx);
}

pub(super) fn leave(state: &mut SocketIo, topic: &str, fx: &mut Effects<'_>) {
    if let Some(at) = state.rooms.iter().position(|t| &**t == topic) {
        let topic = state.rooms.remove(at);
        fx.rooms.push(RoomChange::Left(topic));
    }
}

/// A socket left namespace `ns`: it leaves that namespace's rooms.
fn leave_all(state: &mut SocketIo, ns: &str, fx: &mut Effects<'_>) {
    let prefix = room_topic(ns, "");
    let (gone, kept) = std::mem::take(&mut state.rooms)
        .into_iter()
        .partition(|t| t.starts_with(&prefix));
    state.rooms = kept;
    let gone: Vec<Arc<str>> = gone;
    fx.rooms.extend(gone.into_iter().map(RoomChange::Left));
}

/// The rooms the socket on `ns` is in, as the JSON array text of their
/// names, in the order it joined them.
fn rooms_of(state: &SocketIo, ns: &str) -> String {
    let prefix = room_topic(ns, "");
    let names: Vec<&str> = state
        .rooms
        .iter()
        .filter_map(|t| t.strip_prefix(&prefix))
        .collect();
    serde_json::to_string(&names).expect("strings")
}

/// Publishes `packet` to a room's topic on every shard, and through a
/// bridge to every node: framed once, the same bytes for every member.
pub(super) fn publish(hub: &Hub, topic: &str, packet: &Packet<'_>) {
    let frames = broadcast::frames(packet);
    if hub.bridged() {
        hub.relay_text(topic, broadcast::relay_text(&frames));
    }
    hub.publish_batch(&[Delivery {
        topic: topic.into(),
        key: 0,
        frame: SharedFrame::from(frames),
    }]);
}
