//! HTTP handlers of the markets: placing, cancelling and reading orders (owner only), and
//! the public market data (markets, book, trades, candles).

use axum::Json;
use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use capex_core::Role;
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::matcher::{PlaceOutcome, PlaceRequest, Request, ask_refusal};
use super::ownership::OrderRef;
use super::registry::reply;
use super::request::{self, NewOrder, OrderRequest};
use super::store;
use super::views::{BookView, CandleList, MarketList, OrderPage, OrderView, TradePage, UnfilledReasonView};
use super::{capacity, class};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, IdempotencyKey};
use crate::idempotency;
use crate::params::{ApiPath, ApiQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/markets", get(list_markets))
        .route("/api/v1/markets/{class}/trades", get(list_trades))
        .route("/api/v1/markets/{class}/candles", get(list_candles))
        .route("/api/v1/markets/{class}/estimate", get(super::estimate::get_estimate))
        .route("/api/v1/markets/{class}/top", get(super::top::get_top))
        .route("/api/v1/orders", get(list_orders))
}

/// Routes that need the market's matcher: they run where the market is owned.
pub fn owned_router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/markets/{class}/orders", post(place_order))
        .route("/api/v1/markets/{class}/book", get(get_book))
        .route("/api/v1/orders/{id}", get(get_order).delete(cancel_order))
        .route_layer(axum::middleware::from_fn_with_state(state, super::ownership::route_to_owner))
}

fn parse_order_id(id: &str) -> Result<Uuid, ApiError> {
    // A malformed id names no order of the caller: the same 404 as someone else's order.
    id.parse().map_err(|_| ApiError::not_found("order"))
}

#[utoipa::path(post, path = "/api/v1/markets/{class}/orders", tag = "markets", request_body = OrderRequest,
    params(("class" = String, Path, description = "GPU class, e.g. H100-80GB"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key place one order")),
    security(("bearer" = [])),
    responses((status = 201, body = OrderView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub(crate) async fn place_order(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(class): ApiPath<String>,
    key: Option<IdempotencyKey>,
    ApiJson(req): ApiJson<OrderRequest>,
) -> ApiResult<Response> {
    // The class is known: the routing to the market's owner refused it otherwise.
    let mut order = request::parse(&req, state.config.max_hours, Utc::now())?;
    // A bid submits a job whose id is the bid's order id.
    let order_id = Uuid::now_v7();
    if let NewOrder::Bid(bid) = &mut order {
        crate::jobs::restart::stamp_first_attempt(&mut bid.job, order_id);
    }
    let hash = idempotency::request_hash(&format!("POST /api/v1/markets/{class}/orders"), &req);
    if let Some(key) = &key
        && let Some(replayed) = idempotency::replay(&state.pool, auth.user_id, key, &hash).await?
    {
        return Ok(replayed);
    }
    // An ask's host (owner, liveness, free GPUs, uptime) is read here, and an ask it cannot take is
    // refused before the matcher. What the read found is proved again where the GPUs are
    // bound, in the batch's transaction.
    let free_gpus = match &mut order {
        NewOrder::Bid(_) => {
            auth.require(Role::Buyer)?;
            Vec::new()
        }
        NewOrder::Ask(ask) => {
            auth.require(Role::Provider)?;
            let (host, found) = capacity::ask_host(&state.pool, ask.host_id, &class).await?.unzip();
            let (free, blocked, uptime_7d_ppm) = found.unwrap_or_default();
            ask.host_uptime_7d_ppm = uptime_7d_ppm;
            if blocked && host.as_ref().is_some_and(|h| h.owner_id == auth.user_id) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "host_challenge_blocked",
                    format!(
                        "this host failed {} proof-of-compute challenges in a row and may not place asks until an \
                         operator clears it (GET /api/v1/hosts/{}/verification shows the evidence)",
                        state.config.challenge_failures_max, ask.host_id
                    ),
                )
                .with_field("host_id"));
            }
            if let Some(err) = ask_refusal(host.as_ref(), auth.user_id, free.len(), ask.gpus, &class) {
                return Err(err);
            }
            free
        }
    };
    let handle = state.markets.handle(&class).await?;
    let (tx, rx) = oneshot::channel();
    let place = PlaceRequest {
        order_id,
        owner: auth.user_id,
        order,
        idempotency: key.as_ref().map(|k| (k.0.clone(), hash.clone())),
        free_gpus,
    };
    handle.send(Request::Place(place, tx))?;
    match reply(rx).await? {
        PlaceOutcome::Placed(view) => Ok((StatusCode::CREATED, Json(*view)).into_response()),
        PlaceOutcome::Replay => {
            let key = key.ok_or_else(|| ApiError::internal("replay without a key"))?;
            idempotency::replay(&state.pool, auth.user_id, &key, &hash)
                .await?
                .ok_or_else(|| ApiError::internal("idempotency record missing after replay"))
        }
    }
}

#[utoipa::path(delete, path = "/api/v1/orders/{id}", tag = "markets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn cancel_order(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    routed: Option<Extension<OrderRef>>,
) -> ApiResult<Json<OrderView>> {
    let order_id = parse_order_id(&id)?;
    let (class, status) = match routed {
        // Read by the routing a moment ago; someone else's order looks like no order.
        Some(Extension(order)) if order.order_id == order_id => {
            if order.owner_id != auth.user_id {
                return Err(ApiError::not_found("order"));
            }
            (order.class, order.status)
        }
        _ => store::order_class_and_status(&state.pool, auth.user_id, order_id).await?,
    };
    if status != "open" {
        return Err(ApiError::new(StatusCode::CONFLICT, "order_not_open", format!("the order is already {status}")));
    }
    let handle = state.markets.handle(&class).await?;
    let (tx, rx) = oneshot::channel();
    handle.send(Request::Cancel { order_id, owner: auth.user_id, reply: tx })?;
    let mut view = reply(rx).await?;
    // Only an ask can be partly filled and still open; its fills may come from any batch.
    if view.gpus_remaining < view.gpus {
        view.fills = store::fills(&state.pool, &[order_id]).await?.remove(&order_id).unwrap_or_default();
    }
    Ok(Json(*view))
}

