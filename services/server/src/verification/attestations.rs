//! Confidential-computing attestation: the server sends a fresh 32-byte nonce per GPU on
//! the host's assignments poll; the agent answers with the GPU's signed SPDM measurement
//! report and certificate chain (or says CC is unavailable); `capex-attest` checks the
//! chain up to NVIDIA's device identity root, the report's signature by the leaf key, the
//! nonce and the device. Verified evidence keeps the GPU `cc_attested` for
//! `CAPEX_ATTESTATION_VALID_H`. See docs/verification.md for what this does and does not
//! prove.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use capex_attest::{CcAnswer, CcRequest, ReferenceValues, TrustRoots};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::challenges::publish;
use crate::error::{ApiError, ApiResult, Problem};
use crate::hosts::capacity::LIVE_SQL;
use crate::jobs::authenticate_host;
use crate::params::{ApiBytes, ApiPath};
use crate::state::AppState;

/// How long the agent has to answer a nonce (NVML answers in well under a second).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(120);
/// Largest evidence body: a report of a few KiB and a chain of a few certificates.
pub const EVIDENCE_BYTES_MAX: usize = 256 * 1024;
/// Evidence is asked for again this long before the level it gave runs out.
const RENEW_BEFORE_H: i32 = 1;

/// The outcome of an attestation answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttestationVerdict {
    /// verified, unavailable (the host says CC is unsupported or off).
    pub outcome: String,
    /// Whether the measurements were compared with reference values.
    pub measurements_checked: bool,
}

type Roots = Result<(TrustRoots, Option<ReferenceValues>), String>;

/// The trusted roots and reference values, loaded once: a bad path is an answer
/// (`cc_verifier_unconfigured`), not a crash, and is logged at the first use.
fn roots(state: &AppState) -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let roots = match &state.config.cc_root_pem {
            Some(path) => TrustRoots::from_pem_file(path).map_err(|e| format!("CAPEX_CC_ROOT_PEM: {e}"))?,
            None => TrustRoots::nvidia(),
        };
        let rims = match &state.config.cc_rim_dir {
            Some(dir) => Some(ReferenceValues::from_dir(dir).map_err(|e| format!("CAPEX_CC_RIM_DIR: {e}"))?),
            None => None,
        };
        Ok((roots, rims))
    })
}

/// Asks for evidence from each GPU of `host_id` with no open request. Returns the ids.
pub(crate) async fn request(state: &AppState, host_id: Uuid) -> Result<Vec<Uuid>, ApiError> {
    let gpus: Vec<String> = sqlx::query_scalar(
        "select g.gpu_uuid from host_gpus g join hosts h using (host_id)
         where h.host_id = $1 and h.backend = 'nvml' and h.status = 'active'
             and not exists (select 1 from gpu_attestations a where a.gpu_uuid = g.gpu_uuid and a.state = 'requested')
         order by g.gpu_index",
    )
    .bind(host_id)
    .fetch_all(&state.pool)
    .await?;
    let mut ids = Vec::with_capacity(gpus.len());
    for gpu_uuid in gpus {
        let request_id = Uuid::now_v7();
        let nonce: [u8; 32] = rand::random();
        sqlx::query(
            "insert into gpu_attestations (request_id, host_id, gpu_uuid, nonce, answer_by)
             values ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        )
        .bind(request_id)
        .bind(host_id)
        .bind(&gpu_uuid)
        .bind(nonce.as_slice())
        .bind(ANSWER_WITHIN.as_secs() as f64)
        .execute(&state.pool)
        .await?;
        ids.push(request_id);
    }
    if !ids.is_empty() {
        let owner: Option<Uuid> = sqlx::query_scalar("select owner_id from hosts where host_id = $1")
            .bind(host_id)
            .fetch_optional(&state.pool)
            .await?;
        if let Some(owner) = owner {
            publish(state, owner, host_id);
        }
    }
    Ok(ids)
}

/// Hosts due for evidence: live NVML hosts with a GPU never asked, or whose `cc_attested`
/// level runs out within the hour.
pub(crate) async fn request_due(state: &AppState) -> Result<(), ApiError> {
    let sql = format!(
        "select distinct h.host_id from hosts h join host_gpus g using (host_id)
         where {LIVE_SQL} and h.backend = 'nvml'
             and not exists (select 1 from gpu_attestations a where a.gpu_uuid = g.gpu_uuid and a.state = 'requested')
             and (not exists (select 1 from gpu_attestations a where a.gpu_uuid = g.gpu_uuid)
                  or g.cc_attested_until between now() and now() + make_interval(hours => {RENEW_BEFORE_H}))
         limit 50"
    );
    let due: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&state.pool).await?;
    for host_id in due {
        request(state, host_id).await?;
    }
    Ok(())
}

