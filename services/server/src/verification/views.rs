//! What the exchange checked about a host's GPUs, with the evidence: public, because a
//! buyer choosing a level should be able to see what stands behind it. Seeds of open
//! challenges are never shown.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::attestations::AttestationView;
use super::level::{GPU_LEVEL_SQL, Level};
use crate::error::{ApiError, ApiResult, Problem};
use crate::params::ApiPath;
use crate::state::AppState;

/// Challenges and attestations listed per host.
pub const EVIDENCE_LISTED: i64 = 50;

/// A GPU's level and the deadlines that hold it there.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct GpuVerification {
    pub gpu_uuid: String,
    pub class: String,
    /// simulated, reported, challenged or cc_attested.
    pub level: Level,
    /// While ahead, a passed challenge holds the GPU at `challenged` (or above).
    pub challenged_until: Option<DateTime<Utc>>,
    /// While ahead, verified CC evidence holds the GPU at `cc_attested`.
    pub cc_attested_until: Option<DateTime<Utc>>,
    /// For `cc_attested`: whether the measurements were compared with reference values
    /// (false: "measurements not checked").
    pub cc_measurements_checked: Option<bool>,
    /// When the level last changed.
    pub verified_at: Option<DateTime<Utc>>,
}

/// One challenge and its outcome.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ChallengeView {
    pub challenge_id: Uuid,
    pub gpu_uuid: String,
    pub class: String,
    /// registration, scheduled or operator.
    pub reason: String,
    /// The matrix size and rows spot-checked.
    pub n: i32,
    pub k: i32,
    pub issued_at: DateTime<Utc>,
    pub commit_by: DateTime<Utc>,
    pub committed_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    /// issued, committed, passed or failed.
    pub state: String,
    /// challenge_wrong_row, challenge_bad_proof or challenge_late when failed.
    pub failure_code: Option<String>,
    pub failure_detail: Option<String>,
    /// The seed (hex), once the challenge is decided.
    pub seed: Option<String>,
    /// The committed Merkle root (hex).
    pub root: Option<String>,
    pub rows_asked: Option<Vec<i32>>,
    /// Server time spent checking the answer, microseconds.
    pub verify_us: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostVerification {
    pub host_id: Uuid,
    /// The probe the host registered with: nvml or simulated.
    pub backend: String,
    /// Failed challenges in a row.
    pub challenge_failures: i32,
    /// Set while the host may not place asks (too many failures in a row), until an
    /// operator clears it.
    pub challenge_blocked_at: Option<DateTime<Utc>>,
    pub gpus: Vec<GpuVerification>,
    /// Refused challenge and attestation answers by code.
    pub refusals: BTreeMap<String, i64>,
    /// The latest challenges, newest first.
    pub challenges: Vec<ChallengeView>,
    /// The latest attestation requests, newest first.
    pub attestations: Vec<AttestationView>,
}

/// The verification of every GPU of these hosts, in GPU index order.
pub(crate) async fn gpu_levels(
    conn: &mut sqlx::PgConnection,
    host_ids: &[Uuid],
) -> Result<Vec<(Uuid, GpuVerification)>, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        host_id: Uuid,
        #[sqlx(flatten)]
        gpu: GpuVerificationRow,
    }
    #[derive(sqlx::FromRow)]
    struct GpuVerificationRow {
        gpu_uuid: String,
        class: String,
        level: String,
        challenged_until: Option<DateTime<Utc>>,
        cc_attested_until: Option<DateTime<Utc>>,
        cc_measurements_checked: Option<bool>,
        verified_at: Option<DateTime<Utc>>,
    }
    let sql = format!(
        "select g.host_id, g.gpu_uuid, g.class, {GPU_LEVEL_SQL} as level,
                case when g.challenged_until > now() then g.challenged_until end as challenged_until,
                case when g.cc_attested_until > now() then g.cc_attested_until end as cc_attested_until,
                g.cc_measurements_checked, g.verified_at
         from host_gpus g join hosts h using (host_id)
         where g.host_id = any($1) order by g.host_id, g.gpu_index"
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(host_ids).fetch_all(&mut *conn).await?;
    rows.into_iter()
        .map(|r| {
            let level = r.gpu.level.parse().map_err(|_| ApiError::internal("unknown verification level"))?;
            Ok((
                r.host_id,
                GpuVerification {
                    gpu_uuid: r.gpu.gpu_uuid,
                    class: r.gpu.class,
                    level,
                    challenged_until: r.gpu.challenged_until,
                    cc_attested_until: r.gpu.cc_attested_until,
                    cc_measurements_checked: r.gpu.cc_measurements_checked,
                    verified_at: r.gpu.verified_at,
                },
            ))
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/hosts/{host_id}/verification", tag = "verification",
    params(("host_id" = Uuid, Path, description = "The host")),
    responses((status = 200, body = HostVerification), (status = 404, body = Problem)))]
pub(crate) async fn get_verification(
    State(state): State<AppState>,
    ApiPath(host_id): ApiPath<Uuid>,
) -> ApiResult<Json<HostVerification>> {
    let mut conn = state.pool.acquire().await?;
    let host: Option<(String, i32, Option<DateTime<Utc>>)> =
        sqlx::query_as("select backend, challenge_failures, challenge_blocked_at from hosts where host_id = $1")
            .bind(host_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((backend, challenge_failures, challenge_blocked_at)) = host else {
        return Err(ApiError::not_found("host"));
    };
    let gpus = gpu_levels(&mut conn, &[host_id]).await?.into_iter().map(|(_, g)| g).collect();
    let challenges: Vec<ChallengeView> = sqlx::query_as(
        "select challenge_id, gpu_uuid, class, reason, n, k, issued_at, commit_by, committed_at, decided_at, state,
                failure_code, failure_detail,
                case when state in ('passed', 'failed') then encode(seed, 'hex') end as seed,
                encode(root, 'hex') as root, rows_asked, verify_us
         from gpu_challenges where host_id = $1 order by issued_at desc, challenge_id desc limit $2",
    )
    .bind(host_id)
    .bind(EVIDENCE_LISTED)
    .fetch_all(&mut *conn)
    .await?;
    let attestations: Vec<AttestationView> = sqlx::query_as(
        "select request_id, gpu_uuid, requested_at, state, decided_at, code, detail, verified
         from gpu_attestations where host_id = $1 order by requested_at desc, request_id desc limit $2",
    )
    .bind(host_id)
    .bind(EVIDENCE_LISTED)
    .fetch_all(&mut *conn)
    .await?;
    let refusals: Vec<(String, i64)> =
        sqlx::query_as("select code, count from host_verification_refusals where host_id = $1")
            .bind(host_id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Json(HostVerification {
        host_id,
        backend,
        challenge_failures,
        challenge_blocked_at,
        gpus,
        refusals: refusals.into_iter().collect(),
        challenges,
        attestations,
    }))
}