#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "markets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<OrderView>> {
    let order_id = parse_order_id(&id)?;
    let mut view = store::order_view(&state.pool, auth.user_id, order_id).await?;
    if view.side == "bid" && view.status == "open" {
        let handle = state.markets.handle(&view.class).await?;
        let (tx, rx) = oneshot::channel();
        handle.send(Request::WhyUnfilled { bid_id: order_id, reply: tx })?;
        let reasons = rx.await.unwrap_or_default();
        view.unfilled_reasons = reasons.into_iter().map(UnfilledReasonView::from_book).collect();
    }
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrderListQuery {
    /// "open" (default) or "all".
    #[param(pattern = "^(open|all)$")]
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Orders per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// Largest page of orders or trades.
pub(crate) const PAGE_MAX: i64 = 200;
pub(crate) const PAGE_DEFAULT: i64 = 50;

fn parse_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", format!("limit must be 1 to {PAGE_MAX}"))
            .with_field("limit"));
    }
    Ok(limit)
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "cursor is not one this API gave out")
                    .with_field("cursor")
            })
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/orders", tag = "markets", params(OrderListQuery), security(("bearer" = [])),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem)))]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(query): ApiQuery<OrderListQuery>,
) -> ApiResult<Json<OrderPage>> {
    let open_only = match query.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(_) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_status", "status must be open or all")
                .with_field("status"));
        }
    };
    let limit = parse_limit(query.limit)?;
    let before = parse_cursor(query.cursor.as_deref())?;
    Ok(Json(store::list_orders(&state.pool, auth.user_id, open_only, before, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/markets", tag = "markets",
    responses((status = 200, body = MarketList)))]
pub(crate) async fn list_markets(State(state): State<AppState>) -> ApiResult<Json<MarketList>> {
    Ok(Json(store::list_markets(&state.pool, &state.config.market_classes).await?))
}

#[utoipa::path(get, path = "/api/v1/markets/{class}/book", tag = "markets",
    params(("class" = String, Path, description = "GPU class")),
    responses((status = 200, body = BookView), (status = 404, body = Problem)))]
pub(crate) async fn get_book(
    State(state): State<AppState>,
    ApiPath(class): ApiPath<String>,
) -> ApiResult<Json<BookView>> {
    // The class is known: the routing to the market's owner refused it otherwise.
    // A market without a running matcher has no open orders (startup starts one for each
    // market that has), so its book is empty.
    match state.markets.running(&class).await {
        Some(handle) => Ok(Json(handle.book().await?.as_ref().clone())),
        None => Ok(Json(BookView::empty(class))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TradeListQuery {
    /// `next_cursor` of the previous page (newest trades come first).
    pub cursor: Option<String>,
    /// Trades per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/markets/{class}/trades", tag = "markets",
    params(("class" = String, Path, description = "GPU class"), TradeListQuery),
    responses((status = 200, body = TradePage), (status = 404, body = Problem)))]
pub(crate) async fn list_trades(
    State(state): State<AppState>,
    ApiPath(class): ApiPath<String>,
    ApiQuery(query): ApiQuery<TradeListQuery>,
) -> ApiResult<Json<TradePage>> {
    class::require_known(&state.pool, &state.config.market_classes, &class).await?;
    let limit = parse_limit(query.limit)?;
    let before = parse_cursor(query.cursor.as_deref())?;
    Ok(Json(store::list_trades(&state.pool, &class, before, limit).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CandleQuery {
    /// "1m" (default) or "1h".
    #[param(pattern = "^(1m|1h)$")]
    pub interval: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/markets/{class}/candles", tag = "markets",
    params(("class" = String, Path, description = "GPU class"), CandleQuery),
    responses((status = 200, body = CandleList), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_candles(
    State(state): State<AppState>,
    ApiPath(class): ApiPath<String>,
    ApiQuery(query): ApiQuery<CandleQuery>,
) -> ApiResult<Json<CandleList>> {
    class::require_known(&state.pool, &state.config.market_classes, &class).await?;
    let interval_s = match query.interval.as_deref() {
        Some("1m") | None => 60,
        Some("1h") => 3600,
        Some(_) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_interval", "interval must be 1m or 1h")
                .with_field("interval"));
        }
    };
    Ok(Json(store::candles(&state.pool, &class, interval_s).await?))
}
