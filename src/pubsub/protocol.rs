//! The hub route's in-band protocol: small JSON text messages.
//!
//! Client to server:
//!
//! - `{"op":"subscribe","topics":["AAPL","MSFT"]}`, optionally with
//!   `"since":{"AAPL":{"epoch":"00ab12cd34ef5678","offset":41}}` to resume
//!   topics of the request after a position an earlier message carried;
//! - `{"op":"unsubscribe","topics":["AAPL"]}`
//! - `{"op":"publish","topic":"AAPL","data":<any JSON value>}`
//!
//! Server to client:
//!
//! - `{"op":"subscribed","topics":[...],"positions":{"AAPL":{"epoch":"..","offset":57}}}`
//!   with `"recovered":{"AAPL":true}` for the topics named in `since` (a
//!   false one with `"reasons":{"AAPL":"epoch changed"|"too old"|"too many"|"no history"}`),
//!   and `{"op":"unsubscribed","topics":[...]}`, once a request is done;
//! - `{"topic":"AAPL","epoch":"..","offset":58,"data":<value>}` for every
//!   message published to a subscribed topic: a resumed topic's missed
//!   messages first, then those after the position;
//! - `{"op":"error","error":"..."}` for a request that could not be done
//!   (the connection stays open).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;
use serde_json::Value;

use super::streams::{epoch_hex, NotRecovered, Position};

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Most topics one request may name.
pub const MAX_TOPICS_PER_REQUEST: usize = 64;
/// Nesting serde_json refuses (the request object is the first level):
/// `data` is passed through unparsed, so the hub counts levels itself to
/// answer such a request as it always has.
const MAX_DEPTH: usize = 128;

/// A request from a hub client, borrowing from the message it came in.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    /// Start receiving these topics.
    Subscribe {
        /// Which.
        topics: Vec<String>,
        /// Where some of them resume from, in the order of `topics`.
        since: Vec<(String, Position)>,
    },
    /// Stop receiving these topics.
    Unsubscribe(Vec<String>),
    /// Send `data` to every subscriber of `topic`.
    Publish {
        /// Where to.
        topic: String,
        /// What: the JSON text of `data` exactly as the publisher sent it
        /// (valid JSON, never parsed into a tree).
        data: &'a str,
    },
    /// Replace the connection's signed token with a newer one (same `sub`)
    /// before the old one expires.
    Refresh(String),
    /// The connection's token, sent as its first message by a client that
    /// could not send it with the upgrade (`--jwt-first-message-s`).
    Auth(String),
}

/// Parses one text message; the error is the reason to send back.
///
/// Memory stays flat whatever the message holds: the object's values are
/// borrowed as raw JSON text, and only `op` and the topic names are
/// decoded.
pub fn parse(text: &[u8]) -> Result<Request<'_>, String> {
    let fields = fields(text)?;
    let op: String = match fields.get(Field::Op) {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| "\"op\" must be a string")?,
        None => return Err("missing \"op\"".into()),
    };
    match op.as_str() {
        "subscribe" => {
            let topics = topics(fields.get(Field::Topics))?;
            fields.refuse_others(&[Field::Op, Field::Topics, Field::Since])?;
            let since = match fields.get(Field::Since) {
                Some(raw) => since(raw, &topics)?,
                None => Vec::new(),
            };
            Ok(Request::Subscribe { topics, since })
        }
        "unsubscribe" => {
            let topics = topics(fields.get(Field::Topics))?;
            fields.refuse_others(&[Field::Op, Field::Topics])?;
            Ok(Request::Unsubscribe(topics))
        }
        "publish" => {
            let topic = fields
                .get(Field::Topic)
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .ok_or("publish needs a string \"topic\"")?;
            let topic = checked_topic(topic)?;
            let data = fields
                .get(Field::Data)
                .ok_or("publish needs \"data\"")?
                .get();
            fields.refuse_others(&[Field::Op, Field::Topic, Field::Data])?;
            Ok(Request::Publish { topic, data })
        }
        "refresh" | "auth" => {
            let token = fields
                .get(Field::Token)
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .ok_or_else(|| format!("{op} needs a string \"token\""))?;
            fields.refuse_others(&[Field::Op, Field::Token])?;
            Ok(if op == "auth" {
                Request::Auth(token)
            } else {
                Request::Refresh(token)
            })
        }
        other => Err(format!(
            "unknown op {other:?} (expected subscribe, unsubscribe, publish, refresh or auth)"
        )),
    }
}

