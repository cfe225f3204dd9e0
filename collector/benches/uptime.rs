//! A 30-day uptime report over 10 000 nodes and 1 000 000 stored transitions, by node and
//! by region (target: under 1 s). Run: `cargo bench -p alarmnet-collector --bench uptime`.

use std::hint::black_box;
use std::time::Duration;

use alarmnet_collector::model::UnixMillis;

use alarmnet_collector::uptime::{
    DEFAULT_TIME_ZONE, Filter, GroupBy, Inputs, Query, Window, report, time_zone,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{DAY, NOW, uptime_data};

fn bench(c: &mut Criterion) {
    let data = uptime_data();
    let blind: Vec<Window> = data
        .blind
        .iter()
        .map(|&(from, to)| {
            Window::new(UnixMillis::from_millis(from), UnixMillis::from_millis(to))
                .expect("ordered")
        })
        .collect();
    let tz = time_zone(DEFAULT_TIME_ZONE).expect("the time zone database has Asia/Shanghai");
    let mut group = c.benchmark_group("uptime_30d_10k_nodes_1m_transitions");
    group.sample_size(10);
    group.throughput(Throughput::Elements(data.transitions.len() as u64));
    for by in [GroupBy::Node, GroupBy::Region] {
        let query = Query {
            window: Window::last(
                Duration::from_millis(30 * DAY),
                UnixMillis::from_millis(NOW),
            ),
            now: UnixMillis::from_millis(NOW),
            by,
            filter: Filter::default(),
            outage_list: false,
            tz: tz.clone(),
        };
        group.bench_function(by.as_str(), |b| {
            b.iter(|| {
                let r = report(
                    &query,
                    Inputs {
                        nodes: &data.nodes,
                        transitions: &data.transitions,
                        silences: &data.silences,
                        blind: &blind,
                        tests: &[],
                    },
                )
                .expect("generated input is sorted");
                black_box(r.rows.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
