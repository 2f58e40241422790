//! permessage-deflate against real peers: the Python `websockets` client
//! (which offers it by default) under each server policy and driver, and a
//! decompression bomb over a raw socket.

mod support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};
use support::*;

#[test]
fn python_websockets_negotiates_and_round_trips() {
    let python = venv().join("bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/deflate_client.py");
    for backend in ["epoll", "uring"] {
        for (policy, expected) in [
            (
                "no-context-takeover",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            ),
            ("on", "permessage-deflate"),
        ] {
            let server = Server::start(&["echo", "--backend", backend, "--deflate", policy]);
            let out = output_within(
                Command::new(&python).args([script, &server.url("/echo"), expected]),
                Duration::from_secs(120),
            );
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!("{backend} {policy}: {report}");
            assert!(out.status.success(), "{backend} {policy}: {report}");
            assert!(report.contains("all deflate round trips OK"), "{report}");
        }
    }
}

#[test]
fn deflate_off_answers_without_the_extension() {
    let server = Server::start(&["echo", "--deflate", "off"]);
    let mut s = connect(server.addr);
    let ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    s.write_all(upgrade_request("/", ext).as_bytes()).unwrap();
    let (status, head) = read_response_head(&mut s);
    assert_eq!(status, 101);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    // Without the extension, RSV1 is a protocol error.
    s.write_all(&frame(0xC1, b"x")).unwrap();
    assert_eq!(read_close(&mut s), Some(1002));
}

/// 1 GiB of zeros, deflated: deflate tops out near 1:1000, so about 1 MB.
fn bomb() -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let zeros = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(2 << 20);
    for _ in 0..1024 {
        let before = c.total_in();
        while c.total_in() - before < zeros.len() as u64 {
            out.reserve(64 << 10);
            let done = (c.total_in() - before) as usize;
            c.compress_vec(&zeros[done..], &mut out, FlushCompress::None)
                .unwrap();
        }
    }
    loop {
        out.reserve(64 << 10);
        c.compress_vec(&[], &mut out, FlushCompress::Sync).unwrap();
        if out.ends_with(&[0, 0, 0xff, 0xff]) {
            out.truncate(out.len() - 4);
            return out;
        }
    }
}

#[test]
fn a_decompression_bomb_is_stopped_with_1009_while_inflating() {
    let wire = bomb();
    assert!(wire.len() < 2 << 20, "{}", wire.len());
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["echo", "--backend", backend]);
        let pid = server.pid();
        let before = proc_status_kib(pid, "VmRSS");
        let mut s = connect(server.addr);
        let ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
        s.write_all(upgrade_request("/", ext).as_bytes()).unwrap();
        let (status, head) = read_response_head(&mut s);
        assert_eq!(status, 101);
        assert!(head.contains("permessage-deflate"), "{head}");
        let start = Instant::now();
        // RSV1 + binary: one compressed message of 1 GiB.
        let _ = s.write_all(&frame(0xC2, &wire));
        assert_eq!(read_close(&mut s), Some(1009), "{backend}");
        let took = start.elapsed();
        let grown = proc_status_kib(pid, "VmRSS").saturating_sub(before);
        println!("{backend}: 1009 after {took:?}, RSS grew {grown} KiB");
        // The default limit is 16 MiB: inflating stops within a step of it.
        assert!(grown < 64 * 1024, "{backend}: RSS grew {grown} KiB");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[test]
fn broadcasts_are_compressed_once_per_shard() {
    let python = venv().join("bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/hub_deflate.py");
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["serve", "--backend", backend, "--shards", "2"]);
        let out = output_within(
            Command::new(&python).args([script, &server.url("/hub"), "20", "50"]),
            Duration::from_secs(120),
        );
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{backend}: {report}");
        assert!(
            report.contains("every subscriber got every message"),
            "{report}"
        );
        // 50 messages to 20 subscribers: compressed at most once per shard
        // (and turn), never once per subscriber.
        let compressed = metric(server.addr, "surge_pubsub_compressed_total");
        let delivered = metric(server.addr, "surge_pubsub_delivered_total");
        println!("{backend}: {delivered} deliveries, {compressed} compressions");
        assert_eq!(delivered, 20 * 50, "{backend}");
        assert!((50..=100).contains(&compressed), "{backend}: {compressed}");
    }
}

