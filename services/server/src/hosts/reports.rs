//! `POST /api/v1/hosts/{id}/reports`: the agent's signed usage reports.
//!
//! The handler only bounds and decodes the body; the ingester (see `ingest.rs`) verifies,
//! judges and stores it. Reports are authenticated by the host key alone: no bearer token.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use capex_core::SignedEnvelope;
use capex_core::report::EnvelopeError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ingest::ReportOutcome;
use super::refusal::Refusal;
use crate::error::{ApiResult, Problem};
use crate::state::AppState;

/// Largest report body accepted. A report of 64 GPUs with a few processes each is well
/// under it; anything bigger is refused before it is read whole.
pub const REPORT_BODY_BYTES_MAX: usize = 64 * 1024;

/// The server's answer to an accepted (or harmlessly repeated) report.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportReceipt {
    /// "accepted", or "duplicate" when the same bytes as the last accepted report came again.
    pub status: String,
    pub seq: u64,
}

#[utoipa::path(post, path = "/api/v1/hosts/{host_id}/reports", tag = "hosts",
    params(("host_id" = Uuid, Path, description = "The reporting host")),
    request_body(content = capex_core::report::SignedEnvelope, description = "A signed envelope: {\"payload\": base64(JSON ReportPayload), \"signature\": base64(ed25519 over 'capex/report/v1' || payload)}"),
    responses(
        (status = 200, body = ReportReceipt, description = "Accepted, or a no-op repeat of the last accepted report"),
        (status = 400, body = Problem, description = "invalid_envelope, invalid_base64"),
        (status = 401, body = Problem, description = "invalid_signature"),
        (status = 403, body = Problem, description = "host_inactive"),
        (status = 404, body = Problem, description = "unknown_host"),
        (status = 409, body = Problem, description = "replayed_sequence"),
        (status = 413, body = Problem, description = "report_too_large"),
        (status = 422, body = Problem, description = "invalid_payload, host_mismatch, sent_at_future, sent_at_stale, foreign_gpu, energy_went_backwards, backend_mismatch"),
    ))]
pub(crate) async fn post_report(
    State(state): State<AppState>,
    host_id: Result<Path<Uuid>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ReportReceipt>> {
    let Ok(Path(host_id)) = host_id else {
        return Err(Refusal::UnknownHost.into_error("the host id is not a UUID"));
    };
    // Nothing here is proven to come from the host yet: counted by code, not on the host.
    let refuse = |refusal: Refusal, detail: String| {
        state.reports.count_unattributed(refusal);
        refusal.into_error(detail)
    };
    let too_large = || format!("a report body is at most {REPORT_BODY_BYTES_MAX} bytes");
    let declared_len =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > REPORT_BODY_BYTES_MAX as u64) {
        return Err(refuse(Refusal::TooLarge, too_large()));
    }
    let bytes =
        axum::body::to_bytes(body, REPORT_BODY_BYTES_MAX).await.map_err(|_| refuse(Refusal::TooLarge, too_large()))?;
    let envelope: SignedEnvelope = serde_json::from_slice(&bytes)
        .map_err(|err| refuse(Refusal::InvalidEnvelope, format!("expected {{\"payload\", \"signature\"}}: {err}")))?;
    let decoded = envelope.decode().map_err(|err| match err {
        EnvelopeError::InvalidBase64(field) => refuse(Refusal::InvalidBase64, format!("{field} is not valid base64")),
        other => refuse(Refusal::InvalidBase64, other.to_string()),
    })?;
    let outcome = state.reports.submit(host_id, decoded.payload, decoded.signature).await?;
    let receipt = match outcome {
        ReportOutcome::Accepted { seq } => ReportReceipt { status: "accepted".into(), seq },
        ReportOutcome::Duplicate { seq } => ReportReceipt { status: "duplicate".into(), seq },
    };
    Ok(Json(receipt))
}
