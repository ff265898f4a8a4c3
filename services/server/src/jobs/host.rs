//! The agent's side of placement: assignments (long-poll), acknowledgement that a job
//! started, and log upload. Authenticated by the host key: each request carries
//! [`HOST_TIME_HEADER`], [`HOST_NONCE_HEADER`] and [`HOST_SIGNATURE_HEADER`], an ed25519
//! signature (checked with `verify_strict`) over the domain tag, method, path, host id,
//! time, nonce and body; the time must be within the report clock-skew window and the
//! nonce new for the host (see `nonces.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use capex_core::report::{
    HOST_NONCE_HEADER, HOST_REQUEST_DOMAIN, HOST_SIGNATURE_HEADER, HOST_TIME_HEADER, host_request_message,
    parse_host_nonce, verify_strict,
};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::settle::{self, Outbox};
use crate::error::{ApiError, ApiResult, Problem};
use crate::input::OutputText;
use crate::params::{ApiBytes, ApiPath, ApiQuery};
use crate::state::AppState;

/// Longest an assignments poll waits for a change.
pub const ASSIGNMENTS_WAIT_S_MAX: u64 = 30;
/// Log upload: most chunks and bytes per request.
pub const LOG_CHUNKS_MAX: usize = 256;
pub const LOG_UPLOAD_BYTES_MAX: usize = 256 * 1024;
/// Log lines kept per lease: older ones are dropped when a job floods its output.
pub const LOG_LINES_KEPT: i64 = 20_000;

fn unauthorized(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

/// Checks the host signature on a request.
pub(crate) async fn authenticate_host(
    state: &AppState,
    host_id: Uuid,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(time), Some(nonce_text), Some(signature)) =
        (header(HOST_TIME_HEADER), header(HOST_NONCE_HEADER), header(HOST_SIGNATURE_HEADER))
    else {
        return Err(unauthorized(
            "host_signature_missing",
            "host requests (capex/host-request/v2) need the x-capex-host-time, x-capex-host-nonce and \
             x-capex-host-signature headers",
        ));
    };
    let unix_s: i64 = time.parse().map_err(|_| unauthorized("invalid_host_signature", "bad host time header"))?;
    let nonce = parse_host_nonce(nonce_text)
        .ok_or_else(|| unauthorized("invalid_host_signature", "the nonce must be 32 lowercase hex characters"))?;
    let skew_s = (Utc::now().timestamp() - unix_s).abs();
    if skew_s > state.config.report_skew_s as i64 {
        return Err(unauthorized("host_time_skew", "the request time is outside the clock-skew window"));
    }
    let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| unauthorized("invalid_host_signature", "the signature is not base64 of 64 bytes"))?;
    let row: Option<(Vec<u8>, String)> = sqlx::query_as("select public_key, status from hosts where host_id = $1")
        .bind(host_id)
        .fetch_optional(&state.pool)
        .await?;
    let Some((key, status)) = row else { return Err(ApiError::not_found("host")) };
    let key: [u8; 32] = key.try_into().map_err(|_| ApiError::internal("stored host key is not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&key).map_err(ApiError::internal)?;
    let message = host_request_message(method, path, host_id, unix_s, nonce_text, body);
    verify_strict(HOST_REQUEST_DOMAIN, &key, &message, &Signature::from_bytes(&signature))
        .map_err(|_| unauthorized("invalid_host_signature", "the signature does not verify under this host's key"))?;
    if status != "active" {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "host_inactive", "this host is disabled"));
    }
    // Last, once the request is proven to be the host's: nobody else can spend its nonces.
    super::nonces::spend(&state.pool, host_id, &nonce, state.config.report_skew_s).await
}

/// One lease the host should be running.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Assignment {
    pub lease_id: Uuid,
    /// pending (start it and acknowledge), running, or preempting (an interruptible lease
    /// an on-demand buyer outbid: SIGTERM its job now, SIGKILL it at `preempt_deadline`;
    /// never start it).
    pub state: String,
    /// Preempting leases: when the job's notice ends.
    pub preempt_deadline: Option<DateTime<Utc>>,
    pub gpu_uuids: Vec<String>,
    /// The bid's job: command, env, image.
    pub job: Value,
    pub max_end_at: DateTime<Utc>,
    /// The job this lease is an attempt of (give it to the job as `CAPEX_JOB_ID`).
    pub job_id: Option<Uuid>,
    /// The attempt's number, from 1 (`CAPEX_ATTEMPT`).
    pub attempt: Option<i32>,
    /// The attempt's job token (`CAPEX_JOB_TOKEN`): valid while this lease is pending or
    /// running, it lets the job read and steer itself (see `auth::job_token`).
    #[sqlx(skip)]
    pub job_token: Option<String>,
}

