//! Long-lived API keys for scripts and agents: shown once, stored as a sha256 hash.
//! The keys are 256 random bits, so a fast hash is as safe as a slow one here and keeps
//! every authenticated request cheap. Owners list their keys (never the secret) and
//! revoke them; a revoked key is refused from the next request on.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub const API_KEY_PREFIX: &str = "capex_";
/// Characters of a key kept in clear to tell keys apart in listings.
pub const API_KEY_SHOWN_CHARS: usize = 12;

pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

/// How often a key's `last_used_at` is written at most: using a key is not a write per
/// request, only once per this interval per key.
pub const LAST_USED_RESOLUTION_S: i64 = 60;

/// The user of an API key that is not revoked, or `None`. Read from the database on every
/// request, never cached, so a revoked key stops working at the next request (only roles,
/// by user, are cached). The same statement moves `last_used_at` when it is older than
/// [`LAST_USED_RESOLUTION_S`], so it costs no extra round trip.
pub async fn user_of_key(pool: &PgPool, key: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "with found as (
             select api_key_id, user_id, last_used_at from api_keys where key_hash = $1 and revoked_at is null
         ), touched as (
             update api_keys k set last_used_at = now()
             from found f
             where k.api_key_id = f.api_key_id
               and (f.last_used_at is null or f.last_used_at < now() - make_interval(secs => $2))
         )
         select user_id from found",
    )
    .bind(hash(key))
    .bind(LAST_USED_RESOLUTION_S as f64)
    .fetch_optional(pool)
    .await
}

/// One of the caller's API keys, without its secret.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub api_key_id: Uuid,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key last authenticated a request, to the minute; absent if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    /// The caller's keys that are not revoked, oldest first.
    pub items: Vec<ApiKeyView>,
}

/// Most keys listed; far more than anyone creates, a bound on the response all the same.
pub const API_KEYS_LISTED_MAX: i64 = 1000;

#[utoipa::path(get, path = "/api/v1/auth/api-keys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = ApiKeyList), (status = 401, body = Problem)))]
pub(crate) async fn list_api_keys(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<ApiKeyList>> {
    let items: Vec<ApiKeyView> = sqlx::query_as(
        "select api_key_id, name, prefix, created_at, last_used_at from api_keys
         where user_id = $1 and revoked_at is null order by created_at, api_key_id limit $2",
    )
    .bind(auth.user_id)
    .bind(API_KEYS_LISTED_MAX)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(ApiKeyList { items }))
}

#[utoipa::path(delete, path = "/api/v1/auth/api-keys/{api_key_id}", tag = "auth", security(("bearer" = [])),
    params(("api_key_id" = Uuid, Path, description = "One of the caller's keys")),
    responses(
        (status = 204, description = "Revoked: the key authenticates nothing from now on (revoking a revoked key again is a no-op)"),
        (status = 401, body = Problem),
        (status = 404, body = Problem, description = "not_found: no such key of the caller's"),
    ))]
pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    auth: AuthUser,
    path: Result<Path<Uuid>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Ok(Path(api_key_id)) = path else { return Err(ApiError::not_found("API key")) };
    // Another user's key is "not found", so nobody learns which key ids exist.
    let revoked: Option<bool> = sqlx::query_scalar(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
         where api_key_id = $1 and user_id = $2 returning true",
    )
    .bind(api_key_id)
    .bind(auth.user_id)
    .fetch_optional(&state.pool)
    .await?;
    match revoked {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found("API key")),
    }
}
