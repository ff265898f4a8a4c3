//! One matcher per market: the task that owns the market's [`Book`] and is its only writer.
//!
//! Requests arrive on a bounded mpsc channel. The matcher takes the first waiting request
//! and up to `batch_max - 1` more that are already queued, then in ONE Postgres
//! transaction: checks what the book cannot know (wallet balances for bids' escrow, free
//! attested GPUs for asks), applies the commands to the book, and writes every effect
//! (orders, escrow holds and releases, trades, leases and their escrows, bound GPUs,
//! idempotency records). Only after the commit does any request get its answer. If any
//! step after the book changed fails, the book is rebuilt from the database, so it never
//! keeps effects that are not durable.
//!
//! Cost per batch: a fixed ~10 statements plus one per ask placed (its free-GPU check),
//! and one fsync, whatever the batch size.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use capex_book::{
    Ask, Bid, Book, Command, Event, HostId, OrderId, Price, RejectReason, RestingAsk, RestingBid, RestingOrder,
    UnfilledReason, UserId,
};
use capex_core::Credits;
use capex_ledger::{TransferSpec, open_escrows, post_transfers};
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::capacity;
use super::money::reserve;
use super::request::NewOrder;
use super::views::{BookView, FillView, LevelView, OrderView, UnfilledReasonView};
use crate::error::ApiError;
use crate::feed::Feed;

/// Price levels per side kept in the published book snapshot.
pub(crate) const BOOK_LEVELS_MAX: usize = 100;

/// An order to place, validated by the handler.
#[derive(Debug)]
pub(crate) struct PlaceRequest {
    pub(crate) order_id: Uuid,
    pub(crate) owner: Uuid,
    pub(crate) order: NewOrder,
    /// `(Idempotency-Key, request hash)`: stored with the order's response in the batch.
    pub(crate) idempotency: Option<(String, String)>,
}

#[derive(Debug)]
pub(crate) enum PlaceOutcome {
    Placed(Box<OrderView>),
    /// The key was already used (or used by an earlier request of the same batch): the
    /// handler answers with the stored response.
    Replay,
}

pub(crate) enum Request {
    Place(PlaceRequest, oneshot::Sender<Result<PlaceOutcome, ApiError>>),
    Cancel { order_id: Uuid, owner: Uuid, reply: oneshot::Sender<Result<(), ApiError>> },
    WhyUnfilled { bid_id: Uuid, reply: oneshot::Sender<Vec<UnfilledReason>> },
}

/// A request of the batch and, once decided, its answer.
enum Item {
    Place {
        req: PlaceRequest,
        reply: oneshot::Sender<Result<PlaceOutcome, ApiError>>,
        outcome: Option<PlaceResult>,
    },
    Cancel {
        order_id: Uuid,
        owner: Uuid,
        reply: oneshot::Sender<Result<(), ApiError>>,
        outcome: Option<Result<(), ApiError>>,
    },
}

enum PlaceResult {
    Refused(ApiError),
    Replay,
    /// Given to the book; its GPUs (asks) were chosen in this batch.
    Applied {
        gpus_bound: Vec<String>,
    },
    /// Accepted by the book and written.
    Placed(Box<OrderView>),
}

pub(crate) struct Matcher {
    class: String,
    pool: PgPool,
    feed: Feed,
    /// The matcher's own connection, kept between batches: no pool acquire (and its
    /// liveness ping) per batch. Dropped after a failed batch; a fresh one is taken next time.
    conn: Option<PoolConnection<Postgres>>,
    /// The market's owner epoch when this matcher claimed it; checked in every batch.
    epoch: i64,
    book: Book,
    batch_max: usize,
    snapshot: watch::Sender<Arc<BookView>>,
    events: Vec<Event>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn at_of(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

fn price_of(decimal: Decimal) -> Result<Price, ApiError> {
    Price::from_decimal(decimal).map_err(|err| ApiError::internal(format!("stored price {decimal}: {err}")))
}

/// Rebuilds a market's book from its open orders, in their original time order.
pub(crate) async fn load_book(pool: &PgPool, class: &str) -> Result<Book, ApiError> {
    type Row = (i64, Uuid, String, Uuid, i32, i32, Decimal, Option<i64>, Option<Uuid>, Option<DateTime<Utc>>);
    // `seq` is the order the matcher gave orders to the book, so it is their time priority.
    let rows: Vec<Row> = sqlx::query_as(
        "select seq, order_id, side, owner_id, gpus, gpus_remaining, price, duration_ms, host_id, available_until
         from orders where class = $1 and status = 'open' order by seq",
    )
    .bind(class)
    .fetch_all(pool)
    .await?;
    let mut book = Book::new();
    let at_ms = now_ms();
    for (seq, order_id, side, owner, gpus, remaining, price, duration_ms, host_id, until) in rows {
        let seq = seq as u64;
        let id = OrderId(order_id);
        let owner = UserId(owner);
        let price = price_of(price)?;
        let order = if side == "bid" {
            RestingOrder::Bid(RestingBid {
                id,
                owner,
                gpus: gpus as u32,
                duration_ms: duration_ms.unwrap_or(0),
                price,
                seq,
            })
        } else {
            RestingOrder::Ask(RestingAsk {
                id,
                owner,
                host: HostId(host_id.unwrap_or_default()),
                gpus: gpus as u32,
                remaining_gpus: remaining as u32,
                available_until_ms: until.map(|t| t.timestamp_millis()).unwrap_or(0),
                price,
                seq,
            })
        };
        book.restore(order, at_ms)
            .map_err(|reason| ApiError::internal(format!("cannot restore order {order_id} of {class}: {reason:?}")))?;
    }
    Ok(book)
}

pub(crate) fn book_view(class: &str, book: &Book) -> BookView {
    let depth = book.depth(BOOK_LEVELS_MAX);
    let level =
        |l: &capex_book::Level| LevelView { price: l.price.to_decimal().normalize(), gpus: l.gpus, orders: l.orders };
    BookView {
        class: class.to_string(),
        bids: depth.bids.iter().map(level).collect(),
        asks: depth.asks.iter().map(level).collect(),
    }
}

fn reject_error(reason: RejectReason) -> ApiError {
    match reason {
        RejectReason::UnknownOrder => {
            ApiError::new(StatusCode::CONFLICT, "order_not_open", "the order is no longer open")
        }
        RejectReason::NotOwner => ApiError::not_found("order"),
        RejectReason::BookFull => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "book_full", "this market holds its maximum of orders")
        }
        RejectReason::AlreadyExpired => {
            ApiError::invalid("available_until", "invalid_available_until", "available_until must be in the future")
        }
        RejectReason::DurationTooLong => {
            ApiError::invalid("max_hours", "max_hours_too_long", "max_hours is longer than the book allows")
        }
        other => ApiError::internal(format!("book refused a validated order: {other:?}")),
    }
}

