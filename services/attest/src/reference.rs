//! Reference values for the GPU's measurement blocks (what the operator's RIM directory
//! holds), in a simple text format instead of NVIDIA's signed SWID XML RIMs:
//!
//! ```text
//! # comment; blank lines are ignored
//! <index> <hex digest>[,<hex digest>...]
//! ```
//!
//! One line per measurement index (1..=255); several comma-separated digests are
//! alternatives (NVIDIA's RIMs list alternatives too). An index may appear once across all
//! files of a directory. A report matches when every index listed here is in the report
//! with one of its digests; report blocks with no reference value are not compared (as
//! NVIDIA's RIMs cover only the driver's and the VBIOS's indices).

use std::collections::BTreeMap;
use std::path::Path;

/// Most reference files read from a directory.
pub const REFERENCE_FILES_MAX: usize = 64;
/// Largest reference file read.
pub const REFERENCE_FILE_BYTES_MAX: usize = 1024 * 1024;

/// Expected measurement digests by block index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceValues {
    by_index: BTreeMap<u8, Vec<Vec<u8>>>,
}

impl ReferenceValues {
    pub fn new() -> ReferenceValues {
        ReferenceValues::default()
    }

    /// Sets the accepted digests of one index (replacing any).
    pub fn insert(&mut self, index: u8, digests: Vec<Vec<u8>>) {
        self.by_index.insert(index, digests);
    }

    /// The accepted digests by index.
    pub fn indices(&self) -> &BTreeMap<u8, Vec<Vec<u8>>> {
        &self.by_index
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Parses the text format above; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<ReferenceValues, String> {
        let mut out = ReferenceValues::new();
        out.add_text(text, source)?;
        Ok(out)
    }

    fn add_text(&mut self, text: &str, source: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{source}:{}", n + 1);
            let (index, digests) =
                line.split_once(char::is_whitespace).ok_or_else(|| format!("{at}: expected `<index> <hex digest>`"))?;
            let index: u8 = index.parse().map_err(|_| format!("{at}: index `{index}` is not 0..=255"))?;
            let digests = digests
                .split(',')
                .map(|d| {
                    let d = d.trim();
                    hex::decode(d)
                        .ok()
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| format!("{at}: digest `{d}` is not hex"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if self.by_index.insert(index, digests).is_some() {
                return Err(format!("{at}: measurement index {index} has reference values already"));
            }
        }
        Ok(())
    }

    /// Reads every `*.txt` file of `dir` (sorted by name).
    pub fn from_dir(dir: &Path) -> Result<ReferenceValues, String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("reference directory {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        if files.len() > REFERENCE_FILES_MAX {
            return Err(format!("{}: more than {REFERENCE_FILES_MAX} reference files", dir.display()));
        }
        let mut out = ReferenceValues::new();
        for file in files {
            let size = std::fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?.len();
            if size > REFERENCE_FILE_BYTES_MAX as u64 {
                return Err(format!("{}: larger than {REFERENCE_FILE_BYTES_MAX} bytes", file.display()));
            }
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            out.add_text(&text, &file.display().to_string())?;
        }
        if out.is_empty() {
            return Err(format!(
                "{}: no reference values (expected *.txt files of `<index> <hex digest>` lines)",
                dir.display()
            ));
        }
        Ok(out)
    }
}
