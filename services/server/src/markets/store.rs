//! Reads of orders, trades and market data. Writes belong to the matcher alone.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::capacity::{GPU_IDLE_SQL, GPU_UNTAKEN_SQL, HOST_LIVE_SQL, INTERRUPTIBLE_LIVE_SQL};
use super::views::{
    CandleList, CandleView, FillView, MarketList, MarketView, MinReliabilityView, OrderPage, OrderView, TradePage,
    TradeView,
};
use crate::error::ApiError;
use crate::hosts::uptime::{WINDOW_7D_S, fraction_of_ppm, uptime_ppm};
use crate::verification::level::{GPU_LEVEL_SQL, Level};

/// Candles returned per request: the most recent ones.
pub(crate) const CANDLES_MAX: i64 = 500;

/// The class and status of the caller's order; someone else's order is not found.
pub(crate) async fn order_class_and_status(
    pool: &PgPool,
    owner: Uuid,
    order_id: Uuid,
) -> Result<(String, String), ApiError> {
    sqlx::query_as("select class, status from orders where order_id = $1 and owner_id = $2")
        .bind(order_id)
        .bind(owner)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    seq: i64,
    order_id: Uuid,
    class: String,
    side: String,
    status: String,
    gpus: i32,
    gpus_remaining: i32,
    price: Decimal,
    max_hours: Option<Decimal>,
    available_until: Option<DateTime<Utc>>,
    tif: String,
    escrow: Option<Decimal>,
    host_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    min_verification: Option<String>,
    /// Asks: the levels of their GPUs now.
    ask_levels: Vec<String>,
    min_uptime_7d_ppm: Option<i32>,
    priority: String,
    interruptible_price: Option<Decimal>,
    /// Asks: GPUs in live interruptible leases traded on them.
    gpus_interruptible: i32,
}

/// The columns of an [`OrderRow`].
fn order_columns() -> String {
    format!(
        "o.seq, o.order_id, o.class, o.side, o.status, o.gpus, o.gpus_remaining, o.price,
         o.max_hours, o.available_until, o.tif,
         case when o.side = 'bid' then coalesce(a.balance, 0) end as escrow, o.host_id, o.created_at,
         o.min_verification,
         array(select {GPU_LEVEL_SQL} from ask_gpus ag join host_gpus g using (gpu_uuid) join hosts h using (host_id)
               where ag.order_id = o.order_id) as ask_levels,
         o.min_uptime_7d_ppm, o.priority, o.interruptible_price,
         case when o.side = 'ask' and o.status = 'open' then
             (select coalesce(sum(l.gpus), 0) from trades t join leases l using (trade_id)
              where t.ask_id = o.order_id and {INTERRUPTIBLE_LIVE_SQL})::int
         else 0 end as gpus_interruptible"
    )
}

fn view_of(row: OrderRow) -> OrderView {
    let bid = row.side == "bid";
    OrderView {
        order_id: row.order_id,
        class: row.class,
        side: row.side,
        status: row.status,
        gpus: row.gpus,
        gpus_remaining: row.gpus_remaining,
        price: row.price.normalize(),
        max_hours: row.max_hours.map(|h| h.normalize()),
        available_until: row.available_until,
        tif: row.tif,
        escrow: row.escrow.map(|e| e.normalize()),
        host_id: row.host_id,
        created_at: row.created_at,
        min_verification: row.min_verification.and_then(|text| text.parse().ok()),
        verification: Level::lowest(&row.ask_levels),
        min_reliability: MinReliabilityView::of_ppm(row.min_uptime_7d_ppm.and_then(|ppm| u32::try_from(ppm).ok())),
        host_uptime_7d: None,
        priority: bid.then(|| super::request::BidPriority::of_db(&row.priority)),
        interruptible_price: row.interruptible_price.map(|p| p.normalize()),
        gpus_interruptible: (!bid).then_some(row.gpus_interruptible),
        fills: Vec::new(),
        unfilled_reasons: Vec::new(),
    }
}

/// Sets each ask's `host_uptime_7d` to its host's uptime now, computed once per host.
async fn with_host_uptime(pool: &PgPool, views: &mut [OrderView]) -> Result<(), ApiError> {
    let hosts: Vec<Uuid> = views.iter().filter(|v| v.side == "ask").filter_map(|v| v.host_id).collect();
    if hosts.is_empty() {
        return Ok(());
    }
    let uptimes: HashMap<Uuid, u32> = uptime_ppm(pool, &hosts, WINDOW_7D_S).await?.into_iter().collect();
    for view in views.iter_mut().filter(|v| v.side == "ask") {
        view.host_uptime_7d = view.host_id.and_then(|h| uptimes.get(&h)).map(|ppm| fraction_of_ppm(*ppm));
    }
    Ok(())
}

