//! The `/hub` side of the load generator: what a subscriber asks for, what
//! it reads back, and how it judges each topic's stream from the positions
//! the hub sends, so a run counts every gap and duplicate it saw.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A topic's stream position: the history's epoch and the last offset seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
}

/// One message from the hub, borrowing from its text. Only the fields the
/// load generator reads are decoded; `data` stays raw.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(borrow, default)]
    op: Option<&'a str>,
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    epoch: Option<&'a str>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    positions: HashMap<String, WirePosition>,
    #[serde(default)]
    recovered: HashMap<String, bool>,
}

#[derive(Debug, Deserialize)]
struct WirePosition {
    epoch: String,
    offset: u64,
}

/// What a hub message is, once read.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message of `topic` at `position`, sent at `sent_us` when the
    /// publisher stamped it (`surge load publish` does).
    Message {
        topic: usize,
        position: Position,
        sent_us: Option<u64>,
    },
    /// The answer to a subscribe.
    Subscribed(Vec<Answer>),
    /// `{"op":"error"}`: the hub refused a request.
    Error,
    /// Anything else (an `unsubscribed`, a message of a topic not asked for).
    Other,
}

/// What a `subscribed` answer says of one topic.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) topic: usize,
    pub(crate) position: Option<Position>,
    /// `Some` when the request resumed it from a position.
    pub(crate) recovered: Option<bool>,
}

/// `{"seq":N,"ts":US}` as `surge load publish` writes it.
#[derive(Deserialize)]
struct Stamp {
    ts: u64,
}

fn epoch(hex: &str) -> Option<u64> {
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Reads one hub text message; `None` when it is not the hub's JSON.
pub(crate) fn read(text: &[u8], topics: &[String]) -> Option<Event> {
    let msg: Incoming<'_> = serde_json::from_slice(text).ok()?;
    let index = |name: &str| topics.iter().position(|t| t == name);
    match msg.op {
        Some("subscribed") => {
            let mut answers = Vec::with_capacity(msg.topics.len());
            for name in &msg.topics {
                let Some(topic) = index(name) else { continue };
                let position = match msg.positions.get(name) {
                    Some(p) => Some(Position {
                        epoch: epoch(&p.epoch)?,
                        offset: p.offset,
                    }),
                    None => None,
                };
                answers.push(Answer {
                    topic,
                    position,
                    recovered: msg.recovered.get(name).copied(),
                });
            }
            Some(Event::Subscribed(answers))
        }
        Some("error") => Some(Event::Error),
        Some(_) => Some(Event::Other),
        None => {
            let Some(topic) = msg.topic.as_deref().and_then(index) else {
                return Some(Event::Other);
            };
            let position = Position {
                epoch: epoch(msg.epoch?)?,
                offset: msg.offset?,
            };
            let sent_us = msg
                .data
                .and_then(|d| serde_json::from_str::<Stamp>(d.get()).ok())
                .map(|s| s.ts);
            Some(Event::Message {
                topic,
                position,
                sent_us,
            })
        }
    }
}

/// `{"op":"subscribe","topics":[...],"since":{...}}` for every topic, with
/// `since` naming those that have a position.
pub(crate) fn subscribe_request(topics: &[String], positions: &[Option<Position>]) -> String {
    let quoted = |t: &str| serde_json::to_string(t).expect("strings serialize");
    let mut out = String::from("{\"op\":\"subscribe\",\"topics\":[");
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quoted(t));
    }
    out.push(']');
    let mut first = true;
    for (t, p) in topics.iter().zip(positions) {
        let Some(p) = p else { continue };
        out.push_str(if std::mem::take(&mut first) {
            ",\"since\":{"
        } else {
            ","
        });
        let _ = write!(
            out,
            "{}:{{\"epoch\":\"{:016x}\",\"offset\":{}}}",
            quoted(t),
            p.epoch,
            p.offset
        );
    }
    if !first {
        out.push('}');
    }
    out.push('}');
    out
}

/// `{"op":"publish","topic":T,"data":{"seq":N,"ts":US}}`
pub(crate) fn publish_request(topic: &str, seq: u64, ts_us: u64) -> String {
    format!(
        "{{\"op\":\"publish\",\"topic\":{},\"data\":{{\"seq\":{seq},\"ts\":{ts_us}}}}}",
        serde_json::to_string(topic).expect("strings serialize")
    )
}

