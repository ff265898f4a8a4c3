//! Job tokens: what a running attempt holds to steer its own job (issue 17, part 4).
//!
//! Each lease (attempt) has one token, `cxj_` + the lease id (32 hex) + an HMAC-SHA256 of
//! the lease id under a key derived from the server's secret (64 hex). Nothing is stored:
//! the server recomputes the MAC, and on every request reads the lease and accepts the
//! token only while the lease is pending or running. So the token is valid exactly while
//! the attempt runs and revoked the moment it ends (exited, released, cancelled, lost, past
//! its end), with no revocation list to keep. The agent receives it in the host-signed
//! assignments poll and gives it to the job as `CAPEX_JOB_TOKEN`.
//!
//! A job token authenticates only the routes that take [`Caller`] (read its own job,
//! release it, place and cancel its children) and the public market data; [`super::AuthUser`]
//! refuses it everywhere else with 403 `job_token_not_allowed`.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

pub const JOB_TOKEN_PREFIX: &str = "cxj_";
const KEY_DOMAIN: &[u8] = b"capex/job-token-key/v1";
const MAC_DOMAIN: &[u8] = b"capex/job-token/v1";
const LEASE_HEX_CHARS: usize = 32;
const MAC_HEX_CHARS: usize = 64;

/// The job-token key derived from the server secret (never the secret itself).
pub(crate) fn derive_key(secret: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(KEY_DOMAIN);
    hasher.update(secret);
    hasher.finalize().into()
}

fn mac(key: &[u8; 32], lease_id: Uuid) -> Hmac<Sha256> {
    // An HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(MAC_DOMAIN);
    mac.update(lease_id.as_bytes());
    mac
}

/// The token of the attempt `lease_id`.
pub fn mint(key: &[u8; 32], lease_id: Uuid) -> String {
    format!("{JOB_TOKEN_PREFIX}{}{}", lease_id.simple(), hex::encode(mac(key, lease_id).finalize().into_bytes()))
}

pub fn looks_like_job_token(token: &str) -> bool {
    token.starts_with(JOB_TOKEN_PREFIX)
}

/// The lease a well-formed token with a valid MAC names (compared in constant time).
pub fn verify(key: &[u8; 32], token: &str) -> Option<Uuid> {
    let rest = token.strip_prefix(JOB_TOKEN_PREFIX)?;
    if rest.len() != LEASE_HEX_CHARS + MAC_HEX_CHARS || !rest.is_ascii() {
        return None;
    }
    let (lease_hex, mac_hex) = rest.split_at(LEASE_HEX_CHARS);
    let lease_id = Uuid::try_parse(lease_hex).ok()?;
    let tag = hex::decode(mac_hex).ok()?;
    mac(key, lease_id).verify_slice(&tag).ok()?;
    Some(lease_id)
}

/// A running attempt, authenticated by its job token.
#[derive(Debug, Clone)]
pub struct JobToken {
    pub lease_id: Uuid,
    /// The job the attempt belongs to: the only job the token may act on.
    pub job_id: Uuid,
    /// The job's owner (the buyer): children are paid from this wallet.
    pub owner_id: Uuid,
}

impl JobToken {
    /// True when `id` names this token's job (its id or this attempt's lease id).
    pub fn names(&self, id: Uuid) -> bool {
        id == self.job_id || id == self.lease_id
    }
}

fn unauthorized(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

/// Resolves a job token to its attempt: refused unless the MAC verifies and the lease is
/// pending or running now (read on every request: revocation is immediate).
pub async fn authenticate_job(state: &AppState, token: &str) -> Result<JobToken, ApiError> {
    let lease_id = verify(&state.jwt.job_token_key, token).ok_or_else(|| {
        unauthorized("invalid_job_token", "the job token is malformed or not one this exchange issued")
    })?;
    let row: Option<(Option<Uuid>, Uuid, String)> =
        sqlx::query_as("select job_id, buyer_id, state from leases where lease_id = $1")
            .bind(lease_id)
            .fetch_optional(&state.pool)
            .await?;
    let Some((job_id, owner_id, lease_state)) = row else {
        return Err(unauthorized("invalid_job_token", "the job token names no attempt"));
    };
    if !crate::jobs::settle::ACTIVE_STATES.contains(&lease_state.as_str()) {
        return Err(unauthorized(
            "job_token_revoked",
            &format!("the attempt this token belongs to has ended ({lease_state}): its token is revoked"),
        ));
    }
    Ok(JobToken { lease_id, job_id: job_id.unwrap_or(lease_id), owner_id })
}

/// Who calls a route that a job may call about itself: its owner (login token or API key)
/// or a running attempt of the job (job token).
#[derive(Debug, Clone)]
pub enum Caller {
    User(AuthUser),
    Job(JobToken),
}

impl Caller {
    /// The user whose jobs, wallet and budget the request acts on.
    pub fn user_id(&self) -> Uuid {
        match self {
            Caller::User(user) => user.user_id,
            Caller::Job(job) => job.owner_id,
        }
    }

    /// Refuses a job token acting on another job with the same 404 as an unknown job.
    pub fn require_job(&self, id: Uuid) -> Result<(), ApiError> {
        match self {
            Caller::Job(job) if !job.names(id) => Err(ApiError::not_found("job")),
            _ => Ok(()),
        }
    }
}

pub(crate) fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if looks_like_job_token(token) {
            Ok(Caller::Job(authenticate_job(state, token).await?))
        } else {
            Ok(Caller::User(super::user::authenticate(state, token).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_names_its_lease() {
        let key = derive_key(b"secret");
        let lease = Uuid::now_v7();
        let token = mint(&key, lease);
        assert!(looks_like_job_token(&token));
        assert_eq!(verify(&key, &token), Some(lease));
    }

    #[test]
    fn a_token_under_another_key_or_altered_is_refused() {
        let key = derive_key(b"secret");
        let lease = Uuid::now_v7();
        let token = mint(&key, lease);
        assert_eq!(verify(&derive_key(b"other"), &token), None);
        let other = Uuid::now_v7();
        let swapped = format!("{JOB_TOKEN_PREFIX}{}{}", other.simple(), &token[JOB_TOKEN_PREFIX.len() + 32..]);
        assert_eq!(verify(&key, &swapped), None);
        assert_eq!(verify(&key, &token[..token.len() - 1]), None);
        assert_eq!(verify(&key, "cxj_"), None);
        assert_eq!(verify(&key, &format!("{token}0")), None);
    }
}
