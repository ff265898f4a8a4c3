//! Time bounds of the challenge, per GPU class: one table, with its derivation.
//!
//! No GPU was at hand when this table was written, so each bound is *derived* from published
//! figures, not measured. `scripts/gpu-check` prints the measured kernel time and TOPS on a
//! real card; replace a row's derivation by its measurement when one is taken.
//!
//! # Derivation
//! * **Work.** `C = A·B` for `n = 32768`: `2·n³ = 7.04·10¹³` int8 operations (multiply and add
//!   counted separately).
//! * **Peak dp4a rate of a class** = SMs × boost clock × 512 ops per SM per clock: since
//!   Volta an SM issues 64 `dp4a` per clock on its INT32 lanes (the rate NVIDIA's own
//!   non-tensor INT8 figures use, e.g. A100: 108 × 1.41 GHz × 512 = 78 TOPS), and one `dp4a`
//!   is 4 multiply-adds = 8 ops. Where a class holds several boards (H100 SXM and PCIe are
//!   both `H100-80GB`), the slowest board's SM count and clock are used.
//! * **Kernel efficiency** [`KERNEL_EFFICIENCY_PCT`] = 30 %: the agent's kernel is a plain
//!   shared-memory tiled `dp4a` kernel (8 shared loads per 16 `dp4a`), far from peak.
//! * **Safety factor** [`SAFETY_FACTOR_PCT`] = 2× on the compute time, for clocks below
//!   boost (power and thermal limits) and an efficiency guess that may be high.
//! * **Fixed allowance**, paid by an honest host and by a cheater alike: copying C (4·n² =
//!   4 GiB) to the host at ≥ 5 GB/s (860 ms), hashing it at ≥ 4 GB/s over the host's cores
//!   (1070 ms), expanding A and B and allocating (200 ms), and the network: the long-poll
//!   wake-up plus the commitment's POST (1500 ms). Together [`FIXED_ALLOWANCE_MS`].
//! * `commit_within_ms = 2 × work / (peak × 30 %) + 3630 ms`.
//!
//! # What it excludes (and what it does not)
//! A cheater has roughly `commit_within_ms − (its own copy-free overhead, ~1.5 s)` for the
//! compute. At the H100-80GB bound (8.1 s) that asks for ≈ 10 TOPS sustained:
//! * a 16-core desktop CPU (AVX2 `vpmaddubsw`/`vpmaddwd`, ~32 int8 MACs per cycle per core
//!   at ~4.5 GHz ≈ 4.6 TOPS peak, less for signed×signed) cannot meet it;
//! * a dual-socket AVX-512 VNNI server (2 × 28 cores × 2 × 64 MACs per cycle at ~2.5 GHz ≈
//!   36 TOPS peak) **can**, and so can an AMX server (Sapphire Rapids: 1024 int8 MACs per
//!   cycle per core, hundreds of TOPS per socket);
//! * a lower GPU class meets a higher class's bound whenever its dp4a rate is close: an
//!   RTX 4090 (165 TOPS peak dp4a) is *faster* than an H100 at dp4a, so the challenge
//!   proves "at least this much int8 throughput", never the model. The model comes from
//!   NVML (`reported`) or from confidential-computing evidence (`cc_attested`).
//!
//! A tensor-core kernel (`mma.sync` int8) would raise honest rates 4–8× and let the bounds
//! shrink until server CPUs fall out; that is the next step, not done here.

use serde::{Deserialize, Serialize};

/// The class key of the simulated backend's GPUs (whatever models they imitate). The
/// server uses it only for hosts whose inventory names the simulated backend, and honours
/// it only in demo mode.
pub const SIMULATED_CLASS: &str = "simulated";

