//! What a matcher keeps in memory about its market's open orders besides the book: the
//! order rows, each bid's escrow account and balance, each ask's unsold bound GPUs.
//!
//! The matcher is the only writer of its market's orders, bid escrows and bound GPUs, so
//! after a commit this copy equals the database; a batch then needs no round trips to read
//! the orders it touches. Every write of a batch is guarded by the values it came from
//! (see [`super::writes`]), so a copy that ever drifted fails its batch, and a failed
//! batch reloads both the book and this copy from Postgres.

use std::collections::{HashMap, HashSet};

use crate::verification::level::{GPU_LEVEL_SQL, Level};
use capex_book::{
    AskGrade, Book, ExcludedHosts, HostId, InterruptibleLease, OrderId, Price, Requirements, RestingAsk, RestingBid,
    RestingOrder, UserId,
};
use capex_core::Credits;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::capacity::INTERRUPTIBLE_LIVE_SQL;
use super::request::BidPriority;
use crate::error::ApiError;
use crate::hosts::uptime::UPTIME_7D_PPM_SQL;

/// An interruptible lease on an open ask: its GPUs are still bound to (offered by) the ask.
#[derive(Debug, Clone)]
pub(crate) struct HeldLease {
    /// The interruptible bid that made it: the book names the lease by it.
    pub(crate) bid_id: Uuid,
    pub(crate) lease_id: Uuid,
    pub(crate) gpu_uuids: Vec<String>,
}

/// An order the batch touches: new from a request, or resting (from [`Resting`]).
#[derive(Debug, Clone)]
pub(crate) struct OrderInfo {
    pub(crate) side_bid: bool,
    pub(crate) owner: Uuid,
    pub(crate) gpus: i32,
    pub(crate) gpus_remaining: i32,
    pub(crate) price: Decimal,
    pub(crate) max_hours: Option<Decimal>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) job: Option<Value>,
    /// Bids: the lowest verification level they accept.
    pub(crate) min_verification: Option<Level>,
    /// Asks: their grade's level (the lowest of their GPUs when graded).
    pub(crate) verification: Option<Level>,
    /// Bids: the least 7-day uptime of the ask's host they accept, in ppm.
    pub(crate) min_uptime_7d_ppm: Option<u32>,
    /// Asks: their grade's host uptime over 7 days, in ppm.
    pub(crate) host_uptime_7d_ppm: Option<u32>,
    pub(crate) host_id: Option<Uuid>,
    pub(crate) available_until: Option<DateTime<Utc>>,
    pub(crate) tif: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) status: &'static str,
    /// Bids: the escrow account and what it holds.
    pub(crate) escrow_account: Option<Uuid>,
    /// Bids: the owner's wallet account, where a trade below the limit refunds the rest.
    pub(crate) wallet_account: Option<Uuid>,
    pub(crate) held: Credits,
    /// Asks: the GPUs still offered, in GPU index order (those of `held` included).
    pub(crate) bound: Vec<String>,
    /// Bids: on demand or interruptible.
    pub(crate) priority: BidPriority,
    /// Asks: the price for interruptible use of their idle GPUs.
    pub(crate) interruptible_price: Option<Decimal>,
    /// Asks: the interruptible leases on their bound GPUs.
    pub(crate) leases_held: Vec<HeldLease>,
    /// `gpus_remaining` as the database has it (guards the update).
    pub(crate) stored_remaining: i32,
    /// `held` as the database has it (guards the balance update).
    pub(crate) stored_held: Credits,
    /// New in this batch (inserted) rather than resting before (updated).
    pub(crate) is_new: bool,
    pub(crate) changed: bool,
    pub(crate) closed: bool,
}

