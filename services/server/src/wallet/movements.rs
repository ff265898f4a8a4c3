//! A wallet's movements grouped by what they were for, and its balance over time.
//!
//! The ledger history (`GET /api/v1/wallet/ledger`) has one line per journal entry: a
//! provider's wallet gets a `settlement` line for every report of every lease (one every
//! 2 s in the demo), so the lines that matter drown. Here the same journal entries are
//! grouped by the lease or the order they belong to, with the net effect on the wallet's
//! available and held credits, per kind of entry. Nothing is stored: the groups are
//! computed from the journal, so they always add up to the balances.
//!
//! Which group an entry belongs to comes from the accounts it moves between, not from
//! memos: an entry touching a lease's escrow account (its `ref_id` is the lease) is that
//! lease's; else one touching a bid's escrow is that order's; an SLA credit (wallet to
//! wallet) is its lease's by its idempotency key `sla_credit:<lease id>`; anything else
//! (mint, transfer) is a group of its own, named by its transfer id.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::params::ApiQuery;
use crate::state::AppState;

/// Most groups one page returns.
pub const MOVEMENT_PAGE_MAX: i64 = 100;
pub const MOVEMENT_PAGE_DEFAULT: i64 = 25;
/// Most points one balance history returns.
pub const BALANCE_POINTS_MAX: i64 = 1000;
pub const BALANCE_POINTS_DEFAULT: i64 = 200;

/// Each journal entry that moved one of user `$1`'s accounts, with its signed effect on
/// the user's wallet and escrow accounts, and the lease and order it belongs to.
const USER_LINES_SQL: &str = "
    mine as (select account_id from accounts where user_id = $1),
    touched as (
        select entry_id from journal where debit_account in (select account_id from mine)
        union
        select entry_id from journal where credit_account in (select account_id from mine)
    ),
    lines as (
        select j.entry_id, j.transfer_id, j.created_at, j.kind,
               (case when c.user_id = $1 and c.kind = 'wallet' then j.amount else 0 end)
                 - (case when d.user_id = $1 and d.kind = 'wallet' then j.amount else 0 end) as wallet_delta,
               (case when c.user_id = $1 and c.kind = 'escrow' then j.amount else 0 end)
                 - (case when d.user_id = $1 and d.kind = 'escrow' then j.amount else 0 end) as held_delta,
               coalesce(ld.lease_id, lc.lease_id, ls.lease_id) as lease_id,
               coalesce(od.order_id, oc.order_id) as order_id
        from touched t
        join journal j using (entry_id)
        join accounts d on d.account_id = j.debit_account
        join accounts c on c.account_id = j.credit_account
        left join leases ld on d.kind = 'escrow' and ld.lease_id = d.ref_id
        left join leases lc on c.kind = 'escrow' and lc.lease_id = c.ref_id
        left join orders od on d.kind = 'escrow' and od.order_id = d.ref_id
        left join orders oc on c.kind = 'escrow' and oc.order_id = c.ref_id
        left join leases ls on j.kind = 'sla_credit'
             and j.idempotency_key ~ '^sla_credit:[0-9a-f-]{36}$'
             and ls.lease_id = substr(j.idempotency_key, 12)::uuid
    )";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MovementQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Groups per page, 1 to 100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The entries of one kind within a group.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MovementKind {
    /// The journal entry kind: `escrow_hold`, `lease_escrow`, `settlement`, `escrow_release`, ...
    pub kind: String,
    /// Journal entries of this kind in the group.
    pub entries: i64,
    /// Net change of the user's available (wallet) credits: positive in, negative out.
    #[schema(value_type = String, example = "-0.25")]
    pub wallet_delta: Decimal,
    /// Net change of the user's credits held in escrow.
    #[schema(value_type = String, example = "0.25")]
    pub held_delta: Decimal,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// Every movement of one lease, one order, or one other transfer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MovementGroup {
    /// `lease` (escrow, metering, settlement and refund of one lease), `order` (a bid's
    /// escrow hold and release) or `transfer` (one mint or transfer).
    pub group: String,
    /// The lease id, order id or transfer id.
    pub ref_id: Uuid,
    /// Leases: the user's own order that traded (the bid for its buyer, the ask for its
    /// provider). Orders: the order itself.
    pub order_id: Option<Uuid>,
    /// The market of the lease or order.
    pub class: Option<String>,
    /// Leases: the host that ran it.
    pub host_id: Option<Uuid>,
    /// Journal entries in the group.
    pub entries: i64,
    #[schema(value_type = String, example = "0.078")]
    pub wallet_delta: Decimal,
    #[schema(value_type = String, example = "0")]
    pub held_delta: Decimal,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The entries by kind, most recent kind first.
    pub kinds: Vec<MovementKind>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MovementPage {
    /// Groups by their latest entry, newest first. A group that moves again while a
    /// client pages comes first again; clients keep one row per `(group, ref_id)`.
    pub items: Vec<MovementGroup>,
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    grp: String,
    ref_id: Uuid,
    last_entry_id: i64,
    entries: i64,
    wallet_delta: Decimal,
    held_delta: Decimal,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    kinds: Vec<String>,
    kind_entries: Vec<i64>,
    kind_wallet: Vec<Decimal>,
    kind_held: Vec<Decimal>,
    kind_first: Vec<DateTime<Utc>>,
    kind_last: Vec<DateTime<Utc>>,
    order_id: Option<Uuid>,
    class: Option<String>,
    host_id: Option<Uuid>,
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "cursor is not one this API gave out")
                    .with_field("cursor")
            })
        })
        .transpose()
}

