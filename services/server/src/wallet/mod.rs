//! A user's wallet: balances, ledger history (line by line, and grouped by lease and
//! order with the balance over time in [`movements`]) and transfers between users.

pub mod movements;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use capex_core::Credits;
use capex_ledger::{TransferSpec, post_transfer, retrying, wallet_account, wallet_summary};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, IdempotencyKey};
use crate::idempotency;
use crate::input::Text;
use crate::params::ApiQuery;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/wallet", get(get_wallet))
        .route("/api/v1/wallet/ledger", get(get_ledger))
        .route("/api/v1/wallet/movements", get(movements::get_movements))
        .route("/api/v1/wallet/balance-history", get(movements::get_balance_history))
        .route("/api/v1/transfers", post(create_transfer))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalletView {
    /// Credits the user can spend now.
    #[schema(value_type = String, example = "1250.5")]
    pub available: Credits,
    /// Credits held in escrow for open bids and running leases.
    #[schema(value_type = String, example = "300")]
    pub held: Credits,
    #[schema(value_type = String, example = "1550.5")]
    pub total: Credits,
    /// Credits the user's hosts have earned, all time: the `settlement` lines paid into
    /// this wallet (billed cost less the operator's fee). Equals the sum of the hosts'
    /// `earnings` (`GET /api/v1/hosts`); SLA credits paid back are not subtracted.
    #[schema(value_type = String, example = "0.078")]
    pub earned: rust_decimal::Decimal,
}

#[utoipa::path(get, path = "/api/v1/wallet", tag = "wallet", security(("bearer" = [])),
    responses((status = 200, body = WalletView), (status = 401, body = Problem)))]