impl OrderInfo {
    /// An order placed in this batch, before the book has seen it; the caller sets what
    /// only its side has.
    pub(crate) fn placed(owner: Uuid, gpus: u32, price: Decimal, tif: &str, at: DateTime<Utc>) -> OrderInfo {
        OrderInfo {
            side_bid: false,
            owner,
            gpus: gpus as i32,
            gpus_remaining: gpus as i32,
            price,
            max_hours: None,
            duration_ms: None,
            job: None,
            min_verification: None,
            verification: None,
            min_uptime_7d_ppm: None,
            host_uptime_7d_ppm: None,
            host_id: None,
            available_until: None,
            tif: tif.to_string(),
            created_at: at,
            status: "open",
            escrow_account: None,
            wallet_account: None,
            held: Credits::ZERO,
            bound: Vec::new(),
            priority: BidPriority::OnDemand,
            interruptible_price: None,
            leases_held: Vec::new(),
            stored_remaining: gpus as i32,
            stored_held: Credits::ZERO,
            is_new: true,
            changed: false,
            closed: false,
        }
    }
}

/// The open orders of one market, by id.
#[derive(Debug, Default)]
pub(crate) struct Resting {
    orders: HashMap<Uuid, OrderInfo>,
    /// Every GPU the open asks offer (the union of their `bound`).
    bound: HashSet<String>,
}

impl Resting {
    pub(crate) fn get(&self, id: &Uuid) -> Option<&OrderInfo> {
        self.orders.get(id)
    }

    /// Whether an open ask of this market offers the GPU.
    pub(crate) fn is_bound(&self, gpu_uuid: &str) -> bool {
        self.bound.contains(gpu_uuid)
    }

    // A GPU is offered by one open ask at most (a unique index), so an ask's GPUs leave the
    // set when that ask stops offering them.
    fn insert(&mut self, id: Uuid, info: OrderInfo) {
        if let Some(old) = self.orders.get(&id) {
            for gpu in old.bound.iter().filter(|gpu| !info.bound.contains(gpu)) {
                self.bound.remove(gpu);
            }
        }
        self.bound.extend(info.bound.iter().cloned());
        self.orders.insert(id, info);
    }

    fn remove(&mut self, id: &Uuid) {
        if let Some(old) = self.orders.remove(id) {
            for gpu in &old.bound {
                self.bound.remove(gpu);
            }
        }
    }

    /// Takes in the committed state of the orders a batch touched.
    pub(crate) fn apply(&mut self, touched: HashMap<Uuid, OrderInfo>) {
        for (id, mut info) in touched {
            if info.closed {
                self.remove(&id);
            } else if info.changed || !info.is_new {
                info.is_new = false;
                info.changed = false;
                info.stored_remaining = info.gpus_remaining;
                info.stored_held = info.held;
                self.insert(id, info);
            }
        }
    }

