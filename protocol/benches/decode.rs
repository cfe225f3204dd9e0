//! Heartbeat decoding throughput on one core.

use alarmnet_protocol::{Prefix, decode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const TOPIC: &str = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/hb";
const HB: &[u8] = include_bytes!("../tests/fixtures/valid/hb.json");

fn heartbeat(c: &mut Criterion) {
    let prefix = Prefix::default();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("heartbeat", |b| {
        b.iter(|| {
            decode(&prefix, black_box(TOPIC), black_box(HB))
                .map(|_| ())
                .map_err(|e| e.reason)
        })
    });
    group.finish();
}

criterion_group!(benches, heartbeat);
criterion_main!(benches);
