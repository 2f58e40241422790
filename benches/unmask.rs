#![allow(missing_docs)] // criterion_group! generates undocumented public items.
//! Every unmask kernel this CPU can run, beside the scalar word-at-a-time
//! loop, at 16 B, 1 KiB and 64 KiB. A kernel that does not beat scalar has
//! no reason to exist.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use surge::protocol::mask::available_kernels;

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [16usize, 1024, 64 * 1024] {
        let mut buf = vec![0x5Au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        for (name, kernel) in available_kernels() {
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| kernel(black_box(&mut buf), [1, 2, 3, 4], 1));
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = unmask
}
criterion_main!(benches);