    /// Takes in an ask's new grade (the book regraded it), so views built from this copy
    /// show it. A failed batch reloads the copy, grades included.
    pub(crate) fn regrade(&mut self, id: &Uuid, grade: AskGrade) {
        if let Some(info) = self.orders.get_mut(id) {
            info.verification = Some(grade.verification.into());
            info.host_uptime_7d_ppm = Some(grade.uptime_7d_ppm);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.orders.len()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    order_id: Uuid,
    side: String,
    owner_id: Uuid,
    gpus: i32,
    gpus_remaining: i32,
    price: Decimal,
    max_hours: Option<Decimal>,
    duration_ms: Option<i64>,
    job: Option<Value>,
    host_id: Option<Uuid>,
    available_until: Option<DateTime<Utc>>,
    tif: String,
    created_at: DateTime<Utc>,
    escrow_account: Option<Uuid>,
    escrow_balance: Option<Decimal>,
    wallet_account: Option<Uuid>,
    bound: Vec<String>,
    min_verification: Option<String>,
    /// Asks: the verification levels of the bound GPUs, now.
    bound_levels: Vec<String>,
    min_uptime_7d_ppm: Option<i32>,
    /// Asks: their host's 7-day uptime now, in ppm.
    host_uptime_7d_ppm: Option<i32>,
    priority: String,
    interruptible_price: Option<Decimal>,
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    ask_id: Uuid,
    bid_id: Uuid,
    lease_id: Uuid,
    buyer_id: Uuid,
    gpu_uuids: Vec<String>,
    price: Decimal,
    book_seq: Option<i64>,
}

fn price_of(decimal: Decimal) -> Result<Price, ApiError> {
    Price::from_decimal(decimal).map_err(|err| ApiError::internal(format!("stored price {decimal}: {err}")))
}

/// The hosts a stored bid's job excludes (`job.excluded_hosts`, written by the exchange
/// when it places a managed job's next attempt).
pub(crate) fn excluded_hosts_of(job: Option<&Value>) -> ExcludedHosts {
    let hosts: Vec<HostId> = job
        .and_then(|job| job.get("excluded_hosts"))
        .and_then(Value::as_array)
        .map(|hosts| hosts.iter().filter_map(|h| h.as_str()?.parse().ok()).map(HostId).collect())
        .unwrap_or_default();
    ExcludedHosts::new(&hosts).unwrap_or(ExcludedHosts::NONE)
}

/// Rebuilds a market's book and its open orders from Postgres, the book in original time
/// order.
pub(crate) async fn load_market(pool: &PgPool, class: &str) -> Result<(Book, Resting), ApiError> {
    // `seq` is the order the matcher gave orders to the book, so it is their time priority.
    // Each ask host's uptime once (a scan of its week of reports), not once per ask.
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with up as (
             select host_id, {UPTIME_7D_PPM_SQL} as ppm
             from (select distinct host_id from orders where class = $1 and status = 'open' and side = 'ask') a
         )
         select o.seq, o.order_id, o.side, o.owner_id, o.gpus, o.gpus_remaining, o.price, o.max_hours,
                o.duration_ms, o.job, o.host_id, o.available_until, o.tif, o.created_at,
                a.account_id as escrow_account, a.balance as escrow_balance, w.account_id as wallet_account,
                array(select ag.gpu_uuid from ask_gpus ag join host_gpus g using (gpu_uuid)
                      where ag.order_id = o.order_id and ag.state = 'bound' order by g.gpu_index) as bound,
                o.min_verification,
                array(select {GPU_LEVEL_SQL} from ask_gpus ag join host_gpus g using (gpu_uuid) join hosts h using (host_id)
                      where ag.order_id = o.order_id and ag.state = 'bound') as bound_levels,
                o.min_uptime_7d_ppm, up.ppm as host_uptime_7d_ppm, o.priority, o.interruptible_price
         from orders o left join accounts a on a.kind = 'escrow' and a.ref_id = o.order_id
             left join accounts w on w.kind = 'wallet' and w.user_id = o.owner_id and o.side = 'bid'
             left join up on up.host_id = o.host_id and o.side = 'ask'
         where o.class = $1 and o.status = 'open' order by o.seq"
    )))
    .bind(class)
    .fetch_all(pool)
    .await?;
    let mut book = Book::new();
    let mut resting = Resting::default();
    let at_ms = Utc::now().timestamp_millis();
    for row in rows {
        let id = OrderId(row.order_id);
        let owner = UserId(row.owner_id);
        let price = price_of(row.price)?;
        let side_bid = row.side == "bid";
        let min_verification: Option<Level> = match &row.min_verification {
            Some(text) => Some(text.parse().map_err(|_| ApiError::internal(format!("stored level {text:?}")))?),
            None => None,
        };
        let min_uptime_7d_ppm = row.min_uptime_7d_ppm.map(ppm_of_db).transpose()?;
        let host_uptime_7d_ppm = ppm_of_db(row.host_uptime_7d_ppm.unwrap_or(0))?;
        let ask_level = Level::lowest(&row.bound_levels).unwrap_or(Level::Simulated);
        let order = if side_bid {
            RestingOrder::Bid(RestingBid {
                id,
                owner,
                gpus: row.gpus as u32,
                duration_ms: row.duration_ms.unwrap_or(0),
                price,
                seq: row.seq as u64,
                excluded_hosts: excluded_hosts_of(row.job.as_ref()),
                requires: Requirements { min_verification: min_verification.map(Into::into), min_uptime_7d_ppm },
                priority: BidPriority::of_db(&row.priority).book(),
            })
        } else {
            RestingOrder::Ask(RestingAsk {
                id,
                owner,
                host: HostId(row.host_id.unwrap_or_default()),
                gpus: row.gpus as u32,
                remaining_gpus: row.gpus_remaining as u32,
                available_until_ms: row.available_until.map(|t| t.timestamp_millis()).unwrap_or(0),
                price,
                seq: row.seq as u64,
                // Graded again from its GPUs' levels and its host's uptime now: they may have
                // changed while the book was down.
                grade: AskGrade { verification: ask_level.into(), uptime_7d_ppm: host_uptime_7d_ppm },
                interruptible_price: row.interruptible_price.map(price_of).transpose()?,
                interruptible_gpus: 0,
            })
        };
        book.restore(order, at_ms).map_err(|reason| {
            ApiError::internal(format!("cannot restore order {} of {class}: {reason:?}", row.order_id))
        })?;
        if side_bid && row.escrow_account.is_none() {
            return Err(ApiError::internal(format!("open bid {} has no escrow account", row.order_id)));
        }
        let held = Credits::from_db(row.escrow_balance.unwrap_or(Decimal::ZERO));
        resting.insert(
            row.order_id,
            OrderInfo {
                side_bid,
                owner: row.owner_id,
                gpus: row.gpus,
                gpus_remaining: row.gpus_remaining,
                price: row.price,
                max_hours: row.max_hours,
                duration_ms: row.duration_ms,
                job: row.job,
                min_verification,
                verification: (!side_bid).then_some(ask_level),
                min_uptime_7d_ppm,
                host_uptime_7d_ppm: (!side_bid).then_some(host_uptime_7d_ppm),
                host_id: row.host_id,
                available_until: row.available_until,
                tif: row.tif,
                created_at: row.created_at,
                status: "open",
                escrow_account: row.escrow_account,
                wallet_account: row.wallet_account,
                held,
                bound: row.bound,
                priority: BidPriority::of_db(&row.priority),
                interruptible_price: row.interruptible_price,
                leases_held: Vec::new(),
                stored_remaining: row.gpus_remaining,
                stored_held: held,
                is_new: false,
                changed: false,
                closed: false,
            },
        );
    }
    restore_leases(pool, class, &mut book, &mut resting).await?;
    Ok((book, resting))
}

