//! Fill estimate: how long a bid of a given size and limit price can expect to wait in a
//! market, from the resting book and recent fills. Public market data, so any caller (a
//! running job with its token included) may ask.
//!
//! Method, in order:
//! 1. If an open ask rests now that could take the whole bid (price at or below the limit,
//!    at least `gpus` GPUs still offered, available for at least `max_hours`), the
//!    expected wait is 0 (`basis: resting_ask`). The ask's host must still be live and its
//!    GPUs attested when the bid arrives; the matcher checks that, this estimate does not.
//! 2. Otherwise the fills of the last [`ESTIMATE_WINDOW_S`] that would also have served
//!    this bid (trades in the class at or below the limit, of at least `gpus` GPUs) are
//!    taken as arrivals of a Poisson process: one arrives every `window / n` seconds on
//!    average. The bid waits behind the open bids that come before it (limit at or above
//!    its own), so the estimate is `window × (bids_ahead + 1) / n`, rounded up to a second
//!    (`basis: recent_fills`).
//! 3. With no such fill in the window there is no estimate (`expected_wait_s: null`,
//!    `basis: no_recent_fills`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::class;
use crate::error::{ApiError, ApiResult, Problem};
use crate::params::{ApiPath, ApiQuery};
use crate::state::AppState;

/// How far back fills count for the arrival rate.
pub(crate) const ESTIMATE_WINDOW_S: i64 = 24 * 3600;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EstimateQuery {
    /// GPUs the bid would ask for (all on one host), at least 1.
    #[param(minimum = 1)]
    gpus: Option<u32>,
    /// Limit price, credits per GPU-hour.
    price: Option<String>,
    /// Hours the bid would hold the GPUs.
    max_hours: Option<String>,
}

/// The expected wait of a bid, and what it was derived from.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FillEstimate {
    pub class: String,
    pub gpus: u32,
    #[schema(value_type = String)]
    pub price: Decimal,
    #[schema(value_type = String)]
    pub max_hours: Decimal,
    /// Expected seconds until such a bid fills; null when nothing recent says.
    pub expected_wait_s: Option<i64>,
    /// resting_ask, recent_fills or no_recent_fills (see the method in the route's docs).
    pub basis: String,
    /// Open asks that could take the whole bid now.
    pub fitting_asks: i64,
    /// Fills in the window that would have served this bid.
    pub fills_in_window: i64,
    /// Open bids with a limit at or above this price (they come first).
    pub bids_ahead: i64,
    pub window_s: i64,
}

fn bad(field: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail).with_field(field)
}

fn positive(raw: Option<&str>, field: &'static str) -> Result<Decimal, ApiError> {
    let raw = raw.ok_or_else(|| bad(field, &format!("query parameter {field} is required")))?;
    match raw.trim().parse::<Decimal>() {
        Ok(value) if value > Decimal::ZERO && value.scale() <= 6 => Ok(value.normalize()),
        _ => Err(bad(field, &format!("query parameter {field} is a positive decimal with at most 6 decimals"))),
    }
}

#[utoipa::path(get, path = "/api/v1/markets/{class}/estimate", tag = "markets",
    params(("class" = String, Path, description = "GPU class"), EstimateQuery),
    description = "Expected wait for a bid of `gpus` GPUs at `price` for `max_hours`: 0 when an ask that fits rests now; else the window (24 h) times (open bids at or above the price + 1) divided by the fills in the window at or below the price of at least `gpus` GPUs; null without such fills. Public; a job token may call it.",
    responses((status = 200, body = FillEstimate), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_estimate(
    State(state): State<AppState>,
    ApiPath(class): ApiPath<String>,
    ApiQuery(query): ApiQuery<EstimateQuery>,
) -> ApiResult<Json<FillEstimate>> {
    class::require_known(&state.pool, &state.config.market_classes, &class).await?;
    let gpus = query.gpus.ok_or_else(|| bad("gpus", "query parameter gpus is required"))?;
    if gpus == 0 {
        return Err(bad("gpus", "query parameter gpus is at least 1"));
    }
    let price = positive(query.price.as_deref(), "price")?;
    let max_hours = positive(query.max_hours.as_deref(), "max_hours")?;
    let (fitting_asks, fills_in_window, bids_ahead): (i64, i64, i64) = sqlx::query_as(
        "select
            (select count(*) from orders where class = $1 and side = 'ask' and status = 'open'
                and price <= $2 and gpus_remaining >= $3
                and available_until >= now() + $4::float8 * interval '1 hour'),
            (select count(*) from trades where class = $1 and price <= $2 and gpus >= $3
                and at >= now() - make_interval(secs => $5)),
            (select count(*) from orders where class = $1 and side = 'bid' and status = 'open' and price >= $2)",
    )
    .bind(&class)
    .bind(price)
    .bind(i32::try_from(gpus).unwrap_or(i32::MAX))
    .bind(max_hours)
    .bind(ESTIMATE_WINDOW_S as f64)
    .fetch_one(&state.pool)
    .await?;
    let (expected_wait_s, basis) = if fitting_asks > 0 {
        (Some(0), "resting_ask")
    } else if fills_in_window > 0 {
        let queue = bids_ahead.saturating_add(1);
        let wait = (ESTIMATE_WINDOW_S.saturating_mul(queue) + fills_in_window - 1) / fills_in_window;
        (Some(wait), "recent_fills")
    } else {
        (None, "no_recent_fills")
    };
    Ok(Json(FillEstimate {
        class,
        gpus,
        price,
        max_hours,
        expected_wait_s,
        basis: basis.into(),
        fitting_asks,
        fills_in_window,
        bids_ahead,
        window_s: ESTIMATE_WINDOW_S,
    }))
}
