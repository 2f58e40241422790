//! The hub route's in-band protocol: small JSON text messages.
//!
//! Client to server:
//!
//! - `{"op":"subscribe","topics":["AAPL","MSFT"]}`
//! - `{"op":"unsubscribe","topics":["AAPL"]}`
//! - `{"op":"publish","topic":"AAPL","data":<any JSON value>}`
//!
//! Server to client:
//!
//! - `{"op":"subscribed","topics":[...]}` and `{"op":"unsubscribed","topics":[...]}`
//!   once a request is done;
//! - `{"topic":"AAPL","data":<value>}` for every message published to a
//!   subscribed topic;
//! - `{"op":"error","error":"..."}` for a request that could not be done
//!   (the connection stays open).

use serde::Serialize;
use serde_json::Value;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Most topics one request may name.
pub const MAX_TOPICS_PER_REQUEST: usize = 64;

/// A request from a hub client.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// Start receiving these topics.
    Subscribe(Vec<String>),
    /// Stop receiving these topics.
    Unsubscribe(Vec<String>),
    /// Send `data` to every subscriber of `topic`.
    Publish {
        /// Where to.
        topic: String,
        /// What, as JSON text.
        data: String,
    },
}

/// Parses one text message; the error is the reason to send back.
pub fn parse(text: &[u8]) -> Result<Request, String> {
    let value: Value = serde_json::from_slice(text).map_err(|e| format!("bad JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    let op = match obj.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err("\"op\" must be a string".into()),
        None => return Err("missing \"op\"".into()),
    };
    match op.as_str() {
        "subscribe" | "unsubscribe" => {
            let topics = topics(obj.remove("topics"))?;
            if let Some(extra) = obj.keys().next() {
                return Err(format!("unknown field {extra:?}"));
            }
            Ok(if op == "subscribe" {
                Request::Subscribe(topics)
            } else {
                Request::Unsubscribe(topics)
            })
        }
        "publish" => {
            let topic = match obj.remove("topic") {
                Some(Value::String(t)) => checked_topic(t)?,
                _ => return Err("publish needs a string \"topic\"".into()),
            };
            let data = obj
                .remove("data")
                .ok_or_else(|| String::from("publish needs \"data\""))?;
            if let Some(extra) = obj.keys().next() {
                return Err(format!("unknown field {extra:?}"));
            }
            Ok(Request::Publish {
                topic,
                data: data.to_string(),
            })
        }
        other => Err(format!(
            "unknown op {other:?} (expected subscribe, unsubscribe or publish)"
        )),
    }
}

fn topics(value: Option<Value>) -> Result<Vec<String>, String> {
    let Some(Value::Array(list)) = value else {
        return Err("\"topics\" must be an array of strings".into());
    };
    if list.is_empty() || list.len() > MAX_TOPICS_PER_REQUEST {
        return Err(format!(
            "\"topics\" must name 1 to {MAX_TOPICS_PER_REQUEST} topics"
        ));
    }
    list.into_iter()
        .map(|t| match t {
            Value::String(t) => checked_topic(t),
            _ => Err("\"topics\" must be an array of strings".into()),
        })
        .collect()
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

/// `{"op":"error","error":...}`
pub fn error(message: &str) -> String {
    serde_json::json!({ "op": "error", "error": message }).to_string()
}

/// What subscribers of `topic` receive: `{"topic":...,"data":...}`, where
/// `data` is already JSON text.
pub fn message(topic: &str, data: &str) -> String {
    let mut out = String::with_capacity(topic.len() + data.len() + 20);
    out.push_str("{\"topic\":");
    out.push_str(&Value::String(topic.into()).to_string());
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
            Ok(Request::Subscribe(vec!["AAPL".into(), "MSFT".into()]))
        );
        assert_eq!(
            parse(br#"{"topics":["x"],"op":"unsubscribe"}"#),
            Ok(Request::Unsubscribe(vec!["x".into()]))
        );
        assert_eq!(
            parse(br#"{"op":"publish","topic":"x","data":{"px":1.5}}"#),
            Ok(Request::Publish {
                topic: "x".into(),
                data: r#"{"px":1.5}"#.into()
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
        ] {
            let err = parse(input).unwrap_err();
            assert!(err.contains(reason), "{err:?} lacks {reason:?}");
        }
    }

    #[test]
    fn replies_are_json() {
        let v: Value = serde_json::from_str(&message("a\"b", "[1,2]")).unwrap();
        assert_eq!(v["topic"], "a\"b");
        assert_eq!(v["data"][1], 2);
        let v: Value = serde_json::from_str(&error("no \"way\"")).unwrap();
        assert_eq!(v["error"], "no \"way\"");
        assert_eq!(
            ack("subscribed", &["x".into()]),
            r#"{"op":"subscribed","topics":["x"]}"#
        );
    }
}