/// Trades of these orders, oldest first, by order id.
pub(crate) async fn fills(pool: &PgPool, order_ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<FillView>>, ApiError> {
    type FillRow = (Uuid, Uuid, Uuid, Uuid, Decimal, i32, DateTime<Utc>);
    let rows: Vec<FillRow> = sqlx::query_as(
        "select t.bid_id, t.ask_id, t.trade_id, l.lease_id, t.price, t.gpus, t.at
         from trades t join leases l using (trade_id)
         where t.bid_id = any($1) or t.ask_id = any($1) order by t.seq",
    )
    .bind(order_ids)
    .fetch_all(pool)
    .await?;
    let mut by_order: HashMap<Uuid, Vec<FillView>> = HashMap::new();
    for (bid_id, ask_id, trade_id, lease_id, price, gpus, at) in rows {
        let fill = FillView { trade_id, lease_id, price: price.normalize(), gpus, at };
        for id in [bid_id, ask_id] {
            if order_ids.contains(&id) {
                by_order.entry(id).or_default().push(fill.clone());
            }
        }
    }
    Ok(by_order)
}

/// The caller's order with its fills (without unfilled reasons, which need the book).
pub(crate) async fn order_view(pool: &PgPool, owner: Uuid, order_id: Uuid) -> Result<OrderView, ApiError> {
    let columns = order_columns();
    let row: OrderRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {columns} from orders o
         left join accounts a on a.kind = 'escrow' and a.ref_id = o.order_id
         where o.order_id = $1 and o.owner_id = $2"
    )))
    .bind(order_id)
    .bind(owner)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::not_found("order"))?;
    let mut view = view_of(row);
    view.fills = fills(pool, &[order_id]).await?.remove(&order_id).unwrap_or_default();
    with_host_uptime(pool, std::slice::from_mut(&mut view)).await?;
    Ok(view)
}

/// The caller's orders, newest first; the cursor is the last order's sequence number.
pub(crate) async fn list_orders(
    pool: &PgPool,
    owner: Uuid,
    open_only: bool,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<OrderPage, ApiError> {
    let columns = order_columns();
    let mut rows: Vec<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {columns} from orders o
         left join accounts a on a.kind = 'escrow' and a.ref_id = o.order_id
         where o.owner_id = $1 and ($2 = false or o.status = 'open') and ($3::bigint is null or o.seq < $3)
         order by o.seq desc limit $4"
    )))
    .bind(owner)
    .bind(open_only)
    .bind(before_seq)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let mut items: Vec<OrderView> = rows.into_iter().map(view_of).collect();
    with_host_uptime(pool, &mut items).await?;
    let ids: Vec<Uuid> = items.iter().map(|o| o.order_id).collect();
    let mut fills = fills(pool, &ids).await?;
    for item in &mut items {
        item.fills = fills.remove(&item.order_id).unwrap_or_default();
    }
    Ok(OrderPage { items, next_cursor })
}

