//! The top of a market's book order by order, and why a best bid at or above the best ask
//! has not traded.
//!
//! The aggregated book (`.../book`) shows only prices and GPU totals, so a bid of 0.46 for
//! 2 GPUs resting above an ask of 0.45 for 1 GPU looks like a broken exchange although the
//! rules forbid that trade (a bid is never split across hosts). This view lists the
//! leading orders of each side with their sizes, hosts and limits, and for every pair
//! whose prices cross, the rules that keep them apart. It reads the open orders from
//! Postgres, not the matcher's copy: it needs no matcher, and after each committed batch
//! both say the same.
//!
//! The rules here mirror the engine's matching predicate (services/book: size on one
//! host, duration, verification, reliability, no self-trade, excluded hosts); the engine
//! stays the authority. A crossing pair none of them explains is one the matcher has not
//! reached yet (`pending_match`).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::class;
use super::views::UnfilledReasonView;
use crate::error::{ApiError, ApiResult, Problem};
use crate::hosts::uptime::fraction_of_ppm;
use crate::params::ApiPath;
use crate::state::AppState;
use crate::verification::level::{GPU_LEVEL_SQL, Level};

/// Most orders listed per side, best first.
pub const TOP_ORDERS_MAX: i64 = 10;

/// One resting order near the top of the book, as anyone may see it (no owner).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopOrder {
    pub order_id: Uuid,
    /// "bid" or "ask".
    pub side: String,
    #[schema(value_type = String)]
    pub price: Decimal,
    /// Bids: the GPUs wanted, all on one host. Asks: the GPUs still offered.
    pub gpus: i32,
    /// Asks: the host offering the GPUs, and its name.
    pub host_id: Option<Uuid>,
    pub host_name: Option<String>,
    /// Asks: the lowest verification level of the offered GPUs.
    pub verification: Option<Level>,
    /// Asks: the host's 7-day uptime, 0 to 1.
    #[schema(value_type = Option<String>)]
    pub host_uptime_7d: Option<Decimal>,
    /// Asks: until when the GPUs are offered.
    pub available_until: Option<DateTime<Utc>>,
    /// Bids: how long the buyer wants the GPUs.
    #[schema(value_type = Option<String>)]
    pub max_hours: Option<Decimal>,
    /// Bids: the weakest level accepted (null: any).
    pub min_verification: Option<Level>,
    /// Bids: the least 7-day uptime of the ask's host accepted (null: any).
    #[schema(value_type = Option<String>)]
    pub min_uptime_7d: Option<Decimal>,
}

/// A bid and an ask whose prices cross, and why they have not traded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CrossingPair {
    pub bid_order_id: Uuid,
    pub ask_order_id: Uuid,
    #[schema(value_type = String)]
    pub bid_price: Decimal,
    #[schema(value_type = String)]
    pub ask_price: Decimal,
    /// Codes: `bid_wants_more_gpus`, `ask_ends_too_soon`, `verification_below_required`,
    /// `reliability_below_required`, `same_owner`, `host_excluded`, or `pending_match`
    /// when no rule keeps them apart (the matcher trades them in its next batch).
    pub reasons: Vec<UnfilledReasonView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopOfBook {
    pub class: String,
    /// Up to 10 bids, best first (highest price, then earliest).
    pub bids: Vec<TopOrder>,
    /// Up to 10 asks, best first (lowest price, then earliest).
    pub asks: Vec<TopOrder>,
    /// The best bid's price is at or above the best ask's.
    pub crossed: bool,
    /// Every listed bid and ask whose prices cross, best bid first.
    pub crossing: Vec<CrossingPair>,
    /// One sentence for people: why the top of the book stands as it does.
    pub summary: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    order_id: Uuid,
    side: String,
    owner_id: Uuid,
    price: Decimal,
    gpus: i32,
    host_id: Option<Uuid>,
    host_name: Option<String>,
    levels: Vec<String>,
    host_uptime_7d_ppm: Option<i32>,
    available_until: Option<DateTime<Utc>>,
    max_hours: Option<Decimal>,
    duration_ms: Option<i64>,
    min_verification: Option<String>,
    min_uptime_7d_ppm: Option<i32>,
    excluded_hosts: Vec<String>,
}