pub(crate) async fn get_wallet(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<WalletView>> {
    let mut conn = state.pool.acquire().await?;
    let summary = wallet_summary(&mut conn, auth.user_id).await?;
    let total =
        summary.available.checked_add(summary.held).ok_or_else(|| ApiError::internal("wallet total overflow"))?;
    let earned: rust_decimal::Decimal = sqlx::query_scalar(
        "select coalesce(sum(j.amount), 0) from journal j join accounts a on a.account_id = j.credit_account
         where a.kind = 'wallet' and a.user_id = $1 and j.kind = 'settlement'",
    )
    .bind(auth.user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Json(WalletView { available: summary.available, held: summary.held, total, earned: earned.normalize() }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Lines per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerLineView {
    pub entry_id: i64,
    pub transfer_id: Uuid,
    pub at: DateTime<Utc>,
    /// "wallet" or "escrow".
    pub account: String,
    pub account_id: Uuid,
    /// "credit" (money in) or "debit" (money out).
    pub direction: String,
    #[schema(value_type = String)]
    pub amount: rust_decimal::Decimal,
    pub kind: String,
    pub memo: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerPage {
    pub items: Vec<LedgerLineView>,
    pub next_cursor: Option<String>,
}

pub const LEDGER_PAGE_DEFAULT: i64 = 50;

/// Cursors look like `1234.debit`: the entry id and direction of the last line shown.
fn parse_cursor(cursor: &str) -> Result<capex_ledger::HistoryCursor, ApiError> {
    let bad = || {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "cursor is not one this API gave out")
            .with_field("cursor")
    };
    let (entry, direction) = cursor.split_once('.').ok_or_else(bad)?;
    let entry: i64 = entry.parse().map_err(|_| bad())?;
    if direction != "credit" && direction != "debit" {
        return Err(bad());
    }
    Ok((entry, direction.to_string()))
}

#[utoipa::path(get, path = "/api/v1/wallet/ledger", tag = "wallet", params(LedgerQuery),
    security(("bearer" = [])),
    responses((status = 200, body = LedgerPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub(crate) async fn get_ledger(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> ApiResult<Json<LedgerPage>> {
    let before = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let limit = query.limit.unwrap_or(LEDGER_PAGE_DEFAULT);
    if !(1..=capex_ledger::HISTORY_PAGE_MAX).contains(&limit) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", "limit must be 1 to 200").with_field("limit")
        );
    }
    let mut conn = state.pool.acquire().await?;
    let page = capex_ledger::history(&mut conn, auth.user_id, before, limit).await?;
    let next_cursor =
        if page.more { page.lines.last().map(|l| format!("{}.{}", l.entry_id, l.direction)) } else { None };
    let items = page
        .lines
        .into_iter()
        .map(|l| LedgerLineView {
            entry_id: l.entry_id,
            transfer_id: l.transfer_id,
            at: l.created_at,
            account: l.account_kind,
            account_id: l.account_id,
            direction: l.direction,
            amount: l.amount.normalize(),
            kind: l.kind,
            memo: l.memo,
        })
        .collect();
    Ok(Json(LedgerPage { items, next_cursor }))
}

pub const MEMO_CHARS_MAX: usize = 200;

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub to_user: Uuid,
    /// Credits: a decimal string, greater than zero, at most 6 decimals.
    #[schema(value_type = String, example = "25.5", pattern = r"^(?:[1-9][0-9]{0,14}(?:\.[0-9]{1,6})?|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$")]
    pub amount: Credits,
    /// At most 200 characters.
    #[serde(default)]
    #[schema(value_type = String, max_length = 200)]
    pub memo: Text<MEMO_CHARS_MAX>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferView {
    pub transfer_id: Uuid,
    pub entry_id: i64,
    pub from_user: Option<Uuid>,
    pub to_user: Uuid,
    #[schema(value_type = String)]
    pub amount: Credits,
    pub kind: String,
    pub memo: String,
    pub at: DateTime<Utc>,
}

/// Checks an amount that must move something.
pub fn positive_amount(field: &str, amount: Credits) -> Result<Credits, ApiError> {
    Credits::positive(amount.as_decimal()).map_err(|err| ApiError::credits(field, err))
}

pub async fn user_exists(pool: &sqlx::PgPool, user_id: Uuid) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar::<_, bool>("select exists (select 1 from users where user_id = $1)")
        .bind(user_id)
        .fetch_one(pool)
        .await?)
}

#[utoipa::path(post, path = "/api/v1/transfers", tag = "wallet", request_body = TransferRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key move credits once")),
    security(("bearer" = [])),
    responses((status = 201, body = TransferView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_transfer(
    State(state): State<AppState>,
    auth: AuthUser,
    key: Option<IdempotencyKey>,
    ApiJson(req): ApiJson<TransferRequest>,
) -> ApiResult<Response> {
    let amount = positive_amount("amount", req.amount)?;
    if req.to_user == auth.user_id {
        return Err(ApiError::invalid("to_user", "same_account", "cannot transfer to yourself"));
    }
    let hash = idempotency::request_hash("POST /api/v1/transfers", &req);
    if let Some(key) = &key
        && let Some(replayed) = idempotency::replay(&state.pool, auth.user_id, key, &hash).await?
    {
        return Ok(replayed);
    }
    if !user_exists(&state.pool, req.to_user).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_user", "no user with this id").with_field("to_user"));
    }
    let (pool, user_id, req, key, hash) = (&state.pool, auth.user_id, &req, key.as_ref(), hash.as_str());
    let (response, body) = retrying("transfer", move || async move {
        let mut tx = pool.begin().await?;
        let from = wallet_account(&mut tx, user_id).await?;
        let to = wallet_account(&mut tx, req.to_user).await?;
        let transfer = post_transfer(
            &mut tx,
            TransferSpec {
                from,
                to,
                amount,
                kind: "transfer".into(),
                memo: req.memo.to_string(),
                idempotency_key: None,
            },
        )
        .await?;
        let view = TransferView {
            transfer_id: transfer.transfer_id,
            entry_id: transfer.entry_id,
            from_user: Some(user_id),
            to_user: req.to_user,
            amount,
            kind: transfer.kind,
            memo: transfer.memo,
            at: transfer.created_at,
        };
        let body = serde_json::to_value(&view).map_err(ApiError::internal)?;
        let response = idempotency::commit(pool, tx, user_id, key, hash, StatusCode::CREATED, body.clone()).await?;
        Ok::<_, ApiError>((response, body))
    })
    .await?;
    state.feed.private("wallet", auth.user_id, body.clone());
    state.feed.private("wallet", req.to_user, body);
    Ok(response)
}
