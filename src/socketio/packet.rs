//! One Socket.IO packet and its text form,
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`, read the
//! way the reference parser (`socket.io-parser` v4, protocol v5) reads it.
//!
//! The JSON data is checked once and kept as the text it came in (or was
//! given in): a packet is never a tree, so a broadcast is encoded once and
//! its bytes shared.
//!
//! Where the reference reads with JavaScript's `Number()` it takes more
//! than digits, and this reads the same: a packet that starts with white
//! space is a `CONNECT` (`Number(" ")` is 0), and white space right after
//! the namespace is read as (part of) an ack id. What it would read as
//! `NaN`, a fraction or an integer beyond 2^53 is refused here instead
//! (see [`PacketError`]), and so is an attachment count in the other
//! spellings `Number()` takes (`0x1`, `1e0`, `+1`): no client writes them.
//! As in the reference (socket.io 4.8), a binary packet announces 1
//! attachment or more, and the empty packet is refused (engine.io-parser
//! hands socket.io no data for it, and the session is closed).
//!
//! The JSON is checked by serde_json, stricter than `JSON.parse` in three
//! corners: a lone UTF-16 surrogate escape (`"\ud800"`), a number beyond
//! `f64` (`1e400`, Infinity to JavaScript) and nesting deeper than 128 are
//! refused.

use std::borrow::Cow;
use std::fmt;

use super::json::{self, First, Shape};

/// The largest ack id: the largest integer a JavaScript peer holds exactly.
pub const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// The seven packet types of Socket.IO v5, numbered as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: connect to a namespace (client, with optional auth data), or
    /// the server's consent (with the socket's `sid`).
    Connect,
    /// `1`: leave a namespace. Carries no data.
    Disconnect,
    /// `2`: an event: a non-empty array whose first element names it.
    Event,
    /// `3`: the answer to an event sent with an ack id: an array.
    Ack,
    /// `4`: the server's refusal of a `CONNECT`: `{message, data?}`.
    ConnectError,
    /// `5`: an `EVENT` whose binary parts travel as attachments.
    BinaryEvent,
    /// `6`: an `ACK` whose binary parts travel as attachments.
    BinaryAck,
}

impl PacketType {
    /// Every type, in wire order.
    pub const ALL: [Self; 7] = [
        Self::Connect,
        Self::Disconnect,
        Self::Event,
        Self::Ack,
        Self::ConnectError,
        Self::BinaryEvent,
        Self::BinaryAck,
    ];

    /// The type's digit on the wire, `b'0'` to `b'6'`.
    pub const fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// The type a wire digit names, if it names one.
    pub fn from_digit(digit: u8) -> Option<Self> {
        Self::ALL
            .get(usize::from(digit.wrapping_sub(b'0')))
            .copied()
    }

    /// Whether packets of this type carry attachments (and the `N-`
    /// count that announces them).
    pub const fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// Which rule a packet breaks. Any of them ends the session it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// The text is empty: no packet at all.
    Empty,
    /// The first character is neither a type digit `0` to `6` nor one the
    /// reference reads as 0.
    UnknownType(char),
    /// A binary packet's attachment count does not end with `-`.
    MissingAttachmentCount,
    /// A binary packet's attachment count is not a whole number.
    IllegalAttachmentCount,
    /// A binary packet announces no attachment.
    NoAttachments,
    /// The ack id has white space inside it (the reference reads `NaN`).
    IllegalAckId,
    /// The ack id is above [`MAX_ACK_ID`].
    AckIdTooLarge,
    /// The data is not one JSON value (or nests deeper than 128).
    InvalidJson,
    /// A `CONNECT`'s data is not an object.
    ConnectData,
    /// A `DISCONNECT` carries data.
    DisconnectData,
    /// An event's data is not an array starting with a string or a number.
    EventData,
    /// An event is named by a name the libraries keep for themselves
    /// (`connect`, `disconnect`, ...).
    ReservedEvent,
    /// An ack's data is not an array.
    AckData,
    /// A `CONNECT_ERROR`'s data is neither an object nor a string.
    ConnectErrorData,
    /// A placeholder's `num` is missing, or not a whole number from 0.
    IllegalPlaceholder,
    /// A placeholder's `num` names no attachment.
    PlaceholderOutOfRange(u64),
    /// Two placeholders name the same attachment.
    DuplicatePlaceholder(u64),
    /// Building a packet: a namespace must start with `/` and hold no `,`.
    IllegalNamespace,
    /// Building a packet: only binary types carry attachments.
    UnexpectedAttachments,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty packet"),
            Self::UnknownType(c) => write!(f, "unknown packet type {c:?}"),
            Self::MissingAttachmentCount => f.write_str("binary packet without `N-`"),
            Self::IllegalAttachmentCount => f.write_str("illegal attachment count"),
            Self::NoAttachments => f.write_str("binary packet without attachments"),
            Self::IllegalAckId => f.write_str("illegal ack id"),
            Self::AckIdTooLarge => f.write_str("ack id above 2^53 - 1"),
            Self::InvalidJson => f.write_str("data is not JSON"),
            Self::ConnectData => f.write_str("CONNECT data is not an object"),
            Self::DisconnectData => f.write_str("DISCONNECT with data"),
            Self::EventData => f.write_str("event data is not an array starting with a name"),
            Self::ReservedEvent => f.write_str("reserved event name"),
            Self::AckData => f.write_str("ack data is not an array"),
            Self::ConnectErrorData => {
                f.write_str("CONNECT_ERROR data is neither an object nor a string")
            }
            Self::IllegalPlaceholder => f.write_str("illegal placeholder num"),
            Self::PlaceholderOutOfRange(n) => write!(f, "placeholder {n} names no attachment"),
            Self::DuplicatePlaceholder(n) => write!(f, "placeholder {n} appears twice"),
            Self::IllegalNamespace => f.write_str("namespace must start with '/' and hold no ','"),
            Self::UnexpectedAttachments => f.write_str("attachments on a non-binary packet"),
        }
    }
}

impl std::error::Error for PacketError {}

/// One packet: type, namespace, optional ack id, optional JSON data (as
/// text), and for binary types the attachments its placeholders name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    kind: PacketType,
    namespace: Cow<'a, str>,
    id: Option<u64>,
    data: Option<Cow<'a, str>>,
    attachments: Vec<Cow<'a, [u8]>>,
}

impl<'a> Packet<'a> {
    /// A packet, checked against every rule the decoder applies, so that
    /// what it encodes decodes to it again. `data` is JSON text; white
    /// space before it is dropped (after an ack id it would read as part
    /// of the id).
    pub fn new(
        kind: PacketType,
        namespace: impl Into<Cow<'a, str>>,
        id: Option<u64>,
        data: Option<Cow<'a, str>>,
        attachments: Vec<Cow<'a, [u8]>>,
    ) -> Result<Self, PacketError> {
        let namespace = namespace.into();
        if !namespace.starts_with('/') || namespace.contains(',') {
            return Err(PacketError::IllegalNamespace);
        }
        if id.is_some_and(|id| id > MAX_ACK_ID) {
            return Err(PacketError::AckIdTooLarge);
        }
        if !kind.is_binary() && !attachments.is_empty() {
            return Err(PacketError::UnexpectedAttachments);
        }
        if kind.is_binary() && attachments.is_empty() {
            return Err(PacketError::NoAttachments);
        }
        let data = data.map(trim_start);
        if let Some(data) = &data {
            check_data(kind, data, attachments.len())?;
        }
        Ok(Self {
            kind,
            namespace,
            id,
            data,
            attachments,
        })
    }

    /// An `EVENT` (or, with attachments, a `BINARY_EVENT`) in `namespace`.
    pub fn event(
        namespace: impl Into<Cow<'a, str>>,
        data: impl Into<Cow<'a, str>>,
        id: Option<u64>,
        attachments: Vec<Cow<'a, [u8]>>,
    ) -> Result<Self, PacketError> {
        let kind = if attachments.is_empty() {
            PacketType::Event
        } else {
            PacketType::BinaryEvent
        };
        Self::new(kind, namespace, id, Some(data.into()), attachments)
    }

    /// The packet's type as on the wire.
    pub const fn kind(&self) -> PacketType {
        self.kind
    }

    /// The namespace, `/` unless the packet names another.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ack id, if the packet has one.
    pub const fn id(&self) -> Option<u64> {
        self.id
    }

    /// The JSON data as text, placeholders and all, if there is any.
    pub fn data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// The binary attachments, in the order their placeholders number them.
    pub fn attachments(&self) -> &[Cow<'a, [u8]>] {
        &self.attachments
    }

    /// An event's name and the JSON text of its arguments (what follows
    /// the name inside the array, commas included, without the brackets;
    /// empty when there are none), so the arguments can be sent on, or
    /// answered in an ack, without parsing them. `None` unless this is an
    /// `EVENT` or `BINARY_EVENT` with data.
    pub fn as_event(&self) -> Option<Event<'_>> {
        if !matches!(self.kind, PacketType::Event | PacketType::BinaryEvent) {
            return None;
        }
        let data = self.data.as_deref()?;
        // Checked when the packet was made: a non-empty array of JSON.
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(data).ok()?;
        let first = items.first()?.get();
        let name = match serde_json::from_str::<Cow<'_, str>>(first) {
            Ok(name) => EventName::Str(name),
            Err(_) => EventName::Number(first),
        };
        let offset = |s: &str| s.as_ptr() as usize - data.as_ptr() as usize;
        let args = match (items.get(1), items.last()) {
            (Some(second), Some(last)) => {
                &data[offset(second.get())..offset(last.get()) + last.get().len()]
            }
            _ => "",
        };
        Some(Event { name, args })
    }

    /// The same packet, owned.
    pub fn into_owned(self) -> Packet<'static> {
        Packet {
            kind: self.kind,
            namespace: Cow::Owned(self.namespace.into_owned()),
            id: self.id,
            data: self.data.map(|d| Cow::Owned(d.into_owned())),
            attachments: self
                .attachments
                .into_iter()
                .map(|a| Cow::Owned(a.into_owned()))
                .collect(),
        }
    }

    /// Decodes the text form of a packet. A binary packet comes back
    /// without its attachments, with the number that must follow it (0
    /// for any other type); [`Decoder`](super::Decoder) collects them.
    pub fn decode_text(text: &'a str) -> Result<(Self, usize), PacketError> {
        let (kind, mut pos) = match text.chars().next() {
            None => return Err(PacketError::Empty),
            Some(c @ '0'..='6') => (PacketType::from_digit(c as u8).expect("a digit"), 1),
            Some(c) if js_space(c) => (PacketType::Connect, c.len_utf8()),
            Some(c) => return Err(PacketError::UnknownType(c)),
        };
        let mut count = 0;
        if kind.is_binary() {
            let dash = text[pos..]
                .find('-')
                .ok_or(PacketError::MissingAttachmentCount)?
                + pos;
            let n = js_whole_number(&text[pos..dash]).ok_or(PacketError::IllegalAttachmentCount)?;
            count = usize::try_from(n).unwrap_or(usize::MAX);
            if count == 0 {
                return Err(PacketError::NoAttachments);
            }
            pos = dash + 1;
        }
        let mut namespace = "/";
        if text[pos..].starts_with('/') {
            let end = text[pos..].find(',').map_or(text.len(), |c| c + pos);
            namespace = &text[pos..end];
            pos = (end + 1).min(text.len());
        }
        // The reference reads the id one character at a time with
        // `Number(c) == c`, true for a digit and for white space.
        let run = text[pos..]
            .find(|c: char| !(c.is_ascii_digit() || js_space(c)))
            .map_or(text.len(), |end| end + pos);
        let mut id = None;
        if run > pos {
            let digits = js_whole_number(&text[pos..run]).ok_or(PacketError::IllegalAckId)?;
            if digits > MAX_ACK_ID {
                return Err(PacketError::AckIdTooLarge);
            }
            id = Some(digits);
            pos = run;
        }
        let data = match &text[pos..] {
            "" => None,
            data => {
                check_data(kind, data, count)?;
                Some(Cow::Borrowed(data))
            }
        };
        let packet = Self {
            kind,
            namespace: Cow::Borrowed(namespace),
            id,
            data,
            attachments: Vec::new(),
        };
        Ok((packet, count))
    }

    /// Appends the packet's text form to `out` and returns the attachments
    /// that must follow it, each as one binary message, in order.
    pub fn encode(&self, out: &mut String) -> &[Cow<'a, [u8]>] {
        use std::fmt::Write;
        out.push(char::from(self.kind.digit()));
        if self.kind.is_binary() {
            write!(out, "{}-", self.attachments.len()).expect("writing to a String");
        }
        if *self.namespace != *"/" {
            out.push_str(&self.namespace);
            out.push(',');
        }
        if let Some(id) = self.id {
            write!(out, "{id}").expect("writing to a String");
        }
        if let Some(data) = &self.data {
            out.push_str(data);
        }
        &self.attachments
    }

    /// The text form alone, as a new string.
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        self.encode(&mut out);
        out
    }

    pub(crate) fn push_attachment(&mut self, bytes: Cow<'a, [u8]>) {
        self.attachments.push(bytes);
    }
}

/// An event as [`Packet::as_event`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'p> {
    /// What the first element of the array names the event.
    pub name: EventName<'p>,
    /// The arguments as JSON text: `1,{"a":2}` for `["name",1,{"a":2}]`.
    pub args: &'p str,
}

/// An event's name: a string, or (the reference allows it) a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventName<'p> {
    /// A string, unescaped.
    Str(Cow<'p, str>),
    /// A number, as its JSON text.
    Number(&'p str),
}

/// The `num` of every placeholder in `data` (JSON), in document order;
/// one that is not a whole number reads as `u64::MAX`.
pub(crate) fn placeholders(data: &str) -> Vec<u64> {
    json::scan(data, true).map_or_else(
        |_| Vec::new(),
        |scan| {
            scan.placeholders
                .into_iter()
                .map(|n| {
                    if n >= 0.0 && n.fract() == 0.0 && n <= MAX_ACK_ID as f64 {
                        n as u64
                    } else {
                        u64::MAX
                    }
                })
                .collect()
        },
    )
}

/// Checks `data` against the rules of `kind`, and a binary packet's
/// placeholders against its `count` attachments.
fn check_data(kind: PacketType, data: &str, count: usize) -> Result<(), PacketError> {
    use PacketType as T;
    let scan = json::scan(data, kind.is_binary()).map_err(|_| PacketError::InvalidJson)?;
    match (kind, scan.shape) {
        (T::Connect, Shape::Object)
        | (
            T::Event | T::BinaryEvent,
            Shape::Array(First::Number | First::Str { reserved: false }),
        )
        | (T::Ack | T::BinaryAck, Shape::Array(_))
        | (T::ConnectError, Shape::Object | Shape::Str { .. }) => {}
        (T::Connect, _) => return Err(PacketError::ConnectData),
        (T::Disconnect, _) => return Err(PacketError::DisconnectData),
        (T::Event | T::BinaryEvent, Shape::Array(First::Str { reserved: true })) => {
            return Err(PacketError::ReservedEvent)
        }
        (T::Event | T::BinaryEvent, _) => return Err(PacketError::EventData),
        (T::Ack | T::BinaryAck, _) => return Err(PacketError::AckData),
        (T::ConnectError, _) => return Err(PacketError::ConnectErrorData),
    }
    let mut nums = Vec::with_capacity(scan.placeholders.len());
    for num in scan.placeholders {
        // `-0` is a number `>= 0`, so the reference takes it as 0.
        if !(num >= 0.0 && num.fract() == 0.0 && num <= MAX_ACK_ID as f64) {
            return Err(PacketError::IllegalPlaceholder);
        }
        let num = num as u64;
        if num >= count as u64 {
            return Err(PacketError::PlaceholderOutOfRange(num));
        }
        nums.push(num);
    }
    nums.sort_unstable();
    if let Some(w) = nums.windows(2).find(|w| w[0] == w[1]) {
        return Err(PacketError::DuplicatePlaceholder(w[0]));
    }
    Ok(())
}

/// The value JavaScript's `Number(s)` gives a string of digits and white
/// space, if it is a whole number: white space around digits is ignored,
/// and nothing but white space reads as 0. Anything else (white space
/// between digits reads as `NaN`) is `None`; a value past `u64` saturates.
fn js_whole_number(s: &str) -> Option<u64> {
    let digits = s.trim_matches(js_space);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// White space as JavaScript's `Number()` trims it: ECMAScript's
/// WhiteSpace (the Unicode `Zs` category among them) and LineTerminator.
fn js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

fn trim_start(data: Cow<'_, str>) -> Cow<'_, str> {
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    match data {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_start_matches(ws)),
        Cow::Owned(s) if s.starts_with(ws) => Cow::Owned(s.trim_start_matches(ws).to_owned()),
        owned => owned,
    }
}