/// Requests nobody answered in time end `expired`: the GPU keeps whatever level it had.
pub(crate) async fn expire_late(state: &AppState) -> Result<u64, ApiError> {
    let done = sqlx::query(
        "update gpu_attestations set state = 'expired', decided_at = now(), code = 'cc_no_answer'
         where state = 'requested' and answer_by < now()",
    )
    .execute(&state.pool)
    .await?;
    Ok(done.rows_affected())
}

/// The open requests of a host for its assignments poll; `undelivered` as for challenges.
pub(crate) async fn open_for_host(state: &AppState, host_id: Uuid) -> Result<(Vec<CcRequest>, bool), ApiError> {
    let rows: Vec<(Uuid, String, Vec<u8>, bool)> = sqlx::query_as(
        "update gpu_attestations a set delivered_at = coalesce(a.delivered_at, now())
         from gpu_attestations old
         where old.request_id = a.request_id and a.host_id = $1 and a.state = 'requested'
         returning a.request_id, a.gpu_uuid, a.nonce, old.delivered_at is null",
    )
    .bind(host_id)
    .fetch_all(&state.pool)
    .await?;
    let undelivered = rows.iter().any(|r| r.3);
    let mut requests: Vec<CcRequest> = rows
        .into_iter()
        .map(|(request_id, gpu_uuid, nonce, _)| CcRequest { request_id, gpu_uuid, nonce: hex::encode(nonce) })
        .collect();
    requests.sort_by_key(|r| r.request_id);
    Ok((requests, undelivered))
}

fn refusal(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
    metrics::counter!("capex_attestation_refusals_total", "code" => code).increment(1);
    ApiError::new(status, code, detail)
}

/// An attestation's GPU, nonce, state, whether it is late, the host's owner and the CC device id.
type AttestationRow = (String, Vec<u8>, String, bool, Uuid, Option<String>);

#[utoipa::path(post, path = "/api/v1/hosts/{host_id}/attestations/{request_id}", tag = "verification",
    params(("host_id" = Uuid, Path, description = "The host"), ("request_id" = Uuid, Path, description = "The attestation request")),
    request_body(content = serde_json::Value, description = "{\"evidence\": {gpu_uuid, nonce, attestation_report, certificate_chain}} or {\"unavailable\": {gpu_uuid, reason}}"),
    responses((status = 200, body = AttestationVerdict),
        (status = 401, body = Problem, description = "host_signature_missing, invalid_host_signature, host_time_skew"),
        (status = 404, body = Problem, description = "attestation_unknown"),
        (status = 409, body = Problem, description = "attestation_replayed: answered already; host_request_replayed"),
        (status = 413, body = Problem),
        (status = 422, body = Problem, description = "cc_bad_format, cc_wrong_nonce, cc_chain_invalid, cc_signature_invalid, cc_wrong_device, cc_measurement_mismatch, attestation_late")))]
