//! The operator's desk: minting credits, ledger invariants, users and fees.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use capex_core::{Credits, Role};
use capex_ledger::{
    FEES_ACCOUNT, InvariantViolation, TREASURY_ACCOUNT, TransferSpec, post_transfer, retrying, wallet_account,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, IdempotencyKey};
use crate::idempotency;
use crate::input::Text;
use crate::state::AppState;
use crate::wallet::{MEMO_CHARS_MAX, TransferView, positive_amount, user_exists};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/operator/mint", post(mint))
        .route("/api/v1/operator/invariants", get(invariants))
        .route("/api/v1/operator/users", get(users))
        .route("/api/v1/operator/fees", get(fees))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub user_id: Uuid,
    /// Credits: a decimal string, greater than zero, at most 6 decimals.
    #[schema(value_type = String, example = "1000", pattern = r"^(?:[1-9][0-9]{0,14}(?:\.[0-9]{1,6})?|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$")]
    pub amount: Credits,
    /// At most 200 characters.
    #[serde(default)]
    #[schema(value_type = String, max_length = 200)]
    pub memo: Text<MEMO_CHARS_MAX>,
}

#[utoipa::path(post, path = "/api/v1/operator/mint", tag = "operator", request_body = MintRequest,
    params(("Idempotency-Key" = String, Header, description = "Required: a retried mint with the same key mints once")),
    security(("bearer" = [])),
    responses((status = 201, body = TransferView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn mint(
    State(state): State<AppState>,
    auth: AuthUser,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<MintRequest>,
) -> ApiResult<Response> {
    auth.require(Role::Operator)?;
    let amount = positive_amount("amount", req.amount)?;
    let hash = idempotency::request_hash("POST /api/v1/operator/mint", &req);
    if let Some(replayed) = idempotency::replay(&state.pool, auth.user_id, &key, &hash).await? {
        return Ok(replayed);
    }
    let response = mint_credits(&state, auth.user_id, Some(&key), &hash, req.user_id, amount, &req.memo).await?;
    Ok(response)
}

/// Mints `amount` from the treasury into `user_id`'s wallet. Shared with demo seeding.
pub async fn mint_credits(
    state: &AppState,
    operator: Uuid,
    key: Option<&IdempotencyKey>,
    hash: &str,
    user_id: Uuid,
    amount: Credits,
    memo: &str,
) -> ApiResult<Response> {
    if !user_exists(&state.pool, user_id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_user", "no user with this id").with_field("user_id"));
    }
    let pool = &state.pool;
    let (response, body) = retrying("mint", move || async move {
        let mut tx = pool.begin().await?;
        let wallet = wallet_account(&mut tx, user_id).await?;
        let transfer = post_transfer(
            &mut tx,
            TransferSpec {
                from: TREASURY_ACCOUNT,
                to: wallet,
                amount,
                kind: "mint".into(),
                memo: memo.to_string(),
                idempotency_key: None,
            },
        )
        .await?;
        let view = TransferView {
            transfer_id: transfer.transfer_id,
            entry_id: transfer.entry_id,
            from_user: None,
            to_user: user_id,
            amount,
            kind: transfer.kind,
            memo: transfer.memo,
            at: transfer.created_at,
        };
        let body = serde_json::to_value(&view).map_err(ApiError::internal)?;
        let response = idempotency::commit(pool, tx, operator, key, hash, StatusCode::CREATED, body.clone()).await?;
        Ok::<_, ApiError>((response, body))
    })
    .await?;
    metrics::counter!("capex_credits_minted_total").increment(1);
    state.feed.private("wallet", user_id, body);
    Ok(response)
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ViolationView {
    pub account_id: Uuid,
    /// "balance_mismatch" or "negative_balance".
    pub kind: String,
    #[schema(value_type = String)]
    pub balance: rust_decimal::Decimal,
    #[schema(value_type = Option<String>)]
    pub journal: Option<rust_decimal::Decimal>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvariantsView {
    pub ok: bool,
    /// Sum of all balances; zero when the books balance.
    #[schema(value_type = String)]
    pub total: rust_decimal::Decimal,
    pub accounts_checked: i64,
    pub violations: Vec<ViolationView>,
    pub checked_at: DateTime<Utc>,
}

/// Runs the ledger's invariant check in one snapshot and records it as a metric.
pub async fn check_invariants(pool: &sqlx::PgPool) -> ApiResult<InvariantsView> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read read only").execute(&mut *tx).await?;
    let report = capex_ledger::check_invariants(&mut tx).await?;
    tx.commit().await?;
    let ok = report.ok();
    metrics::gauge!("capex_ledger_invariant_ok").set(if ok { 1.0 } else { 0.0 });
    let violations = report
        .violations
        .into_iter()
        .map(|v| match v {
            InvariantViolation::BalanceMismatch { account_id, balance, journal } => {
                ViolationView { account_id, kind: "balance_mismatch".into(), balance, journal: Some(journal) }
            }
            InvariantViolation::Negative { account_id, balance } => {
                ViolationView { account_id, kind: "negative_balance".into(), balance, journal: None }
            }
        })
        .collect();
    Ok(InvariantsView {
        ok,
        total: report.total.normalize(),
        accounts_checked: report.accounts_checked,
        violations,
        checked_at: Utc::now(),
    })
}

#[utoipa::path(get, path = "/api/v1/operator/invariants", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = InvariantsView), (status = 403, body = Problem)))]
pub(crate) async fn invariants(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<InvariantsView>> {
    auth.require(Role::Operator)?;
    Ok(Json(check_invariants(&state.pool).await?))
}

#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserOverview {
    pub user_id: Uuid,
    pub email: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String)]
    pub available: rust_decimal::Decimal,
    #[schema(value_type = String)]
    pub held: rust_decimal::Decimal,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub items: Vec<UserOverview>,
}

/// Most users the overview lists.
pub const USERS_OVERVIEW_MAX: i64 = 500;

#[utoipa::path(get, path = "/api/v1/operator/users", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = UserList), (status = 403, body = Problem)))]
pub(crate) async fn users(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<UserList>> {
    auth.require(Role::Operator)?;
    let mut items: Vec<UserOverview> = sqlx::query_as(
        "select u.user_id, u.email, u.roles, u.created_at,
                coalesce(sum(a.balance) filter (where a.kind = 'wallet'), 0) as available,
                coalesce(sum(a.balance) filter (where a.kind = 'escrow'), 0) as held
         from users u left join accounts a on a.user_id = u.user_id
         group by u.user_id order by u.created_at limit $1",
    )
    .bind(USERS_OVERVIEW_MAX)
    .fetch_all(&state.pool)
    .await?;
    for item in &mut items {
        item.available = item.available.normalize();
        item.held = item.held.normalize();
    }
    Ok(Json(UserList { items }))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeesView {
    #[schema(value_type = String)]
    pub fees_earned: rust_decimal::Decimal,
    /// Credits minted so far (the treasury's balance is minus this).
    #[schema(value_type = String)]
    pub minted: rust_decimal::Decimal,
}

#[utoipa::path(get, path = "/api/v1/operator/fees", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = FeesView), (status = 403, body = Problem)))]
pub(crate) async fn fees(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<FeesView>> {
    auth.require(Role::Operator)?;
    let mut conn = state.pool.acquire().await?;
    let fees_earned = capex_ledger::account_balance(&mut conn, FEES_ACCOUNT).await?;
    let treasury = capex_ledger::account_balance(&mut conn, TREASURY_ACCOUNT).await?;
    Ok(Json(FeesView { fees_earned: fees_earned.normalize(), minted: (-treasury).normalize() }))
}
