//! One pass over a packet's JSON data that checks it is JSON and learns
//! only what the packet rules need (the top value's kind, an event's first
//! element, where the binary placeholders are) without building a tree:
//! the data stays the text it came in.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Event names the reference parser refuses in an `EVENT`: the client and
/// server libraries use them for their own events.
pub(crate) const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The kind of an array's first element, as the `EVENT` rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum First {
    /// The array is empty.
    Empty,
    /// A number (the reference lets an event be named by one).
    Number,
    /// A string; `reserved` if it is one of [`RESERVED_EVENTS`].
    Str { reserved: bool },
    /// Anything else.
    Other,
}

/// What one JSON value is, as far as the packet rules care.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    /// `true` (what a placeholder's `_placeholder` must be).
    True,
    /// A number, as JavaScript holds it.
    Number(f64),
    /// A string.
    Str { reserved: bool },
    /// An array, and what its first element is.
    Array(First),
    /// An object.
    Object,
    /// `false` or `null`.
    Other,
}

/// The data's top-level shape, and (when asked for) the `num` of every
/// placeholder in it, in document order. A num that is not a number is
/// `NaN`.
pub(crate) struct Scan {
    pub(crate) shape: Shape,
    pub(crate) placeholders: Vec<f64>,
}

/// Checks that `text` is one JSON value (whitespace around it allowed, as
/// `JSON.parse` allows it) and scans it. Placeholders are collected only
/// when `placeholders` is set: only binary packets have any.
pub(crate) fn scan(text: &str, placeholders: bool) -> Result<Scan, serde_json::Error> {
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = Walk {
        found: placeholders.then_some(&mut found),
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(Scan {
        shape,
        placeholders: found,
    })
}

/// Visits one value; inside objects, records placeholders into `found`.
struct Walk<'f> {
    found: Option<&'f mut Vec<f64>>,
}

impl Walk<'_> {
    fn reborrow(&mut self) -> Walk<'_> {
        Walk {
            found: self.found.as_deref_mut(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Shape, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Shape, E> {
        Ok(if v { Shape::True } else { Shape::Other })
    }

    fn visit_u64<E>(self, v: u64) -> Result<Shape, E> {
        Ok(Shape::Number(v as f64))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Shape, E> {
        Ok(Shape::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Shape, E> {
        Ok(Shape::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Shape, E> {
        Ok(Shape::Str {
            reserved: RESERVED_EVENTS.contains(&v),
        })
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Shape, A::Error> {
        let first = match seq.next_element_seed(self.reborrow())? {
            None => return Ok(Shape::Array(First::Empty)),
            Some(Shape::Number(_)) => First::Number,
            Some(Shape::Str { reserved }) => First::Str { reserved },
            Some(_) => First::Other,
        };
        while seq.next_element_seed(self.reborrow())?.is_some() {}
        Ok(Shape::Array(first))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Shape, A::Error> {
        let mark = self.found.as_ref().map_or(0, |f| f.len());
        // `JSON.parse` keeps the last of duplicated keys, so both are
        // overwritten as they come.
        let mut placeholder = false;
        let mut num = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(self.reborrow())?;
            match key {
                Key::Placeholder => placeholder = value == Shape::True,
                Key::Num => num = Some(value),
                Key::Other => {}
            }
        }
        if let (true, Some(found)) = (placeholder, self.found) {
            // The reference swaps a placeholder object for its attachment
            // before looking inside it, so placeholders nested in one do
            // not count.
            found.truncate(mark);
            found.push(match num {
                Some(Shape::Number(n)) => n,
                _ => f64::NAN,
            });
        }
        Ok(Shape::Object)
    }
}

/// The object keys a placeholder is made of.
enum Key {
    Placeholder,
    Num,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Key, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "_placeholder" => Key::Placeholder,
            "num" => Key::Num,
            _ => Key::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Shape {
        scan(text, false).unwrap().shape
    }

    fn placeholders(text: &str) -> Vec<f64> {
        scan(text, true).unwrap().placeholders
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(" true "), Shape::True);
        assert_eq!(shape("false"), Shape::Other);
        assert_eq!(shape("null"), Shape::Other);
        assert_eq!(shape("-1.5e3"), Shape::Number(-1500.0));
        assert_eq!(shape(r#""connect""#), Shape::Str { reserved: true });
        assert_eq!(shape(r#""conn\u0065ct""#), Shape::Str { reserved: true });
        assert_eq!(shape(r#""Connect""#), Shape::Str { reserved: false });
        assert_eq!(shape("[]"), Shape::Array(First::Empty));
        assert_eq!(shape("[1,{}]"), Shape::Array(First::Number));
        assert_eq!(
            shape(r#"["a",[]]"#),
            Shape::Array(First::Str { reserved: false })
        );
        assert_eq!(shape("[null]"), Shape::Array(First::Other));
        assert_eq!(shape("[[1]]"), Shape::Array(First::Other));
        assert_eq!(shape(r#"{"a":[1]}"#), Shape::Object);
    }

    #[test]
    fn not_json() {
        for text in [
            "", " ", "[", "[1,]", "{a:1}", "'a'", "[1] x", "[1][2]", "NaN", "01",
        ] {
            assert!(scan(text, true).is_err(), "{text:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(scan(&deep, true).is_err(), "depth is bounded");
    }

    #[test]
    fn placeholders_are_found_where_the_reference_finds_them() {
        let p = r#"["a",{"_placeholder":true,"num":1},[{"x":{"_placeholder":true,"num":0}}]]"#;
        assert_eq!(placeholders(p), [1.0, 0.0]);
        assert!(scan(p, false).unwrap().placeholders.is_empty());
        // Not `true`, or overwritten by a later key: an ordinary object.
        assert!(placeholders(r#"[{"_placeholder":1,"num":0}]"#).is_empty());
        assert!(placeholders(r#"[{"_placeholder":true,"_placeholder":false,"num":0}]"#).is_empty());
        assert_eq!(
            placeholders(r#"[{"_placeholder":false,"num":0,"_placeholder":true,"num":2}]"#),
            [2.0]
        );
        // Escaped keys are the same keys.
        assert_eq!(
            placeholders(r#"[{"\u005fplaceholder":true,"n\u0075m":3}]"#),
            [3.0]
        );
        // A num that is missing or not a number.
        assert!(placeholders(r#"[{"_placeholder":true}]"#)[0].is_nan());
        assert!(placeholders(r#"[{"_placeholder":true,"num":"0"}]"#)[0].is_nan());
        // What a placeholder holds is replaced, not searched.
        assert_eq!(
            placeholders(r#"[{"_placeholder":true,"num":0,"x":{"_placeholder":true,"num":5}}]"#),
            [0.0]
        );
        // An ordinary object is searched, `_placeholder`'s value included.
        assert_eq!(
            placeholders(r#"[{"_placeholder":{"_placeholder":true,"num":4}}]"#),
            [4.0]
        );
    }
}
