//! GPU market classes, derived from the name NVML reports and the board's memory.
//!
//! A class names a market (`H100-80GB`, `RTX4090-24GB`). Known models map through a table;
//! an unknown model still gets a class (a slug of its name plus its memory), never an error,
//! so a new card can be registered and traded before the table learns about it.

use serde::{Deserialize, Serialize};

/// Longest class name accepted, in characters.
pub const GPU_CLASS_CHARS_MAX: usize = 64;

/// A market class such as `H100-80GB`. Always non-empty, at most
/// [`GPU_CLASS_CHARS_MAX`] characters of `[A-Za-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuClass(String);

impl GpuClass {
    /// The class of a GPU from its NVML name and total memory in MiB.
    pub fn from_nvml(name: &str, memory_total_mib: u64) -> GpuClass {
        let normalized = name.to_ascii_uppercase();
        let tokens: Vec<&str> = normalized
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|t| !t.is_empty() && *t != "NVIDIA" && *t != "GEFORCE")
            .collect();
        let memory_gb = marketed_memory_gb(memory_total_mib);
        for model in KNOWN_MODELS {
            if model.matches(&tokens) {
                let gb = model.nearest_memory_gb(memory_gb);
                return GpuClass(format!("{}-{}GB", model.class_prefix, gb));
            }
        }
        let mut slug: String = tokens.join("-").chars().take(GPU_CLASS_CHARS_MAX - 8).collect();
        if slug.is_empty() {
            slug = "GPU".to_string();
        }
        GpuClass(format!("{slug}-{memory_gb}GB"))
    }

    /// Accepts a class name as stored (e.g. read back from the database or a query).
    pub fn parse(text: &str) -> Option<GpuClass> {
        let ok = !text.is_empty()
            && text.len() <= GPU_CLASS_CHARS_MAX
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        ok.then(|| GpuClass(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GpuClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// NVML reports usable memory (a little under the marketed size: 81559 MiB on an
/// H100 80GB); round to whole GB the way boards are sold.
fn marketed_memory_gb(memory_total_mib: u64) -> u64 {
    (memory_total_mib + 512) / 1024
}

struct KnownModel {
    /// Every token must appear in the NVML name (upper-cased, NVIDIA/GeForce dropped).
    tokens: &'static [&'static str],
    /// No token of these may appear (tells `A100` from `A10`, `RTX 4090 D` from `RTX 4090`).
    excluded: &'static [&'static str],
    class_prefix: &'static str,
    /// Memory sizes the model ships with; the reported size snaps to the nearest one.
    memory_gb: &'static [u64],
}

impl KnownModel {
    fn matches(&self, tokens: &[&str]) -> bool {
        self.tokens.iter().all(|t| tokens.contains(t)) && !self.excluded.iter().any(|t| tokens.contains(t))
    }

    fn nearest_memory_gb(&self, memory_gb: u64) -> u64 {
        self.memory_gb.iter().copied().min_by_key(|gb| gb.abs_diff(memory_gb)).unwrap_or(memory_gb)
    }
}

/// Ordered: the first match wins, so more specific models come first.
const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel { tokens: &["GH200"], excluded: &[], class_prefix: "GH200", memory_gb: &[96, 144] },
    KnownModel { tokens: &["H200"], excluded: &[], class_prefix: "H200", memory_gb: &[141] },
    KnownModel { tokens: &["H100"], excluded: &[], class_prefix: "H100", memory_gb: &[80, 94, 96] },
    KnownModel { tokens: &["H800"], excluded: &[], class_prefix: "H800", memory_gb: &[80] },
    KnownModel { tokens: &["B200"], excluded: &[], class_prefix: "B200", memory_gb: &[180, 192] },
    KnownModel { tokens: &["A100"], excluded: &[], class_prefix: "A100", memory_gb: &[40, 80] },
    KnownModel { tokens: &["A800"], excluded: &[], class_prefix: "A800", memory_gb: &[40, 80] },
    KnownModel { tokens: &["L40S"], excluded: &[], class_prefix: "L40S", memory_gb: &[48] },
    KnownModel { tokens: &["L40"], excluded: &[], class_prefix: "L40", memory_gb: &[48] },
    KnownModel { tokens: &["L4"], excluded: &[], class_prefix: "L4", memory_gb: &[24] },
    KnownModel { tokens: &["A10G"], excluded: &[], class_prefix: "A10G", memory_gb: &[24] },
    KnownModel { tokens: &["A10"], excluded: &[], class_prefix: "A10", memory_gb: &[24] },
    KnownModel { tokens: &["A40"], excluded: &[], class_prefix: "A40", memory_gb: &[48] },
    KnownModel { tokens: &["V100"], excluded: &[], class_prefix: "V100", memory_gb: &[16, 32] },
    KnownModel { tokens: &["T4"], excluded: &[], class_prefix: "T4", memory_gb: &[16] },
    KnownModel { tokens: &["RTX", "6000", "ADA"], excluded: &[], class_prefix: "RTX6000ADA", memory_gb: &[48] },
    KnownModel { tokens: &["RTX", "5090"], excluded: &["D"], class_prefix: "RTX5090", memory_gb: &[32] },
    KnownModel { tokens: &["RTX", "4090"], excluded: &["D"], class_prefix: "RTX4090", memory_gb: &[24] },
    KnownModel { tokens: &["RTX", "4090", "D"], excluded: &[], class_prefix: "RTX4090D", memory_gb: &[24] },
    KnownModel { tokens: &["RTX", "4080"], excluded: &[], class_prefix: "RTX4080", memory_gb: &[16] },
    KnownModel { tokens: &["RTX", "3090", "TI"], excluded: &[], class_prefix: "RTX3090TI", memory_gb: &[24] },
    KnownModel { tokens: &["RTX", "3090"], excluded: &[], class_prefix: "RTX3090", memory_gb: &[24] },
    KnownModel { tokens: &["RTX", "A6000"], excluded: &[], class_prefix: "RTXA6000", memory_gb: &[48] },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, mib: u64) -> String {
        GpuClass::from_nvml(name, mib).as_str().to_string()
    }

    #[test]
    fn known_datacenter_models() {
        assert_eq!(class("NVIDIA H100 80GB HBM3", 81559), "H100-80GB");
        assert_eq!(class("NVIDIA H100 PCIe", 81559), "H100-80GB");
        assert_eq!(class("NVIDIA H100 NVL", 95830), "H100-94GB");
        assert_eq!(class("NVIDIA H200", 143771), "H200-141GB");
        assert_eq!(class("NVIDIA A100-SXM4-40GB", 40960), "A100-40GB");
        assert_eq!(class("NVIDIA A100-SXM4-80GB", 81920), "A100-80GB");
        assert_eq!(class("NVIDIA A100 80GB PCIe", 81920), "A100-80GB");
        assert_eq!(class("NVIDIA L40S", 46068), "L40S-48GB");
        assert_eq!(class("NVIDIA L40", 46068), "L40-48GB");
        assert_eq!(class("NVIDIA L4", 23034), "L4-24GB");
        assert_eq!(class("NVIDIA A10", 23028), "A10-24GB");
        assert_eq!(class("NVIDIA A10G", 23028), "A10G-24GB");
        assert_eq!(class("Tesla T4", 15360), "T4-16GB");
        assert_eq!(class("Tesla V100-SXM2-32GB", 32768), "V100-32GB");
    }

    #[test]
    fn known_consumer_models() {
        assert_eq!(class("NVIDIA GeForce RTX 4090", 24564), "RTX4090-24GB");
        assert_eq!(class("NVIDIA GeForce RTX 4090 D", 24564), "RTX4090D-24GB");
        assert_eq!(class("NVIDIA GeForce RTX 3090", 24576), "RTX3090-24GB");
        assert_eq!(class("NVIDIA GeForce RTX 3090 Ti", 24564), "RTX3090TI-24GB");
        assert_eq!(class("NVIDIA RTX 6000 Ada Generation", 49140), "RTX6000ADA-48GB");
    }

    #[test]
    fn similar_names_do_not_collide() {
        // A10 must not swallow A100, nor L4 the L40S.
        assert_ne!(class("NVIDIA A100-PCIE-40GB", 40960), class("NVIDIA A10", 23028));
        assert_ne!(class("NVIDIA L40S", 46068), class("NVIDIA L4", 23034));
    }

    #[test]
    fn unknown_models_get_a_slug_not_an_error() {
        assert_eq!(class("NVIDIA Quantum Widget 9000", 12288), "QUANTUM-WIDGET-9000-12GB");
        assert_eq!(class("", 8192), "GPU-8GB");
        assert_eq!(class("!!!", 0), "GPU-0GB");
        let long = "X".repeat(500);
        let slug = class(&long, 1024);
        assert!(slug.len() <= GPU_CLASS_CHARS_MAX);
        assert!(GpuClass::parse(&slug).is_some());
    }

    #[test]
    fn parse_accepts_only_class_shaped_text() {
        assert!(GpuClass::parse("H100-80GB").is_some());
        assert!(GpuClass::parse("").is_none());
        assert!(GpuClass::parse("H100 80GB").is_none());
        assert!(GpuClass::parse(&"A".repeat(GPU_CLASS_CHARS_MAX + 1)).is_none());
    }
}
