//! The server's side of the proof-of-compute challenge (docs/verification.md).
//!
//! Issue: a random seed and the class's `n` per idle GPU, delivered on the host's
//! assignments poll; a GPU under challenge is not offered (`GPU_UNTAKEN_SQL`). Commit: the
//! host signs a Merkle root over the rows of `C = A·B` before `commit_by`; only then does
//! the server name `k` random rows. Answer: the rows with their Merkle proofs before
//! `answer_by`; the server recomputes each named row and checks each proof. A pass keeps the
//! GPU `challenged` for `CAPEX_CHALLENGE_VALID_H`; a failure drops it to its probe's level
//! and counts against the host, which is blocked from asking after
//! `CAPEX_CHALLENGE_FAILURES_MAX` failures in a row.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use capex_core::GpuBackend;
use capex_core::challenge::{
    ChallengeAnswer, ChallengeBound, ChallengeCommitment, ChallengeOrder, ChallengeRows, ChallengeSpec,
    ChallengeVerdict,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::level::{GPU_LEVEL_SQL, Level};
use crate::error::{ApiError, ApiResult, Problem};
use crate::hosts::capacity::{GPU_IDLE_SQL, LIVE_SQL};
use crate::jobs::authenticate_host;
use crate::markets::GPU_UNTAKEN_SQL;
use crate::params::{ApiBytes, ApiPath};
use crate::state::AppState;

/// Largest answer body: `k` rows of `n` i32 values in base64 with their proofs, for the
/// largest `n` and `k` of the bound table, and room to spare.
pub const ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Time the host has to open the named rows once they are named: hashing is done, so this
/// only covers building proofs and one round trip.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Why a challenge was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Before the host's first ask.
    Registration,
    /// At a random time, mean `CAPEX_CHALLENGE_MEAN_INTERVAL_H`.
    Scheduled,
    /// An operator asked for it.
    Operator,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Registration => "registration",
            Reason::Scheduled => "scheduled",
            Reason::Operator => "operator",
        }
    }
}

use capex_core::challenge::{
    CODE_LATE as CHALLENGE_LATE, CODE_REPLAYED as CHALLENGE_REPLAYED, CODE_UNKNOWN as CHALLENGE_UNKNOWN,
};

/// The bound a GPU is challenged under: its class's, or the simulated one for the
/// simulated backend (which the caller honours only in demo mode).
pub(crate) fn bound_for(backend: GpuBackend, class: &str) -> Option<ChallengeBound> {
    match backend {
        GpuBackend::Nvml => capex_core::challenge::bound_for(class),
        GpuBackend::Simulated => capex_core::challenge::bound_for(capex_core::challenge::SIMULATED_CLASS),
    }
}

fn backend_of(text: &str) -> GpuBackend {
    if text == "simulated" { GpuBackend::Simulated } else { GpuBackend::Nvml }
}

/// Whether this server challenges hosts of `backend` at all: simulated GPUs only in demo
/// mode, where their (generous) bound proves the protocol works, not that hardware exists.
pub(crate) fn challenges_backend(state: &AppState, backend: GpuBackend) -> bool {
    state.config.challenges && (backend == GpuBackend::Nvml || state.config.demo)
}