/// Matrix size of every real class.
pub const N_REAL: u32 = 32_768;
/// Matrix size of the simulated class (the CPU computes it in milliseconds).
pub const N_SIMULATED: u32 = 256;
/// Leaves opened per challenge. With `k = 24`, a C with a fraction `f` of wrong leaves
/// passes with probability at most `(1 - f)^24`: a cheater that skips half the work is
/// caught with probability `1 - 6·10⁻⁸`. An answer of 24 openings at `n = 32768` is about
/// 48 KiB of JSON, under the exchange's 64 KiB body limit.
pub const K_DEFAULT: u32 = 24;
/// Assumed fraction of peak dp4a rate the agent's kernel reaches, in percent.
pub const KERNEL_EFFICIENCY_PCT: u64 = 30;
/// Factor on the compute time, in percent.
pub const SAFETY_FACTOR_PCT: u64 = 200;
/// Copy + hash + expand + network, in ms (see the module docs).
pub const FIXED_ALLOWANCE_MS: u64 = 860 + 1070 + 200 + 1500;
/// The simulated class's bound: generous, honoured only in demo mode.
pub const SIMULATED_COMMIT_WITHIN_MS: u64 = 30_000;
/// Peak dp4a ops per SM per clock (64 dp4a × 8 ops).
pub const DP4A_OPS_PER_SM_CLOCK: u64 = 512;

/// The challenge size and deadline for one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeBound {
    pub n: u32,
    /// Leaves the server names after the commitment.
    pub k: u32,
    /// From `issued_at` to the commitment's arrival, round trips included.
    pub commit_within_ms: u64,
}

/// One row of the table: published SM count and boost clock of the class's slowest board.
#[derive(Debug, Clone, Copy)]
pub struct ClassFigures {
    /// The class name before its memory suffix (`H100` for `H100-80GB`).
    pub model: &'static str,
    pub sms: u64,
    pub boost_mhz: u64,
}

impl ClassFigures {
    /// Peak dp4a rate in ops per millisecond.
    pub const fn peak_ops_per_ms(&self) -> u64 {
        self.sms * self.boost_mhz * 1000 * DP4A_OPS_PER_SM_CLOCK
    }

    /// Peak dp4a TOPS (rounded down).
    pub const fn peak_tops(&self) -> u64 {
        self.peak_ops_per_ms() / 1_000_000_000
    }

    /// The expected kernel time at `n`, ms.
    pub const fn kernel_ms(&self, n: u32) -> u64 {
        let ops = 2 * (n as u128) * (n as u128) * (n as u128);
        let rate = self.peak_ops_per_ms() as u128 * KERNEL_EFFICIENCY_PCT as u128 / 100;
        ops.div_ceil(rate) as u64
    }

    /// `commit_within_ms` at `n`.
    pub const fn commit_within_ms(&self, n: u32) -> u64 {
        self.kernel_ms(n) * SAFETY_FACTOR_PCT / 100 + FIXED_ALLOWANCE_MS
    }
}

/// Published figures (SMs, boost MHz) of the slowest board of each class.
pub const CLASS_FIGURES: &[ClassFigures] = &[
    // H100 PCIe (114 SMs, 1755 MHz) is the slow member of H100-80GB; SXM5 has 132 SMs, 1980 MHz.
    ClassFigures { model: "H100", sms: 114, boost_mhz: 1755 },
    // H200 NVL (132 SMs, 1785 MHz); H200 SXM boosts to 1980 MHz.
    ClassFigures { model: "H200", sms: 132, boost_mhz: 1785 },
    ClassFigures { model: "GH200", sms: 132, boost_mhz: 1980 },
    ClassFigures { model: "H800", sms: 114, boost_mhz: 1755 },
    // B200: 148 SMs at about 1965 MHz; dp4a rate per SM assumed equal to Hopper's.
    ClassFigures { model: "B200", sms: 148, boost_mhz: 1965 },
    ClassFigures { model: "A100", sms: 108, boost_mhz: 1410 },
    ClassFigures { model: "A800", sms: 108, boost_mhz: 1410 },
    ClassFigures { model: "L40S", sms: 142, boost_mhz: 2520 },
    ClassFigures { model: "L40", sms: 142, boost_mhz: 2490 },
    ClassFigures { model: "L4", sms: 58, boost_mhz: 2040 },
    ClassFigures { model: "A10G", sms: 80, boost_mhz: 1710 },
    ClassFigures { model: "A10", sms: 72, boost_mhz: 1695 },
    ClassFigures { model: "A40", sms: 84, boost_mhz: 1740 },
    // V100 PCIe (1380 MHz) is slower than SXM2 (1530 MHz).
    ClassFigures { model: "V100", sms: 80, boost_mhz: 1380 },
    ClassFigures { model: "T4", sms: 40, boost_mhz: 1590 },
    ClassFigures { model: "RTX6000ADA", sms: 142, boost_mhz: 2505 },
    ClassFigures { model: "RTX5090", sms: 170, boost_mhz: 2407 },
    ClassFigures { model: "RTX4090", sms: 128, boost_mhz: 2520 },
    ClassFigures { model: "RTX4090D", sms: 114, boost_mhz: 2520 },
    ClassFigures { model: "RTX4080", sms: 76, boost_mhz: 2505 },
    ClassFigures { model: "RTX3090TI", sms: 84, boost_mhz: 1860 },
    ClassFigures { model: "RTX3090", sms: 82, boost_mhz: 1695 },
    ClassFigures { model: "RTXA6000", sms: 84, boost_mhz: 1800 },
];

