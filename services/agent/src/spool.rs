//! The report spool: every report is written here before it is sent and removed once the
//! exchange has it, so nothing is lost while the exchange is unreachable or the agent
//! restarts. Reports are sent in sequence order; the sequence survives restarts.
//!
//! Layout in the state directory: `seq` (the next sequence number), `spool/<seq>.json`
//! (unsigned reports waiting; signed at send time) and `spool/rejected/` (reports the
//! exchange refused for good, kept for inspection).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use capex_core::ReportPayload;

/// Reports kept at most; past this the oldest is dropped (with an error log). At the
/// default 10 s interval this is about eleven days of outage.
pub const SPOOL_REPORTS_MAX: usize = 100_000;

pub struct Spool {
    dir: PathBuf,
    seq_path: PathBuf,
    next_seq: u64,
    pending: BTreeSet<u64>,
    reports_max: usize,
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Spool {
    /// Opens (or creates) the spool under `state_dir` and resumes its sequence.
    pub fn open(state_dir: &Path, reports_max: usize) -> anyhow::Result<Spool> {
        let dir = state_dir.join("spool");
        std::fs::create_dir_all(dir.join("rejected")).with_context(|| format!("creating {}", dir.display()))?;
        let seq_path = state_dir.join("seq");
        let stored_next: u64 = match std::fs::read_to_string(&seq_path) {
            Ok(text) => text.trim().parse().with_context(|| format!("{} is not a number", seq_path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err.into()),
        };
        let mut pending = BTreeSet::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) {
                pending.insert(seq);
            }
        }
        // A crash between writing a report and the seq file must not reuse a number.
        let next_seq = stored_next.max(pending.last().map_or(0, |s| s + 1));
        Ok(Spool { dir, seq_path, next_seq, pending, reports_max: reports_max.max(1) })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Takes the next sequence number, builds the report with it and stores it.
    pub fn push(&mut self, build: impl FnOnce(u64) -> ReportPayload) -> anyhow::Result<u64> {
        let seq = self.next_seq;
        let report = build(seq);
        debug_assert_eq!(report.seq, seq);
        write_atomic(&self.path(seq), &serde_json::to_vec(&report)?)?;
        self.next_seq = seq + 1;
        write_atomic(&self.seq_path, format!("{}\n", self.next_seq).as_bytes())?;
        self.pending.insert(seq);
        while self.pending.len() > self.reports_max {
            let Some(oldest) = self.pending.pop_first() else { break };
            tracing::error!(seq = oldest, max = self.reports_max, "spool full: dropping the oldest report");
            let _ = std::fs::remove_file(self.path(oldest));
        }
        Ok(seq)
    }

    /// The oldest waiting report.
    pub fn oldest(&mut self) -> anyhow::Result<Option<ReportPayload>> {
        while let Some(&seq) = self.pending.first() {
            match std::fs::read(self.path(seq)) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(report) => return Ok(Some(report)),
                    Err(err) => {
                        tracing::error!(seq, error = %err, "unreadable spooled report; setting it aside");
                        self.reject(seq)?;
                    }
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    self.pending.remove(&seq);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(None)
    }

    /// The exchange has this report.
    pub fn remove(&mut self, seq: u64) -> anyhow::Result<()> {
        self.pending.remove(&seq);
        match std::fs::remove_file(self.path(seq)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    /// The exchange refused this report for good: keep it aside, out of the queue.
    pub fn reject(&mut self, seq: u64) -> anyhow::Result<()> {
        self.pending.remove(&seq);
        let target = self.dir.join("rejected").join(format!("{seq:020}.json"));
        match std::fs::rename(self.path(seq), target) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn report(seq: u64) -> ReportPayload {
        ReportPayload {
            host_id: Uuid::nil(),
            seq,
            sent_at: Utc::now(),
            measured_at: Utc::now(),
            interval_s: 1,
            backend: capex_core::GpuBackend::Simulated,
            gpus: vec![],
            leases: None,
        }
    }

    #[test]
    fn resumes_sequence_and_queue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 10).unwrap();
        for _ in 0..3 {
            spool.push(report).unwrap();
        }
        spool.remove(0).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(spool.next_seq(), 3);
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.oldest().unwrap().unwrap().seq, 1);
        spool.reject(1).unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().seq, 2);
        assert_eq!(spool.push(report).unwrap(), 3);
    }

    #[test]
    fn seq_survives_a_lost_seq_file_and_the_spool_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 2).unwrap();
        for _ in 0..5 {
            spool.push(report).unwrap();
        }
        assert_eq!(spool.len(), 2);
        std::fs::remove_file(dir.path().join("seq")).unwrap();
        let mut spool = Spool::open(dir.path(), 2).unwrap();
        assert_eq!(spool.next_seq(), 5);
        assert_eq!(spool.oldest().unwrap().unwrap().seq, 3);
    }
}