/// Issues a challenge to one of the host's live, idle, unoffered GPUs with a bound that
/// was not challenged in the host's current round (the longest unchallenged first), unless
/// one is open already: one GPU of a host at a time. Returns the new challenge's id (none
/// when no GPU qualifies right now).
pub(crate) async fn issue(state: &AppState, host_id: Uuid, reason: Reason) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = state.pool.begin().await?;
    // The host row lock serialises issuers (the scheduler of every replica, operators).
    let host: Option<(Uuid, String)> =
        sqlx::query_as("select owner_id, backend from hosts where host_id = $1 and status = 'active' for update")
            .bind(host_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((owner_id, backend)) = host else { return Err(ApiError::not_found("host")) };
    let backend = backend_of(&backend);
    if !challenges_backend(state, backend) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select g.gpu_uuid, g.class from host_gpus g join hosts h using (host_id)
         where h.host_id = $1 and {LIVE_SQL} and {GPU_IDLE_SQL} and {GPU_UNTAKEN_SQL}
             and not exists (select 1 from gpu_challenges c where c.host_id = h.host_id
                             and c.state in ('issued', 'committed'))
             and not exists (select 1 from gpu_challenges c where c.gpu_uuid = g.gpu_uuid
                             and c.issued_at >= coalesce(h.challenge_round_at, '-infinity'))
         order by (select max(c.issued_at) from gpu_challenges c where c.gpu_uuid = g.gpu_uuid) nulls first,
                  g.gpu_index"
    );
    let gpus: Vec<(String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(host_id).fetch_all(&mut *tx).await?;
    let mut issued = Vec::new();
    for (gpu_uuid, class) in gpus {
        let Some(bound) = bound_for(backend, &class) else { continue };
        if !issued.is_empty() {
            break;
        }
        let challenge_id = Uuid::now_v7();
        let seed: [u8; 32] = rand::random();
        sqlx::query(
            "insert into gpu_challenges (challenge_id, host_id, gpu_uuid, class, reason, seed, n, k, commit_by)
             values ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9::float8 / 1000))",
        )
        .bind(challenge_id)
        .bind(host_id)
        .bind(&gpu_uuid)
        .bind(&class)
        .bind(reason.as_str())
        .bind(seed.as_slice())
        .bind(bound.n as i32)
        .bind(bound.k as i32)
        .bind(bound.commit_within_ms as f64)
        .execute(&mut *tx)
        .await?;
        issued.push(challenge_id);
    }
    tx.commit().await?;
    if !issued.is_empty() {
        metrics::counter!("capex_challenges_issued_total", "reason" => reason.as_str()).increment(issued.len() as u64);
        tracing::info!(%host_id, challenges = issued.len(), reason = reason.as_str(), "challenges issued");
        publish(state, owner_id, host_id);
    }
    Ok(issued)
}

/// Tells the host's owner (the provider UI) and the host's assignments poll that its
/// verification changed.
pub(crate) fn publish(state: &AppState, owner_id: Uuid, host_id: Uuid) {
    state.feed.private("host", owner_id, serde_json::json!({ "host_id": host_id, "change": "verification" }));
}

/// An open challenge as the assignments poll reads it.
type OpenChallengeRow = (Uuid, String, Vec<u8>, i32, DateTime<Utc>, DateTime<Utc>, bool);

/// The open challenges of a host, as its assignments poll returns them. Marks them
/// delivered; `undelivered` says whether any was new, so the poll answers at once.
pub(crate) async fn open_for_host(state: &AppState, host_id: Uuid) -> Result<(Vec<ChallengeOrder>, bool), ApiError> {
    let rows: Vec<OpenChallengeRow> = sqlx::query_as(
        "update gpu_challenges c set delivered_at = coalesce(c.delivered_at, now())
         from gpu_challenges old
         where old.challenge_id = c.challenge_id and c.host_id = $1 and c.state = 'issued'
         returning c.challenge_id, c.gpu_uuid, c.seed, c.n, c.issued_at, c.commit_by, old.delivered_at is null",
    )
    .bind(host_id)
    .fetch_all(&state.pool)
    .await?;
    let undelivered = rows.iter().any(|r| r.6);
    let mut orders: Vec<ChallengeOrder> = rows
        .into_iter()
        .map(|(challenge_id, gpu_uuid, seed, n, issued_at, commit_by, _)| ChallengeOrder {
            challenge_id,
            gpu_uuid,
            seed: hex::encode(seed),
            n: n as u32,
            issued_at,
            commit_by,
        })
        .collect();
    orders.sort_by_key(|o| o.challenge_id);
    Ok((orders, undelivered))
}

fn refusal(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
    metrics::counter!("capex_challenge_refusals_total", "code" => code).increment(1);
    ApiError::new(status, code, detail)
}

#[derive(sqlx::FromRow)]
struct ChallengeRow {
    gpu_uuid: String,
    seed: Vec<u8>,
    n: i32,
    state: String,
    commit_by: DateTime<Utc>,
    root: Option<Vec<u8>>,
    rows_asked: Option<Vec<i32>>,
    answer_by: Option<DateTime<Utc>>,
    late: bool,
}