/// The request's top-level fields, or why the text is not a JSON object.
fn fields(text: &[u8]) -> Result<Fields<'_>, String> {
    match serde_json::from_slice::<Fields<'_>>(text) {
        Ok(fields) => {
            check_limits(text)?;
            Ok(fields)
        }
        // Valid JSON of another type, or JSON that breaks off after its
        // first byte: only the whole text can tell.
        Err(e) if e.classify() == Category::Data => {
            match serde_json::from_slice::<IgnoredAny>(text) {
                Ok(_) => {
                    check_limits(text)?;
                    Err("expected a JSON object".into())
                }
                Err(e) => Err(bad_json(text, &e)),
            }
        }
        Err(e) => Err(bad_json(text, &e)),
    }
}

/// Why `text` is not JSON: what a tree parse meets first, a limit of
/// [`check_limits`] before the syntax error or the syntax error itself.
fn bad_json(text: &[u8], e: &serde_json::Error) -> String {
    let line_start = text
        .split_inclusive(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(<[u8]>::len)
        .sum::<usize>();
    let valid = &text[..(line_start + e.column()).min(text.len())];
    match check_limits(valid) {
        Err(limit) => limit,
        Ok(()) => format!("bad JSON: {e}"),
    }
}

/// What parsing into a tree refuses and raw JSON lets through: nesting
/// [`MAX_DEPTH`] levels deep and numbers beyond f64. Refused with the words
/// and position serde_json gives, in one pass over text already known to
/// be valid JSON.
pub(crate) fn check_limits(text: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let end = string_end(text, i);
                check_string(text, i, end)?;
                i = end;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth == MAX_DEPTH {
                    // serde_json points just past the bracket.
                    return Err(at(text, i + 1, "recursion limit exceeded"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let end = text[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                    .map_or(text.len(), |n| i + n);
                check_number(text, i, end)?;
                i = end - 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index of the quote that closes the string opening at `start`.
fn string_end(text: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 1,
            b'"' => return i,
            _ => {}
        }
        i += 1;
    }
    text.len()
}

/// Only a string with a UTF-16 surrogate escape (`\\uD800`-`\\uDFFF`) can
/// be one a tree refuses, for a lone half of a pair; serde_json decodes
/// those alone, as a tree would. (A string cut off by the end of `text` is
/// the syntax error's to report.)
fn check_string(text: &[u8], start: usize, end: usize) -> Result<(), String> {
    let Some(token) = text.get(start..=end) else {
        return Ok(());
    };
    let surrogate = token.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    });
    if surrogate {
        alone(text, start, token)
    } else {
        Ok(())
    }
}

/// Only a number with an exponent or hundreds of digits can pass f64's
/// range; serde_json parses those alone, as a tree would.
fn check_number(text: &[u8], start: usize, end: usize) -> Result<(), String> {
    let token = &text[start..end];
    if end - start < 300 && !token.iter().any(|b| matches!(b, b'e' | b'E')) {
        return Ok(());
    }
    alone(text, start, token)
}

/// Parses the scalar `token`, found at `start` of `text`, into a tree; a
/// refusal gets the position it has in `text`.
fn alone(text: &[u8], start: usize, token: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<Value>(token) {
        Ok(_) => Ok(()),
        Err(e) => {
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or_default();
            Err(at(text, start + e.column(), message))
        }
    }
}

/// `bad JSON: MESSAGE at line L column C` for byte offset `index` of
/// `text`, counted as serde_json counts.
fn at(text: &[u8], index: usize, message: &str) -> String {
    let line_start = text[..index]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |n| n + 1);
    let line = 1 + text[..line_start].iter().filter(|&&c| c == b'\n').count();
    let column = index - line_start;
    format!("bad JSON: {message} at line {line} column {column}")
}

/// The fields a request may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Op,
    Topic,
    Topics,
    Data,
    Since,
    Token,
}

