//! Framing, fragmentation, control frames, limits and the close handshake
//! over real sockets, against hand-built frames and the tungstenite client,
//! on both drivers.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;
use tungstenite::{Message, WebSocket};

const BACKENDS: [&str; 2] = ["epoll", "uring"];

fn each_backend(extra: &[&str], test: impl Fn(&Server)) {
    for backend in BACKENDS {
        let mut args = vec!["echo", "--backend", backend];
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        test(&server);
    }
}

fn tungstenite_client(server: &Server) -> WebSocket<Patient> {
    let stream = connect(server.addr);
    let (ws, response) =
        tungstenite::client(server.url("/echo"), Patient(stream)).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

#[test]
fn echoes_text_and_binary_across_length_encodings() {
    each_backend(&[], |server| {
        let mut ws = tungstenite_client(server);
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let bin: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            ws.send(Message::Binary(bin.clone())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::Binary(bin), "binary {len}");
            let txt: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            ws.send(Message::Text(txt.clone())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::Text(txt), "text {len}");
        }
        ws.close(None).unwrap();
    });
}

#[test]
fn zerocopy_sends_deliver_large_messages_intact() {
    each_backend(&["--zerocopy-threshold", "4096"], |server| {
        let mut ws = tungstenite_client(server);
        for len in [4096usize, 65_536, 1 << 20, 3 << 20] {
            let bin: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            ws.send(Message::Binary(bin.clone())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::Binary(bin), "{len}");
        }
        ws.close(None).unwrap();
    });
}

#[test]
fn fragments_reassemble_around_interleaved_pings() {
    each_backend(&[], |server| {
        let mut s = open_ws(server.addr);
        let mut wire = frame(0x01, "κό".as_bytes());
        wire.extend(frame(0x89, b"ping-1"));
        wire.extend(frame(0x00, "σ".as_bytes()));
        wire.extend(frame(0x8A, b"unsolicited pong"));
        wire.extend(frame(0x80, "με".as_bytes()));
        s.write_all(&wire).unwrap();
        assert_eq!(read_frame(&mut s), (0x8A, b"ping-1".to_vec()));
        assert_eq!(read_frame(&mut s), (0x81, "κόσμε".as_bytes().to_vec()));
    });
}

#[test]
fn utf8_split_across_fragments() {
    each_backend(&[], |server| {
        let mut s = open_ws(server.addr);
        let euro = "€".as_bytes();
        let mut wire = frame(0x01, &euro[..1]);
        wire.extend(frame(0x80, &euro[1..]));
        s.write_all(&wire).unwrap();
        assert_eq!(read_frame(&mut s), (0x81, euro.to_vec()));
        // A surrogate split across fragments is caught at the second byte.
        let mut wire = frame(0x01, b"ok\xED");
        wire.extend(frame(0x80, b"\xA0\x80"));
        s.write_all(&wire).unwrap();
        assert_eq!(read_close(&mut s), Some(1007));
    });
}