/// Reads the leading orders of one side: the on-demand book (interruptible bids meet asks'
/// interruptible prices, a book of their own). Bids rest with `gpus_remaining` = `gpus` (a bid
/// fills whole); asks with the GPUs still bound.
async fn leading(pool: &sqlx::PgPool, class: &str, side: &str) -> Result<Vec<Row>, ApiError> {
    let order = if side == "bid" { "o.price desc, o.seq" } else { "o.price, o.seq" };
    let sql = format!(
        "select o.order_id, o.side, o.owner_id, o.price, o.gpus_remaining as gpus, o.host_id, h.name as host_name,
                array(select {GPU_LEVEL_SQL} from ask_gpus ag join host_gpus g using (gpu_uuid) join hosts h using (host_id)
                      where ag.order_id = o.order_id and ag.state = 'bound') as levels,
                case when o.side = 'ask' then host_uptime_ppm(o.host_id, 604800) end as host_uptime_7d_ppm,
                o.available_until, o.max_hours, o.duration_ms, o.min_verification, o.min_uptime_7d_ppm,
                array(select jsonb_array_elements_text(case when jsonb_typeof(o.job -> 'excluded_hosts') = 'array'
                      then o.job -> 'excluded_hosts' else '[]'::jsonb end)) as excluded_hosts
         from orders o left join hosts h on h.host_id = o.host_id
         where o.class = $1 and o.status = 'open' and o.side = $2 and o.priority = 'on_demand'
         order by {order} limit $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(class).bind(side).bind(TOP_ORDERS_MAX).fetch_all(pool).await?)
}

fn level_of(text: Option<&String>) -> Option<Level> {
    text.and_then(|t| t.parse().ok())
}

fn ppm(value: Option<i32>) -> Option<u32> {
    value.map(|v| u32::try_from(v).unwrap_or(0))
}

fn view(row: &Row) -> TopOrder {
    let ask = row.side == "ask";
    TopOrder {
        order_id: row.order_id,
        side: row.side.clone(),
        price: row.price.normalize(),
        gpus: row.gpus,
        host_id: row.host_id,
        host_name: row.host_name.clone(),
        verification: ask.then(|| Level::lowest(&row.levels).unwrap_or(Level::Simulated)),
        host_uptime_7d: ppm(row.host_uptime_7d_ppm).map(fraction_of_ppm),
        available_until: row.available_until,
        max_hours: row.max_hours.map(|h| h.normalize()),
        min_verification: level_of(row.min_verification.as_ref()),
        min_uptime_7d: ppm(row.min_uptime_7d_ppm).map(fraction_of_ppm),
    }
}

fn reason(code: &str, message: String) -> UnfilledReasonView {
    UnfilledReasonView { code: code.into(), message }
}