pub(crate) async fn post_attestation(
    State(state): State<AppState>,
    ApiPath((host_id, request_id)): ApiPath<(Uuid, Uuid)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<AttestationVerdict>> {
    let path = format!("/api/v1/hosts/{host_id}/attestations/{request_id}");
    authenticate_host(&state, host_id, "POST", &path, &headers, &body).await?;
    let answer: CcAnswer = crate::extract::parse_json(&body)?;
    let mut tx = state.pool.begin().await?;
    let row: Option<AttestationRow> = sqlx::query_as(
        "select a.gpu_uuid, a.nonce, a.state, now() > a.answer_by, h.owner_id, g.cc_device_id
         from gpu_attestations a join hosts h using (host_id) join host_gpus g using (gpu_uuid)
         where a.request_id = $1 and a.host_id = $2 for update of a, g",
    )
    .bind(request_id)
    .bind(host_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((gpu_uuid, nonce, request_state, late, owner, pinned_device)) = row else {
        return Err(refusal(StatusCode::NOT_FOUND, "attestation_unknown", "no such attestation request for this host"));
    };
    if request_state != "requested" {
        return Err(refusal(
            StatusCode::CONFLICT,
            "attestation_replayed",
            format!("this request is {request_state} already; it is answered once"),
        ));
    }
    let decide = |state: &'static str,
                  code: Option<&'static str>,
                  detail: Option<String>,
                  verified: Option<serde_json::Value>| {
        sqlx::query(
            "update gpu_attestations set state = $2, decided_at = now(), code = $3, detail = $4, verified = $5
             where request_id = $1",
        )
        .bind(request_id)
        .bind(state)
        .bind(code)
        .bind(detail)
        .bind(verified)
    };
    if late {
        decide("expired", Some("attestation_late"), Some("the answer came after answer_by".into()), None)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Err(refusal(StatusCode::UNPROCESSABLE_ENTITY, "attestation_late", "the answer came after answer_by"));
    }
    let evidence = match answer {
        CcAnswer::Unavailable(unavailable) => {
            let reason = crate::input::printable(&unavailable.reason).chars().take(500).collect::<String>();
            decide("unavailable", None, Some(reason), None).execute(&mut *tx).await?;
            tx.commit().await?;
            publish(&state, owner, host_id);
            return Ok(Json(AttestationVerdict { outcome: "unavailable".into(), measurements_checked: false }));
        }
        CcAnswer::Evidence(evidence) => evidence,
    };
    let (roots, rims) = match roots(&state) {
        Ok((roots, rims)) => (roots, rims.as_ref()),
        Err(err) => {
            tracing::error!(error = %err, "CC verifier is not configured");
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cc_verifier_unconfigured", err.clone()));
        }
    };
    let nonce: [u8; 32] = nonce.try_into().map_err(|_| ApiError::internal("stored nonce is not 32 bytes"))?;
    let expected_gpu = gpu_uuid.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        let verified = capex_attest::verify(&evidence, &nonce, &expected_gpu, roots, rims)?;
        capex_attest::check_device_binding(&verified, pinned_device.as_deref())?;
        Ok(verified)
    })
    .await
    .map_err(ApiError::internal)?;
    // One chip backs one GPU: evidence of a chip already pinned to another GPU is a relay.
    let verdict = match verdict {
        Ok(verified) => {
            let taken: Option<String> =
                sqlx::query_scalar("select gpu_uuid from host_gpus where cc_device_id = $1 and gpu_uuid <> $2")
                    .bind(&verified.device_id)
                    .bind(&gpu_uuid)
                    .fetch_optional(&mut *tx)
                    .await?;
            match taken {
                Some(other) => Err(capex_attest::CcRefusal::WrongDevice(format!(
                    "the chip with identity {} already attested GPU {other}",
                    verified.device_id
                ))),
                None => Ok(verified),
            }
        }
        Err(refused) => Err(refused),
    };
    match verdict {
        Ok(verified) => {
            let record = serde_json::to_value(&verified).map_err(ApiError::internal)?;
            decide("verified", None, None, Some(record)).execute(&mut *tx).await?;
            sqlx::query(
                "update host_gpus set cc_attested_until = now() + make_interval(hours => $2),
                        cc_measurements_checked = $3, verified_at = now(), cc_device_id = $4
                 where gpu_uuid = $1",
            )
            .bind(&gpu_uuid)
            .bind(state.config.attestation_valid_h as i32)
            .bind(verified.measurements_checked)
            .bind(&verified.device_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(%host_id, gpu = gpu_uuid, measurements_checked = verified.measurements_checked, "CC evidence verified");
            publish(&state, owner, host_id);
            Ok(Json(AttestationVerdict {
                outcome: "verified".into(),
                measurements_checked: verified.measurements_checked,
            }))
        }
        Err(refused) => {
            let code = refused.code();
            decide("refused", Some(code), Some(refused.to_string()), None).execute(&mut *tx).await?;
            // Evidence that fails a check takes away an earlier cc_attested level too.
            sqlx::query("update host_gpus set cc_attested_until = null, verified_at = now() where gpu_uuid = $1")
                .bind(&gpu_uuid)
                .execute(&mut *tx)
                .await?;
            super::challenges::count_refusal(&mut tx, host_id, code).await?;
            tx.commit().await?;
            publish(&state, owner, host_id);
            tracing::warn!(%host_id, gpu = gpu_uuid, code, error = %refused, "CC evidence refused");
            Err(refusal(StatusCode::UNPROCESSABLE_ENTITY, code, refused.to_string()))
        }
    }
}

/// One attestation request as the verification view shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct AttestationView {
    pub request_id: Uuid,
    pub gpu_uuid: String,
    pub requested_at: DateTime<Utc>,
    /// requested, verified, refused, unavailable, expired.
    pub state: String,
    pub decided_at: Option<DateTime<Utc>>,
    /// The refusal code (`cc_wrong_nonce`, ...) when refused.
    pub code: Option<String>,
    /// Why CC is unavailable, or the refusal's detail.
    pub detail: Option<String>,
    /// What the verifier recorded (leaf subject, chain fingerprint, measurements checked).
    #[schema(value_type = Option<Object>)]
    pub verified: Option<serde_json::Value>,
}
