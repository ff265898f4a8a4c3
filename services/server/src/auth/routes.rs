use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use capex_core::Role;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::user::{AuthUser, UserView, create_user, find_user_by_email};
use super::{api_keys, password};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::ApiJson;
use crate::input::Text;
use crate::state::AppState;

pub const PASSWORD_CHARS_MIN: usize = 8;
pub const PASSWORD_CHARS_MAX: usize = 256;
pub const EMAIL_CHARS_MAX: usize = 254;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/api-keys", post(create_api_key).get(api_keys::list_api_keys))
        .route("/api/v1/auth/api-keys/{api_key_id}", delete(api_keys::revoke_api_key))
        .route("/api/v1/me", get(me))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(value_type = String, format = Email, max_length = 254)]
    pub email: Text<EMAIL_CHARS_MAX>,
    /// 8 to 256 characters.
    #[schema(value_type = String, min_length = 8, max_length = 256)]
    pub password: Text<PASSWORD_CHARS_MAX>,
    /// "buyer" and/or "provider". Operators are created by configuration, not here.
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
}

/// Normalises and checks an email address just enough to catch typos.
fn parse_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= EMAIL_CHARS_MAX
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid { Ok(email) } else { Err(ApiError::invalid("email", "invalid_email", "email is not a valid address")) }
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView),
        (status = 403, body = Problem, description = "forbidden_role: the operator role cannot be self-assigned"),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let email = parse_email(&req.email)?;
    let chars = req.password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&chars) {
        return Err(ApiError::invalid(
            "password",
            "invalid_password",
            format!("password must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters"),
        ));
    }
    if req.roles.is_empty() {
        return Err(ApiError::invalid("roles", "invalid_roles", "choose at least one role: buyer or provider"));
    }
    if req.roles.contains(&Role::Operator) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            "the operator role cannot be self-assigned",
        )
        .with_field("roles"));
    }
    let mut roles = req.roles.clone();
    roles.dedup();
    let mut tx = state.pool.begin().await?;
    let user = create_user(&mut tx, &email, req.password.into_string(), &roles).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(value_type = String)]
    pub email: Text<EMAIL_CHARS_MAX>,
    #[schema(value_type = String)]
    pub password: Text<PASSWORD_CHARS_MAX>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub user: UserView,
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let email = req.email.trim().to_lowercase();
    let mut conn = state.pool.acquire().await?;
    let found = find_user_by_email(&mut conn, &email).await?;
    drop(conn);
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password");
    let Some((user, hash)) = found else {
        // Spend the same time as a real check so response timing does not reveal which emails exist.
        let _ = password::hash_password(req.password.into_string()).await;
        return Err(refused());
    };
    if !password::verify_password(req.password.into_string(), hash).await? {
        return Err(refused());
    }
    let (token, exp) = state.jwt.issue(user.user_id).map_err(ApiError::internal)?;
    let expires_at = Utc.timestamp_opt(exp, 0).single().unwrap_or_else(Utc::now);
    Ok(Json(LoginResponse { token, token_type: "Bearer".into(), expires_at, user }))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// A label to recognise the key by, e.g. "agent on rack 3": 1 to 100 characters, not all blank.
    #[schema(value_type = String, min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: Text<API_KEY_NAME_CHARS_MAX>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    pub api_key_id: Uuid,
    pub name: String,
    /// The key itself. It is shown only in this response.
    pub key: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
}

pub const API_KEY_NAME_CHARS_MAX: usize = 100;

#[utoipa::path(post, path = "/api/v1/auth/api-keys", tag = "auth", request_body = NewApiKey,
    security(("bearer" = [])),
    responses((status = 201, body = ApiKeyCreated), (status = 401, body = Problem)))]
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<NewApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > API_KEY_NAME_CHARS_MAX {
        return Err(ApiError::invalid(
            "name",
            "invalid_name",
            format!("name must be 1 to {API_KEY_NAME_CHARS_MAX} characters"),
        ));
    }
    let key = api_keys::generate();
    let prefix: String = key.chars().take(api_keys::API_KEY_SHOWN_CHARS).collect();
    let (api_key_id, created_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
        "insert into api_keys (api_key_id, user_id, name, prefix, key_hash) values ($1, $2, $3, $4, $5)
         returning api_key_id, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(auth.user_id)
    .bind(name)
    .bind(&prefix)
    .bind(api_keys::hash(&key))
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(ApiKeyCreated { api_key_id, name: name.to_string(), key, prefix, created_at })))
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = Problem)))]
pub(crate) async fn me(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<UserView>> {
    let user: UserView = sqlx::query_as("select user_id, email, roles, created_at from users where user_id = $1")
        .bind(auth.user_id)
        .fetch_one(&state.pool)
        .await?;
    Ok(Json(user))
}