/// The bound for a class name as [`crate::GpuClass`] writes it (`H100-80GB`), or
/// [`SIMULATED_CLASS`]. `None` for a class the table does not know: such a GPU cannot be
/// challenged (no bound can be set without its figures) and stays at `reported`.
pub fn bound_for(class: &str) -> Option<ChallengeBound> {
    if class == SIMULATED_CLASS {
        return Some(ChallengeBound { n: N_SIMULATED, k: K_DEFAULT, commit_within_ms: SIMULATED_COMMIT_WITHIN_MS });
    }
    let model =
        class.rsplit_once('-').map_or(class, |(model, memory)| if memory.ends_with("GB") { model } else { class });
    let figures = CLASS_FIGURES.iter().find(|f| f.model == model)?;
    Some(ChallengeBound { n: N_REAL, k: K_DEFAULT, commit_within_ms: figures.commit_within_ms(N_REAL) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_classes_have_bounds_and_unknown_ones_none() {
        let h100 = bound_for("H100-80GB").unwrap();
        assert_eq!(h100.n, N_REAL);
        assert_eq!(bound_for("H100-94GB"), Some(h100));
        assert!(bound_for("RTX4090-24GB").is_some());
        assert!(bound_for("A100-40GB").is_some());
        assert_eq!(bound_for("SOME-NEW-CARD-24GB"), None);
        assert_eq!(bound_for("GPU-24GB"), None);
        let sim = bound_for(SIMULATED_CLASS).unwrap();
        assert_eq!((sim.n, sim.commit_within_ms), (N_SIMULATED, SIMULATED_COMMIT_WITHIN_MS));
    }

    #[test]
    fn derivation_matches_the_documented_figures() {
        let a100 = CLASS_FIGURES.iter().find(|f| f.model == "A100").unwrap();
        assert_eq!(a100.peak_tops(), 77, "108 SMs x 1.41 GHz x 512 = 77.97 TOPS");
        let h100 = bound_for("H100-80GB").unwrap();
        // 7.04e13 ops / (102.4 TOPS x 30 %) = 2290 ms; x2 + 3630.
        assert_eq!(h100.commit_within_ms, 2 * 2290 + 3630);
    }

    #[test]
    fn every_gpu_class_model_has_a_row() {
        for model in CLASS_FIGURES {
            assert!(bound_for(&format!("{}-24GB", model.model)).is_some());
        }
    }

    /// `cargo test -p capex-core print_bound_table -- --nocapture` prints the doc's table.
    #[test]
    fn print_bound_table() {
        for f in CLASS_FIGURES {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                f.model,
                f.sms,
                f.boost_mhz,
                f.peak_tops(),
                f.kernel_ms(N_REAL),
                f.commit_within_ms(N_REAL)
            );
        }
    }
}
