//! Replay protection for signed host requests: each request's nonce is recorded per host
//! and a nonce seen before is refused with `host_request_replayed` (409).
//!
//! The nonce is recorded once the signature has verified and before the request has any
//! effect, in its own statement: of two copies of one request (a replay, even a concurrent
//! one) exactly one inserts the row, so the other can never store a log upload or ack a
//! lease a second time. A request whose effect then fails has spent its nonce; the agent
//! signs every attempt afresh, so its retry carries a new one.

use axum::http::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// Records `nonce` for `host_id`; `Err(host_request_replayed)` when it was already there.
///
/// A request signed at time T is accepted while the server clock is within `skew_s` of T,
/// so its nonce must be kept for `2 x skew_s` after it was first accepted (first accepted at
/// T - skew at the earliest, replayable until T + skew). The host's older rows are pruned in
/// the same statement, which keeps the table at a few windows' worth of requests per host.
pub(crate) async fn spend(pool: &PgPool, host_id: Uuid, nonce: &[u8; 16], skew_s: u64) -> Result<(), ApiError> {
    let keep_s = (skew_s.saturating_mul(2)).min(i32::MAX as u64) as f64;
    // The pruned rows never include this nonce, so the delete and the insert's conflict
    // check do not touch the same row.
    let inserted: Option<bool> = sqlx::query_scalar(
        "with pruned as (
             delete from host_request_nonces
             where host_id = $1 and nonce <> $2 and created_at < now() - make_interval(secs => $3)
         )
         insert into host_request_nonces (host_id, nonce) values ($1, $2)
         on conflict (host_id, nonce) do nothing
         returning true",
    )
    .bind(host_id)
    .bind(nonce.as_slice())
    .bind(keep_s)
    .fetch_optional(pool)
    .await?;
    if inserted.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "host_request_replayed",
            "this request's nonce was already used: sign every request with a new nonce",
        ));
    }
    Ok(())
}