#[test]
fn the_deflate_cap_answers_later_connections_without_it() {
    let server = Server::start(&["echo", "--shards", "1", "--max-deflate-conns", "1"]);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let open = || {
        let mut s = connect(server.addr);
        s.write_all(upgrade_request("/", offer).as_bytes()).unwrap();
        let (status, head) = read_response_head(&mut s);
        assert_eq!(status, 101);
        (head.contains("permessage-deflate"), s)
    };
    let (first, mut held) = open();
    assert!(first);
    assert!(!open().0, "over the cap: no extension");
    assert_eq!(metric(server.addr, "surge_deflate_connections"), 1);
    held.write_all(&close(1000, b"")).unwrap();
    assert_eq!(read_close(&mut held), Some(1000));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(server.addr, "surge_deflate_connections") != 0 {
        assert!(Instant::now() < deadline, "the count never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(open().0, "room again once the first one left");
}

#[test]
fn corrupt_compressed_data_closes_with_1007() {
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["echo", "--backend", backend]);
        let mut s = connect(server.addr);
        let ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
        s.write_all(upgrade_request("/", ext).as_bytes()).unwrap();
        let (status, head) = read_response_head(&mut s);
        assert_eq!(status, 101);
        assert!(head.contains("permessage-deflate"), "{head}");
        // 0xff opens a deflate block of the reserved type 3.
        s.write_all(&frame(0xC1, &[0xff; 16])).unwrap();
        assert_eq!(read_close(&mut s), Some(1007), "{backend}");
        // RSV1 on a continuation frame is a protocol error even so.
        let mut s = connect(server.addr);
        s.write_all(upgrade_request("/", ext).as_bytes()).unwrap();
        read_response_head(&mut s);
        s.write_all(&frame(0x01, b"a")).unwrap();
        s.write_all(&frame(0xC0, b"b")).unwrap();
        assert_eq!(read_close(&mut s), Some(1002), "{backend}");
    }
}

/// Inflates one permessage-deflate payload (no context takeover).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::with_capacity(1024);
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
        .expect("valid deflate data");
    out
}

#[test]
fn ticker_feeds_compress_once_or_per_connection() {
    for (mode, once) in [("once", true), ("per-connection", false)] {
        let server = Server::start(&[
            "serve",
            "--shards",
            "1",
            "--symbols",
            "2",
            "--rate",
            "200",
            "--deflate-threshold",
            "0",
            "--deflate-broadcast",
            mode,
        ]);
        let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        let mut subscribers: Vec<_> = (0..3)
            .map(|_| {
                let mut s = connect(server.addr);
                s.write_all(upgrade_request("/ticker", offer).as_bytes())
                    .unwrap();
                let (status, head) = read_response_head(&mut s);
                assert_eq!(status, 101, "{head}");
                assert!(
                    head.contains("permessage-deflate; server_no_context_takeover"),
                    "{mode}: {head}"
                );
                s
            })
            .collect();
        for s in &mut subscribers {
            for _ in 0..20 {
                let (first, payload) = read_frame(s);
                assert_eq!(first, 0xC1, "{mode}: a compressed text frame");
                let tick = String::from_utf8(inflate(&payload)).unwrap();
                let fields: Vec<&str> = tick.split(' ').collect();
                assert_eq!(fields.len(), 4, "{mode}: {tick:?}");
                assert!(["AAPL", "MSFT"].contains(&fields[0]), "{mode}: {tick:?}");
            }
        }
        // Ticks keep flowing between the two scrapes, so each assertion
        // reads the side it bounds from above last.
        let (compressed, delivered) = if once {
            let compressed = metric(server.addr, "surge_pubsub_compressed_total");
            (
                compressed,
                metric(server.addr, "surge_pubsub_delivered_total"),
            )
        } else {
            let delivered = metric(server.addr, "surge_pubsub_delivered_total");
            (
                metric(server.addr, "surge_pubsub_compressed_total"),
                delivered,
            )
        };
        println!("{mode}: {delivered} deliveries, {compressed} compressions");
        assert!(delivered >= 60, "{mode}: {delivered}");
        if once {
            assert!(
                compressed * 2 < delivered,
                "{mode}: {compressed} of {delivered}"
            );
        } else {
            assert!(
                compressed >= delivered,
                "{mode}: {compressed} of {delivered}"
            );
        }
    }
}
