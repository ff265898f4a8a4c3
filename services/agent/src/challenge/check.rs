//! `capex-agent gpu-check`: on a machine with NVIDIA GPUs, prints the NVML inventory, runs
//! the challenge kernel on each GPU at the simulated `n` and at its class's `n`, checks `k`
//! random leaves against the CPU reference, and prints the kernel time, the throughput and
//! the class's bound. Run through `scripts/gpu-check`.

use std::time::Instant;

use anyhow::Context;
use capex_core::GpuClass;
use capex_core::challenge::bounds::{K_DEFAULT, N_SIMULATED};
use capex_core::challenge::{ChallengeSpec, MerkleTree, SEGMENT_COLS, bound_for, c_segment, pick_rows};

use super::cuda;
use crate::gpu::{GpuProbe, NvmlProbe};

/// Runs the check; `sizes` replaces the default sizes (simulated n, class n). Returns
/// whether every kernel result matched the reference.
pub fn run(sizes: Option<Vec<u32>>) -> anyhow::Result<bool> {
    let mut probe = NvmlProbe::open().context("no NVIDIA driver: NVML does not load")?;
    let inventory = probe.inventory()?;
    println!(
        "driver {}  cuda {}  {} GPU(s)",
        inventory.driver_version.as_deref().unwrap_or("-"),
        inventory.cuda_version.as_deref().unwrap_or("-"),
        inventory.gpus.len()
    );
    let devices = cuda::devices().context("the CUDA driver API does not load (libcuda.so.1)")?;
    let mut all_ok = true;
    for gpu in &inventory.gpus {
        let class = GpuClass::from_nvml(&gpu.name, gpu.memory_total_mib);
        let bound = bound_for(class.as_str());
        let cc = devices.iter().find(|d| d.uuid == gpu.uuid).map(|d| d.compute_capability);
        println!(
            "\nGPU {} {} {} {} MiB class {class} compute capability {}",
            gpu.index,
            gpu.uuid,
            gpu.name,
            gpu.memory_total_mib,
            cc.map_or("? (not seen by CUDA)".to_string(), |(major, minor)| format!("{major}.{minor}"))
        );
        match bound {
            Some(b) => println!("  bound: n {} k {} commit within {} ms", b.n, b.k, b.commit_within_ms),
            None => println!("  bound: none (class not in the table: this GPU cannot be challenged)"),
        }
        let sizes = sizes.clone().unwrap_or_else(|| {
            let mut s = vec![N_SIMULATED];
            s.extend(bound.map(|b| b.n));
            s
        });
        for n in sizes {
            all_ok &= check_one(&gpu.uuid, n, bound.map(|b| b.commit_within_ms))?;
        }
    }
    // The confidential-computing probe is its own command (`capex-agent cc-probe`), run by
    // scripts/gpu-check right after this one.
    Ok(all_ok)
}

fn check_one(uuid: &str, n: u32, commit_within_ms: Option<u64>) -> anyhow::Result<bool> {
    let spec = ChallengeSpec::new(rand::random(), n)?;
    let (c, t) = match cuda::compute_c(&spec, uuid) {
        Ok(out) => out,
        Err(err) => {
            println!("  n {n}: FAILED to run the kernel: {err}");
            return Ok(false);
        }
    };
    let start = Instant::now();
    let tree = MerkleTree::build(&c);
    let hash_ms = start.elapsed().as_secs_f64() * 1e3;
    let asked = pick_rows(&spec, &rand::random(), K_DEFAULT);
    let wrong: Vec<u32> = asked
        .iter()
        .copied()
        .filter(|&leaf| {
            let start = leaf as usize * SEGMENT_COLS;
            c[start..start + SEGMENT_COLS] != c_segment(&spec, leaf)
        })
        .collect();
    let ops = 2.0 * f64::from(n).powi(3);
    let tops = ops / (t.kernel_ms / 1e3) / 1e12;
    let total_ms = t.expand_ms + t.kernel_ms + t.copy_ms + hash_ms;
    println!(
        "  n {n}: setup {:.1} ms  expand {:.1} ms  kernel {:.1} ms ({tops:.1} TOPS)  copy {:.1} ms  hash {hash_ms:.1} ms  \
         total {total_ms:.0} ms{}  root {}",
        t.setup_ms,
        t.expand_ms,
        t.kernel_ms,
        t.copy_ms,
        commit_within_ms.map_or(String::new(), |b| format!(" of {b} ms allowed")),
        hex::encode(&tree.root()[..8]),
    );
    if wrong.is_empty() {
        println!("  n {n}: {} leaves match the CPU reference", asked.len());
        Ok(true)
    } else {
        println!("  n {n}: WRONG: leaves {wrong:?} differ from the CPU reference");
        Ok(false)
    }
}