/// Puts the live interruptible leases back on their open asks, in the book and the copy.
/// A lease that is preempting or over holds nothing the book could give again.
async fn restore_leases(pool: &PgPool, class: &str, book: &mut Book, resting: &mut Resting) -> Result<(), ApiError> {
    let rows: Vec<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select t.ask_id, t.bid_id, l.lease_id, l.buyer_id, l.gpu_uuids, l.price, l.book_seq
         from orders o join trades t on t.ask_id = o.order_id join leases l using (trade_id)
         where o.class = $1 and o.side = 'ask' and o.status = 'open' and {INTERRUPTIBLE_LIVE_SQL}
         order by l.book_seq"
    )))
    .bind(class)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let lease = InterruptibleLease {
            lease_id: OrderId(row.bid_id),
            ask_id: OrderId(row.ask_id),
            buyer: UserId(row.buyer_id),
            gpus: row.gpu_uuids.len() as u32,
            price: price_of(row.price)?,
            seq: row.book_seq.unwrap_or(0) as u64,
        };
        book.restore_lease(lease).map_err(|reason| {
            ApiError::internal(format!("cannot restore interruptible lease {} of {class}: {reason:?}", row.lease_id))
        })?;
        if let Some(ask) = resting.orders.get_mut(&row.ask_id) {
            ask.leases_held.push(HeldLease { bid_id: row.bid_id, lease_id: row.lease_id, gpu_uuids: row.gpu_uuids });
        }
    }
    Ok(())
}

/// A stored uptime in ppm, which the schema keeps within `0..=PPM_MAX`.
fn ppm_of_db(ppm: i32) -> Result<u32, ApiError> {
    u32::try_from(ppm)
        .ok()
        .filter(|ppm| *ppm <= capex_book::PPM_MAX)
        .ok_or_else(|| ApiError::internal(format!("stored uptime {ppm} ppm")))
}

/// The instant of a book timestamp in ms.
pub(crate) fn at_of(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}