/// Locks the challenge row if it is this host's; `challenge_unknown` otherwise.
async fn lock_challenge(
    tx: &mut sqlx::PgConnection,
    host_id: Uuid,
    challenge_id: Uuid,
) -> Result<ChallengeRow, ApiError> {
    sqlx::query_as(
        "select gpu_uuid, seed, n, state, commit_by, root, rows_asked, answer_by,
                coalesce(case when state = 'issued' then now() > commit_by else now() > answer_by end, false) as late
         from gpu_challenges where challenge_id = $1 and host_id = $2 for update",
    )
    .bind(challenge_id)
    .bind(host_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| refusal(StatusCode::NOT_FOUND, CHALLENGE_UNKNOWN, "no such challenge was issued to this host"))
}

/// Records a failed challenge: the GPU falls to its probe's level, the host's failures in
/// a row grow and, at the maximum, block its asks. The caller commits.
pub(crate) async fn record_failure(
    tx: &mut sqlx::PgConnection,
    failures_max: u32,
    challenge_id: Uuid,
    code: &'static str,
    detail: &str,
) -> Result<Option<(Uuid, Uuid)>, ApiError> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "update gpu_challenges set state = 'failed', decided_at = now(), failure_code = $2, failure_detail = $3
         where challenge_id = $1 and state in ('issued', 'committed') returning host_id, gpu_uuid",
    )
    .bind(challenge_id)
    .bind(code)
    .bind(detail)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((host_id, gpu_uuid)) = row else { return Ok(None) };
    // The host before its GPU: the order report ingestion locks them in.
    let owner: Uuid = sqlx::query_scalar(
        "update hosts set challenge_failures = challenge_failures + 1,
                challenge_blocked_at = case when challenge_failures + 1 >= $2 then coalesce(challenge_blocked_at, now())
                                            else challenge_blocked_at end
         where host_id = $1 returning owner_id",
    )
    .bind(host_id)
    .bind(failures_max as i32)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "update host_gpus set challenged_until = null, cc_attested_until = null, verified_at = now()
         where gpu_uuid = $1",
    )
    .bind(&gpu_uuid)
    .execute(&mut *tx)
    .await?;
    count_refusal(tx, host_id, code).await?;
    metrics::counter!("capex_challenges_decided_total", "outcome" => "failed").increment(1);
    tracing::warn!(%host_id, gpu = gpu_uuid, code, detail, "challenge failed");
    Ok(Some((owner, host_id)))
}

/// Counts a refused challenge or attestation answer on its host.
pub(crate) async fn count_refusal(tx: &mut sqlx::PgConnection, host_id: Uuid, code: &str) -> Result<(), ApiError> {
    sqlx::query(
        "insert into host_verification_refusals (host_id, code, count) values ($1, $2, 1)
         on conflict (host_id, code) do update set count = host_verification_refusals.count + 1",
    )
    .bind(host_id)
    .bind(code)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Commits a failure in its own transaction and answers with the refusal.
async fn fail(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    challenge_id: Uuid,
    code: &'static str,
    detail: String,
) -> ApiError {
    let recorded = async {
        let changed = record_failure(&mut tx, state.config.challenge_failures_max, challenge_id, code, &detail).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(changed)
    }
    .await;
    match recorded {
        Ok(Some((owner, host_id))) => publish(state, owner, host_id),
        Ok(None) => {}
        Err(err) => return err,
    }
    refusal(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
}

fn seed_of(bytes: &[u8]) -> Result<[u8; 32], ApiError> {
    bytes.try_into().map_err(|_| ApiError::internal("stored seed is not 32 bytes"))
}

fn parse_root(text: &str) -> Result<[u8; 32], ApiError> {
    hex::decode(text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        ApiError::invalid("root", "invalid_root", "root must be 64 hex characters (a SHA-256 Merkle root)")
    })
}

#[utoipa::path(post, path = "/api/v1/hosts/{host_id}/challenges/{challenge_id}/commitment", tag = "verification",
    params(("host_id" = Uuid, Path, description = "The host"), ("challenge_id" = Uuid, Path, description = "The challenge")),
    request_body = ChallengeCommitment,
    responses((status = 200, body = ChallengeRows, description = "The rows to open, named only now"),
        (status = 401, body = Problem, description = "host_signature_missing, invalid_host_signature, host_time_skew"),
        (status = 404, body = Problem, description = "challenge_unknown"),
        (status = 409, body = Problem, description = "challenge_replayed: already committed or decided; host_request_replayed"),
        (status = 422, body = Problem, description = "challenge_late (the challenge failed), invalid_root")))]
