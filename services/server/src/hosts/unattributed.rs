//! `GET /api/v1/operator/report-refusals`: refused reports that are not proven to come
//! from the host in their URL (refused before the host's signature verified), by code.
//! Only the operator reads them; a host's own counts (`GET /api/v1/hosts/{id}`) hold just
//! what the host itself signed.

use axum::Json;
use axum::extract::State;
use capex_core::Role;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::{ApiResult, Problem};
use crate::state::AppState;

/// Refusals of one code, since the database was created.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UnattributedRefusals {
    /// `report_too_large`, `invalid_envelope`, `invalid_base64`, `unknown_host` or `invalid_signature`.
    pub code: String,
    pub count: i64,
    /// When the last one was counted (counts are flushed about once a second).
    pub last_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnattributedRefusalList {
    /// One entry per code seen, by code.
    pub items: Vec<UnattributedRefusals>,
}

#[utoipa::path(get, path = "/api/v1/operator/report-refusals", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = UnattributedRefusalList), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_unattributed(
    State(state): State<AppState>,
    auth: AuthUser,
) -> ApiResult<Json<UnattributedRefusalList>> {
    auth.require(Role::Operator)?;
    let items: Vec<UnattributedRefusals> =
        sqlx::query_as("select code, count, last_at from report_refusals_unattributed order by code")
            .fetch_all(&state.pool)
            .await?;
    Ok(Json(UnattributedRefusalList { items }))
}
