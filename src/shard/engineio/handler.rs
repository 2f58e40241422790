//! What an embedder writes for a Socket.IO route: a [`SocketIoHandler`]
//! per namespace, gathered in [`Namespaces`], and what a handler holds
//! while it runs: the [`Socket`] it was called for, the [`Ack`] an event
//! asked for, a [`Broadcast`] to rooms. An [`Emitter`] broadcasts from any
//! thread. `surge::app` re-exports these; the calls into them are in
//! `app.rs`, beside the built-in behaviours.

use std::any::Any;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admission::policy::UpgradeRequest;
use crate::pubsub::hub::Hub;
use crate::socketio::target::Target;
use crate::socketio::Packet;

/// The behaviour of one namespace of a Socket.IO route. Every method has a
/// default, so a handler implements only what it needs.
///
/// Methods run on the shard thread that owns the client's Engine.IO
/// session, between its reads and writes: keep them short and never
/// block; hand slow work to another thread, which answers through an
/// [`Emitter`]. A panic in a method is caught where unwinding is enabled:
/// the client's session is closed and the server carries on.
pub trait SocketIoHandler: Send + Sync + 'static {
    /// A client asks to connect to this namespace, with its `auth`
    /// payload. Default: accept.
    fn connect(&self, request: &ConnectRequest<'_>) -> Connect {
        let _ = request;
        Connect::accept()
    }

    /// The socket is connected (the client has its id); it may emit and
    /// join rooms.
    fn connected(&self, socket: &mut Socket<'_>) {
        let _ = socket;
    }

    /// The client emitted an event; `ack` is there when it waits for an
    /// answer.
    fn event(&self, socket: &mut Socket<'_>, event: &Event<'_>, ack: Option<Ack>) {
        let _ = (socket, event, ack);
    }

    /// The socket is gone, called once per connected socket. Nothing can
    /// be sent to it any more; broadcasts to others still go out.
    fn disconnect(&self, socket: &mut Socket<'_>, reason: DisconnectReason) {
        let _ = (socket, reason);
    }
}

/// The namespaces of one Socket.IO route and their handlers; a `CONNECT`
/// to any other is refused with `Invalid namespace`, as the reference
/// server refuses it.
#[derive(Clone, Default)]
pub struct Namespaces {
    handlers: Vec<(Box<str>, Arc<dyn SocketIoHandler>)>,
}

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.handlers.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Namespaces {
    /// No namespace yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves namespace `name` (`/`, or `/` and a name) with `handler`; a
    /// name added twice keeps the first handler.
    ///
    /// # Panics
    /// If `name` does not start with `/` or holds a comma: no client could
    /// connect to it, so it is a mistake in the program.
    pub fn namespace(mut self, name: &str, handler: impl SocketIoHandler) -> Self {
        assert!(
            name.starts_with('/') && !name.contains(','),
            "a Socket.IO namespace starts with / and holds no comma: {name:?}"
        );
        self.handlers.push((name.into(), Arc::new(handler)));
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn SocketIoHandler>> {
        self.handlers
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, h)| h)
    }
}

/// The HTTP request that opened the client's Engine.IO session (its
/// first poll, or its WebSocket upgrade), kept while the session lives.
#[derive(Debug, Clone)]
pub struct Handshake {
    address: IpAddr,
    user: Option<Box<str>>,
    path: Box<str>,
    query: Option<Box<str>>,
    headers: Box<[Header]>,
}

/// One header line: its name and value.
type Header = (Box<str>, Box<[u8]>);

impl Handshake {
    /// For a session opened without one at hand.
    pub(crate) fn none() -> Self {
        Self {
            address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            user: None,
            path: "".into(),
            query: None,
            headers: Box::new([]),
        }
    }

    pub(crate) fn of(request: &UpgradeRequest<'_>) -> Self {
        Self {
            address: request.client,
            user: request.user.clone(),
            path: request.path.into(),
            query: request.query.map(Into::into),
            headers: request
                .headers()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        }
    }

