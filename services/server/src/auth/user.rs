use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use capex_core::Role;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{api_keys, password};
use crate::error::ApiError;
use crate::state::AppState;

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserView {
    pub user_id: Uuid,
    pub email: String,
    #[schema(value_type = Vec<Role>)]
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The authenticated caller, from a login token or an API key.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub roles: Vec<Role>,
}

impl AuthUser {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) { Ok(()) } else { Err(ApiError::forbidden(format!("this needs the {} role", role.as_str()))) }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = super::job_token::bearer(parts)?;
        authenticate(state, token).await
    }
}

/// Resolves a bearer token (JWT or API key) to its user.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    if super::job_token::looks_like_job_token(token) {
        // A job token steers its own job through the routes that take `Caller`; nothing else.
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "job_token_not_allowed",
            "a job token may only read its own job, release it, place and cancel its children, and read market data",
        ));
    }
    let user_id = if api_keys::looks_like_api_key(token) {
        // Checked in the database every time (not cached): revocation applies at once.
        let found = api_keys::user_of_key(&state.pool, token).await?;
        found.ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?
    } else {
        state.jwt.verify(token).map_err(|err| ApiError::unauthorized(format!("invalid token: {err}")))?.sub
    };
    let roles = state.roles.roles(&state.pool, user_id).await?;
    let roles = roles.ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
    Ok(AuthUser { user_id, roles: roles.to_vec() })
}

/// Inserts a user with a hashed password. The caller checks the roles it may grant.
pub async fn create_user(
    conn: &mut PgConnection,
    email: &str,
    plain_password: String,
    roles: &[Role],
) -> Result<UserView, ApiError> {
    let hash = password::hash_password(plain_password).await?;
    let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_string()).collect();
    let user: UserView = sqlx::query_as(
        "insert into users (user_id, email, password_hash, roles) values ($1, $2, $3, $4)
         returning user_id, email, roles, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(hash)
    .bind(&roles)
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("users_email_key") => {
            ApiError::new(axum::http::StatusCode::CONFLICT, "email_taken", "an account with this email already exists")
                .with_field("email")
        }
        _ => ApiError::from(err),
    })?;
    capex_ledger::wallet_account(conn, user.user_id).await?;
    Ok(user)
}

#[derive(sqlx::FromRow)]
struct UserWithHash {
    #[sqlx(flatten)]
    user: UserView,
    password_hash: String,
}

pub async fn find_user_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<(UserView, String)>, ApiError> {
    let row: Option<UserWithHash> =
        sqlx::query_as("select user_id, email, roles, created_at, password_hash from users where email = $1")
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|r| (r.user, r.password_hash)))
}