/// How one delivered message fits the stream seen so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fit {
    /// The next offset.
    Next,
    /// Offsets were skipped, or the epoch changed: something was lost.
    Gap,
    /// An offset at or before the last: delivered twice.
    Duplicate,
}

/// Judges `at` against the last position of its topic and moves it on.
pub(crate) fn fit(last: &mut Option<Position>, at: Position) -> Fit {
    let fit = match *last {
        // Nothing known yet (no answer came): the stream starts here.
        None => Fit::Next,
        Some(p) if p.epoch != at.epoch => Fit::Gap,
        Some(p) if at.offset <= p.offset => return Fit::Duplicate,
        Some(p) if at.offset > p.offset + 1 => Fit::Gap,
        Some(_) => Fit::Next,
    };
    *last = Some(at);
    fit
}

/// The wait a close frame asks for: `Some(secs)` for a 1013 whose reason
/// says "retry in N s".
pub(crate) fn retry_hint(code: u16, reason: &str) -> Option<f64> {
    if code != 1013 {
        return None;
    }
    let rest = &reason[reason.find("retry in ")? + "retry in ".len()..];
    let digits = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(rest, |end| &rest[..end]);
    digits.parse().ok().filter(|s: &f64| s.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Vec<String> {
        vec!["a".into(), "b\"q".into()]
    }

    #[test]
    fn requests_name_every_topic_and_resume_those_with_a_position() {
        let t = topics();
        assert_eq!(
            subscribe_request(&t, &[None, None]),
            r#"{"op":"subscribe","topics":["a","b\"q"]}"#
        );
        let at = Position {
            epoch: 0xab,
            offset: 41,
        };
        assert_eq!(
            subscribe_request(&t, &[None, Some(at)]),
            r#"{"op":"subscribe","topics":["a","b\"q"],"since":{"b\"q":{"epoch":"00000000000000ab","offset":41}}}"#
        );
        assert_eq!(
            publish_request("a", 7, 99),
            r#"{"op":"publish","topic":"a","data":{"seq":7,"ts":99}}"#
        );
    }

    #[test]
    fn hub_messages_are_read() {
        let t = topics();
        let Some(Event::Message {
            topic,
            position,
            sent_us,
        }) = read(
            br#"{"topic":"b\"q","epoch":"00000000000000ab","offset":58,"data":{"seq":1,"ts":5}}"#,
            &t,
        )
        else {
            panic!()
        };
        assert_eq!(
            (topic, position.epoch, position.offset, sent_us),
            (1, 0xab, 58, Some(5))
        );
        let answer = br#"{"op":"subscribed","topics":["a","b\"q"],"positions":{"a":{"epoch":"00000000000000ab","offset":57}},"recovered":{"a":true},"reasons":{}}"#;
        let Some(Event::Subscribed(answers)) = read(answer, &t) else {
            panic!()
        };
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].recovered, Some(true));
        assert_eq!(answers[0].position.map(|p| p.offset), Some(57));
        assert!(answers[1].position.is_none() && answers[1].recovered.is_none());
        assert!(matches!(
            read(br#"{"op":"error","error":"x"}"#, &t),
            Some(Event::Error)
        ));
        assert!(read(br#"{"topic":"a","epoch":"zz","offset":1,"data":1}"#, &t).is_none());
        assert!(read(b"not json", &t).is_none());
    }

    #[test]
    fn gaps_and_duplicates_are_told_apart() {
        let at = |epoch, offset| Position { epoch, offset };
        let mut last = None;
        assert_eq!(fit(&mut last, at(1, 5)), Fit::Next);
        assert_eq!(fit(&mut last, at(1, 6)), Fit::Next);
        assert_eq!(fit(&mut last, at(1, 6)), Fit::Duplicate);
        assert_eq!(fit(&mut last, at(1, 3)), Fit::Duplicate);
        assert_eq!(last, Some(at(1, 6)));
        assert_eq!(fit(&mut last, at(1, 9)), Fit::Gap);
        assert_eq!(fit(&mut last, at(2, 10)), Fit::Gap);
        assert_eq!(last, Some(at(2, 10)));
    }

    #[test]
    fn retry_hints_are_read_from_1013_only() {
        assert_eq!(retry_hint(1013, "slow consumer; retry in 7 s"), Some(7.0));
        assert_eq!(retry_hint(1013, "retry in 2.5s"), Some(2.5));
        assert_eq!(retry_hint(1013, "server busy"), None);
        assert_eq!(retry_hint(1001, "retry in 7 s"), None);
    }
}
