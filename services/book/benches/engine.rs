//! Throughput of the matching engine on a seeded stream of 1M mixed commands.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

mod workload;

const COMMANDS: usize = 1_000_000;
const SEED: u64 = 0x00C0_FFEE;

fn engine(c: &mut Criterion) {
    let (warm, commands) = workload::workload(SEED, COMMANDS);
    let mut group = c.benchmark_group("book");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.bench_function("mixed_1m_commands", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut book| black_box(workload::run(&mut book, black_box(&commands))),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
