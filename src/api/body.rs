//! The JSON bodies of the POST requests, checked field by field so that
//! every mistake gets an answer naming it: 400 for what is not the
//! request's shape, 422 for a value the shape allows but the hub does not.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::Answer;
use crate::pubsub::control::{Disconnect, DISCONNECT_CODE, DISCONNECT_REASON, MAX_REASON};
use crate::pubsub::protocol::{MAX_TOPICS_PER_REQUEST, MAX_TOPIC_LEN};

/// `POST /api/publish`: `data` (any JSON, passed on as its text) to one
/// topic or many.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Publish<'a> {
    pub(crate) topics: Vec<String>,
    /// The JSON text of `data`, exactly as it came.
    pub(crate) data: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishFields<'a> {
    topic: Option<String>,
    topics: Option<Vec<String>>,
    /// `Some` whenever the field is there, `null` included.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectFields {
    user: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

/// Why a body is not JSON of the right shape, for a 400.
fn bad_body(e: &serde_json::Error) -> Answer {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Data => "the body does not have the request's fields",
        Category::Eof => "the body is cut short",
        Category::Syntax | Category::Io => "the body is not JSON",
    };
    Answer::error(400, &format!("{what}: {e}"))
}

fn missing(field: &str) -> Answer {
    Answer::error(400, &format!("missing field \"{field}\""))
}

/// Reads a publish body.
pub(crate) fn publish(body: &[u8]) -> Result<Publish<'_>, Answer> {
    let fields: PublishFields<'_> = serde_json::from_slice(body).map_err(|e| bad_body(&e))?;
    // What a hub client's publish may not carry either: nesting past the
    // hub's depth, numbers beyond f64 (raw JSON lets both through).
    crate::pubsub::protocol::check_limits(body).map_err(|why| {
        Answer::error(
            400,
            &format!("the body is not JSON a subscriber can read: {why}"),
        )
    })?;
    let topics = match (fields.topic, fields.topics) {
        (Some(_), Some(_)) => {
            return Err(Answer::error(400, "give \"topic\" or \"topics\", not both"));
        }
        (None, None) => return Err(missing("topic")),
        (Some(t), None) => vec![t],
        (None, Some(ts)) if ts.is_empty() || ts.len() > MAX_TOPICS_PER_REQUEST => {
            return Err(Answer::error(
                422,
                &format!("\"topics\" names 1 to {MAX_TOPICS_PER_REQUEST} topics"),
            ));
        }
        (None, Some(ts)) => ts,
    };
    if let Some(bad) = topics
        .iter()
        .find(|t| t.is_empty() || t.len() > MAX_TOPIC_LEN)
    {
        return Err(Answer::error(
            422,
            &format!(
                "topic names are 1 to {MAX_TOPIC_LEN} bytes; {} is {}",
                serde_json::Value::String(truncated(bad)),
                bad.len()
            ),
        ));
    }
    let data = fields.data.ok_or_else(|| missing("data"))?.get();
    Ok(Publish { topics, data })
}

/// At most 32 bytes of `s`, on a character boundary, for an error.
fn truncated(s: &str) -> String {
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Reads a disconnect body: `user`, and optionally `code` (1000 or
/// 3000-4999, default 4010) and `reason` (at most 123 bytes).
pub(crate) fn disconnect(body: &[u8]) -> Result<Disconnect, Answer> {
    let fields: DisconnectFields = serde_json::from_slice(body).map_err(|e| bad_body(&e))?;
    let user = fields.user.ok_or_else(|| missing("user"))?;
    if user.is_empty() {
        return Err(Answer::error(422, "\"user\" is empty"));
    }
    let code = fields.code.unwrap_or(DISCONNECT_CODE);
    if !Disconnect::code_allowed(code) {
        return Err(Answer::error(
            422,
            &format!("\"code\" must be 1000 or 3000 to 4999, not {code}"),
        ));
    }
    let reason = fields.reason.unwrap_or_else(|| DISCONNECT_REASON.into());
    if reason.len() > MAX_REASON {
        return Err(Answer::error(
            422,
            &format!(
                "\"reason\" is at most {MAX_REASON} bytes; this one is {}",
                reason.len()
            ),
        ));
    }
    Ok(Disconnect { user, code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_name_one_topic_or_many_and_keep_data_as_sent() {
        let p = publish(br#"{"topic":"a","data":{"x": [1, 2]}}"#).unwrap();
        assert_eq!(p.topics, ["a"]);
        assert_eq!(p.data, r#"{"x": [1, 2]}"#);
        let p = publish(br#"{"topics":["a","b"],"data":null}"#).unwrap();
        assert_eq!((p.topics.len(), p.data), (2, "null"));
    }

    #[test]
    fn every_publish_mistake_is_named() {
        let refused = |b: &[u8]| {
            let a = publish(b).unwrap_err();
            (a.status, a.body)
        };
        assert_eq!(refused(b"{").0, 400);
        assert!(refused(b"nope").1.contains("not JSON"));
        assert!(refused(br#"{"data":1}"#)
            .1
            .contains("missing field \\\"topic\\\""));
        assert!(refused(br#"{"topic":"a"}"#)
            .1
            .contains("missing field \\\"data\\\""));
        assert!(refused(br#"{"topic":"a","data":1,"x":2}"#)
            .1
            .contains("unknown field"));
        assert_eq!(refused(br#"{"topic":"a","topics":["b"],"data":1}"#).0, 400);
        assert_eq!(refused(br#"{"topic":7,"data":1}"#).0, 400);
        assert_eq!(refused(br#"{"topic":"","data":1}"#).0, 422);
        let long = format!(r#"{{"topic":"{}","data":1}}"#, "é".repeat(70));
        assert_eq!(refused(long.as_bytes()).0, 422);
        assert_eq!(refused(br#"{"topics":[],"data":1}"#).0, 422);
        // Valid raw JSON that no subscriber's parser can read back.
        let (status, body) = refused(br#"{"topics":["a"],"data":77.7E770}"#);
        assert_eq!(status, 400);
        assert!(body.contains("number out of range"), "{body}");
        let deep = format!(
            r#"{{"topic":"a","data":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(refused(deep.as_bytes()).1.contains("recursion limit"));
        assert_eq!(refused(b"[1]").0, 400);
    }

    #[test]
    fn disconnects_default_their_code_and_check_what_is_given() {
        let d = disconnect(br#"{"user":"alice"}"#).unwrap();
        assert_eq!((d.user.as_str(), d.code), ("alice", DISCONNECT_CODE));
        let d = disconnect(br#"{"user":"bob","code":4999,"reason":"bye"}"#).unwrap();
        assert_eq!((d.code, d.reason.as_str()), (4999, "bye"));
        let status = |b: &[u8]| disconnect(b).unwrap_err().status;
        assert_eq!(status(br#"{}"#), 400);
        assert_eq!(status(br#"{"user":""}"#), 422);
        assert_eq!(status(br#"{"user":"a","code":1006}"#), 422);
        assert_eq!(status(br#"{"user":"a","code":70000}"#), 400);
        let long = format!(r#"{{"user":"a","reason":"{}"}}"#, "r".repeat(124));
        assert_eq!(status(long.as_bytes()), 422);
    }
}