/// Every active lease of the host: start the pending ones, stop any running job not listed
/// (cancelled, ended, or lost).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignments {
    pub items: Vec<Assignment>,
    /// Open proof-of-compute challenges for this host's GPUs (docs/verification.md).
    #[schema(value_type = Vec<Object>)]
    pub challenges: Vec<capex_core::challenge::ChallengeOrder>,
    /// Nonces for confidential-computing evidence, one per GPU asked.
    #[schema(value_type = Vec<Object>)]
    pub cc_requests: Vec<capex_attest::CcRequest>,
}

/// Everything the host should act on now; `fresh` when a challenge or nonce was not
/// delivered before (the poll then answers at once).
async fn host_work(state: &AppState, host_id: Uuid) -> Result<(Assignments, bool), ApiError> {
    let items = active_leases(state, host_id).await?;
    let (challenges, new_challenges) = crate::verification::challenges::open_for_host(state, host_id).await?;
    let (cc_requests, new_requests) = crate::verification::attestations::open_for_host(state, host_id).await?;
    Ok((Assignments { items, challenges, cc_requests }, new_challenges || new_requests))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AssignmentsQuery {
    /// Seconds to wait for a change when the set equals `have` (at most 30).
    wait: Option<u64>,
    /// Comma-separated lease ids the agent runs now.
    have: Option<String>,
}

async fn active_leases(state: &AppState, host_id: Uuid) -> Result<Vec<Assignment>, ApiError> {
    let rows: Vec<Assignment> = sqlx::query_as(
        "select lease_id, state, preempt_deadline, gpu_uuids, job, max_end_at, job_id, attempt from leases
         where host_id = $1 and state in ('pending', 'running', 'preempting') order by lease_id",
    )
    .bind(host_id)
    .fetch_all(&state.pool)
    .await?;
    let key = &state.jwt.job_token_key;
    Ok(rows
        .into_iter()
        .map(|a| Assignment { job_token: Some(crate::auth::job_token::mint(key, a.lease_id)), ..a })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/hosts/{host_id}/assignments", tag = "hosts", params(("host_id" = Uuid, Path, description = "The host"), AssignmentsQuery),
    responses((status = 200, body = Assignments), (status = 401, body = Problem, description = "host_signature_missing, invalid_host_signature, host_time_skew"),
        (status = 409, body = Problem, description = "host_request_replayed: the nonce was used before")))]
pub(crate) async fn assignments(
    State(state): State<AppState>,
    ApiPath(host_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AssignmentsQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Assignments>> {
    let path = format!("/api/v1/hosts/{host_id}/assignments");
    authenticate_host(&state, host_id, "GET", &path, &headers, b"").await?;
    let have: BTreeSet<Uuid> =
        q.have.as_deref().unwrap_or("").split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(ASSIGNMENTS_WAIT_S_MAX));
    // Subscribe before reading so a change committed in between still wakes us.
    let mut events = state.feed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let host = serde_json::to_value(host_id).map_err(ApiError::internal)?;
    loop {
        let (work, fresh) = host_work(&state, host_id).await?;
        let now: BTreeSet<Uuid> = work.items.iter().map(|a| a.lease_id).collect();
        // A shutdown answers with what is there: the agent polls again (another replica).
        if fresh || now != have || tokio::time::Instant::now() >= deadline || state.shutdown.is_cancelled() {
            return Ok(Json(work));
        }
        // Wait for a job event about this host (a trade, cancel, or settlement), a resync
        // (events may have been missed) or the shutdown.
        let woke = tokio::time::timeout_at(deadline, async {
            loop {
                let event = tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(event) if matches!(event.kind, "job" | "host") && event.data["host_id"] == host => return,
                    Ok(event) if event.kind == "resync" => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
        .await;
        if woke.is_err() {
            return Ok(Json(host_work(&state, host_id).await?.0));
        }
    }
}

/// The answer to an acknowledgement.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AckReceipt {
    /// The lease's state now: running, or the final state if it ended (stop the job).
    pub state: String,
}

#[utoipa::path(post, path = "/api/v1/hosts/{host_id}/leases/{lease_id}/ack", tag = "hosts",
    params(("host_id" = Uuid, Path, description = "The host"), ("lease_id" = Uuid, Path, description = "The lease")),
    responses((status = 200, body = AckReceipt), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "host_request_replayed: the nonce was used before")))]
pub(crate) async fn ack(
    State(state): State<AppState>,
    ApiPath((host_id, lease_id)): ApiPath<(Uuid, Uuid)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<AckReceipt>> {
    let path = format!("/api/v1/hosts/{host_id}/leases/{lease_id}/ack");
    authenticate_host(&state, host_id, "POST", &path, &headers, &body).await?;
    let mut tx = state.pool.begin().await?;
    let mut lease = settle::lock_lease(&mut tx, lease_id)
        .await?
        .filter(|l| l.host_id == host_id)
        .ok_or_else(|| ApiError::not_found("lease"))?;
    let mut outbox = Outbox::default();
    settle::start(&mut tx, &mut lease, Utc::now(), &mut outbox).await?;
    tx.commit().await?;
    outbox.publish(&state.feed);
    Ok(Json(AckReceipt { state: lease.state }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct LogUpload {
    chunks: Vec<LogUploadChunk>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct LogUploadChunk {
    /// stdout, stderr or system.
    stream: String,
    /// What the job printed; a NUL in it is stored as U+FFFD (see `input::OutputText`).
    #[schema(value_type = String)]
    text: OutputText,
}

/// The answer to a log upload.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogReceipt {
    /// Sequence number of the last stored line.
    pub last_seq: i64,
}

#[utoipa::path(post, path = "/api/v1/hosts/{host_id}/leases/{lease_id}/logs", tag = "hosts",
    params(("host_id" = Uuid, Path, description = "The host"), ("lease_id" = Uuid, Path, description = "The lease")),
    request_body = LogUpload,
    responses((status = 200, body = LogReceipt), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "host_request_replayed: the nonce was used before"),
        (status = 413, body = Problem, description = "logs_too_large"), (status = 422, body = Problem)))]
pub(crate) async fn upload_logs(
    State(state): State<AppState>,
    ApiPath((host_id, lease_id)): ApiPath<(Uuid, Uuid)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<LogReceipt>> {
    if body.len() > LOG_UPLOAD_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "logs_too_large",
            format!("a log upload is at most {LOG_UPLOAD_BYTES_MAX} bytes"),
        ));
    }
    let path = format!("/api/v1/hosts/{host_id}/leases/{lease_id}/logs");
    authenticate_host(&state, host_id, "POST", &path, &headers, &body).await?;
    let upload: LogUpload = crate::extract::parse_json(&body)?;
    if upload.chunks.len() > LOG_CHUNKS_MAX {
        return Err(ApiError::invalid("chunks", "too_many_chunks", format!("at most {LOG_CHUNKS_MAX} chunks")));
    }
    if let Some(i) = upload.chunks.iter().position(|c| !["stdout", "stderr", "system"].contains(&c.stream.as_str())) {
        return Err(ApiError::invalid(&format!("chunks[{i}].stream"), "invalid_stream", "stdout, stderr or system"));
    }
    let mut tx = state.pool.begin().await?;
    let n = upload.chunks.len() as i64;
    let first: i64 = sqlx::query_scalar(
        "update leases set log_seq = log_seq + $3 where lease_id = $1 and host_id = $2 returning log_seq - $3",
    )
    .bind(lease_id)
    .bind(host_id)
    .bind(n)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("lease"))?;
    let seqs: Vec<i64> = (first..first + n).collect();
    let streams: Vec<String> = upload.chunks.iter().map(|c| c.stream.clone()).collect();
    let texts: Vec<String> = upload.chunks.into_iter().map(|c| c.text.into_string()).collect();
    sqlx::query(
        "insert into lease_logs (lease_id, seq, stream, text)
         select $1, * from unnest($2::int8[], $3::text[], $4::text[])",
    )
    .bind(lease_id)
    .bind(&seqs)
    .bind(&streams)
    .bind(&texts)
    .execute(&mut *tx)
    .await?;
    // Floods keep the tail.
    sqlx::query("delete from lease_logs where lease_id = $1 and seq < $2")
        .bind(lease_id)
        .bind(first + n - LOG_LINES_KEPT)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(LogReceipt { last_seq: first + n - 1 }))
}
