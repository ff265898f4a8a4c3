//! Replays of requests made with an `Idempotency-Key`.
//!
//! The response of the first request is stored in the same transaction as its effects.
//! A retry with the same key and the same body gets that stored response and moves
//! nothing; the same key with another body is refused. Two identical requests racing
//! each other meet at the table's primary key: the loser rolls back and replays.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::IdempotencyKey;

/// Fingerprint of a request: the route and the parsed body.
pub fn request_hash(route: &str, body: &impl Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// The stored response for this key, if the request was already answered.
pub async fn replay(
    pool: &PgPool,
    user_id: Uuid,
    key: &IdempotencyKey,
    hash: &str,
) -> Result<Option<Response>, ApiError> {
    let row: Option<(String, i16, serde_json::Value)> = sqlx::query_as(
        "select request_hash, response_status, response_body from idempotency
         where user_id = $1 and idempotency_key = $2",
    )
    .bind(user_id)
    .bind(&key.0)
    .fetch_optional(pool)
    .await?;
    let Some((stored_hash, status, body)) = row else { return Ok(None) };
    if stored_hash != hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        )
        .with_field("Idempotency-Key"));
    }
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    Ok(Some(response))
}

/// Stores the response under the key (when there is one) and commits the transaction.
/// If an identical request committed first, this one is rolled back and that one's
/// response is returned instead.
pub async fn commit(
    pool: &PgPool,
    mut tx: Transaction<'static, Postgres>,
    user_id: Uuid,
    key: Option<&IdempotencyKey>,
    hash: &str,
    status: StatusCode,
    body: serde_json::Value,
) -> Result<Response, ApiError> {
    if let Some(key) = key {
        let saved = sqlx::query(
            "insert into idempotency (user_id, idempotency_key, request_hash, response_status, response_body)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(user_id)
        .bind(&key.0)
        .bind(hash)
        .bind(status.as_u16() as i16)
        .bind(&body)
        .execute(&mut *tx)
        .await;
        match saved {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                tx.rollback().await?;
                return replay(pool, user_id, key, hash)
                    .await?
                    .ok_or_else(|| ApiError::internal("idempotency row vanished after a unique violation"));
            }
            Err(other) => return Err(other.into()),
        }
    }
    tx.commit().await?;
    Ok((status, Json(body)).into_response())
}