fn check_limit(limit: Option<i64>, default: i64, max: i64, field: &str) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", format!("{field} must be 1 to {max}"))
            .with_field(field));
    }
    Ok(limit)
}

#[utoipa::path(get, path = "/api/v1/wallet/movements", tag = "wallet", params(MovementQuery),
    security(("bearer" = [])),
    responses((status = 200, body = MovementPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub(crate) async fn get_movements(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(query): ApiQuery<MovementQuery>,
) -> ApiResult<Json<MovementPage>> {
    let before = parse_cursor(query.cursor.as_deref())?;
    let limit = check_limit(query.limit, MOVEMENT_PAGE_DEFAULT, MOVEMENT_PAGE_MAX, "limit")?;
    // The user's own order of a lease: the bid if they bought, the ask if they sold.
    let sql = format!(
        "with {USER_LINES_SQL},
         keyed as (
             select case when lease_id is not null then 'lease' when order_id is not null then 'order'
                         else 'transfer' end as grp,
                    coalesce(lease_id, order_id, transfer_id) as ref_id, *
             from lines
         ),
         by_kind as (
             select grp, ref_id, kind, count(*) as n, sum(wallet_delta) as w, sum(held_delta) as h,
                    min(created_at) as first_at, max(created_at) as last_at, max(entry_id) as last_entry_id
             from keyed group by grp, ref_id, kind
         ),
         grouped as (
             select grp, ref_id, max(last_entry_id) as last_entry_id, sum(n)::int8 as entries,
                    sum(w) as wallet_delta, sum(h) as held_delta, min(first_at) as first_at, max(last_at) as last_at,
                    array_agg(kind order by last_entry_id desc) as kinds,
                    array_agg(n order by last_entry_id desc) as kind_entries,
                    array_agg(w order by last_entry_id desc) as kind_wallet,
                    array_agg(h order by last_entry_id desc) as kind_held,
                    array_agg(first_at order by last_entry_id desc) as kind_first,
                    array_agg(last_at order by last_entry_id desc) as kind_last
             from by_kind group by grp, ref_id
         )
         select g.*,
                case when g.grp = 'order' then g.ref_id
                     when l.buyer_id = $1 then t.bid_id when l.provider_id = $1 then t.ask_id end as order_id,
                coalesce(t.class, o.class) as class, l.host_id
         from grouped g
         left join leases l on g.grp = 'lease' and l.lease_id = g.ref_id
         left join trades t on t.trade_id = l.trade_id
         left join orders o on g.grp = 'order' and o.order_id = g.ref_id
         where ($2::int8 is null or g.last_entry_id < $2)
         order by g.last_entry_id desc
         limit $3"
    );
    let mut rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(auth.user_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.last_entry_id.to_string())
    } else {
        None
    };
    let items = rows.into_iter().map(group_view).collect();
    Ok(Json(MovementPage { items, next_cursor }))
}

fn group_view(r: GroupRow) -> MovementGroup {
    let kinds = r
        .kinds
        .into_iter()
        .zip(r.kind_entries)
        .zip(r.kind_wallet.into_iter().zip(r.kind_held))
        .zip(r.kind_first.into_iter().zip(r.kind_last))
        .map(|(((kind, entries), (wallet_delta, held_delta)), (first_at, last_at))| MovementKind {
            kind,
            entries,
            wallet_delta: wallet_delta.normalize(),
            held_delta: held_delta.normalize(),
            first_at,
            last_at,
        })
        .collect();
    MovementGroup {
        group: r.grp,
        ref_id: r.ref_id,
        order_id: r.order_id,
        class: r.class,
        host_id: r.host_id,
        entries: r.entries,
        wallet_delta: r.wallet_delta.normalize(),
        held_delta: r.held_delta.normalize(),
        first_at: r.first_at,
        last_at: r.last_at,
        kinds,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceHistoryQuery {
    /// Most points, 1 to 1000 (default 200): the time from the first entry to now is cut
    /// into this many equal steps, each point the balance at the end of its step.
    #[param(minimum = 1, maximum = 1000)]
    pub points: Option<i64>,
}

/// The balances right after the last entry of a step.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalancePoint {
    pub at: DateTime<Utc>,
    #[schema(value_type = String)]
    pub available: Decimal,
    #[schema(value_type = String)]
    pub held: Decimal,
    #[schema(value_type = String)]
    pub total: Decimal,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceHistory {
    /// Oldest first; steps without entries have no point. The last point's balances are
    /// the wallet's balances now (`GET /api/v1/wallet`).
    pub points: Vec<BalancePoint>,
}

#[utoipa::path(get, path = "/api/v1/wallet/balance-history", tag = "wallet", params(BalanceHistoryQuery),
    security(("bearer" = [])),
    responses((status = 200, body = BalanceHistory), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub(crate) async fn get_balance_history(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(query): ApiQuery<BalanceHistoryQuery>,
) -> ApiResult<Json<BalanceHistory>> {
    let points = check_limit(query.points, BALANCE_POINTS_DEFAULT, BALANCE_POINTS_MAX, "points")?;
    // Balances are running sums of the entries in journal order (every account starts at
    // zero); each step keeps the sums after its last entry and is stamped with that
    // entry's time, so the points are real balances, never interpolated.
    let sql = format!(
        "with {USER_LINES_SQL},
         running as (
             select entry_id, created_at,
                    sum(wallet_delta) over (order by entry_id) as available,
                    sum(held_delta) over (order by entry_id) as held
             from lines
         ),
         span as (select min(created_at) as t0, greatest(extract(epoch from now() - min(created_at)), 0.001) as s
                  from running)
         select distinct on (step) created_at, available, held
         from (select r.*, least(floor(extract(epoch from r.created_at - span.t0) / span.s * $2), $2 - 1) as step
               from running r, span) x
         order by step, entry_id desc"
    );
    let rows: Vec<(DateTime<Utc>, Decimal, Decimal)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(auth.user_id).bind(points as f64).fetch_all(&state.pool).await?;
    let points = rows
        .into_iter()
        .map(|(at, available, held)| BalancePoint {
            at,
            available: available.normalize(),
            held: held.normalize(),
            total: (available + held).normalize(),
        })
        .collect();
    Ok(Json(BalanceHistory { points }))
}
