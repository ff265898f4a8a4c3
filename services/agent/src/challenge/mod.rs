//! The agent's side of the proof-of-compute challenge (protocol: `capex_core::challenge`,
//! docs/verification.md).
//!
//! The assignments long-poll lists `challenges`. Each new one runs once (ids are
//! remembered): C is computed on a blocking thread by the engine of the probe's backend,
//! committed with its Merkle root (`POST .../challenges/{id}/commitment`, host-signed), and
//! the leaves the exchange then names are opened (`POST .../answer`). The verdict is logged.
//!
//! Engines: the simulated backend uses the CPU reference ([`Engine::Cpu`]); the NVML backend
//! uses the GPU ([`Engine::Cuda`]). Where CUDA cannot load on an NVML host, the agent logs an
//! error and does **not** answer: a CPU answer would be late for a real class's bound, and
//! answering at all would only turn a missing driver into a recorded failure.

pub mod check;
pub mod cuda;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capex_core::challenge::{
    ChallengeAnswer, ChallengeCommitment, ChallengeOrder, ChallengeRows, ChallengeSpec, ChallengeVerdict, MerkleTree,
    SEGMENT_COLS, compute_c_cpu, encode_hash, open_leaf,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::jobs::{HostClient, JobTable};

/// Challenge ids remembered as handled (the exchange lists a challenge until it is settled).
const HANDLED_REMEMBERED: usize = 1024;
/// How far past `commit_by` the `late` fault commits.
pub const LATE_MARGIN: Duration = Duration::from_secs(2);

/// What computes C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `capex_core::challenge::compute_c_cpu` on every core (the simulated backend).
    Cpu,
    /// The PTX kernels on the challenged GPU (the NVML backend).
    Cuda,
}

impl Engine {
    /// The engine for a probe backend (`"simulated"` or `"nvml"`).
    pub fn for_backend(backend: &str) -> Engine {
        if backend == "simulated" { Engine::Cpu } else { Engine::Cuda }
    }
}

/// Test-only misbehaviour (`--challenge-fault`, hidden; `CAPEX_AGENT_CHALLENGE_FAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengeFault {
    /// Adds 1 to the first element of *every* leaf of C before committing, then opens the
    /// committed (wrong) values: the proofs hold, so whatever leaves the exchange names fail
    /// as `challenge_wrong_row`.
    CorruptRow,
    /// Commits honestly but only [`LATE_MARGIN`] after `commit_by`: `challenge_late`.
    Late,
}

/// Milliseconds per phase of one solve.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Context, module load and allocation (CUDA only).
    pub setup_ms: f64,
    pub expand_ms: f64,
    /// The product itself (on the CPU engine: expansion and product together).
    pub kernel_ms: f64,
    pub copy_ms: f64,
    pub hash_ms: f64,
}

/// C and its commitment.
pub struct Solution {
    pub spec: ChallengeSpec,
    pub c: Vec<i32>,
    pub tree: MerkleTree,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error(transparent)]
    Cuda(#[from] cuda::CudaError),
}

/// Computes C with `engine`, applies `fault`, and builds the Merkle tree. Blocking: seconds
/// at a real class's `n`.
pub fn solve(
    engine: Engine,
    spec: &ChallengeSpec,
    gpu_uuid: &str,
    fault: Option<ChallengeFault>,
) -> Result<Solution, SolveError> {
    let (mut c, mut timings) = match engine {
        Engine::Cpu => {
            let start = Instant::now();
            let c = compute_c_cpu(spec);
            (c, Timings { kernel_ms: start.elapsed().as_secs_f64() * 1e3, ..Timings::default() })
        }
        Engine::Cuda => cuda::compute_c(spec, gpu_uuid)?,
    };
    if fault == Some(ChallengeFault::CorruptRow) {
        corrupt_every_leaf(&mut c);
    }
    let start = Instant::now();
    let tree = MerkleTree::build(&c);
    timings.hash_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(Solution { spec: *spec, c, tree, timings })
}

/// The `corrupt-row` fault: one wrong element in every leaf.
pub fn corrupt_every_leaf(c: &mut [i32]) {
    for leaf in c.chunks_exact_mut(SEGMENT_COLS) {
        leaf[0] = leaf[0].wrapping_add(1);
    }
}

/// How long to wait before committing: zero, or past `commit_by` for the `late` fault.
pub fn commit_delay(fault: Option<ChallengeFault>, commit_by: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    match fault {
        Some(ChallengeFault::Late) => (commit_by - now).to_std().unwrap_or(Duration::ZERO) + LATE_MARGIN,
        _ => Duration::ZERO,
    }
}