    /// The client's address, as admission counts it (after PROXY protocol
    /// and a trusted `X-Forwarded-For`).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// Who the handshake's signed token says the client is (its `sub`),
    /// with `--jwt-*`.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The request path, without its query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The value of a query parameter, as sent (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        crate::config::upgrade_hook::query_param(self.query()?, name)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }
}

/// A client's `CONNECT` to a namespace, as [`SocketIoHandler::connect`]
/// sees it.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) auth: &'a str,
    pub(crate) handshake: &'a Handshake,
}

impl ConnectRequest<'_> {
    /// The namespace asked for.
    pub fn namespace(&self) -> &str {
        self.namespace
    }

    /// The `auth` payload as JSON text (`{}` when the client sent none).
    pub fn auth(&self) -> &str {
        self.auth
    }

    /// The `auth` payload read as `T`; `None` if it does not read so.
    pub fn auth_as<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.auth).ok()
    }

    /// The request that opened the session.
    pub fn handshake(&self) -> &Handshake {
        self.handshake
    }
}

/// The answer to a `CONNECT`: [`Connect::accept`] or [`Connect::refuse`].
pub struct Connect {
    pub(crate) verdict: Result<Option<Box<dyn Any + Send>>, String>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.verdict {
            Ok(data) => write!(f, "Connect::accept(data: {})", data.is_some()),
            Err(message) => write!(f, "Connect::refuse({message:?})"),
        }
    }
}

impl Connect {
    /// Connects the socket.
    pub fn accept() -> Self {
        Self { verdict: Ok(None) }
    }

    /// Refuses it: the client gets `CONNECT_ERROR` with `{"message": …}`
    /// (its `connect_error` event) and may try again.
    pub fn refuse(message: impl Into<String>) -> Self {
        Self {
            verdict: Err(message.into()),
        }
    }

    /// Keeps `value` with the socket, reachable through [`Socket::data`].
    pub fn data<T: Any + Send>(mut self, value: T) -> Self {
        if let Ok(data) = &mut self.verdict {
            *data = Some(Box::new(value));
        }
        self
    }
}

/// An event a client emitted.
#[derive(Debug)]
pub struct Event<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) args: &'a str,
    pub(crate) attachments: &'a [Cow<'a, [u8]>],
}

impl Event<'_> {
    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments after the name, as JSON text (`1,{"a":2}`); binary
    /// arguments are `{"_placeholder":true,"num":N}`, attachment `N`.
    pub fn args(&self) -> &str {
        self.args
    }

    /// The arguments read as `T`, a tuple or a `Vec` of them; `None` if
    /// they do not read so.
    pub fn args_as<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(&format!("[{}]", self.args)).ok()
    }

    /// The first argument read as `T`.
    pub fn first<T: DeserializeOwned>(&self) -> Option<T> {
        let array = format!("[{}]", self.args);
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(&array).ok()?;
        serde_json::from_str(items.first()?.get()).ok()
    }

    /// The binary attachments, in the order their placeholders number
    /// them.
    pub fn attachments(&self) -> impl Iterator<Item = &[u8]> {
        self.attachments.iter().map(|a| &**a)
    }
}

/// The answer an event waits for: give it to [`Ack::send`], now or in a
/// later call for the same socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the client waits for this answer"]
pub struct Ack {
    pub(crate) id: u64,
}

impl Ack {
    /// Answers with one argument, `data`; `false` if the socket is gone
    /// or `data` does not serialize to JSON.
    pub fn send(self, socket: &mut Socket<'_>, data: &impl Serialize) -> bool {
        let Ok(args) = serde_json::to_string(data) else {
            return false;
        };
        if !socket.is_connected() {
            return false;
        }
        super::app::ack(socket.session, socket.namespace, self.id, &args, &[]);
        true
    }
}

/// Why a socket is gone, in the reference server's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client left the namespace (`socket.disconnect()`).
    ClientNamespaceDisconnect,
    /// The server did ([`Socket::disconnect`]).
    ServerNamespaceDisconnect,
    /// The client closed its session, or its connection ended.
    TransportClose,
    /// The client broke the transport's rules, or was too slow to read.
    TransportError,
    /// The client sent what does not decode or breaks the protocol.
    ParseError,
    /// No pong in time.
    PingTimeout,
    /// The server is draining or shutting down.
    ServerShuttingDown,
}