/// What the batch needs to know about an order it touches.
#[derive(Debug, Clone)]
struct OrderInfo {
    side_bid: bool,
    owner: Uuid,
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
    status: &'static str,
    /// New in this batch (inserted) rather than resting before (updated).
    is_new: bool,
    changed: bool,
    closed: bool,
}

/// Records how long each phase of a batch took (`capex_matcher_phase_seconds`), to see
/// where a batch's time goes: round trips, the book, or the commit's fsync.
struct PhaseTimer {
    class: String,
    last: Instant,
}

impl PhaseTimer {
    fn new(class: &str) -> PhaseTimer {
        PhaseTimer { class: class.to_string(), last: Instant::now() }
    }

    fn done(&mut self, phase: &'static str) {
        let now = Instant::now();
        metrics::histogram!("capex_matcher_phase_seconds", "class" => self.class.clone(), "phase" => phase)
            .record((now - self.last).as_secs_f64());
        self.last = now;
    }
}

/// What a committed batch tells the live feed.
struct Published {
    trades: Vec<Value>,
    orders: Vec<(Uuid, Value)>,
    /// New leases as (buyer, provider, job event): the job event also wakes the host's
    /// assignments long-poll.
    jobs: Vec<(Uuid, Uuid, Value)>,
}

/// All writes of one batch, gathered while walking the book's events.
#[derive(Default)]
struct Writes {
    escrows_to_open: Vec<(Uuid, Uuid)>,
    transfers: Vec<TransferSpec>,
    trades: Vec<Value>,
    leases: Vec<Value>,
    ask_gpus_new: Vec<Value>,
    ask_gpus_leased: Vec<Value>,
    asks_closed: Vec<Uuid>,
    fills: HashMap<Uuid, Vec<FillView>>,
}

impl Matcher {
    pub(crate) fn new(
        class: String,
        pool: PgPool,
        feed: Feed,
        book: Book,
        batch_max: usize,
        epoch: i64,
    ) -> (Matcher, watch::Receiver<Arc<BookView>>) {
        let (snapshot, rx) = watch::channel(Arc::new(book_view(&class, &book)));
        let matcher = Matcher {
            class,
            pool,
            feed,
            conn: None,
            book,
            batch_max: batch_max.max(1),
            snapshot,
            events: Vec::new(),
            epoch,
        };
        (matcher, rx)
    }