/// The openings of the named leaves, or why they cannot be given (a leaf outside C).
pub fn answer_for(solution: &Solution, rows: &[u32]) -> Result<ChallengeAnswer, String> {
    let leaves = solution.spec.leaf_count();
    if let Some(bad) = rows.iter().find(|&&i| i >= leaves) {
        return Err(format!("the exchange named leaf {bad}, but C has {leaves}"));
    }
    Ok(ChallengeAnswer { rows: rows.iter().map(|&i| open_leaf(&solution.tree, &solution.c, i)).collect() })
}

/// The agent's challenge state: its engine, its fault, and the ids already handled.
#[derive(Clone)]
pub struct Challenger {
    pub engine: Engine,
    pub fault: Option<ChallengeFault>,
    handled: Arc<Mutex<VecDeque<Uuid>>>,
    /// The ids the exchange listed in its last answer (all taken by then).
    listed: Arc<Mutex<Vec<Uuid>>>,
}

impl Challenger {
    pub fn new(engine: Engine, fault: Option<ChallengeFault>) -> Challenger {
        Challenger { engine, fault, handled: Arc::default(), listed: Arc::default() }
    }

    /// The challenges the exchange listed last time, all taken: sent with the next poll
    /// (`challenges=`) so it can wait instead of answering at once. Bounded by what the
    /// exchange lists, not by how many were ever handled.
    pub fn taken(&self) -> Vec<Uuid> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The orders not seen before; each is marked handled.
    pub fn take_new(&self, orders: Vec<ChallengeOrder>) -> Vec<ChallengeOrder> {
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = orders.iter().map(|o| o.challenge_id).collect();
        let mut handled = self.handled.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Vec::new();
        for order in orders {
            if handled.contains(&order.challenge_id) {
                continue;
            }
            if handled.len() >= HANDLED_REMEMBERED {
                handled.pop_front();
            }
            handled.push_back(order.challenge_id);
            fresh.push(order);
        }
        fresh
    }

    /// Starts every new order on its own task.
    pub(crate) fn dispatch(&self, client: &HostClient, table: &JobTable, orders: Vec<ChallengeOrder>) {
        for order in self.take_new(orders) {
            tokio::spawn(run_one(client.clone(), table.clone(), order, self.engine, self.fault));
        }
    }
}

/// One challenge, start to verdict. Every way it stops is logged; nothing is retried (the
/// exchange issues a new challenge if it wants one).
async fn run_one(
    client: HostClient,
    table: JobTable,
    order: ChallengeOrder,
    engine: Engine,
    fault: Option<ChallengeFault>,
) {
    let id = order.challenge_id;
    let gpu = order.gpu_uuid.clone();
    let spec = match ChallengeSpec::from_order(&order) {
        Ok(spec) => spec,
        Err(err) => {
            tracing::error!(challenge_id = %id, gpu, error = %err, "challenge refused: malformed order");
            return;
        }
    };
    if table.running_gpus().values().any(|gpus| gpus.contains(&gpu)) {
        tracing::warn!(challenge_id = %id, gpu, "challenge not answered: the GPU runs a lease");
        return;
    }
    tracing::info!(challenge_id = %id, gpu, n = spec.n, ?engine, commit_by = %order.commit_by, "challenge received");
    let solved = tokio::task::spawn_blocking(move || solve(engine, &spec, &order.gpu_uuid, fault)).await;
    let solution = match solved {
        Ok(Ok(solution)) => solution,
        Ok(Err(err)) => {
            tracing::error!(challenge_id = %id, gpu, error = %err,
                "challenge NOT answered: the GPU engine failed (a CPU answer would miss the class's bound)");
            return;
        }
        Err(err) => {
            tracing::error!(challenge_id = %id, gpu, error = %err, "challenge NOT answered: the solver panicked");
            return;
        }
    };
    let t = solution.timings;
    tracing::info!(challenge_id = %id, gpu, setup_ms = t.setup_ms, expand_ms = t.expand_ms, kernel_ms = t.kernel_ms,
        copy_ms = t.copy_ms, hash_ms = t.hash_ms, "challenge computed");
    let delay = commit_delay(fault, order.commit_by, Utc::now());
    if !delay.is_zero() {
        tracing::warn!(challenge_id = %id, delay_ms = delay.as_millis() as u64, "fault `late`: committing past commit_by");
        tokio::time::sleep(delay).await;
    }
    let host = client.host_id;
    let commitment = ChallengeCommitment { root: encode_hash(&solution.tree.root()) };
    let path = format!("/api/v1/hosts/{host}/challenges/{id}/commitment");
    let rows: ChallengeRows = match client.post_json(&path, &commitment).await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(challenge_id = %id, gpu, error = %err, "challenge commitment refused");
            return;
        }
    };
    let answer = match answer_for(&solution, &rows.rows) {
        Ok(answer) => answer,
        Err(err) => {
            tracing::error!(challenge_id = %id, gpu, error = %err, "challenge not answered");
            return;
        }
    };
    let path = format!("/api/v1/hosts/{host}/challenges/{id}/answer");
    match client.post_json::<_, ChallengeVerdict>(&path, &answer).await {
        Ok(v) if v.outcome == "passed" => {
            tracing::info!(challenge_id = %id, gpu, level = v.level, "challenge passed")
        }
        Ok(v) => tracing::warn!(challenge_id = %id, gpu, code = ?v.code, level = v.level, "challenge failed"),
        Err(err) => tracing::warn!(challenge_id = %id, gpu, error = %err, "challenge answer refused"),
    }
}