impl DisconnectReason {
    /// The reference server's name for it (`"transport close"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::ParseError => "parse error",
            Self::PingTimeout => "ping timeout",
            Self::ServerShuttingDown => "server shutting down",
        }
    }

    pub(crate) fn of(reason: crate::engineio::CloseReason) -> Self {
        use crate::engineio::CloseReason as C;
        match reason {
            C::ClientClose | C::TransportClose => Self::TransportClose,
            C::TransportError | C::BufferFull => Self::TransportError,
            C::ParseError | C::PayloadTooLarge => Self::ParseError,
            C::PingTimeout => Self::PingTimeout,
            C::ServerClose => Self::ServerShuttingDown,
        }
    }
}

/// One connected socket, lent to a [`SocketIoHandler`] method.
pub struct Socket<'a> {
    pub(crate) session: &'a mut crate::engineio::Session,
    pub(crate) state: &'a mut super::app::SocketIo,
    pub(crate) fx: super::app::Effects<'a>,
    pub(crate) namespace: &'a str,
    /// No more sends: the socket is leaving.
    pub(crate) leaving: bool,
    /// The handler asked to disconnect it.
    pub(crate) disconnect: bool,
}

impl std::fmt::Debug for Socket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id())
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Socket<'_> {
    /// The socket's id, as its client knows it (`socket.id`).
    pub fn id(&self) -> &str {
        match self.state.conn.socket(self.namespace) {
            Some(s) => s.sid(),
            // The client has left the namespace (its `disconnect` call).
            None => self
                .state
                .app()
                .and_then(|a| a.socket(self.namespace))
                .map_or("", |s| &s.id),
        }
    }

    /// The namespace it is connected to.
    pub fn namespace(&self) -> &str {
        self.namespace
    }

    /// Whether it may still be sent to.
    pub fn is_connected(&self) -> bool {
        !self.leaving
            && self.session.closed().is_none()
            && self.state.conn.socket(self.namespace).is_some()
    }

    /// The request that opened the client's session.
    pub fn handshake(&self) -> &Handshake {
        &self.state.app().expect("an app route's session").handshake
    }

    /// The data [`Connect::data`] kept with the socket, if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.state
            .app()?
            .socket(self.namespace)?
            .data
            .as_deref()?
            .downcast_ref()
    }

    /// The same, to change.
    pub fn data_mut<T: Any>(&mut self) -> Option<&mut T> {
        let ns = self.namespace;
        self.state
            .app_mut()?
            .socket_mut(ns)?
            .data
            .as_deref_mut()?
            .downcast_mut()
    }

    /// Sends event `event` with one argument, `data`; `false` if the
    /// socket is gone or `data` does not serialize to JSON.
    pub fn emit(&mut self, event: &str, data: &impl Serialize) -> bool {
        let Ok(args) = serde_json::to_string(data) else {
            return false;
        };
        if !self.is_connected() {
            return false;
        }
        super::app::emit(
            self.session,
            self.state,
            &self.fx,
            self.namespace,
            event,
            &args,
            &[],
            None,
        );
        true
    }

    /// Joins room `room`: broadcasts to it reach this socket, on whatever
    /// shard or node they are made. `false` if the name is not a room's
    /// (1 to 200 bytes, no control characters) or the session is in as
    /// many rooms as the route allows.
    pub fn join(&mut self, room: &str) -> bool {
        if !crate::socketio::target::valid_room(room) || self.leaving {
            return false;
        }
        let max = self.state.app().map_or(0, |a| a.max_rooms as usize);
        let topic = crate::socketio::target::room_topic(self.namespace, room);
        super::app::join_within(self.state, topic.into(), max, &mut self.fx)
    }

    /// Leaves room `room`.
    pub fn leave(&mut self, room: &str) {
        let topic = crate::socketio::target::room_topic(self.namespace, room);
        super::app::leave(self.state, &topic, &mut self.fx);
    }

    /// The rooms it is in, in the order it joined them.
    pub fn rooms(&self) -> Vec<&str> {
        let prefix = crate::socketio::target::namespace_prefix(self.namespace);
        self.state
            .rooms
            .iter()
            .filter_map(|t| t.strip_prefix(prefix.as_str()))
            .collect()
    }

    /// A broadcast to room `room`'s members but this socket.
    pub fn to(&self, room: &str) -> Broadcast<'_> {
        self.broadcast().to(room)
    }

    /// A broadcast to every socket of the namespace but this one.
    pub fn broadcast(&self) -> Broadcast<'_> {
        let mut b = Broadcast::new(self.fx.hub, self.namespace, self.state.recovery_ms() > 0);
        b.target.not = Some(Cow::Owned(self.id().to_owned()));
        b
    }

    /// Disconnects the socket from the namespace once the call returns:
    /// the client gets `DISCONNECT` (its `disconnect` event, reason
    /// `io server disconnect`) and the handler's
    /// [`disconnect`](SocketIoHandler::disconnect) follows.
    pub fn disconnect(&mut self) {
        self.disconnect = true;
    }
}

