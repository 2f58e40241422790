//! Every encoded example of the socket.io-protocol v5 README (its packet
//! encoding tables and its sample session), each rule of the reference
//! parser, the decoder's bounds, and round trips.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

const BYTES_1234: &[u8] = &[1, 2, 3, 4];

/// Feeds a text message and its attachments to a fresh decoder.
fn decode(text: &str, attachments: &[&[u8]]) -> Result<Packet<'static>, DecodeError> {
    let mut decoder = Decoder::default();
    let mut done = decoder.text(text, 7)?.map(Packet::into_owned);
    for (i, bytes) in attachments.iter().enumerate() {
        assert!(done.is_none(), "complete before attachment {i}");
        assert_eq!(decoder.in_progress_since(), Some(7));
        done = decoder.binary(Cow::Borrowed(bytes))?;
    }
    assert_eq!(decoder.in_progress_since(), None);
    Ok(done.expect("complete"))
}

fn encoded(p: &Packet<'_>) -> (String, Vec<Vec<u8>>) {
    let mut text = String::new();
    let attachments = p.encode(&mut text).iter().map(|a| a.to_vec()).collect();
    (text, attachments)
}

/// One README example: its encoded form decodes to the fields the table
/// lists, and the packet encodes to exactly that form again.
fn example(
    text: &str,
    attachments: &[&[u8]],
    kind: PacketType,
    namespace: &str,
    id: Option<u64>,
    data: Option<&str>,
) {
    let p = decode(text, attachments).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(p.kind(), kind, "{text:?}");
    assert_eq!(p.namespace(), namespace, "{text:?}");
    assert_eq!(p.id(), id, "{text:?}");
    assert_eq!(p.data(), data, "{text:?}");
    let wanted: Vec<Vec<u8>> = attachments.iter().map(|a| a.to_vec()).collect();
    assert_eq!(encoded(&p), (text.to_owned(), wanted), "{text:?}");
    let built = Packet::new(
        kind,
        namespace,
        id,
        data.map(Cow::Borrowed),
        attachments.iter().map(|a| Cow::Borrowed(*a)).collect(),
    )
    .unwrap();
    assert_eq!(built, p);
}