#[cfg(test)]
mod tests {
    use capex_core::challenge::{ChallengeFailure, pick_rows, verify_answer};

    use super::*;

    fn spec() -> ChallengeSpec {
        ChallengeSpec::new([9; 32], 256).unwrap()
    }

    #[test]
    fn the_cpu_engine_answers_what_the_exchange_verifies() {
        let spec = spec();
        let solution = solve(Engine::Cpu, &spec, "GPU-sim", None).unwrap();
        let asked = pick_rows(&spec, &[3; 32], 24);
        let answer = answer_for(&solution, &asked).unwrap();
        assert_eq!(verify_answer(&spec, &solution.tree.root(), &asked, &answer), Ok(()));
        assert!(answer_for(&solution, &[spec.leaf_count()]).is_err());
    }

    #[test]
    fn corrupt_row_fails_as_a_wrong_row_whatever_is_named() {
        let spec = spec();
        let solution = solve(Engine::Cpu, &spec, "GPU-sim", Some(ChallengeFault::CorruptRow)).unwrap();
        for entropy in [[1u8; 32], [2; 32], [3; 32]] {
            let asked = pick_rows(&spec, &entropy, 24);
            let answer = answer_for(&solution, &asked).unwrap();
            let result = verify_answer(&spec, &solution.tree.root(), &asked, &answer);
            assert!(matches!(result, Err(ChallengeFailure::WrongRow { .. })), "{result:?}");
        }
    }

    #[test]
    fn late_waits_past_commit_by_and_honest_does_not_wait() {
        let now = Utc::now();
        let commit_by = now + chrono::Duration::milliseconds(1500);
        assert_eq!(commit_delay(None, commit_by, now), Duration::ZERO);
        assert_eq!(commit_delay(Some(ChallengeFault::CorruptRow), commit_by, now), Duration::ZERO);
        assert_eq!(commit_delay(Some(ChallengeFault::Late), commit_by, now), Duration::from_millis(1500) + LATE_MARGIN);
        let passed = now - chrono::Duration::seconds(5);
        assert_eq!(commit_delay(Some(ChallengeFault::Late), passed, now), LATE_MARGIN);
    }

    #[test]
    fn each_challenge_is_taken_once() {
        let challenger = Challenger::new(Engine::Cpu, None);
        let order = ChallengeOrder {
            challenge_id: Uuid::now_v7(),
            gpu_uuid: "GPU-1".into(),
            seed: "00".repeat(32),
            n: 256,
            issued_at: Utc::now(),
            commit_by: Utc::now(),
        };
        assert_eq!(challenger.take_new(vec![order.clone()]).len(), 1);
        assert!(challenger.take_new(vec![order.clone()]).is_empty());
        assert_eq!(challenger.taken(), vec![order.challenge_id]);
        assert!(challenger.take_new(Vec::new()).is_empty());
        assert!(challenger.taken().is_empty(), "only what the exchange still lists is sent back");
    }

    #[test]
    fn engines_follow_the_backend() {
        assert_eq!(Engine::for_backend("simulated"), Engine::Cpu);
        assert_eq!(Engine::for_backend("nvml"), Engine::Cuda);
    }

    #[test]
    fn the_cuda_engine_fails_loudly_without_a_driver() {
        if cuda::driver_present() {
            return;
        }
        assert!(matches!(
            solve(Engine::Cuda, &spec(), "GPU-x", None),
            Err(SolveError::Cuda(cuda::CudaError::NoDriver))
        ));
    }
}