/// A broadcast being addressed: rooms to reach ([`to`](Self::to)), rooms
/// to skip ([`except`](Self::except)), then [`emit`](Self::emit). A socket
/// in several of the rooms gets it once.
#[derive(Debug)]
pub struct Broadcast<'h> {
    hub: &'h Hub,
    recovers: bool,
    target: Target<'static>,
}

impl<'h> Broadcast<'h> {
    fn new(hub: &'h Hub, namespace: &str, recovers: bool) -> Self {
        Self {
            hub,
            recovers,
            target: Target {
                namespace: Cow::Owned(namespace.to_owned()),
                to: Vec::new(),
                except: Vec::new(),
                not: None,
            },
        }
    }

    /// Reaches room `room`'s members too (with no room named, every
    /// socket of the namespace is reached).
    pub fn to(mut self, room: &str) -> Self {
        self.target.to.push(Cow::Owned(room.to_owned()));
        self
    }

    /// Skips room `room`'s members.
    pub fn except(mut self, room: &str) -> Self {
        self.target.except.push(Cow::Owned(room.to_owned()));
        self
    }

    /// Sends event `event` with one argument, `data`, to every socket the
    /// broadcast reaches, on every shard and, through the Redis bridge,
    /// every node: encoded once, the same frames for every WebSocket
    /// member. `false` if `data` does not serialize to JSON or a room
    /// named is not a room's name.
    pub fn emit(self, event: &str, data: &impl Serialize) -> bool {
        let valid = crate::socketio::target::valid_room;
        if !self
            .target
            .to
            .iter()
            .chain(&self.target.except)
            .all(|r| valid(r))
        {
            return false;
        }
        let (Ok(name), Ok(args)) = (serde_json::to_string(event), serde_json::to_string(data))
        else {
            return false;
        };
        let mut text = format!("[{name},{args}");
        if self.recovers {
            text.push_str(&format!(",\"{}\"", crate::socketio::recovery::new_offset()));
        }
        text.push(']');
        let Ok(packet) = Packet::event(self.target.namespace.as_ref(), text, None, Vec::new())
        else {
            return false;
        };
        super::app::publish(self.hub, &self.target.topic(), &packet);
        true
    }
}

/// Broadcasts to a Socket.IO route's sockets from any thread: from
/// [`Running::emitter`](crate::app::Running::emitter).
#[derive(Debug, Clone)]
pub struct Emitter {
    pub(crate) hub: Arc<Hub>,
    pub(crate) recovers: bool,
}

impl Emitter {
    /// A broadcast to every socket of namespace `namespace` (narrowed with
    /// [`Broadcast::to`] and [`Broadcast::except`]).
    pub fn of(&self, namespace: &str) -> Broadcast<'_> {
        Broadcast::new(&self.hub, namespace, self.recovers)
    }
}