#[test]
fn readme_connection_examples() {
    use PacketType::*;
    example("0", &[], Connect, "/", None, None);
    example(
        r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#,
        &[],
        Connect,
        "/",
        None,
        Some(r#"{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
    );
    example("0/admin,", &[], Connect, "/admin", None, None);
    example(
        r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
        &[],
        Connect,
        "/admin",
        None,
        Some(r#"{"sid":"oSO0OpakMV_3jnilAAAA"}"#),
    );
    example(
        r#"4{"message":"Not authorized"}"#,
        &[],
        ConnectError,
        "/",
        None,
        Some(r#"{"message":"Not authorized"}"#),
    );
}

#[test]
fn readme_data_examples() {
    use PacketType::*;
    example(r#"2["foo"]"#, &[], Event, "/", None, Some(r#"["foo"]"#));
    example(
        r#"2/admin,["bar"]"#,
        &[],
        Event,
        "/admin",
        None,
        Some(r#"["bar"]"#),
    );
    example(
        r#"51-["baz",{"_placeholder":true,"num":0}]"#,
        &[BYTES_1234],
        BinaryEvent,
        "/",
        None,
        Some(r#"["baz",{"_placeholder":true,"num":0}]"#),
    );
    example(
        r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        &[&[1, 2], &[3, 4]],
        BinaryEvent,
        "/admin",
        None,
        Some(r#"["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#),
    );
}

#[test]
fn readme_acknowledgement_examples() {
    use PacketType::*;
    example(
        r#"212["foo"]"#,
        &[],
        Event,
        "/",
        Some(12),
        Some(r#"["foo"]"#),
    );
    example("312[]", &[], Ack, "/", Some(12), Some("[]"));
    example(
        r#"2/admin,13["foo"]"#,
        &[],
        Event,
        "/admin",
        Some(13),
        Some(r#"["foo"]"#),
    );
    example(
        r#"3/admin,13["bar"]"#,
        &[],
        Ack,
        "/admin",
        Some(13),
        Some(r#"["bar"]"#),
    );
    example(
        r#"51-14["foo",{"_placeholder":true,"num":0}]"#,
        &[BYTES_1234],
        BinaryEvent,
        "/",
        Some(14),
        Some(r#"["foo",{"_placeholder":true,"num":0}]"#),
    );
    example(r#"314["bar"]"#, &[], Ack, "/", Some(14), Some(r#"["bar"]"#));
    example(
        r#"215["foo"]"#,
        &[],
        Event,
        "/",
        Some(15),
        Some(r#"["foo"]"#),
    );
    example(
        r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
        &[BYTES_1234],
        BinaryAck,
        "/",
        Some(15),
        Some(r#"["bar",{"_placeholder":true,"num":0}]"#),
    );
}

#[test]
fn readme_disconnection_examples() {
    example("1", &[], PacketType::Disconnect, "/", None, None);
    example(
        "1/admin,",
        &[],
        PacketType::Disconnect,
        "/admin",
        None,
        None,
    );
}

#[test]
fn readme_sample_session() {
    use PacketType::*;
    // The session's Engine.IO messages, their leading `4` taken off.
    example("0", &[], Connect, "/", None, None);
    let sid = r#"{"sid":"wZX3oN0bSVIhsaknAAAI"}"#;
    example(&format!("0{sid}"), &[], Connect, "/", None, Some(sid));
    let hey = r#"["hey","Jude"]"#;
    example(&format!("2{hey}"), &[], Event, "/", None, Some(hey));
    example(r#"2["hello"]"#, &[], Event, "/", None, Some(r#"["hello"]"#));
    example(r#"2["world"]"#, &[], Event, "/", None, Some(r#"["world"]"#));
    example("0/admin,", &[], Connect, "/admin", None, None);
    // A `-` in the data is no attachment count: only binary types have one.
    let sid = r#"{"sid":"-G5j-67EZFp-q59rADQM"}"#;
    example(
        &format!("0/admin,{sid}"),
        &[],
        Connect,
        "/admin",
        None,
        Some(sid),
    );
    let tellme = r#"["tellme"]"#;
    example(
        &format!("2/admin,1{tellme}"),
        &[],
        Event,
        "/admin",
        Some(1),
        Some(tellme),
    );
    let answer = r#"[{"_placeholder":true,"num":0}]"#;
    example(
        &format!("61-/admin,1{answer}"),
        &[b"\x00\xffbinary"],
        BinaryAck,
        "/admin",
        Some(1),
        Some(answer),
    );
}

fn err(text: &str) -> PacketError {
    match Packet::decode_text(text) {
        Err(e) => e,
        Ok(p) => panic!("{text:?} decodes: {p:?}"),
    }
}

fn ok(text: &str) -> Packet<'_> {
    let (p, _) = Packet::decode_text(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    p
}

#[test]
fn the_type_is_read_with_number() {
    assert_eq!(err("7"), PacketError::UnknownType('7'));
    assert_eq!(err("9[]"), PacketError::UnknownType('9'));
    assert_eq!(err("a"), PacketError::UnknownType('a'));
    assert_eq!(err("/"), PacketError::UnknownType('/'));
    assert_eq!(err("é"), PacketError::UnknownType('é'));
    assert_eq!(err("\u{1f600}"), PacketError::UnknownType('\u{1f600}'));
    // Nothing at all is no packet; `Number(" ")` is 0.
    assert_eq!(err(""), PacketError::Empty);
    assert_eq!(ok(" {}").data(), Some("{}"));
    assert_eq!(ok("\u{a0}/x,").namespace(), "/x");
    assert_eq!(err("\u{85}"), PacketError::UnknownType('\u{85}'));
    for kind in PacketType::ALL {
        assert_eq!(PacketType::from_digit(kind.digit()), Some(kind));
    }
}

#[test]
fn the_attachment_count_ends_with_a_dash() {
    assert_eq!(err(r#"5["a"]"#), PacketError::MissingAttachmentCount);
    assert_eq!(err("6"), PacketError::MissingAttachmentCount);
    assert_eq!(err(r#"5x-["a"]"#), PacketError::IllegalAttachmentCount);
    assert_eq!(err(r#"51 2-["a"]"#), PacketError::IllegalAttachmentCount);
    assert_eq!(err(r#"51.5-["a"]"#), PacketError::IllegalAttachmentCount);
    // At least one, as socket.io 4.8 wants (`Number("")` is 0).
    assert_eq!(err("5-"), PacketError::NoAttachments);
    assert_eq!(err("50-[\"a\"]"), PacketError::NoAttachments);
    assert_eq!(err("6 -[]"), PacketError::NoAttachments);
    assert_eq!(Packet::decode_text("6 02 -[]").unwrap().1, 2);
    assert_eq!(
        Packet::decode_text("599999999999999999999999-").unwrap().1,
        usize::MAX
    );
    // Not binary: a dash is only data.
    assert_eq!(err("21-[\"a\"]"), PacketError::InvalidJson);
}

#[test]
fn the_namespace_runs_from_a_slash_to_a_comma() {
    let p = ok("2/a b/é,[\"x\"]");
    assert_eq!((p.namespace(), p.data()), ("/a b/é", Some("[\"x\"]")));
    // Without a comma, it runs to the end.
    let p = ok("2/admin[\"x\"]12");
    assert_eq!(
        (p.namespace(), p.id(), p.data()),
        ("/admin[\"x\"]12", None, None)
    );
    assert_eq!(ok("0/").namespace(), "/");
    assert_eq!(ok("0/,").encode_text(), "0");
    assert_eq!(err("1/,,"), err("1,"));
    assert_eq!(err("2admin,[\"a\"]"), PacketError::InvalidJson);
}

#[test]
fn the_ack_id_is_the_digits_before_the_data() {
    assert_eq!(ok("2007[\"a\"]").id(), Some(7));
    assert_eq!(ok("3/x,42").id(), Some(42));
    assert_eq!(ok("3/x,42").data(), None);
    assert_eq!(ok(&format!("3{MAX_ACK_ID}[]")).id(), Some(MAX_ACK_ID));
    assert_eq!(
        err(&format!("3{}[]", MAX_ACK_ID + 1)),
        PacketError::AckIdTooLarge
    );
    assert_eq!(
        err("399999999999999999999999999[]"),
        PacketError::AckIdTooLarge
    );
    // White space is read into the id, as `Number(" ") == " "`.
    assert_eq!(ok("2 [\"a\"]").id(), Some(0));
    assert_eq!(ok("2 12\t[\"a\"]").id(), Some(12));
    assert_eq!(ok("1 ").id(), Some(0));
    assert_eq!(err("21 2[\"a\"]"), PacketError::IllegalAckId);
    // `+`, `-`, `.` and `e` are no id characters, so they start the data.
    assert_eq!(err("2+1[\"a\"]"), PacketError::InvalidJson);
    assert_eq!(err("21.5[\"a\"]"), PacketError::InvalidJson);
}

#[test]
fn data_is_checked_per_type() {
    use PacketError as E;
    assert_eq!(err("0[]"), E::ConnectData);
    assert_eq!(err("0null"), E::ConnectData);
    assert_eq!(err("0\"a\""), E::ConnectData);
    assert_eq!(
        ok("0{\"token\":\"123\"}").data(),
        Some("{\"token\":\"123\"}")
    );
    assert_eq!(err("1{}"), E::DisconnectData);
    assert_eq!(err("1[]"), E::DisconnectData);
    assert_eq!(
        err("1/admin,x"),
        E::InvalidJson,
        "JSON first, as the reference"
    );
    assert_eq!(err("2[]"), E::EventData);
    assert_eq!(err("2{}"), E::EventData);
    assert_eq!(err("2[null]"), E::EventData);
    assert_eq!(err("2[[\"a\"]]"), E::EventData);
    assert_eq!(err("2\"a\""), E::EventData);
    assert_eq!(ok("2[1,2]").data(), Some("[1,2]"));
    assert_eq!(ok("2[-1.5e3]").data(), Some("[-1.5e3]"));
    for name in json::RESERVED_EVENTS {
        assert_eq!(err(&format!("2[\"{name}\"]")), E::ReservedEvent, "{name}");
        assert_eq!(err(&format!("51-[\"{name}\"]")), E::ReservedEvent);
    }
    assert_eq!(err(r#"2["conn\u0065ct"]"#), E::ReservedEvent);
    assert!(Packet::decode_text("2[\"Connect\"]").is_ok());
    assert_eq!(err("3{}"), E::AckData);
    assert_eq!(err("3\"a\""), E::AckData);
    assert_eq!(ok("3[null]").data(), Some("[null]"));
    assert_eq!(err("4[]"), E::ConnectErrorData);
    assert_eq!((ok("41").id(), ok("41").data()), (Some(1), None));
    assert_eq!(err("4null"), E::ConnectErrorData);
    assert_eq!(ok("4\"Not authorized\"").data(), Some("\"Not authorized\""));
    let p = ok(r#"4{"message":"no","data":{"why":1}}"#);
    assert_eq!(p.kind(), PacketType::ConnectError);
    assert_eq!(err("2[\"a\""), E::InvalidJson);
    assert_eq!(err("2[\"a\"]]"), E::InvalidJson);
    assert_eq!(err("2[\"a\"] x"), E::InvalidJson);
    assert_eq!(ok("2[\"a\"] \n").data(), Some("[\"a\"] \n"));
    assert_eq!(err("2,[\"a\"]"), E::InvalidJson);
    // No data is no data check, for every type (as in the reference).
    for kind in PacketType::ALL {
        let text =
            String::from(char::from(kind.digit())) + if kind.is_binary() { "1-" } else { "" };
        assert_eq!(ok(&text).data(), None);
    }
}

#[test]
fn placeholders_name_each_attachment_once() {
    use PacketError as E;
    let one = r#"{"_placeholder":true,"num":0}"#;
    assert_eq!(err(&format!("50-[\"a\",{one}]")), E::NoAttachments);
    assert_eq!(
        err(&format!("61-[{one},{one}]")),
        E::DuplicatePlaceholder(0)
    );
    assert_eq!(
        err(r#"52-["a",{"_placeholder":true,"num":2}]"#),
        E::PlaceholderOutOfRange(2)
    );
    for num in ["-1", "0.5", "\"0\"", "null", "1e300"] {
        let text = format!(r#"52-["a",{{"_placeholder":true,"num":{num}}}]"#);
        assert_eq!(err(&text), E::IllegalPlaceholder, "{num}");
    }
    assert_eq!(
        err(r#"52-["a",{"_placeholder":true}]"#),
        E::IllegalPlaceholder
    );
    // -0 and 1.0 are numbers JavaScript compares as 0 and 1.
    assert!(Packet::decode_text(
        r#"62-[{"_placeholder":true,"num":-0},{"_placeholder":true,"num":1.0}]"#
    )
    .is_ok());
    // An attachment no placeholder names is allowed, and kept.
    let p = decode(&format!("52-[\"a\",{one}]"), &[b"x", b"y"]).unwrap();
    assert_eq!(p.attachments().len(), 2);
    // In a packet that is not binary, a placeholder is an ordinary object.
    assert_eq!(ok(&format!("2[\"a\",{one},{one}]")).attachments().len(), 0);
    // Placeholders anywhere in the data, in any order.
    let deep = r#"52-["a",{"x":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]"#;
    let p = decode(deep, &[b"0", b"1"]).unwrap();
    assert_eq!(p.attachments(), [Cow::Borrowed(b"0"), Cow::Borrowed(b"1")]);
}

#[test]
fn building_a_packet_applies_the_same_rules() {
    use PacketError as E;
    use PacketType as T;
    let b = |kind, ns: &'static str, id, data: Option<&'static str>, n: usize| {
        Packet::new(
            kind,
            ns,
            id,
            data.map(Cow::Borrowed),
            vec![Cow::Borrowed(&b"x"[..]); n],
        )
    };
    assert_eq!(
        b(T::Event, "admin", None, Some("[\"a\"]"), 0),
        Err(E::IllegalNamespace)
    );
    assert_eq!(
        b(T::Event, "", None, Some("[\"a\"]"), 0),
        Err(E::IllegalNamespace)
    );
    assert_eq!(
        b(T::Event, "/a,b", None, Some("[\"a\"]"), 0),
        Err(E::IllegalNamespace)
    );
    assert_eq!(
        b(T::Event, "/", None, Some("[\"a\"]"), 1),
        Err(E::UnexpectedAttachments)
    );
    assert_eq!(
        b(T::Ack, "/", Some(MAX_ACK_ID + 1), Some("[]"), 0),
        Err(E::AckIdTooLarge)
    );
    assert_eq!(
        b(T::Disconnect, "/", None, Some("{}"), 0),
        Err(E::DisconnectData)
    );
    assert_eq!(
        b(T::Event, "/", None, Some("[\"disconnect\"]"), 0),
        Err(E::ReservedEvent)
    );
    assert_eq!(
        b(
            T::BinaryAck,
            "/",
            None,
            Some("[{\"_placeholder\":true,\"num\":1}]"),
            1
        ),
        Err(E::PlaceholderOutOfRange(1))
    );
    // White space before the data would read as an ack id: it is dropped.
    let p = b(T::Event, "/", Some(3), Some(" \n[\"a\"]"), 0).unwrap();
    assert_eq!(p.encode_text(), "23[\"a\"]");
    let p = Packet::event("/chat", String::from(" [1]"), None, vec![]).unwrap();
    assert_eq!(p.encode_text(), "2/chat,[1]");
    let p = Packet::event(
        "/",
        r#"["f",{"_placeholder":true,"num":0}]"#,
        Some(9),
        vec![Cow::Borrowed(&b"z"[..])],
    )
    .unwrap();
    assert_eq!(
        encoded(&p),
        (
            r#"51-9["f",{"_placeholder":true,"num":0}]"#.to_owned(),
            vec![b"z".to_vec()]
        )
    );
    assert_eq!(
        PacketError::UnknownType('a').to_string(),
        "unknown packet type 'a'"
    );
}

#[test]
fn the_decoder_collects_attachments_within_bounds() {
    let limits = Limits {
        max_attachments: 2,
        max_attachment_bytes: 5,
    };
    let placeholders = r#"[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let mut d = Decoder::new(limits);
    assert_eq!(d.limits(), limits);
    assert_eq!(
        d.text(r#"53-["a"]"#, 0),
        Err(DecodeError::TooManyAttachments { count: 3, max: 2 })
    );
    assert_eq!(
        d.binary(Cow::Borrowed(b"x")),
        Err(DecodeError::UnexpectedBinary)
    );
    assert_eq!(d.text(&format!("62-{placeholders}"), 100), Ok(None));
    assert_eq!(d.in_progress_since(), Some(100));
    assert_eq!(d.binary(Cow::Borrowed(b"abc")), Ok(None));
    assert_eq!(d.in_progress_since(), Some(100));
    assert_eq!(
        d.binary(Cow::Borrowed(b"def")),
        Err(DecodeError::AttachmentsTooLarge { max: 5 })
    );
    assert_eq!(d.in_progress_since(), None, "an error empties the decoder");
    assert_eq!(d.text(&format!("62-{placeholders}"), 200), Ok(None));
    assert_eq!(d.text("2[\"a\"]", 201), Err(DecodeError::UnexpectedText));
    assert_eq!(d.in_progress_since(), None);
    assert_eq!(d.text(&format!("62-{placeholders}"), 300), Ok(None));
    assert_eq!(d.binary(Cow::Borrowed(b"ab")), Ok(None));
    let p = d.binary(Cow::Owned(b"cde".to_vec())).unwrap().unwrap();
    assert_eq!(p.kind(), PacketType::BinaryAck);
    assert_eq!(
        p.attachments(),
        [Cow::Borrowed(&b"ab"[..]), Cow::Borrowed(&b"cde"[..])]
    );
    assert_eq!(d.in_progress_since(), None);
    // No attachments announced: refused, and the decoder stays free.
    assert_eq!(
        d.text("50-[\"a\"]", 400),
        Err(DecodeError::Packet(PacketError::NoAttachments))
    );
    assert_eq!(
        d.text("2[\"b\"]", 401).unwrap().unwrap().data(),
        Some("[\"b\"]")
    );
    assert_eq!(
        d.text("2[]", 402),
        Err(DecodeError::Packet(PacketError::EventData))
    );
    d.text(&format!("62-{placeholders}"), 500).unwrap();
    d.reset();
    assert_eq!(d.in_progress_since(), None);
    assert_eq!(
        d.binary(Cow::Borrowed(b"x")),
        Err(DecodeError::UnexpectedBinary)
    );
    // Empty attachments count toward the number, not the bytes.
    let mut d = Decoder::new(Limits {
        max_attachments: 2,
        max_attachment_bytes: 0,
    });
    d.text(&format!("62-{placeholders}"), 0).unwrap();
    d.binary(Cow::Borrowed(b"")).unwrap();
    assert_eq!(
        d.binary(Cow::Borrowed(b""))
            .unwrap()
            .unwrap()
            .attachments()
            .len(),
        2
    );
    assert_eq!(Limits::default().max_attachments, 10);
}

#[test]
fn an_event_is_its_name_and_its_arguments_as_text() {
    let event = |text: &'static str| {
        ok(text).as_event().map(|e| {
            let name = match e.name {
                EventName::Str(s) => format!("string {s}"),
                EventName::Number(n) => format!("number {n}"),
            };
            (name, e.args.to_owned())
        })
    };
    let some = |name: &str, args: &str| Some((name.to_owned(), args.to_owned()));
    assert_eq!(
        event(r#"2["message",1,{"a":[2]},"x"]"#),
        some("string message", r#"1,{"a":[2]},"x""#)
    );
    assert_eq!(event(r#"2/n,7[ "a\"b" , 1 ] "#), some("string a\"b", "1"));
    assert_eq!(event("2[-1.5e3]"), some("number -1.5e3", ""));
    assert_eq!(
        event(r#"51-["up",{"_placeholder":true,"num":0}]"#),
        some("string up", r#"{"_placeholder":true,"num":0}"#)
    );
    assert_eq!(event("2"), None);
    assert_eq!(event("3[\"a\"]"), None);
    assert_eq!(event("0{}"), None);
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z_\"\\\\é\u{1f600}\n ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any packet the rules allow, built through [`Packet::new`].
fn any_packet() -> impl Strategy<Value = Packet<'static>> {
    let namespace = prop_oneof![Just("/".to_owned()), "/[a-z0-9/ é-]{0,6}"];
    let id = proptest::option::of(0..=MAX_ACK_ID);
    let name = prop_oneof![
        "[a-zA-Z ]{0,8}"
            .prop_filter("reserved", |n| !json::RESERVED_EVENTS.contains(&n.as_str()))
            .prop_map(serde_json::Value::String),
        any::<u32>().prop_map(serde_json::Value::from),
    ];
    let args = proptest::collection::vec(json_value(), 0..4);
    let attachments = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..5);
    let object = proptest::collection::btree_map("[a-z]{0,4}", json_value(), 0..3)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()));
    (
        0..7usize,
        namespace,
        id,
        name,
        args,
        attachments,
        object,
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(kind, ns, id, name, mut args, attachments, object, some, at)| {
                use serde_json::{json, Value};
                let kind = PacketType::ALL[kind];
                let attachments = if kind.is_binary() {
                    attachments
                } else {
                    Vec::new()
                };
                let data = match kind {
                    PacketType::Connect => some.then_some(object),
                    PacketType::Disconnect => None,
                    PacketType::ConnectError if some => Some(object),
                    PacketType::ConnectError => Some(json!("refused")),
                    PacketType::Event
                    | PacketType::Ack
                    | PacketType::BinaryEvent
                    | PacketType::BinaryAck => {
                        // Each attachment's placeholder somewhere, last first.
                        for num in (0..attachments.len()).rev() {
                            let p = json!({"_placeholder": true, "num": num});
                            let i = at.index(args.len() + 1);
                            args.insert(i, p);
                        }
                        if matches!(kind, PacketType::Event | PacketType::BinaryEvent) {
                            args.insert(0, name);
                        }
                        Some(Value::Array(args))
                    }
                };
                let attachments = attachments.into_iter().map(Cow::Owned).collect();
                let data = data.map(|d| Cow::Owned(d.to_string()));
                Packet::new(kind, ns, id, data, attachments).expect("a packet the rules allow")
            },
        )
}

proptest! {
    #[test]
    fn encode_then_decode_gives_the_packet(p in any_packet()) {
        let (text, attachments) = encoded(&p);
        let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        let mut d = Decoder::new(Limits { max_attachments: 10, max_attachment_bytes: 1 << 20 });
        let mut done = d.text(&text, 0).unwrap().map(Packet::into_owned);
        for part in &parts {
            prop_assert!(done.is_none());
            done = d.binary(Cow::Borrowed(part)).unwrap();
        }
        prop_assert_eq!(done.as_ref(), Some(&p));
        if let Some(e) = p.as_event() {
            // The name and the arguments make the same array again.
            let name = match &e.name {
                EventName::Str(s) => serde_json::to_string(s).unwrap(),
                EventName::Number(n) => n.to_string(),
            };
            let comma = if e.args.is_empty() { "" } else { "," };
            let again: serde_json::Value =
                serde_json::from_str(&format!("[{name}{comma}{}]", e.args)).unwrap();
            let data: serde_json::Value = serde_json::from_str(p.data().unwrap()).unwrap();
            prop_assert_eq!(again, data);
        }
        prop_assert_eq!(d.in_progress_since(), None);
    }

    #[test]
    fn any_text_decodes_to_a_canonical_packet_or_an_error(
        text in "[0-6 /,a\\-\\[\\]{}\":_0-9]{0,24}|[0-6]{1,2}-?(/[a-z]{0,3},)?[0-9]{0,3}\\[\"a\"(,\\{\"_placeholder\":true,\"num\":[0-2]\\})*\\]"
    ) {
        if let Ok((mut p, count)) = Packet::decode_text(&text) {
            prop_assert!(p.attachments().is_empty());
            prop_assume!(count <= 16);
            for _ in 0..count {
                p.push_attachment(Cow::Borrowed(b""));
            }
            let again = p.encode_text();
            let (mut q, n) = Packet::decode_text(&again).unwrap();
            prop_assert_eq!(n, count);
            for _ in 0..count {
                q.push_attachment(Cow::Borrowed(b""));
            }
            prop_assert_eq!(&q, &p);
            prop_assert_eq!(q.encode_text(), again);
        }
    }
}

/// The packet-level answers of the reference (socket.io 4.8.4) recorded in
/// `tests/socketio/REFERENCE.md` by `raw_packets.py`: what it closes the
/// session for, the decoder refuses; what it takes, the decoder takes.
#[test]
fn the_reference_answers_to_raw_packets() {
    let ph = |n: usize| format!(r#"{{"_placeholder":true,"num":{n}}}"#);
    let mut refused = vec![
        "0custom,",
        "abc",
        "0\"token\"",
        "0[]",
        "0{",
        "0null",
        "2{}",
        "2\"message\"",
        "2[\"message\"",
        "2[]",
        "2null",
        "2[\"message\"]x",
        "2[{}]",
        "2[null]",
        "2[true]",
        "2[[\"message\"]]",
        "2abc[\"message-with-ack\"]",
        "2-1[\"a\"]",
        "21.5[\"a\"]",
        "31{}",
        "31\"x\"",
        "31[",
        "31null",
        "50-[\"message\"]",
        "5a-[\"message\"]",
        "511-[\"message\"]",
        "5-[\"message\"]",
        "1{}",
        "1[\"x\"]",
        "7",
        "8[\"message\"]",
        "9",
        "-2[\"message\"]",
        " 2[\"message\"]",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    for name in json::RESERVED_EVENTS {
        refused.push(format!("2[\"{name}\"]"));
    }
    refused.push(format!("51[\"message\",{}]", ph(0)));
    for text in &refused {
        assert!(
            Decoder::default().text(text, 0).is_err(),
            "{text:?} is refused"
        );
    }
    for (text, attachment) in [
        (format!("51-[\"message\",{}]", ph(1)), b"\x01"),
        (
            r#"51-["message",{"_placeholder":true,"num":-1}]"#.to_owned(),
            b"\x01",
        ),
        (
            r#"51-["message",{"_placeholder":true,"num":"0"}]"#.to_owned(),
            b"\x01",
        ),
    ] {
        let mut d = Decoder::default();
        let refused = d
            .text(&text, 0)
            .and_then(|_| d.binary(Cow::Borrowed(attachment)));
        assert!(refused.is_err(), "{text:?}");
    }
    let taken = [
        "0",
        "0{\"token\":\"123\"}",
        "0/custom,",
        "0/custom",
        "0/custom,{\"token\":\"abc\"}",
        "01",
        "2[\"message\",1,\"2\",{\"3\":[true]}]",
        "2[1]",
        "27[1.5,\"x\"]",
        "2456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]",
        "20[\"message-with-ack\"]",
        "24294967296[\"message-with-ack\",\"big\"]",
        "3999[\"x\"]",
        "3999",
        "2",
        "1",
        "1/custom",
    ];
    for text in taken {
        assert!(
            Decoder::default().text(text, 0).unwrap().is_some(),
            "{text:?}"
        );
    }
    assert_eq!(ok("01").id(), Some(1));
    assert_eq!(ok("0/custom").encode_text(), "0/custom,");
    assert_eq!(ok("24294967296[\"a\"]").id(), Some(1 << 32));
    let plain = format!("2[\"message\",{}]", ph(0));
    assert_eq!(ok(&plain).data(), Some(&plain[1..]));
    // Ten attachments are taken (the reference's `maxAttachments`).
    let phs: Vec<String> = (0..10).map(ph).collect();
    let text = format!("510-[\"message\",{}]", phs.join(","));
    let blobs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    let parts: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    assert_eq!(decode(&text, &parts).unwrap().attachments().len(), 10);
    // Fewer placeholders than attachments: taken.
    let text = format!("52-[\"message\",{}]", ph(0));
    assert_eq!(decode(&text, &[b"a", b"b"]).unwrap().attachments().len(), 2);
    // A text packet while attachments are awaited; an attachment too many.
    let mut d = Decoder::default();
    d.text(&format!("52-[\"message\",{},{}]", ph(0), ph(1)), 0)
        .unwrap();
    d.binary(Cow::Borrowed(b"a")).unwrap();
    assert_eq!(
        d.text("2[\"message\",\"x\"]", 1),
        Err(DecodeError::UnexpectedText)
    );
    let mut d = Decoder::default();
    d.text(&format!("51-[\"message\",{}]", ph(0)), 0).unwrap();
    d.binary(Cow::Borrowed(b"a")).unwrap().unwrap();
    assert_eq!(
        d.binary(Cow::Borrowed(b"b")),
        Err(DecodeError::UnexpectedBinary)
    );
}