pub(crate) async fn post_commitment(
    State(state): State<AppState>,
    ApiPath((host_id, challenge_id)): ApiPath<(Uuid, Uuid)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<ChallengeRows>> {
    let path = format!("/api/v1/hosts/{host_id}/challenges/{challenge_id}/commitment");
    authenticate_host(&state, host_id, "POST", &path, &headers, &body).await?;
    let commitment: ChallengeCommitment = crate::extract::parse_json(&body)?;
    let root = parse_root(&commitment.root)?;
    let mut tx = state.pool.begin().await?;
    let row = lock_challenge(&mut tx, host_id, challenge_id).await?;
    if row.state != "issued" {
        return Err(refusal(
            StatusCode::CONFLICT,
            CHALLENGE_REPLAYED,
            format!("this challenge is {} already; a commitment is taken once", row.state),
        ));
    }
    if row.late {
        let detail = format!("the commitment arrived after commit_by {}", row.commit_by.to_rfc3339());
        return Err(fail(&state, tx, challenge_id, CHALLENGE_LATE, detail).await);
    }
    let k = sqlx::query_scalar::<_, i32>("select k from gpu_challenges where challenge_id = $1")
        .bind(challenge_id)
        .fetch_one(&mut *tx)
        .await?;
    let spec = ChallengeSpec::new(seed_of(&row.seed)?, row.n as u32).map_err(ApiError::internal)?;
    // Fresh entropy, drawn only now that the root is bound: the host cannot know the rows.
    let rows = capex_core::challenge::pick_rows(&spec, &rand::random::<[u8; 32]>(), k as u32);
    let asked: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    let answer_by: DateTime<Utc> = sqlx::query_scalar(
        "update gpu_challenges set state = 'committed', root = $2, committed_at = now(), rows_asked = $3,
                answer_by = now() + make_interval(secs => $4)
         where challenge_id = $1 returning answer_by",
    )
    .bind(challenge_id)
    .bind(root.as_slice())
    .bind(&asked)
    .bind(ANSWER_WITHIN.as_secs() as f64)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::debug!(%host_id, %challenge_id, gpu = row.gpu_uuid, "challenge committed");
    Ok(Json(ChallengeRows { rows, answer_by }))
}

#[utoipa::path(post, path = "/api/v1/hosts/{host_id}/challenges/{challenge_id}/answer", tag = "verification",
    params(("host_id" = Uuid, Path, description = "The host"), ("challenge_id" = Uuid, Path, description = "The challenge")),
    request_body = ChallengeAnswer,
    responses((status = 200, body = ChallengeVerdict, description = "Passed: the GPU is challenged"),
        (status = 401, body = Problem, description = "host_signature_missing, invalid_host_signature, host_time_skew"),
        (status = 404, body = Problem, description = "challenge_unknown"),
        (status = 409, body = Problem, description = "challenge_replayed: not committed, or decided already; host_request_replayed"),
        (status = 413, body = Problem),
        (status = 422, body = Problem, description = "challenge_wrong_row, challenge_bad_proof, challenge_late: the challenge failed")))]
