//! Verified supply: what the exchange itself checked about each GPU (DESIGN section 12,
//! docs/verification.md). Levels ([`level`]), the proof-of-compute challenge
//! ([`challenges`]), confidential-computing evidence ([`attestations`]), when hosts are
//! checked ([`scheduler`]) and the public evidence ([`views`]). Operators can challenge or
//! attest a host on demand and lift a host's block after failed challenges.

pub mod attestations;
pub mod challenges;
pub mod level;
pub mod scheduler;
pub mod views;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use capex_core::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::level::Level;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::params::ApiPath;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hosts/{host_id}/verification", get(views::get_verification))
        .route("/api/v1/hosts/{host_id}/challenges/{challenge_id}/commitment", post(challenges::post_commitment))
        .route(
            "/api/v1/hosts/{host_id}/challenges/{challenge_id}/answer",
            post(challenges::post_answer).layer(DefaultBodyLimit::max(challenges::ANSWER_BYTES_MAX)),
        )
        .route(
            "/api/v1/hosts/{host_id}/attestations/{request_id}",
            post(attestations::post_attestation).layer(DefaultBodyLimit::max(attestations::EVIDENCE_BYTES_MAX)),
        )
        .route("/api/v1/operator/hosts/{host_id}/challenge", post(operator_challenge))
        .route("/api/v1/operator/hosts/{host_id}/attest", post(operator_attest))
        .route("/api/v1/operator/hosts/{host_id}/clear-challenge-block", post(operator_clear_block))
}

/// What an operator's request started.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issued {
    /// Ids of the challenges or attestation requests issued (empty: no GPU qualified now,
    /// e.g. all are leased, offered or already under challenge).
    pub ids: Vec<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/operator/hosts/{host_id}/challenge", tag = "operator",
    params(("host_id" = Uuid, Path, description = "The host")), security(("bearer" = [])),
    responses((status = 200, body = Issued, description = "Challenges issued to the host's idle GPUs"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn operator_challenge(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(host_id): ApiPath<Uuid>,
) -> ApiResult<Json<Issued>> {
    auth.require(Role::Operator)?;
    let ids = scheduler::start_round(&state, host_id, challenges::Reason::Operator).await?;
    Ok(Json(Issued { ids }))
}

#[utoipa::path(post, path = "/api/v1/operator/hosts/{host_id}/attest", tag = "operator",
    params(("host_id" = Uuid, Path, description = "The host")), security(("bearer" = [])),
    responses((status = 200, body = Issued, description = "Fresh nonces sent to the host's NVML GPUs"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn operator_attest(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(host_id): ApiPath<Uuid>,
) -> ApiResult<Json<Issued>> {
    auth.require(Role::Operator)?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from hosts where host_id = $1)")
        .bind(host_id)
        .fetch_one(&state.pool)
        .await?;
    if !exists {
        return Err(ApiError::not_found("host"));
    }
    let ids = attestations::request(&state, host_id).await?;
    Ok(Json(Issued { ids }))
}

#[utoipa::path(post, path = "/api/v1/operator/hosts/{host_id}/clear-challenge-block", tag = "operator",
    params(("host_id" = Uuid, Path, description = "The host")), security(("bearer" = [])),
    responses((status = 200, body = views::HostVerification, description = "The host may place asks again; its failures in a row start from zero"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn operator_clear_block(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(host_id): ApiPath<Uuid>,
) -> ApiResult<Json<views::HostVerification>> {
    auth.require(Role::Operator)?;
    let owner: Option<Uuid> = sqlx::query_scalar(
        "update hosts set challenge_failures = 0, challenge_blocked_at = null where host_id = $1 returning owner_id",
    )
    .bind(host_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some(owner) = owner else { return Err(ApiError::not_found("host")) };
    tracing::info!(%host_id, operator = %auth.user_id, "challenge block cleared");
    challenges::publish(&state, owner, host_id);
    views::get_verification(State(state), ApiPath(host_id)).await
}
