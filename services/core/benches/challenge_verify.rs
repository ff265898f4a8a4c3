//! The server's cost of verifying one GPU's answer at the default n and k (one core).
//! `cargo bench --bench challenge_verify` prints it; the target is at most 50 ms.

use capex_core::challenge::bounds::{K_DEFAULT, N_REAL};
use capex_core::challenge::testing::sparse_answer;
use capex_core::challenge::{ChallengeSpec, pick_rows, verify_answer};
use criterion::{Criterion, criterion_group, criterion_main};

fn verify(c: &mut Criterion) {
    let spec = ChallengeSpec::new([42; 32], N_REAL).expect("valid spec");
    let asked = pick_rows(&spec, &[9; 32], K_DEFAULT);
    let (root, answer) = sparse_answer(&spec, &asked, None);
    let body = serde_json::to_vec(&answer).expect("serialises");
    println!("answer body at n = {N_REAL}, k = {K_DEFAULT}: {} bytes of JSON", body.len());
    let mut group = c.benchmark_group("challenge");
    group.sample_size(20);
    group.bench_function(format!("verify_answer n={N_REAL} k={K_DEFAULT}"), |b| {
        b.iter(|| verify_answer(&spec, &root, &asked, &answer).expect("honest answer verifies"))
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