#[test]
fn protocol_violations_close_with_the_right_code() {
    let long_ping = frame(0x89, &[0u8; 126]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("rsv1 without extension", frame(0xC1, b"x"), 1002),
        ("rsv3", frame(0x91, b"x"), 1002),
        ("reserved data opcode", frame(0x83, b""), 1002),
        ("reserved control opcode", frame(0x8B, b""), 1002),
        ("unmasked frame", vec![0x81, 0x01, b'x'], 1002),
        ("fragmented ping", frame(0x09, b""), 1002),
        ("ping over 125 bytes", long_ping, 1002),
        ("continuation without start", frame(0x80, b"x"), 1002),
        (
            "new message inside fragmented",
            [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
            1002,
        ),
        (
            "64-bit length with top bit",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            1002,
        ),
        ("invalid utf-8 text", text(b"\xff\xfe"), 1007),
        ("one-byte close", frame(0x88, b"\x03"), 1002),
        ("close reason not utf-8", close(1000, b"\xff"), 1007),
    ];
    each_backend(&[], |server| {
        for (what, wire, code) in &cases {
            let mut s = open_ws(server.addr);
            s.write_all(wire).unwrap();
            assert_eq!(read_close(&mut s), Some(*code), "{what}");
            s.write_all(&close(1000, b"")).unwrap();
            assert_tcp_closed(&mut s, Duration::from_secs(5));
        }
    });
}

#[test]
fn close_code_table() {
    let valid = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ];
    let invalid = [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    each_backend(&[], |server| {
        for code in valid {
            let mut s = open_ws(server.addr);
            s.write_all(&close(code, b"bye")).unwrap();
            assert_eq!(read_close(&mut s), Some(code), "valid {code} is echoed");
            assert_tcp_closed(&mut s, Duration::from_secs(5));
        }
        for code in invalid {
            let mut s = open_ws(server.addr);
            s.write_all(&close(code, b"")).unwrap();
            assert_eq!(read_close(&mut s), Some(1002), "invalid {code}");
        }
        let mut s = open_ws(server.addr);
        s.write_all(&frame(0x88, b"")).unwrap();
        assert_eq!(
            read_close(&mut s),
            None,
            "an empty close gets an empty close"
        );
    });
}

#[test]
fn output_owed_to_a_half_closed_peer_is_flushed_first() {
    each_backend(&[], |server| {
        // A 6 MiB echo cannot fit in the socket buffers; the peer sends its
        // FIN right after the message and must still get every byte.
        let mut s = open_ws(server.addr);
        let payload: Vec<u8> = (0..6 << 20).map(|i: usize| (i * 7) as u8).collect();
        s.write_all(&binary(&payload)).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (first, echoed) = read_frame(&mut s);
        assert_eq!(first, 0x82);
        assert!(
            echoed == payload,
            "echo differs ({} of {} bytes)",
            echoed.len(),
            payload.len()
        );
        assert_tcp_closed(&mut s, Duration::from_secs(5));
    });
}

#[test]
fn data_after_close_is_ignored_and_tcp_closes() {
    each_backend(&[], |server| {
        let mut s = open_ws(server.addr);
        let mut wire = close(1000, b"done");
        wire.extend(text(b"too late"));
        s.write_all(&wire).unwrap();
        let (first, payload) = read_frame(&mut s);
        assert_eq!(first, 0x88, "the close comes back, not an echo");
        assert_eq!(&payload[..2], &1000u16.to_be_bytes());
        assert_tcp_closed(&mut s, Duration::from_secs(5));
    });
}

#[test]
fn oversized_message_is_refused_from_its_header() {
    each_backend(&["--max-message", "1024"], |server| {
        // Announce 1 GiB, send only the header: 1009 must come at once.
        let mut s = open_ws(server.addr);
        s.write_all(&[0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4])
            .unwrap();
        let start = Instant::now();
        assert_eq!(read_close(&mut s), Some(1009));
        assert!(start.elapsed() < Duration::from_secs(2));
        // Fragments that add up past the limit.
        let mut s = open_ws(server.addr);
        let mut wire = frame(0x02, &[0u8; 600]);
        wire.extend(frame(0x80, &[0u8; 600]));
        s.write_all(&wire).unwrap();
        assert_eq!(read_close(&mut s), Some(1009));
        // At the limit is fine.
        let mut s = open_ws(server.addr);
        s.write_all(&binary(&[5u8; 1024])).unwrap();
        assert_eq!(read_frame(&mut s), (0x82, vec![5u8; 1024]));
    });
}

#[test]
fn silent_peer_is_dropped_after_our_close() {
    each_backend(&["--close-timeout-ms", "300"], |server| {
        let mut s = open_ws(server.addr);
        s.write_all(&frame(0x83, b"")).unwrap();
        assert_eq!(read_close(&mut s), Some(1002));
        // Never answer: the server must give up and drop us.
        assert_tcp_closed(&mut s, Duration::from_secs(3));
    });
}

#[test]
fn idle_connections_are_closed_with_1001() {
    each_backend(&["--idle-timeout-ms", "300"], |server| {
        let mut s = open_ws(server.addr);
        assert_eq!(read_close(&mut s), Some(1001));
    });
}

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits_0() {
    for backend in BACKENDS {
        let server = Server::start(&["echo", "--backend", backend, "--shards", "2"]);
        let mut clients: Vec<_> = (0..20).map(|_| open_ws(server.addr)).collect();
        let status = std::thread::scope(|scope| {
            let readers: Vec<_> = clients
                .iter_mut()
                .map(|s| {
                    scope.spawn(move || {
                        let code = read_close(s);
                        let _ = s.write_all(&close(1001, b""));
                        code
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(100));
            let status = server.terminate();
            for r in readers {
                assert_eq!(r.join().unwrap(), Some(1001), "{backend}");
            }
            status
        });
        assert!(status.success(), "{backend}: exit {status:?}");
    }
}

#[test]
fn every_control_frame_rule_and_reserved_bit_is_enforced() {
    let mut cases: Vec<(String, Vec<u8>)> = [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]
        .iter()
        .map(|op| (format!("reserved opcode {op:#x}"), frame(0x80 | op, b"")))
        .collect();
    let code_1000 = 1000u16.to_be_bytes();
    let mut long_close = code_1000.to_vec();
    long_close.extend_from_slice(&[b'r'; 124]);
    cases.extend([
        ("rsv2".to_owned(), frame(0xA1, b"x")),
        ("rsv1 on a ping".to_owned(), frame(0xC9, b"x")),
        (
            "rsv1 on a continuation".to_owned(),
            [frame(0x01, b"a"), frame(0xC0, b"b")].concat(),
        ),
        ("close of 126 bytes".to_owned(), frame(0x88, &long_close)),
        ("pong of 126 bytes".to_owned(), frame(0x8A, &[0u8; 126])),
        ("fragmented close".to_owned(), frame(0x08, &code_1000)),
        ("fragmented pong".to_owned(), frame(0x0A, b"")),
        ("unmasked ping".to_owned(), vec![0x89, 0x00]),
        (
            "unmasked close".to_owned(),
            vec![0x88, 0x02, code_1000[0], code_1000[1]],
        ),
        ("unmasked 16-bit length".to_owned(), {
            let mut f = vec![0x82, 126, 0, 200];
            f.extend_from_slice(&[0u8; 200]);
            f
        }),
        (
            "binary start inside a fragmented text".to_owned(),
            [frame(0x01, b"a"), frame(0x82, b"b")].concat(),
        ),
        (
            "text start inside a fragmented binary".to_owned(),
            [frame(0x02, b"a"), frame(0x01, b"b")].concat(),
        ),
        (
            "64-bit length with top bit, header only".to_owned(),
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
        ),
    ]);
    each_backend(&[], |server| {
        for (what, wire) in &cases {
            let mut s = open_ws(server.addr);
            s.write_all(wire).unwrap();
            assert_eq!(read_close(&mut s), Some(1002), "{what}");
            assert_tcp_closed(&mut s, Duration::from_secs(5));
        }
    });
}

#[test]
fn invalid_utf8_anywhere_in_a_message_is_1007() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated sequence at message end", text(b"ok\xE2\x82")),
        (
            "truncated sequence at the end of the last fragment",
            [frame(0x01, b"ok\xE2"), frame(0x80, b"\x82")].concat(),
        ),
        ("overlong encoding", text(b"\xC0\xAF")),
        ("surrogate", text(b"\xED\xA0\x80")),
        ("above U+10FFFF", text(b"\xF4\x90\x80\x80")),
        (
            "bad byte in a middle fragment",
            [frame(0x01, b"a"), frame(0x00, b"\xFF"), frame(0x80, b"b")].concat(),
        ),
        (
            "close reason cut inside a sequence",
            close(1000, b"\xE2\x82"),
        ),
    ];
    each_backend(&[], |server| {
        for (what, wire) in &cases {
            let mut s = open_ws(server.addr);
            s.write_all(wire).unwrap();
            assert_eq!(read_close(&mut s), Some(1007), "{what}");
            assert_tcp_closed(&mut s, Duration::from_secs(5));
        }
        // Valid four-byte sequences split over three fragments pass.
        let mut s = open_ws(server.addr);
        let smile = "a😀b".as_bytes();
        let mut wire = frame(0x01, &smile[..2]);
        wire.extend(frame(0x00, &smile[2..4]));
        wire.extend(frame(0x80, &smile[4..]));
        s.write_all(&wire).unwrap();
        assert_eq!(read_frame(&mut s), (0x81, smile.to_vec()));
    });
}

#[test]
fn pongs_carry_the_ping_payload_at_every_size() {
    each_backend(&[], |server| {
        let mut s = open_ws(server.addr);
        for len in [0usize, 1, 124, 125] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            s.write_all(&frame(0x89, &payload)).unwrap();
            assert_eq!(read_frame(&mut s), (0x8A, payload), "ping of {len}");
        }
        // An unsolicited pong gets no answer; the next echo comes straight back.
        let mut wire = frame(0x8A, b"heartbeat");
        wire.extend(text(b"next"));
        s.write_all(&wire).unwrap();
        assert_eq!(read_frame(&mut s), (0x81, b"next".to_vec()));
    });
}

#[test]
fn frames_may_arrive_one_byte_at_a_time_and_many_per_write() {
    each_backend(&[], |server| {
        let mut s = open_ws(server.addr);
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for b in binary(&payload) {
            s.write_all(&[b]).unwrap();
        }
        assert_eq!(read_frame(&mut s), (0x82, payload));
        // 500 messages of 0..200 bytes in one write come back in order.
        let msgs: Vec<Vec<u8>> = (0..500usize)
            .map(|i| (0..i % 200).map(|j| (i + j) as u8).collect())
            .collect();
        let wire: Vec<u8> = msgs.iter().flat_map(|m| binary(m)).collect();
        s.write_all(&wire).unwrap();
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(&read_frame(&mut s), &(0x82, m.clone()), "message {i}");
        }
    });
}