pub(crate) async fn post_answer(
    State(state): State<AppState>,
    ApiPath((host_id, challenge_id)): ApiPath<(Uuid, Uuid)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<ChallengeVerdict>> {
    let path = format!("/api/v1/hosts/{host_id}/challenges/{challenge_id}/answer");
    authenticate_host(&state, host_id, "POST", &path, &headers, &body).await?;
    let answer: ChallengeAnswer = crate::extract::parse_json(&body)?;
    let mut tx = state.pool.begin().await?;
    let row = lock_challenge(&mut tx, host_id, challenge_id).await?;
    if row.state != "committed" {
        let detail = match row.state.as_str() {
            "issued" => "commit to a root first: the rows to open are named only after the commitment".to_string(),
            decided => format!("this challenge is {decided} already; an answer is taken once"),
        };
        return Err(refusal(StatusCode::CONFLICT, CHALLENGE_REPLAYED, detail));
    }
    if row.late {
        let answer_by = row.answer_by.map(|t| t.to_rfc3339()).unwrap_or_default();
        return Err(
            fail(&state, tx, challenge_id, CHALLENGE_LATE, format!("the answer arrived after {answer_by}")).await
        );
    }
    let (Some(root), Some(asked)) = (row.root, row.rows_asked) else {
        return Err(ApiError::internal("a committed challenge without root or rows"));
    };
    let root: [u8; 32] = root.try_into().map_err(|_| ApiError::internal("stored root is not 32 bytes"))?;
    let spec = ChallengeSpec::new(seed_of(&row.seed)?, row.n as u32).map_err(ApiError::internal)?;
    let asked: Vec<u32> = asked.into_iter().map(|r| r as u32).collect();
    // Recomputing k rows is tens of milliseconds of one core: off the async workers.
    let (verdict, elapsed) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let verdict = capex_core::challenge::verify_answer(&spec, &root, &asked, &answer);
        (verdict, started.elapsed())
    })
    .await
    .map_err(ApiError::internal)?;
    metrics::histogram!("capex_challenge_verify_seconds").record(elapsed.as_secs_f64());
    sqlx::query("update gpu_challenges set verify_us = $2 where challenge_id = $1")
        .bind(challenge_id)
        .bind(elapsed.as_micros() as i64)
        .execute(&mut *tx)
        .await?;
    if let Err(failure) = verdict {
        let (code, detail): (&'static str, String) = (failure.code(), failure.to_string());
        return Err(fail(&state, tx, challenge_id, code, detail).await);
    }
    sqlx::query("update gpu_challenges set state = 'passed', decided_at = now() where challenge_id = $1")
        .bind(challenge_id)
        .execute(&mut *tx)
        .await?;
    // The host before its GPU: the order report ingestion locks them in (the other order
    // deadlocked with report batches in the demo).
    let owner: Uuid =
        sqlx::query_scalar("update hosts set challenge_failures = 0 where host_id = $1 returning owner_id")
            .bind(host_id)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
        "update host_gpus set challenged_until = now() + make_interval(hours => $2), verified_at = now()
         where gpu_uuid = $1",
    )
    .bind(&row.gpu_uuid)
    .bind(state.config.challenge_valid_h as i32)
    .execute(&mut *tx)
    .await?;
    let sql = format!("select {GPU_LEVEL_SQL} from host_gpus g join hosts h using (host_id) where g.gpu_uuid = $1");
    let level: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(&row.gpu_uuid).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    metrics::counter!("capex_challenges_decided_total", "outcome" => "passed").increment(1);
    tracing::info!(%host_id, gpu = row.gpu_uuid, verify_ms = elapsed.as_millis() as u64, "challenge passed");
    publish(&state, owner, host_id);
    debug_assert!(level.parse::<Level>().is_ok());
    Ok(Json(ChallengeVerdict { outcome: "passed".into(), code: None, level }))
}

/// Fails every open challenge past its deadline (`challenge_late`); returns how many.
pub(crate) async fn expire_late(state: &AppState) -> Result<usize, ApiError> {
    let late: Vec<Uuid> = sqlx::query_scalar(
        "select challenge_id from gpu_challenges
         where (state = 'issued' and commit_by < now()) or (state = 'committed' and answer_by < now())
         order by challenge_id limit 100",
    )
    .fetch_all(&state.pool)
    .await?;
    for &challenge_id in &late {
        let mut tx = state.pool.begin().await?;
        let changed = record_failure(
            &mut tx,
            state.config.challenge_failures_max,
            challenge_id,
            CHALLENGE_LATE,
            "no commitment or answer arrived before its deadline",
        )
        .await?;
        tx.commit().await?;
        if let Some((owner, host_id)) = changed {
            publish(state, owner, host_id);
        }
    }
    Ok(late.len())
}