/// Every market with registered GPUs, orders, or configuration, with its summary.
pub(crate) async fn list_markets(pool: &PgPool, configured: &[String]) -> Result<MarketList, ApiError> {
    type Row = (
        String,
        Option<Decimal>,
        Option<Decimal>,
        Option<Decimal>,
        Decimal,
        i64,
        Json<Value>,
        Json<Value>,
        Option<Decimal>,
        Option<Decimal>,
        i64,
    );
    // A market that ever had orders has a `market_owners` row: its matcher claimed it
    // before writing any. Reading `orders` instead read every order ever placed.
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with classes as (
             select class from host_gpus union select class from market_owners union select unnest($1::text[])
         )
         select c.class,
             (select max(price) from orders
                 where class = c.class and status = 'open' and side = 'bid' and priority = 'on_demand'),
             (select min(price) from orders where class = c.class and status = 'open' and side = 'ask'),
             (select price from trades where class = c.class order by seq desc limit 1),
             (select coalesce(sum(gpus * max_hours), 0) from trades
                 where class = c.class and at > now() - interval '24 hours'),
             (select count(*) from host_gpus g join hosts h using (host_id)
                 where g.class = c.class and {GPU_IDLE_SQL} and {HOST_LIVE_SQL} and {GPU_UNTAKEN_SQL}),
             (select coalesce(jsonb_object_agg(level, n), '{{}}') from (
                 select {GPU_LEVEL_SQL} as level, count(*) as n from host_gpus g join hosts h using (host_id)
                 where g.class = c.class and {GPU_IDLE_SQL} and {HOST_LIVE_SQL} and {GPU_UNTAKEN_SQL} group by 1) f),
             (select coalesce(jsonb_object_agg(level, n), '{{}}') from (
                 select {GPU_LEVEL_SQL} as level, count(*) as n
                 from orders o join ask_gpus ag on ag.order_id = o.order_id and ag.state = 'bound'
                     join host_gpus g on g.gpu_uuid = ag.gpu_uuid join hosts h on h.host_id = g.host_id
                 where o.class = c.class and o.status = 'open' and o.side = 'ask' group by 1) a),
             (select max(price) from orders
                 where class = c.class and status = 'open' and side = 'bid' and priority = 'interruptible'),
             (select min(interruptible_price) from orders where class = c.class and status = 'open' and side = 'ask'),
             (select coalesce(sum(l.gpus), 0)::bigint from trades t join leases l using (trade_id)
                 where t.class = c.class and {INTERRUPTIBLE_LIVE_SQL})
         from classes c order by c.class"
    )))
    .bind(configured)
    .fetch_all(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let (
                class,
                best_bid,
                best_ask,
                last_price,
                volume,
                free_gpus,
                free_by_level,
                offered_by_level,
                best_interruptible_bid,
                best_interruptible_ask,
                interruptible_gpus,
            ) = row;
            MarketView {
                class,
                best_bid: best_bid.map(|p| p.normalize()),
                best_ask: best_ask.map(|p| p.normalize()),
                best_interruptible_bid: best_interruptible_bid.map(|p| p.normalize()),
                best_interruptible_ask: best_interruptible_ask.map(|p| p.normalize()),
                interruptible_gpus,
                last_price: last_price.map(|p| p.normalize()),
                volume_24h_gpu_hours: volume.normalize(),
                free_gpus,
                free_gpus_by_level: by_level(free_by_level.0),
                offered_gpus_by_level: by_level(offered_by_level.0),
            }
        })
        .collect();
    Ok(MarketList { items })
}

/// Counts per level with every level present (zero where none).
fn by_level(counts: Value) -> BTreeMap<Level, i64> {
    Level::ALL.into_iter().map(|level| (level, counts[level.as_str()].as_i64().unwrap_or(0))).collect()
}

/// A market's trades, newest first; the cursor is the last trade's sequence number.
pub(crate) async fn list_trades(
    pool: &PgPool,
    class: &str,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<TradePage, ApiError> {
    let mut rows: Vec<(i64, Uuid, Decimal, i32, Decimal, DateTime<Utc>)> = sqlx::query_as(
        "select seq, trade_id, price, gpus, max_hours, at from trades
         where class = $1 and ($2::bigint is null or seq < $2) order by seq desc limit $3",
    )
    .bind(class)
    .bind(before_seq)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.0.to_string())
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|(_, trade_id, price, gpus, max_hours, at)| TradeView {
            trade_id,
            price: price.normalize(),
            gpus,
            max_hours: max_hours.normalize(),
            at,
        })
        .collect();
    Ok(TradePage { items, next_cursor })
}

/// OHLC candles of `interval_s` seconds over the market's trades, oldest first (the last
/// [`CANDLES_MAX`] intervals that had trades). Volume is in GPU-hours.
pub(crate) async fn candles(pool: &PgPool, class: &str, interval_s: i64) -> Result<CandleList, ApiError> {
    let rows: Vec<(i64, Decimal, Decimal, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "select * from (
             select (floor(extract(epoch from at) / $2) * $2)::bigint as t,
                 (array_agg(price order by seq))[1], max(price), min(price),
                 (array_agg(price order by seq desc))[1], sum(gpus * max_hours)
             from trades where class = $1 and at > now() - make_interval(secs => $2 * $3)
             group by 1 order by 1 desc limit $3
         ) c order by t",
    )
    .bind(class)
    .bind(interval_s as f64)
    .bind(CANDLES_MAX)
    .fetch_all(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(|(t, open, high, low, close, volume)| CandleView {
            t,
            open: open.normalize(),
            high: high.normalize(),
            low: low.normalize(),
            close: close.normalize(),
            volume: volume.normalize(),
        })
        .collect();
    Ok(CandleList { items })
}
