//! What refusing a command costs an agent, on one core: an unsigned command (refused before
//! any cryptography), a forged signature (one Ed25519 verification), and a valid command
//! (verification plus remembering its id). A flood of forged commands costs the agent this
//! much CPU per message, and nothing else: no test, no disk write.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use alarmnet_agent::protocol_state::{Admission, CommandSettings, SeenIds};
use alarmnet_protocol::signing::{CommandKey, TrustedKeys};
use alarmnet_protocol::{CmdAction, CmdId, KeyId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TOPIC: &str = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd";
const NOW: u64 = 1_789_700_000_000;

fn admission(c: &mut Criterion) {
    let key = CommandKey::from_seed(KeyId::new("centre-2026").expect("kid"), [7; 32]);
    let settings = CommandSettings {
        keys: TrustedKeys::new([(key.kid().clone(), key.public_key())]),
        allow_unsigned: false,
        max_skew: Duration::from_secs(30),
    };
    let fresh = || Admission::new(settings.clone(), BTreeSet::new(), SeenIds::default());
    let sealed = |k: &CommandKey, i: u64| {
        k.seal(
            TOPIC,
            CmdId::new(format!("c-{i}")).expect("id"),
            CmdAction::Check,
            NOW,
            NOW + 300_000,
        )
    };
    let mut unsigned = sealed(&key, 0);
    unsigned.seal = None;
    let impostor = CommandKey::from_seed(KeyId::new("centre-2026").expect("kid"), [8; 32]);
    let forged = sealed(&impostor, 0);
    // Distinct valid commands, so each is new (ids are remembered).
    let valid: Vec<_> = (0..4_096).map(|i| sealed(&key, i)).collect();

    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    let mut a = fresh();
    group.bench_function("unsigned_refused", |b| {
        b.iter(|| a.admit(black_box(TOPIC), black_box(&unsigned), false, NOW))
    });
    let mut a = fresh();
    group.bench_function("bad_signature_refused", |b| {
        b.iter(|| a.admit(black_box(TOPIC), black_box(&forged), false, NOW))
    });
    let mut a = fresh();
    let mut i = 0;
    group.bench_function("valid_accepted", |b| {
        b.iter(|| {
            i = (i + 1) % valid.len();
            if i == 0 {
                a = fresh();
            }
            a.admit(black_box(TOPIC), black_box(&valid[i]), false, NOW)
        })
    });
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
