#![allow(missing_docs)] // criterion_group! generates undocumented public items.
//! Streaming UTF-8 validation of 64 KiB text, whole and in 1 KiB pieces,
//! beside `std::str::from_utf8` on the same bytes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use surge::protocol::utf8::Utf8Validator;

fn corpus(multibyte: bool) -> Vec<u8> {
    let unit = if multibyte {
        "κόσμε €𐍈 日本語 "
    } else {
        "market data tick AAPL 189.23 "
    };
    unit.repeat(64 * 1024 / unit.len() + 1).into_bytes()[..64 * 1024].to_vec()
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8_64KiB");
    for (name, multibyte) in [("ascii", false), ("multibyte", true)] {
        let mut bytes = corpus(multibyte);
        // Cutting at 64 KiB may split a code point; trim to a boundary.
        while std::str::from_utf8(&bytes).is_err() {
            bytes.pop();
        }
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("{name}/std"), |b| {
            b.iter(|| std::str::from_utf8(black_box(&bytes)).is_ok())
        });
        g.bench_function(format!("{name}/whole"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&bytes)).and_then(|()| v.finish())
            })
        });
        g.bench_function(format!("{name}/1KiB_pieces"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(&bytes).chunks(1024) {
                    v.feed(piece).unwrap();
                }
                v.finish()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = utf8
}
criterion_main!(benches);