/// Why `bid` and `ask` (prices crossing) have not traded at `now`, in the engine's terms.
fn why_apart(bid: &Row, ask: &Row, now: DateTime<Utc>) -> Vec<UnfilledReasonView> {
    let mut reasons = Vec::new();
    if bid.owner_id == ask.owner_id {
        reasons.push(reason(
            "same_owner",
            "both orders are one user's, and the exchange never trades a user with themselves".into(),
        ));
    }
    if ask.host_id.is_some_and(|host| bid.excluded_hosts.iter().any(|h| h.parse::<Uuid>().ok() == Some(host))) {
        reasons.push(reason("host_excluded", "the bid's job failed on this ask's host before and avoids it".into()));
    }
    if bid.gpus > ask.gpus {
        reasons.push(reason(
            "bid_wants_more_gpus",
            format!(
                "the bid wants {} GPUs on one host and this ask offers {}: a bid is never split across asks or hosts",
                bid.gpus, ask.gpus
            ),
        ));
    }
    let needed_until = now + Duration::milliseconds(bid.duration_ms.unwrap_or(0));
    if ask.available_until.is_some_and(|until| until < needed_until) {
        reasons.push(reason(
            "ask_ends_too_soon",
            format!(
                "the bid wants the GPUs for {} h and this ask offers them only until {}",
                bid.max_hours.unwrap_or_default().normalize(),
                ask.available_until.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
        ));
    }
    let ask_level = Level::lowest(&ask.levels).unwrap_or(Level::Simulated);
    if let Some(min) = level_of(bid.min_verification.as_ref())
        && ask_level < min
    {
        reasons.push(reason(
            "verification_below_required",
            format!("the bid requires GPUs at {} or above and this ask's are {}", min.as_str(), ask_level.as_str()),
        ));
    }
    if let Some(min) = ppm(bid.min_uptime_7d_ppm)
        && ppm(ask.host_uptime_7d_ppm).unwrap_or(0) < min
    {
        reasons.push(reason(
            "reliability_below_required",
            format!(
                "the bid requires a 7-day host uptime of at least {} and this ask's host has {}",
                fraction_of_ppm(min),
                fraction_of_ppm(ppm(ask.host_uptime_7d_ppm).unwrap_or(0))
            ),
        ));
    }
    if reasons.is_empty() {
        reasons.push(reason(
            "pending_match",
            "no rule keeps these two apart: the matcher trades them in its next batch".into(),
        ));
    }
    reasons
}

fn summary(bids: &[Row], asks: &[Row], crossing: &[CrossingPair]) -> String {
    match (bids.first(), asks.first()) {
        (None, None) => "The book is empty.".into(),
        (Some(_), None) => "No provider offers GPUs in this market: bids wait for supply.".into(),
        (None, Some(_)) => "No buyer bids in this market: asks wait for demand.".into(),
        (Some(bid), Some(ask)) if bid.price < ask.price => format!(
            "The best bid ({}) is below the best ask ({}): the spread is {}.",
            bid.price.normalize(),
            ask.price.normalize(),
            (ask.price - bid.price).normalize()
        ),
        (Some(bid), Some(ask)) => {
            let first = crossing.first().and_then(|p| p.reasons.first()).map(|r| r.message.clone());
            format!(
                "The best bid ({} for {} GPU{}) is at or above the best ask ({} for {} GPU{} on {}), but they do not \
                 trade: {}.",
                bid.price.normalize(),
                bid.gpus,
                if bid.gpus == 1 { "" } else { "s" },
                ask.price.normalize(),
                ask.gpus,
                if ask.gpus == 1 { "" } else { "s" },
                ask.host_name.as_deref().unwrap_or("a host"),
                first.unwrap_or_else(|| "see each pair".into())
            )
        }
    }
}

#[utoipa::path(get, path = "/api/v1/markets/{class}/top", tag = "markets",
    params(("class" = String, Path, description = "GPU class, e.g. RTX4090-24GB")),
    responses((status = 200, body = TopOfBook), (status = 404, body = Problem)))]
pub(crate) async fn get_top(
    State(state): State<AppState>,
    ApiPath(class): ApiPath<String>,
) -> ApiResult<Json<TopOfBook>> {
    class::require_known(&state.pool, &state.config.market_classes, &class).await?;
    let bids = leading(&state.pool, &class, "bid").await?;
    let asks = leading(&state.pool, &class, "ask").await?;
    let now = Utc::now();
    let crossing: Vec<CrossingPair> = bids
        .iter()
        .flat_map(|bid| asks.iter().filter(|ask| ask.price <= bid.price).map(move |ask| (bid, ask)))
        .map(|(bid, ask)| CrossingPair {
            bid_order_id: bid.order_id,
            ask_order_id: ask.order_id,
            bid_price: bid.price.normalize(),
            ask_price: ask.price.normalize(),
            reasons: why_apart(bid, ask, now),
        })
        .collect();
    let crossed = matches!((bids.first(), asks.first()), (Some(b), Some(a)) if b.price >= a.price);
    let summary = summary(&bids, &asks, &crossing);
    Ok(Json(TopOfBook {
        class,
        bids: bids.iter().map(view).collect(),
        asks: asks.iter().map(view).collect(),
        crossed,
        crossing,
        summary,
    }))
}