impl Field {
    const ALL: [Self; 6] = [
        Self::Op,
        Self::Topic,
        Self::Topics,
        Self::Data,
        Self::Since,
        Self::Token,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Op => "op",
            Self::Topic => "topic",
            Self::Topics => "topics",
            Self::Data => "data",
            Self::Since => "since",
            Self::Token => "token",
        }
    }
}

/// A request object with every value left as raw JSON text.
#[derive(Debug, Default)]
struct Fields<'a> {
    /// By [`Field`]; a repeated key keeps its last value.
    known: [Option<&'a RawValue>; 6],
    /// The first, in byte order, of the keys no request has.
    unknown: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    fn get(&self, field: Field) -> Option<&'a RawValue> {
        self.known[field as usize]
    }

    /// Refuses the first key (in byte order) that this op does not take.
    fn refuse_others(&self, used: &[Field]) -> Result<(), String> {
        let unused = Field::ALL
            .into_iter()
            .filter(|f| !used.contains(f) && self.get(*f).is_some())
            .map(|f| -> &str { f.name() });
        let extra = unused.chain(self.unknown.as_deref()).min();
        match extra {
            Some(extra) => Err(format!("unknown field {extra:?}")),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key {
                Key::Known(field) => fields.known[field as usize] = Some(map.next_value()?),
                Key::Other(name) => {
                    map.next_value::<IgnoredAny>()?;
                    if fields.unknown.as_ref().is_none_or(|first| name < *first) {
                        fields.unknown = Some(name);
                    }
                }
            }
        }
        Ok(fields)
    }
}

/// An object key, borrowed unless it had escapes.
enum Key<'a> {
    Known(Field),
    Other(Cow<'a, str>),
}

