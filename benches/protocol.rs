#![allow(missing_docs)] // criterion_group! generates undocumented public items.
//! Frame header decode, whole-message receive and handshake parse: the
//! per-message and per-connection costs of the protocol core.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use surge::protocol::frame::{encode_masked_frame, FrameHeader, OpCode};
use surge::protocol::handshake::{header_buf, parse_request};
use surge::protocol::ServerConn;

const CHROME_UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) \
AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n\
Origin: http://127.0.0.1:9001\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn header_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header_decode");
    for (name, len) in [("7bit", 16usize), ("16bit", 1024), ("64bit", 1 << 17)] {
        let mut wire = Vec::new();
        encode_masked_frame(
            &mut wire,
            true,
            OpCode::Binary,
            &vec![0u8; len],
            [1, 2, 3, 4],
        );
        g.bench_function(name, |b| b.iter(|| FrameHeader::decode(black_box(&wire))));
    }
    g.finish();
}

fn receive_messages(c: &mut Criterion) {
    let mut g = c.benchmark_group("server_receive");
    for size in [16usize, 1024] {
        // 64 whole text messages in one read, as a pipelining client sends them.
        let mut wire = Vec::new();
        for _ in 0..64 {
            encode_masked_frame(
                &mut wire,
                true,
                OpCode::Text,
                &vec![b'a'; size],
                [9, 8, 7, 6],
            );
        }
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("64x{size}B"), |b| {
            let mut conn = ServerConn::new(1 << 24);
            let mut buf = wire.clone();
            let mut out = Vec::new();
            b.iter(|| {
                buf.copy_from_slice(&wire);
                let mut pos = 0;
                while let Ok(step) = conn.receive(&mut buf[pos..], &mut out, None) {
                    if step.consumed == 0 {
                        break;
                    }
                    pos += step.consumed;
                    black_box(step.event);
                }
            });
        });
    }
    g.finish();
}

fn handshake_parse(c: &mut Criterion) {
    c.bench_function("handshake_parse_validate", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            let mut headers = header_buf();
            let req = parse_request(black_box(CHROME_UPGRADE), &mut headers)
                .unwrap()
                .unwrap();
            let up = req.validate_upgrade().unwrap();
            out.clear();
            up.encode_accept(&mut out, None, None);
            black_box(&out);
        });
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = header_decode, receive_messages, handshake_parse
}
criterion_main!(benches);