#[test]
fn oversized_message_is_refused_from_a_16_bit_header_too() {
    each_backend(&["--max-message", "1024"], |server| {
        let mut s = open_ws(server.addr);
        s.write_all(&[0x81, 0xFE, 0x07, 0xD0, 1, 2, 3, 4]).unwrap();
        let start = Instant::now();
        assert_eq!(read_close(&mut s), Some(1009), "2000-byte text header");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_tcp_closed(&mut s, Duration::from_secs(5));
    });
}

#[test]
fn default_limit_is_16_mib() {
    each_backend(&[], |server| {
        // One byte over, header only: refused at once.
        let mut s = open_ws(server.addr);
        let mut header = vec![0x82, 0xFF];
        header.extend_from_slice(&((16u64 << 20) + 1).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        s.write_all(&header).unwrap();
        assert_eq!(read_close(&mut s), Some(1009));
        // Exactly 16 MiB is echoed.
        let mut s = open_ws(server.addr);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let payload: Vec<u8> = (0..16usize << 20).map(|i| (i * 13) as u8).collect();
        let wire = binary(&payload);
        let (first, echoed) = std::thread::scope(|scope| {
            let mut w = s.try_clone().unwrap();
            let writer = scope.spawn(move || w.write_all(&wire));
            let got = read_frame(&mut s);
            writer.join().unwrap().unwrap();
            got
        });
        assert_eq!(first, 0x82);
        assert!(echoed == payload, "16 MiB echo differs");
    });
}

#[test]
fn server_close_waits_for_the_peer_then_drops_it() {
    // The idle timeout starts a server-side close; --close-timeout-ms bounds
    // how long a silent peer keeps its connection.
    each_backend(
        &["--idle-timeout-ms", "200", "--close-timeout-ms", "1000"],
        |server| {
            let mut s = open_ws(server.addr);
            assert_eq!(read_close(&mut s), Some(1001));
            let sent = Instant::now();
            assert_tcp_closed(&mut s, Duration::from_secs(5));
            let waited = sent.elapsed();
            assert!(
                waited >= Duration::from_millis(700),
                "dropped {waited:?} after the close: the peer had no time to answer"
            );
            assert!(
                waited < Duration::from_secs(4),
                "dropped only after {waited:?}"
            );
        },
    );
    // A peer that answers is let go at once, long before the close timeout.
    each_backend(
        &["--idle-timeout-ms", "200", "--close-timeout-ms", "10000"],
        |server| {
            let mut s = open_ws(server.addr);
            assert_eq!(read_close(&mut s), Some(1001));
            s.write_all(&close(1001, b"")).unwrap();
            let answered = Instant::now();
            assert_tcp_closed(&mut s, Duration::from_secs(5));
            assert!(answered.elapsed() < Duration::from_secs(3));
        },
    );
}

/// A stopped and resumed server (SIGSTOP/SIGCONT, a debugger, a cgroup
/// freeze) gets EINTR from its waits; it must carry on with every
/// connection it had, on both shards, and keep accepting.
#[test]
fn a_stopped_and_resumed_server_keeps_its_connections() {
    for backend in BACKENDS {
        let server = Server::start(&["echo", "--backend", backend, "--shards", "2"]);
        let mut clients: Vec<_> = (0..4).map(|_| tungstenite_client(&server)).collect();
        for round in 0..5 {
            for signal in ["-STOP", "-CONT"] {
                let status = std::process::Command::new("kill")
                    .args([signal, &server.pid().to_string()])
                    .status()
                    .unwrap();
                assert!(status.success());
                std::thread::sleep(Duration::from_millis(50));
            }
            for (i, ws) in clients.iter_mut().enumerate() {
                let text = format!("{backend} round {round} client {i}");
                ws.send(Message::text(text.clone())).unwrap();
                assert_eq!(ws.read().unwrap(), Message::text(text));
            }
            let mut fresh = tungstenite_client(&server);
            fresh.send(Message::text("new")).unwrap();
            assert_eq!(fresh.read().unwrap(), Message::text("new"), "{backend}");
        }
    }
}