impl<'a> Key<'a> {
    fn named(name: Cow<'a, str>) -> Self {
        match Field::ALL.into_iter().find(|f| f.name() == name) {
            Some(field) => Self::Known(field),
            None => Self::Other(name),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::named(Cow::Borrowed(name)))
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key<'de>, E> {
                Ok(Key::named(Cow::Owned(name.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A `topics` array: its first [`MAX_TOPICS_PER_REQUEST`] items as raw
/// JSON and how many it has (the rest are only counted).
struct TopicList<'a> {
    first: Vec<&'a RawValue>,
    count: usize,
}

impl<'de> Deserialize<'de> for TopicList<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TopicList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopicList<'de>, A::Error> {
                let mut first = Vec::new();
                while first.len() < MAX_TOPICS_PER_REQUEST {
                    match seq.next_element()? {
                        Some(item) => first.push(item),
                        None => break,
                    }
                }
                let mut count = first.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(TopicList { first, count })
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

fn topics(value: Option<&RawValue>) -> Result<Vec<String>, String> {
    const NOT_STRINGS: &str = "\"topics\" must be an array of strings";
    let list = value
        .and_then(|raw| serde_json::from_str::<TopicList<'_>>(raw.get()).ok())
        .ok_or(NOT_STRINGS)?;
    if list.count == 0 || list.count > MAX_TOPICS_PER_REQUEST {
        return Err(format!(
            "\"topics\" must name 1 to {MAX_TOPICS_PER_REQUEST} topics"
        ));
    }
    list.first
        .into_iter()
        .map(|raw| {
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| String::from(NOT_STRINGS))
                .and_then(checked_topic)
        })
        .collect()
}

/// A `since` object: topic names of `topics` to positions.
fn since(raw: &RawValue, topics: &[String]) -> Result<Vec<(String, Position)>, String> {
    const SHAPE: &str = "\"since\" must map topics to {\"epoch\":\"16 hex digits\",\"offset\":N}";
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Since {
        epoch: String,
        offset: u64,
    }
    let map: std::collections::BTreeMap<String, Since> =
        serde_json::from_str(raw.get()).map_err(|_| SHAPE)?;
    let mut out = Vec::with_capacity(map.len());
    for (topic, at) in map {
        let hex = at.epoch.len() == 16
            && at
                .epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let epoch = u64::from_str_radix(&at.epoch, 16)
            .ok()
            .filter(|_| hex)
            .ok_or(SHAPE)?;
        if !topics.contains(&topic) {
            return Err(format!(
                "\"since\" names {topic:?}, which \"topics\" does not"
            ));
        }
        out.push((
            topic,
            Position {
                epoch,
                offset: at.offset,
            },
        ));
    }
    out.sort_by_key(|(t, _)| topics.iter().position(|n| n == t));
    Ok(out)
}

fn checked_topic(t: String) -> Result<String, String> {
    if t.is_empty() || t.len() > MAX_TOPIC_LEN {
        return Err(format!("topic names are 1 to {MAX_TOPIC_LEN} bytes"));
    }
    Ok(t)
}

/// `{"op":OP,"topics":[...]}`
pub fn ack(op: &str, topics: &[String]) -> String {
    #[derive(Serialize)]
    struct Ack<'a> {
        op: &'a str,
        topics: &'a [String],
    }
    serde_json::to_string(&Ack { op, topics }).expect("plain data serializes")
}

/// What a `subscribed` answer says of one topic.
#[derive(Debug)]
pub struct Subscribed<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Its position; `None` when the connection already held it (the
    /// subscription goes on as it was).
    pub position: Option<Position>,
    /// Whether it resumed, when `since` named it.
    pub recovered: Option<Result<(), NotRecovered>>,
}

/// `{"op":"subscribed","topics":[...],"positions":{...}}`, with
/// `recovered` and `reasons` when some topic asked to resume.
pub fn subscribed(topics: &[String], each: &[Subscribed<'_>]) -> String {
    let name = |t: &str| Value::String(t.into()).to_string();
    let mut out = String::from("{\"op\":\"subscribed\",\"topics\":");
    out.push_str(&serde_json::to_string(topics).expect("strings serialize"));
    out.push_str(",\"positions\":{");
    let mut first = true;
    for s in each {
        let Some(p) = s.position else { continue };
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&name(s.topic));
        out.push_str(&format!(
            ":{{\"epoch\":\"{}\",\"offset\":{}}}",
            epoch_hex(p.epoch),
            p.offset
        ));
    }
    out.push('}');
    let asked: Vec<_> = each
        .iter()
        .filter_map(|s| s.recovered.map(|r| (s.topic, r)))
        .collect();
    if !asked.is_empty() {
        let items: Vec<String> = asked
            .iter()
            .map(|(t, r)| format!("{}:{}", name(t), r.is_ok()))
            .collect();
        out.push_str(",\"recovered\":{");
        out.push_str(&items.join(","));
        out.push('}');
        let reasons: Vec<String> = asked
            .iter()
            .filter_map(|(t, r)| {
                r.err()
                    .map(|why| format!("{}:\"{}\"", name(t), why.reason()))
            })
            .collect();
        if !reasons.is_empty() {
            out.push_str(",\"reasons\":{");
            out.push_str(&reasons.join(","));
            out.push('}');
        }
    }
    out.push('}');
    out
}

/// `{"op":"error","error":...}`
pub fn error(message: &str) -> String {
    serde_json::json!({ "op": "error", "error": message }).to_string()
}

/// What subscribers of `topic` receive from the hub route:
/// `{"topic":...,"epoch":"...","offset":N,"data":...}`, where `data` is
/// already JSON text.
pub fn message_at(topic: &str, position: Position, data: &str) -> String {
    let mut out = String::with_capacity(topic.len() + data.len() + 64);
    out.push_str("{\"topic\":");
    out.push_str(&Value::String(topic.into()).to_string());
    out.push_str(",\"epoch\":\"");
    out.push_str(&epoch_hex(position.epoch));
    out.push_str("\",\"offset\":");
    out.push_str(&position.offset.to_string());
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse(br#"{"op":"subscribe","topics":["AAPL","MSFT"]}"#),
            Ok(Request::Subscribe {
                topics: vec!["AAPL".into(), "MSFT".into()],
                since: Vec::new()
            })
        );
        assert_eq!(
            parse(
                br#"{"op":"subscribe","topics":["a","b"],
                    "since":{"b":{"offset":7,"epoch":"00ab12cd34ef5678"},"a":{"epoch":"ffffffffffffffff","offset":0}}}"#
            ),
            Ok(Request::Subscribe {
                topics: vec!["a".into(), "b".into()],
                since: vec![
                    (
                        "a".into(),
                        Position {
                            epoch: u64::MAX,
                            offset: 0
                        }
                    ),
                    (
                        "b".into(),
                        Position {
                            epoch: 0x00ab_12cd_34ef_5678,
                            offset: 7
                        }
                    )
                ]
            })
        );
        assert_eq!(
            parse(br#"{"topics":["x"],"op":"unsubscribe"}"#),
            Ok(Request::Unsubscribe(vec!["x".into()]))
        );
        assert_eq!(
            parse(br#"{"op":"publish","topic":"x","data":{"px":1.5}}"#),
            Ok(Request::Publish {
                topic: "x".into(),
                data: r#"{"px":1.5}"#
            })
        );
    }

    #[test]
    fn every_mistake_has_a_reason() {
        let long = format!(r#"{{"op":"subscribe","topics":["{}"]}}"#, "x".repeat(129));
        let many = format!(
            r#"{{"op":"subscribe","topics":[{}]}}"#,
            vec!["\"t\""; 65].join(",")
        );
        for (input, reason) in [
            (&b"{"[..], "bad JSON"),
            (b"[1]", "expected a JSON object"),
            (b"{}", "missing \"op\""),
            (br#"{"op":1}"#, "\"op\" must be a string"),
            (br#"{"op":"dance"}"#, "unknown op \"dance\""),
            (br#"{"op":"subscribe"}"#, "must be an array"),
            (br#"{"op":"subscribe","topics":[]}"#, "1 to 64 topics"),
            (br#"{"op":"subscribe","topics":[1]}"#, "must be an array"),
            (br#"{"op":"subscribe","topics":[""]}"#, "1 to 128 bytes"),
            (long.as_bytes(), "1 to 128 bytes"),
            (many.as_bytes(), "1 to 64 topics"),
            (
                br#"{"op":"subscribe","topics":["a"],"x":1}"#,
                "unknown field \"x\"",
            ),
            (br#"{"op":"publish","data":1}"#, "string \"topic\""),
            (br#"{"op":"publish","topic":"t"}"#, "needs \"data\""),
            (
                br#"{"op":"subscribe","topics":["a"],"since":{"b":{"epoch":"0000000000000001","offset":1}}}"#,
                "\"since\" names \"b\", which \"topics\" does not",
            ),
            (
                br#"{"op":"subscribe","topics":["a"],"since":{"a":{"epoch":"0000000000000001"}}}"#,
                "\"since\" must map topics",
            ),
            (
                br#"{"op":"subscribe","topics":["a"],"since":{"a":{"epoch":"00000000000000A1","offset":1}}}"#,
                "\"since\" must map topics",
            ),
            (
                br#"{"op":"subscribe","topics":["a"],"since":{"a":{"epoch":"1","offset":1}}}"#,
                "\"since\" must map topics",
            ),
            (
                br#"{"op":"subscribe","topics":["a"],"since":{"a":{"epoch":"+000000000000001","offset":1}}}"#,
                "\"since\" must map topics",
            ),
            (
                br#"{"op":"subscribe","topics":["a"],"since":{"a":{"epoch":"0000000000000001","offset":-1}}}"#,
                "\"since\" must map topics",
            ),
            (br#"{"op":"subscribe","topics":["a"],"since":[]}"#, "\"since\" must map topics"),
            (
                br#"{"op":"unsubscribe","topics":["a"],"since":{}}"#,
                "unknown field \"since\"",
            ),
        ] {
            let err = parse(input).unwrap_err();
            assert!(err.contains(reason), "{err:?} lacks {reason:?}");
        }
    }

    #[test]
    fn data_passes_through_as_sent() {
        let text = br#"{"op":"publish","topic":"x","data": {"a" : [1, 2.50, "\u00e9"]} }"#;
        assert_eq!(
            parse(text),
            Ok(Request::Publish {
                topic: "x".into(),
                data: r#"{"a" : [1, 2.50, "\u00e9"]}"#
            })
        );
        // Nested as deep as serde_json allows, it is still accepted.
        let deep = format!(
            r#"{{"op":"publish","topic":"x","data":{}{}}}"#,
            "[".repeat(126),
            "]".repeat(126)
        );
        assert!(parse(deep.as_bytes()).is_ok());
        let deep = deep.replace("[[", r#"["[[{\"[",["#);
        assert!(parse(deep.as_bytes()).is_ok(), "{deep}");
    }

    #[test]
    fn what_a_tree_would_refuse_is_refused_in_its_words() {
        let publish = |data: &str| format!(r#"{{"op":"publish","topic":"x","data":{data}}}"#);
        let deep = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for input in [
            publish(&deep(127)),
            format!("\n\n {}", deep(200)),
            // Brackets in strings do not count, escaped quotes or not.
            publish(&format!(r#"["[[{{\"[", {}]"#, deep(126))),
            publish("1e999"),
            publish(&format!("[1, -{}]", "9".repeat(400))),
            publish("\"\\ud800\""),
            publish("[\"\\uDC00 \", 1]"),
            format!("{}{}", publish(&deep(130)), "x"),
            publish(&format!("{{\"a\":1e999, \"b\":{}", deep(200))),
        ] {
            let tree = serde_json::from_str::<Value>(&input).unwrap_err();
            assert_eq!(
                parse(input.as_bytes()),
                Err(format!("bad JSON: {tree}")),
                "{input}"
            );
        }
    }

    #[test]
    fn replies_are_json() {
        let at = Position {
            epoch: 1,
            offset: 2,
        };
        let v: Value = serde_json::from_str(&message_at("a\"b", at, "[1,2]")).unwrap();
        assert_eq!(v["topic"], "a\"b");
        assert_eq!(v["data"][1], 2);
        let v: Value = serde_json::from_str(&error("no \"way\"")).unwrap();
        assert_eq!(v["error"], "no \"way\"");
        assert_eq!(
            ack("unsubscribed", &["x".into()]),
            r#"{"op":"unsubscribed","topics":["x"]}"#
        );
        let at = Position {
            epoch: 0xab,
            offset: 57,
        };
        assert_eq!(
            message_at("a\"b", at, "[1]"),
            r#"{"topic":"a\"b","epoch":"00000000000000ab","offset":57,"data":[1]}"#
        );
        let topics = ["A".to_owned(), "B".to_owned(), "C".to_owned()];
        let each = [
            Subscribed {
                topic: "A",
                position: Some(at),
                recovered: Some(Ok(())),
            },
            Subscribed {
                topic: "B",
                position: Some(Position { offset: 0, ..at }),
                recovered: Some(Err(NotRecovered::TooOld)),
            },
            Subscribed {
                topic: "C",
                position: None,
                recovered: None,
            },
        ];
        assert_eq!(
            subscribed(&topics, &each),
            r#"{"op":"subscribed","topics":["A","B","C"],"positions":{"A":{"epoch":"00000000000000ab","offset":57},"B":{"epoch":"00000000000000ab","offset":0}},"recovered":{"A":true,"B":false},"reasons":{"B":"too old"}}"#
        );
        assert_eq!(
            subscribed(&topics[..1], &each[2..]),
            r#"{"op":"subscribed","topics":["A"],"positions":{}}"#
        );
    }
}