    /// Serves requests until the channel closes or `shutdown` turns true.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
        tick_ms: u64,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.batch_max);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                request = rx.recv() => {
                    let Some(request) = request else { break };
                    batch.push(request);
                    while batch.len() < self.batch_max {
                        match rx.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    if !self.run_batch(std::mem::take(&mut batch), false).await {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if !self.run_batch(Vec::new(), true).await {
                        break;
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::info!(class = %self.class, "matcher stopped");
    }

    /// Runs one batch; false when the matcher must stop (its book could not be rebuilt).
    async fn run_batch(&mut self, requests: Vec<Request>, tick: bool) -> bool {
        let mut items = Vec::with_capacity(requests.len());
        for request in requests {
            match request {
                // Queries see the book as last committed: batches run one at a time.
                Request::WhyUnfilled { bid_id, reply } => {
                    let _ = reply.send(self.book.why_unfilled(OrderId(bid_id)));
                }
                Request::Place(req, reply) => items.push(Item::Place { req, reply, outcome: None }),
                Request::Cancel { order_id, owner, reply } => {
                    items.push(Item::Cancel { order_id, owner, reply, outcome: None })
                }
            }
        }
        if items.is_empty() && (!tick || !self.has_expiry_due()) {
            return true;
        }
        let span = tracing::info_span!("matcher_batch", class = %self.class, size = items.len());
        let _entered = span.enter();
        let started = Instant::now();
        let size = items.len();
        match self.commit_batch(&mut items).await {
            Ok(published) => {
                metrics::histogram!("capex_matcher_batch_size", "class" => self.class.clone()).record(size as f64);
                metrics::histogram!("capex_matcher_commit_seconds", "class" => self.class.clone())
                    .record(started.elapsed().as_secs_f64());
                self.snapshot.send_replace(Arc::new(book_view(&self.class, &self.book)));
                for item in items {
                    answer(item, None);
                }
                self.publish(published);
            }
            Err(err) => {
                tracing::error!(class = %self.class, error = %err.detail, "matcher batch failed; rebuilding the book");
                metrics::counter!("capex_matcher_batch_failures_total", "class" => self.class.clone()).increment(1);
                match load_book(&self.pool, &self.class).await {
                    Ok(book) => self.book = book,
                    Err(reload) => {
                        // Without a trustworthy book the market must not trade: stop the matcher;
                        // the registry starts a fresh one (rebuilt from the database) on next use.
                        tracing::error!(class = %self.class, error = %reload.detail, "cannot rebuild the book");
                        for item in items {
                            answer(item, Some(err.clone()));
                        }
                        return false;
                    }
                }
                self.snapshot.send_replace(Arc::new(book_view(&self.class, &self.book)));
                for item in items {
                    answer(item, Some(err.clone()));
                }
            }
        }
        true
    }

    fn has_expiry_due(&self) -> bool {
        let now = now_ms();
        self.book.asks().any(|ask| ask.available_until_ms <= now)
    }

    /// Live-feed events of a committed batch: the book once, each trade, and each changed
    /// order to its owner (the UI refetches what it shows).
    fn publish(&self, published: Option<Published>) {
        let Some(published) = published else { return };
        self.feed.public("book", json!({"class": self.class}));
        for trade in published.trades {
            self.feed.public("trade", trade);
        }
        for (owner, order) in published.orders {
            self.feed.private("order", owner, order);
        }
        for (buyer, provider, job) in published.jobs {
            self.feed.private("job", provider, job.clone());
            self.feed.private("job", buyer, job);
        }
    }

    /// Runs the batch in one transaction; `None` when it changed nothing.
    async fn commit_batch(&mut self, items: &mut [Item]) -> Result<Option<Published>, ApiError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        let result = self.commit_batch_on(&mut conn, items).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    async fn commit_batch_on(
        &mut self,
        conn: &mut PgConnection,
        items: &mut [Item],
    ) -> Result<Option<Published>, ApiError> {
        let at_ms = now_ms().max(self.book.now_ms().unwrap_or(i64::MIN));
        let at = at_of(at_ms);
        let mut phase = PhaseTimer::new(&self.class);
        let mut tx = sqlx::Connection::begin(conn).await?;
        super::ownership::check_epoch(&mut tx, &self.class, self.epoch).await?;
        phase.done("begin");

        self.check_idempotency(&mut tx, items).await?;
        let wallets = self.check_funds(&mut tx, items).await?;
        self.check_gpus(&mut tx, items).await?;

        phase.done("checks");
        // From here on the book changes: any failure rebuilds it (see run_batch).
        self.events.clear();
        let mut own_events: Vec<(usize, usize)> = Vec::with_capacity(items.len());
        for item in items.iter() {
            let start = self.events.len();
            if let Some(command) = command_of(item, at_ms) {
                self.book.apply(command, &mut self.events);
            }
            own_events.push((start, self.events.len()));
        }
        if items.is_empty() {
            self.book.apply(Command::Tick { at_ms }, &mut self.events);
        }
        if self.events.is_empty() {
            tx.rollback().await?;
            return Ok(None);
        }
        for (item, (start, end)) in items.iter_mut().zip(&own_events) {
            decide_from_events(item, &self.events[*start..*end]);
        }
        phase.done("book");

        let (mut orders, new_in_order) = self.load_touched_orders(&mut tx, items, at).await?;
        let escrows = load_bid_escrows(&mut tx, &orders).await?;
        let mut bound = load_bound_gpus(&mut tx, &orders).await?;
        let mut new_escrow: HashMap<Uuid, Credits> = HashMap::new();
        let mut new_bound: HashMap<Uuid, Vec<String>> = HashMap::new();
        for item in items.iter() {
            if let Item::Place { req, outcome: Some(PlaceResult::Applied { gpus_bound }), .. } = item {
                match &req.order {
                    NewOrder::Bid(bid) => {
                        new_escrow.insert(req.order_id, bid.escrow);
                    }
                    NewOrder::Ask(_) => {
                        new_bound.insert(req.order_id, gpus_bound.clone());
                    }
                }
            }
        }
        let mut writes = Writes::default();
        let mut new_escrow_ids: HashMap<Uuid, Uuid> = HashMap::new();
        // Escrow accounts are opened in one statement first, so transfers can name them.
        for event in &self.events {
            match event {
                Event::Accepted { order_id } if orders.get(&order_id.0).is_some_and(|o| o.side_bid) => {
                    let owner = orders[&order_id.0].owner;
                    writes.escrows_to_open.push((owner, order_id.0));
                }
                Event::Trade { buyer, .. } => writes.escrows_to_open.push((buyer.0, Uuid::now_v7())),
                _ => {}
            }
        }
        phase.done("load");
        let opened = open_escrows(&mut tx, &writes.escrows_to_open).await?;
        for ((_, ref_id), account) in writes.escrows_to_open.iter().zip(opened) {
            new_escrow_ids.insert(*ref_id, account);
        }
        let lease_ids: Vec<Uuid> =
            writes.escrows_to_open.iter().filter(|(_, r)| !orders.contains_key(r)).map(|(_, r)| *r).collect();
        let mut lease_ids = lease_ids.into_iter();
        let escrow_of = |id: Uuid| -> Result<Uuid, ApiError> {
            new_escrow_ids
                .get(&id)
                .or_else(|| escrows.get(&id).map(|(account, _)| account))
                .copied()
                .ok_or_else(|| ApiError::internal(format!("no escrow account for {id}")))
        };
        let wallet_of = |user: Uuid| -> Result<Uuid, ApiError> {
            wallets.get(&user).copied().ok_or_else(|| ApiError::internal(format!("no wallet for {user}")))
        };
        // What each bid's escrow holds: the balance for resting bids, the hold for new ones.
        let mut held: HashMap<Uuid, Credits> =
            escrows.iter().map(|(id, (_, balance))| (*id, Credits::from_db(*balance))).collect();

        for event in &self.events {
            match *event {
                Event::Accepted { order_id } => {
                    let info =
                        orders.get_mut(&order_id.0).ok_or_else(|| ApiError::internal("accepted unknown order"))?;
                    info.changed = true;
                    if info.side_bid {
                        let escrow = new_escrow
                            .get(&order_id.0)
                            .copied()
                            .ok_or_else(|| ApiError::internal("accepted bid without escrow"))?;
                        writes.transfers.push(TransferSpec {
                            from: wallet_of(info.owner)?,
                            to: escrow_of(order_id.0)?,
                            amount: escrow,
                            kind: "escrow_hold".into(),
                            memo: format!("bid {}", order_id.0),
                            idempotency_key: None,
                        });
                        held.insert(order_id.0, escrow);
                    } else {
                        let gpus = new_bound.remove(&order_id.0).unwrap_or_default();
                        for gpu in &gpus {
                            writes
                                .ask_gpus_new
                                .push(json!({"order_id": order_id.0, "gpu_uuid": gpu, "state": "bound"}));
                        }
                        bound.insert(order_id.0, gpus);
                    }
                }
                Event::Trade { bid_id, ask_id, buyer, seller, host, gpus, price, duration_ms, .. } => {
                    let lease_id = lease_ids.next().ok_or_else(|| ApiError::internal("lease id missing"))?;
                    let trade_id = Uuid::now_v7();
                    let bid = orders.get(&bid_id.0).ok_or_else(|| ApiError::internal("trade of unknown bid"))?.clone();
                    let max_hours = bid.max_hours.ok_or_else(|| ApiError::internal("bid without max_hours"))?;
                    let trade_price = price.to_decimal();
                    let lease_escrow = reserve(trade_price, gpus, max_hours)
                        .ok_or_else(|| ApiError::internal("lease escrow does not fit"))?;
                    let bid_held = held.remove(&bid_id.0).unwrap_or(Credits::ZERO);
                    let refund = bid_held
                        .checked_sub(lease_escrow)
                        .ok_or_else(|| ApiError::internal(format!("bid {} escrow below its lease", bid_id.0)))?;
                    writes.transfers.push(TransferSpec {
                        from: escrow_of(bid_id.0)?,
                        to: escrow_of(lease_id)?,
                        amount: lease_escrow,
                        kind: "lease_escrow".into(),
                        memo: format!("lease {lease_id}"),
                        idempotency_key: None,
                    });
                    if !refund.is_zero() {
                        writes.transfers.push(TransferSpec {
                            from: escrow_of(bid_id.0)?,
                            to: wallet_of(buyer.0)?,
                            amount: refund,
                            kind: "escrow_release".into(),
                            memo: format!("bid {} traded below its limit", bid_id.0),
                            idempotency_key: None,
                        });
                    }
                    let ask_gpus = bound.get_mut(&ask_id.0).ok_or_else(|| ApiError::internal("ask without GPUs"))?;
                    if ask_gpus.len() < gpus as usize {
                        return Err(ApiError::internal(format!("ask {} has fewer bound GPUs than it sold", ask_id.0)));
                    }
                    let taken: Vec<String> = ask_gpus.drain(..gpus as usize).collect();
                    for gpu in &taken {
                        writes
                            .ask_gpus_leased
                            .push(json!({"order_id": ask_id.0, "gpu_uuid": gpu, "lease_id": lease_id}));
                    }
                    writes.trades.push(json!({
                        "trade_id": trade_id, "class": self.class, "bid_id": bid_id.0, "ask_id": ask_id.0,
                        "buyer_id": buyer.0, "seller_id": seller.0, "host_id": host.0, "gpus": gpus,
                        "price": trade_price, "max_hours": max_hours, "at": at,
                    }));
                    writes.leases.push(json!({
                        "lease_id": lease_id, "trade_id": trade_id, "host_id": host.0, "gpu_uuids": taken,
                        "price": trade_price, "buyer_id": buyer.0, "provider_id": seller.0, "gpus": gpus,
                        "max_hours": max_hours, "starts_at": at, "max_end_at": at_of(at_ms.saturating_add(duration_ms)),
                        "job": bid.job.clone().unwrap_or(Value::Null), "state": "pending",
                    }));
                    let fill = FillView { trade_id, lease_id, price: trade_price.normalize(), gpus: gpus as i32, at };
                    writes.fills.entry(bid_id.0).or_default().push(fill.clone());
                    writes.fills.entry(ask_id.0).or_default().push(fill);
                    let bid = orders.get_mut(&bid_id.0).ok_or_else(|| ApiError::internal("bid vanished"))?;
                    bid.gpus_remaining = 0;
                    bid.status = "filled";
                    bid.changed = true;
                    bid.closed = true;
                    let ask = orders.get_mut(&ask_id.0).ok_or_else(|| ApiError::internal("trade of unknown ask"))?;
                    ask.gpus_remaining -= gpus as i32;
                    ask.changed = true;
                    if ask.gpus_remaining <= 0 {
                        ask.status = "filled";
                        ask.closed = true;
                    }
                    metrics::counter!("capex_trades_total", "class" => self.class.clone()).increment(1);
                }
                Event::Cancelled { order_id, .. } | Event::Expired { order_id, .. } => {
                    let expired = matches!(event, Event::Expired { .. });
                    let info = orders.get_mut(&order_id.0).ok_or_else(|| ApiError::internal("unknown order closed"))?;
                    info.status = if expired { "expired" } else { "cancelled" };
                    info.changed = true;
                    info.closed = true;
                    if info.side_bid {
                        let amount = held.remove(&order_id.0).unwrap_or(Credits::ZERO);
                        if !amount.is_zero() {
                            writes.transfers.push(TransferSpec {
                                from: escrow_of(order_id.0)?,
                                to: wallet_of(info.owner)?,
                                amount,
                                kind: "escrow_release".into(),
                                memo: format!("bid {} cancelled", order_id.0),
                                idempotency_key: None,
                            });
                        }
                    } else {
                        writes.asks_closed.push(order_id.0);
                        bound.remove(&order_id.0);
                    }
                }
                Event::Rejected { .. } | Event::Amended { .. } => {}
            }
        }

        post_transfers(&mut tx, &writes.transfers).await?;
        self.write_orders(&mut tx, &orders, &new_in_order, at).await?;
        write_rows(&mut tx, "ask_gpus", "order_id, gpu_uuid, state", &writes.ask_gpus_new).await?;
        write_rows(
            &mut tx,
            "trades",
            "trade_id, class, bid_id, ask_id, buyer_id, seller_id, host_id, gpus, price, max_hours, at",
            &writes.trades,
        )
        .await?;
        write_rows(
            &mut tx,
            "leases",
            "lease_id, trade_id, host_id, gpu_uuids, price, buyer_id, provider_id, gpus, max_hours, starts_at, \
             max_end_at, job, state",
            &writes.leases,
        )
        .await?;
        if !writes.ask_gpus_leased.is_empty() {
            sqlx::query(
                "update ask_gpus a set state = 'leased', lease_id = r.lease_id
                 from jsonb_to_recordset($1) as r(order_id uuid, gpu_uuid text, lease_id uuid)
                 where a.order_id = r.order_id and a.gpu_uuid = r.gpu_uuid",
            )
            .bind(Value::Array(writes.ask_gpus_leased))
            .execute(&mut *tx)
            .await?;
        }
        if !writes.asks_closed.is_empty() {
            sqlx::query("update ask_gpus set state = 'released' where order_id = any($1) and state = 'bound'")
                .bind(&writes.asks_closed)
                .execute(&mut *tx)
                .await?;
        }

        // Answers, and the idempotency records that replay them.
        let mut idempotency_rows = Vec::new();
        for item in items.iter_mut() {
            let Item::Place { req, outcome, .. } = item else { continue };
            if !matches!(outcome, Some(PlaceResult::Applied { .. })) {
                continue;
            }
            let Some(info) = orders.get(&req.order_id) else { continue };
            let view = self.order_view(req.order_id, info, held.get(&req.order_id).copied(), &writes.fills);
            if let Some((key, hash)) = &req.idempotency {
                let body = serde_json::to_value(&view).map_err(ApiError::internal)?;
                idempotency_rows.push(json!({
                    "user_id": req.owner, "idempotency_key": key, "request_hash": hash,
                    "response_status": StatusCode::CREATED.as_u16(), "response_body": body,
                }));
            }
            *outcome = Some(PlaceResult::Placed(Box::new(view)));
        }
        write_rows(
            &mut tx,
            "idempotency",
            "user_id, idempotency_key, request_hash, response_status, response_body",
            &idempotency_rows,
        )
        .await?;
        phase.done("write");
        tx.commit().await?;
        phase.done("commit");
        for (_, info) in orders.iter().filter(|(_, o)| o.is_new && o.changed) {
            let side = if info.side_bid { "bid" } else { "ask" };
            metrics::counter!("capex_orders_total", "class" => self.class.clone(), "side" => side).increment(1);
        }
        let trades = writes
            .trades
            .iter()
            .map(|t| {
                json!({"class": self.class, "trade_id": t["trade_id"], "price": t["price"], "gpus": t["gpus"],
                       "max_hours": t["max_hours"], "at": t["at"]})
            })
            .collect();
        let orders = orders
            .iter()
            .filter(|(_, o)| o.changed)
            .map(|(id, o)| (o.owner, json!({"class": self.class, "order_id": id, "status": o.status})))
            .collect();
        let jobs = writes
            .leases
            .iter()
            .filter_map(|l| {
                let buyer = l["buyer_id"].as_str()?.parse().ok()?;
                let provider = l["provider_id"].as_str()?.parse().ok()?;
                Some((buyer, provider, json!({"job_id": l["lease_id"], "state": "pending", "host_id": l["host_id"]})))
            })
            .collect();
        Ok(Some(Published { trades, orders, jobs }))
    }
}

/// Sends the answer of one request: its own outcome, or `failure` if the batch failed.
fn answer(item: Item, failure: Option<ApiError>) {
    match item {
        Item::Place { reply, outcome, .. } => {
            let result = match (outcome, failure) {
                (Some(PlaceResult::Refused(err)), _) => Err(err),
                (Some(PlaceResult::Replay), None) => Ok(PlaceOutcome::Replay),
                (Some(PlaceResult::Placed(view)), None) => Ok(PlaceOutcome::Placed(view)),
                (_, Some(err)) => Err(err),
                (_, None) => Err(ApiError::internal("matcher left a request undecided")),
            };
            let _ = reply.send(result);
        }
        Item::Cancel { reply, outcome, .. } => {
            let result = match (outcome, failure) {
                (Some(Err(err)), _) => Err(err),
                (_, Some(err)) => Err(err),
                (Some(Ok(())), None) => Ok(()),
                (None, None) => Err(ApiError::internal("matcher left a cancel undecided")),
            };
            let _ = reply.send(result);
        }
    }
}

/// The book command for a request that passed the database checks.
fn command_of(item: &Item, at_ms: i64) -> Option<Command> {
    match item {
        Item::Place { req, outcome: Some(PlaceResult::Applied { .. }), .. } => {
            let id = OrderId(req.order_id);
            let owner = UserId(req.owner);
            Some(match &req.order {
                NewOrder::Bid(bid) => Command::PlaceBid {
                    at_ms,
                    bid: Bid {
                        id,
                        owner,
                        gpus: bid.gpus,
                        duration_ms: bid.duration_ms,
                        price: bid.price,
                        tif: bid.tif.book(),
                    },
                },
                NewOrder::Ask(ask) => Command::PlaceAsk {
                    at_ms,
                    ask: Ask {
                        id,
                        owner,
                        host: HostId(ask.host_id),
                        gpus: ask.gpus,
                        available_until_ms: ask.available_until.timestamp_millis(),
                        price: ask.price,
                        tif: ask.tif.book(),
                    },
                },
            })
        }
        Item::Cancel { order_id, owner, outcome: None, .. } => {
            Some(Command::Cancel { at_ms, order_id: OrderId(*order_id), owner: UserId(*owner) })
        }
        _ => None,
    }
}

/// Settles a request's outcome from the events of its own command.
fn decide_from_events(item: &mut Item, events: &[Event]) {
    match item {
        Item::Place { req, outcome, .. } => {
            for event in events {
                if let Event::Rejected { order_id, reason } = event
                    && order_id.0 == req.order_id
                {
                    *outcome = Some(PlaceResult::Refused(reject_error(*reason)));
                }
            }
        }
        Item::Cancel { order_id, outcome, .. } if outcome.is_none() => {
            for event in events {
                match event {
                    Event::Rejected { order_id: id, reason } if id.0 == *order_id => {
                        *outcome = Some(Err(reject_error(*reason)));
                    }
                    Event::Cancelled { order_id: id, .. } if id.0 == *order_id => *outcome = Some(Ok(())),
                    _ => {}
                }
            }
            if outcome.is_none() {
                *outcome = Some(Err(ApiError::internal("the book neither cancelled nor refused")));
            }
        }
        Item::Cancel { .. } => {}
    }
}

/// Escrow accounts (id, balance) of the resting bids the batch touches, locked.
async fn load_bid_escrows(
    conn: &mut PgConnection,
    orders: &HashMap<Uuid, OrderInfo>,
) -> Result<HashMap<Uuid, (Uuid, Decimal)>, ApiError> {
    let ids: Vec<Uuid> = orders.iter().filter(|(_, o)| o.side_bid && !o.is_new).map(|(id, _)| *id).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid, Decimal)> = sqlx::query_as(
        "select ref_id, account_id, balance from accounts where kind = 'escrow' and ref_id = any($1)
         order by account_id for update",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(ref_id, account, balance)| (ref_id, (account, balance))).collect())
}

/// Unsold GPUs still bound to the resting asks the batch touches, in GPU index order.
async fn load_bound_gpus(
    conn: &mut PgConnection,
    orders: &HashMap<Uuid, OrderInfo>,
) -> Result<HashMap<Uuid, Vec<String>>, ApiError> {
    let ids: Vec<Uuid> = orders.iter().filter(|(_, o)| !o.side_bid && !o.is_new).map(|(id, _)| *id).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select a.order_id, a.gpu_uuid from ask_gpus a join host_gpus g using (gpu_uuid)
         where a.order_id = any($1) and a.state = 'bound' order by a.order_id, g.gpu_index",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut bound: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (order_id, gpu) in rows {
        bound.entry(order_id).or_default().push(gpu);
    }
    Ok(bound)
}

/// Inserts `rows` (JSON objects keyed by column) into `table` in one statement, in order.
async fn write_rows(conn: &mut PgConnection, table: &str, columns: &str, rows: &[Value]) -> Result<(), ApiError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into {table} ({columns}) select {columns}
         from jsonb_populate_recordset(null::{table}, $1) with ordinality as r order by r.ordinality"
    )))
    .bind(Value::Array(rows.to_vec()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Matcher {
    /// Refuses requests whose Idempotency-Key was already used; they are answered with the
    /// stored response once the batch is done.
    async fn check_idempotency(&self, conn: &mut PgConnection, items: &mut [Item]) -> Result<(), ApiError> {
        let mut users = Vec::new();
        let mut keys = Vec::new();
        for item in items.iter() {
            if let Item::Place { req: PlaceRequest { owner, idempotency: Some((key, _)), .. }, .. } = item {
                users.push(*owner);
                keys.push(key.clone());
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let used: Vec<(Uuid, String)> = sqlx::query_as(
            "select i.user_id, i.idempotency_key from idempotency i
             join unnest($1::uuid[], $2::text[]) as k(user_id, idempotency_key) using (user_id, idempotency_key)",
        )
        .bind(&users)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
        let mut seen: HashSet<(Uuid, String)> = used.into_iter().collect();
        for item in items.iter_mut() {
            if let Item::Place { req: PlaceRequest { owner, idempotency: Some((key, _)), .. }, outcome, .. } = item
                && !seen.insert((*owner, key.clone()))
            {
                *outcome = Some(PlaceResult::Replay);
            }
        }
        Ok(())
    }

    /// Locks the wallets of everyone whose bid or cancel is in the batch and refuses bids
    /// their wallet cannot cover (in batch order). Returns wallet account ids by user.
    async fn check_funds(&self, conn: &mut PgConnection, items: &mut [Item]) -> Result<HashMap<Uuid, Uuid>, ApiError> {
        let mut users: Vec<Uuid> = items
            .iter()
            .filter_map(|item| match item {
                Item::Place { req, outcome: None, .. } if matches!(req.order, NewOrder::Bid(_)) => Some(req.owner),
                Item::Cancel { owner, .. } => Some(*owner),
                _ => None,
            })
            .collect();
        users.sort_unstable();
        users.dedup();
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        // Sorted by account id: the ledger's lock order, so matchers and transfers never deadlock.
        let rows: Vec<(Uuid, Uuid, Decimal)> = sqlx::query_as(
            "select user_id, account_id, balance from accounts where kind = 'wallet' and user_id = any($1)
             order by account_id for update",
        )
        .bind(&users)
        .fetch_all(&mut *conn)
        .await?;
        let mut available: HashMap<Uuid, Decimal> = rows.iter().map(|(user, _, balance)| (*user, *balance)).collect();
        for item in items.iter_mut() {
            let Item::Place { req, outcome: outcome @ None, .. } = item else { continue };
            let NewOrder::Bid(bid) = &req.order else { continue };
            let balance = available.entry(req.owner).or_insert(Decimal::ZERO);
            if *balance >= bid.escrow.as_decimal() {
                *balance -= bid.escrow.as_decimal();
                *outcome = Some(PlaceResult::Applied { gpus_bound: Vec::new() });
            } else {
                *outcome = Some(PlaceResult::Refused(ApiError::invalid(
                    "price",
                    "insufficient_funds",
                    format!("the bid's escrow of {} credits is more than your available credits", bid.escrow),
                )));
            }
        }
        Ok(rows.into_iter().map(|(user, account, _)| (user, account)).collect())
    }

    /// Picks the GPUs each ask will offer, among its host's attested free GPUs of this
    /// class not taken by an earlier ask of the batch; refuses asks that cannot be covered.
    async fn check_gpus(&self, conn: &mut PgConnection, items: &mut [Item]) -> Result<(), ApiError> {
        let mut taken: HashSet<String> = HashSet::new();
        for item in items.iter_mut() {
            let Item::Place { req, outcome: outcome @ None, .. } = item else { continue };
            let NewOrder::Ask(ask) = &req.order else { continue };
            let free: Vec<String> = capacity::free_gpus(conn, ask.host_id, &self.class)
                .await?
                .into_iter()
                .filter(|gpu| !taken.contains(gpu))
                .collect();
            if free.len() < ask.gpus as usize {
                let err = if capacity::host_is_live(conn, ask.host_id).await? {
                    ApiError::invalid(
                        "gpus",
                        "not_enough_free_gpus",
                        format!("the host has {} attested free {} GPUs", free.len(), self.class),
                    )
                } else {
                    ApiError::invalid("host_id", "host_not_live", "the host has not reported recently")
                };
                *outcome = Some(PlaceResult::Refused(err));
                continue;
            }
            let chosen: Vec<String> = free.into_iter().take(ask.gpus as usize).collect();
            taken.extend(chosen.iter().cloned());
            *outcome = Some(PlaceResult::Applied { gpus_bound: chosen });
        }
        Ok(())
    }

    /// Every order the batch's events touch: new ones from the requests, resting ones from
    /// the database. Also returns the new orders' ids in the order the book took them.
    async fn load_touched_orders(
        &self,
        conn: &mut PgConnection,
        items: &[Item],
        at: DateTime<Utc>,
    ) -> Result<(HashMap<Uuid, OrderInfo>, Vec<Uuid>), ApiError> {
        let mut orders: HashMap<Uuid, OrderInfo> = HashMap::new();
        let mut new_in_order = Vec::new();
        for item in items {
            let Item::Place { req, outcome: Some(PlaceResult::Applied { .. }), .. } = item else { continue };
            let info = match &req.order {
                NewOrder::Bid(bid) => OrderInfo {
                    side_bid: true,
                    owner: req.owner,
                    gpus: bid.gpus as i32,
                    gpus_remaining: bid.gpus as i32,
                    price: bid.price.to_decimal(),
                    max_hours: Some(bid.max_hours),
                    duration_ms: Some(bid.duration_ms),
                    job: Some(bid.job.clone()),
                    host_id: None,
                    available_until: None,
                    tif: bid.tif.as_str().to_string(),
                    created_at: at,
                    status: "open",
                    is_new: true,
                    changed: false,
                    closed: false,
                },
                NewOrder::Ask(ask) => OrderInfo {
                    side_bid: false,
                    owner: req.owner,
                    gpus: ask.gpus as i32,
                    gpus_remaining: ask.gpus as i32,
                    price: ask.price.to_decimal(),
                    max_hours: None,
                    duration_ms: None,
                    job: None,
                    host_id: Some(ask.host_id),
                    available_until: Some(ask.available_until),
                    tif: ask.tif.as_str().to_string(),
                    created_at: at,
                    status: "open",
                    is_new: true,
                    changed: false,
                    closed: false,
                },
            };
            orders.insert(req.order_id, info);
            new_in_order.push(req.order_id);
        }
        let mut resting: Vec<Uuid> = Vec::new();
        for event in &self.events {
            let ids: &[OrderId] = match event {
                Event::Trade { bid_id, ask_id, .. } => &[*bid_id, *ask_id],
                Event::Cancelled { order_id, .. } | Event::Expired { order_id, .. } => &[*order_id],
                _ => &[],
            };
            resting.extend(ids.iter().map(|id| id.0).filter(|id| !orders.contains_key(id)));
        }
        resting.sort_unstable();
        resting.dedup();
        if !resting.is_empty() {
            type Row = (
                Uuid,
                String,
                Uuid,
                i32,
                i32,
                Decimal,
                Option<Decimal>,
                Option<i64>,
                Option<Value>,
                Option<Uuid>,
                Option<DateTime<Utc>>,
                String,
                DateTime<Utc>,
            );
            let rows: Vec<Row> = sqlx::query_as(
                "select order_id, side, owner_id, gpus, gpus_remaining, price, max_hours, duration_ms, job, host_id,
                        available_until, tif, created_at
                 from orders where order_id = any($1) and status = 'open' for update",
            )
            .bind(&resting)
            .fetch_all(&mut *conn)
            .await?;
            for (id, side, owner, gpus, remaining, price, max_hours, duration_ms, job, host_id, until, tif, created) in
                rows
            {
                orders.insert(
                    id,
                    OrderInfo {
                        side_bid: side == "bid",
                        owner,
                        gpus,
                        gpus_remaining: remaining,
                        price,
                        max_hours,
                        duration_ms,
                        job,
                        host_id,
                        available_until: until,
                        tif,
                        created_at: created,
                        status: "open",
                        is_new: false,
                        changed: false,
                        closed: false,
                    },
                );
            }
            if let Some(missing) = resting.iter().find(|id| !orders.contains_key(id)) {
                return Err(ApiError::internal(format!("book order {missing} is not open in the database")));
            }
        }
        Ok((orders, new_in_order))
    }

    /// Inserts the batch's new orders (in book order, which gives their `seq`) and updates
    /// the resting orders it changed.
    async fn write_orders(
        &self,
        conn: &mut PgConnection,
        orders: &HashMap<Uuid, OrderInfo>,
        new_in_order: &[Uuid],
        at: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let mut inserts = Vec::new();
        for id in new_in_order {
            let Some(o) = orders.get(id) else { continue };
            if !o.changed {
                // Refused by the book: never written.
                continue;
            }
            inserts.push(json!({
                "order_id": id, "class": self.class, "side": if o.side_bid { "bid" } else { "ask" },
                "owner_id": o.owner, "status": o.status, "tif": o.tif, "gpus": o.gpus,
                "gpus_remaining": o.gpus_remaining, "price": o.price, "max_hours": o.max_hours,
                "duration_ms": o.duration_ms, "job": o.job, "host_id": o.host_id,
                "available_until": o.available_until, "created_at": o.created_at,
                "closed_at": if o.closed { Some(at) } else { None },
            }));
        }
        write_rows(
            conn,
            "orders",
            "order_id, class, side, owner_id, status, tif, gpus, gpus_remaining, price, max_hours, duration_ms, job, \
             host_id, available_until, created_at, closed_at",
            &inserts,
        )
        .await?;
        let updates: Vec<Value> = orders
            .iter()
            .filter(|(_, o)| !o.is_new && o.changed)
            .map(|(id, o)| {
                json!({"order_id": id, "status": o.status, "gpus_remaining": o.gpus_remaining,
                       "closed_at": if o.closed { Some(at) } else { None }})
            })
            .collect();
        if !updates.is_empty() {
            sqlx::query(
                "update orders o set status = r.status, gpus_remaining = r.gpus_remaining, closed_at = r.closed_at
                 from jsonb_to_recordset($1) as r(order_id uuid, status text, gpus_remaining int, closed_at timestamptz)
                 where o.order_id = r.order_id",
            )
            .bind(Value::Array(updates))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// The view of an order placed in this batch, as its owner will read it.
    fn order_view(
        &self,
        order_id: Uuid,
        o: &OrderInfo,
        held: Option<Credits>,
        fills: &HashMap<Uuid, Vec<FillView>>,
    ) -> OrderView {
        let open_bid = o.side_bid && o.status == "open";
        OrderView {
            order_id,
            class: self.class.clone(),
            side: if o.side_bid { "bid" } else { "ask" }.to_string(),
            status: o.status.to_string(),
            gpus: o.gpus,
            gpus_remaining: o.gpus_remaining,
            price: o.price.normalize(),
            max_hours: o.max_hours.map(|h| h.normalize()),
            available_until: o.available_until,
            tif: o.tif.clone(),
            escrow: o
                .side_bid
                .then(|| if open_bid { held.map(|c| c.as_decimal()).unwrap_or(Decimal::ZERO) } else { Decimal::ZERO }),
            host_id: o.host_id,
            created_at: o.created_at,
            fills: fills.get(&order_id).cloned().unwrap_or_default(),
            unfilled_reasons: if open_bid {
                self.book.why_unfilled(OrderId(order_id)).into_iter().map(UnfilledReasonView::from_book).collect()
            } else {
                Vec::new()
            },
        }
    }
}
