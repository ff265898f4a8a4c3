//! One matcher per market: the task that owns the market's [`Book`] and is its only writer.
//!
//! Requests arrive on a bounded mpsc channel. The matcher takes the first waiting request
//! and up to `batch_max - 1` more that are already queued, then in ONE Postgres
//! transaction: knows or checks what the book cannot know (wallet balances for bids'
//! escrow, free attested GPUs for asks, Idempotency-Keys), applies the commands to the
//! book, and writes every effect (orders, escrow holds and releases, trades, leases and
//! their escrows, bound GPUs, idempotency records). Only after the commit does any request
//! get its answer. If any step after the book changed fails, the book and the matcher's
//! copy of the open orders ([`Resting`]) are reloaded from the database, so neither keeps
//! effects that are not durable.
//!
//! Cost per batch, whatever its size: one fsync, and one round trip (BEGIN, one statement of
//! writes ([`writes`]), COMMIT) when the matcher's copies can decide the batch
//! ([`Matcher::decided_from_copies`]: its requests' wallets are known and cover them, no
//! Idempotency-Key, asks' hosts read by their handlers). The write then proves, under its
//! own locks, what the copies assumed; if something moved meanwhile the batch fails, the
//! market is reloaded, and the batch runs again checked. Otherwise it is two round trips:
//! BEGIN with one statement of checks ([`checks`]) that locks and reads what the book cannot
//! know, then the writes with COMMIT.
//!
//! Overlapping batches was tried twice and measured on 2 cores; both halved the batches'
//! size, raised Postgres's CPU per order, and lost:
//! - checking batch N+1 while N's writes and COMMIT were in flight gained nothing;
//! - sending N+1's write while N's was in flight (two matcher connections, ordered by a
//!   transaction-level advisory lock taken first in each write) cost 11-18 % of orders/s at
//!   16-64 clients.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use capex_book::{
    Ask, AskGrade, Bid, Book, Command, Event, HostId, OrderId, Priority, RejectReason, Requirements, UnfilledReason,
    UserId,
};
use capex_core::Credits;
use capex_ledger::{AccountKind, TransferSpec, apply_to_balances};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::capacity::HOST_LIVE_SQL;
use super::checks::{self, AskHost, CheckInput, Checked, KeyClaim, Wallet};
use super::money::reserve;
use super::request::NewOrder;
use super::resting::{HeldLease, OrderInfo, Resting, at_of, load_market};
use super::views::{BookView, FillView, LevelView, MinReliabilityView, OrderView, UnfilledReasonView};
use super::writes::{
    AskGpu, AskGpuChange, BATCH_CONFLICT, BalanceChange, BatchWrites, ClaimDrop, EpochGuard, GpuGuard,
    IdempotencyRecord, JournalRow, NewAccount, OrderChange, Preemption, WriteStatements,
};
use crate::error::{ApiError, TRANSACTION_CONFLICT};
use crate::feed::Feed;
use crate::hosts::uptime::{WINDOW_7D_S, fraction_of_ppm, uptime_ppm};
use crate::verification::Level;
use crate::verification::level::GPU_LEVEL_SQL;

/// Most times one batch is run before its requests are answered with its failure: the
/// first run and the checked reruns after a conflict (see [`Matcher::settle_batch`]).
pub(crate) const BATCH_ATTEMPTS_MAX: u32 = 4;
/// Price levels per side kept in the published book snapshot.
pub(crate) const BOOK_LEVELS_MAX: usize = 100;
/// How often a matcher looks for open asks whose host stopped reporting (and cancels them,
/// so nobody buys GPUs that cannot run a job).
const SILENT_HOST_CHECK: Duration = Duration::from_secs(2);

/// An order to place, validated by the handler.
#[derive(Debug)]
pub(crate) struct PlaceRequest {
    pub(crate) order_id: Uuid,
    pub(crate) owner: Uuid,
    pub(crate) order: NewOrder,
    /// `(Idempotency-Key, request hash)`: stored with the order's response in the batch.
    pub(crate) idempotency: Option<(String, String)>,
    /// An ask's host's free GPUs of this class as the handler read them (the host is the
    /// caller's and live), in GPU index order, with their verification levels; empty for
    /// a bid.
    pub(crate) free_gpus: Vec<(String, Level)>,
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
    /// Answered with the order as the batch left it (fills of earlier batches not included).
    Cancel {
        order_id: Uuid,
        owner: Uuid,
        reply: oneshot::Sender<Result<Box<OrderView>, ApiError>>,
    },
    WhyUnfilled {
        bid_id: Uuid,
        reply: oneshot::Sender<Vec<UnfilledReason>>,
    },
    /// The book as last committed.
    Book {
        reply: oneshot::Sender<Arc<BookView>>,
    },
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
        reply: oneshot::Sender<Result<Box<OrderView>, ApiError>>,
        outcome: Option<Result<(), ApiError>>,
        /// The cancelled order's view, once the batch's writes are known.
        view: Option<Box<OrderView>>,
    },
}

impl Item {
    /// Forgets what a failed batch decided, to run the request again.
    fn undecide(&mut self) {
        match self {
            Item::Place { outcome, .. } => *outcome = None,
            Item::Cancel { outcome, view, .. } => {
                *outcome = None;
                *view = None;
            }
        }
    }
}

enum PlaceResult {
    Refused(ApiError),
    Replay,
    /// Given to the book; its GPUs (asks) were chosen in this batch.
    Applied {
        gpus_bound: Vec<String>,
        /// An ask's grade: the lowest verification level of its GPUs (unused for bids).
        grade: AskGrade,
    },
    /// Accepted by the book and written.
    Placed(Box<OrderView>),
}

pub(crate) struct Matcher {
    class: String,
    pool: PgPool,
    feed: Feed,
    /// The matcher's own connection, kept between batches and out of the pool (it carries
    /// planner settings, see [`matcher_connection`]), with the write statements prepared on
    /// it. Both are dropped after a failed batch; a fresh connection is opened for the next.
    conn: Option<(PgConnection, WriteStatements)>,
    /// The market's owner epoch when this matcher claimed it; checked in every batch.
    epoch: i64,
    book: Book,
    resting: Resting,
    batch_max: usize,
    /// The published book, built on demand (building it walks every resting order) and
    /// kept until a batch changes the book.
    snapshot: Option<Arc<BookView>>,
    events: Vec<Event>,
    last_host_check: Instant,
    last_uptime_check: Instant,
    /// Resting asks whose GPUs' level fell below their grade, to regrade in the next tick.
    regrades: Vec<(OrderId, AskGrade)>,
    /// Interruptible leases of the book that ended outside it (their job exited, was
    /// cancelled, ran out, or the host was lost), as (ask, lease), to end in the next tick.
    ended_leases: Vec<(OrderId, OrderId)>,
    /// The notice a preempted interruptible job gets before it is killed.
    preempt_grace: Duration,
    /// Wallets as the last batch that touched them left them: account ids, and balances
    /// that other transactions may have moved since (see [`Matcher::decided_from_copies`]).
    wallets: HashMap<Uuid, Wallet>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn book_view(class: &str, book: &Book) -> BookView {
    let depth = book.depth(BOOK_LEVELS_MAX);
    let level =
        |l: &capex_book::Level| LevelView { price: l.price.to_decimal().normalize(), gpus: l.gpus, orders: l.orders };
    // The asks' grades are in memory: counting them costs a walk of the asks, which
    // building the snapshot does once per changed book.
    BookView {
        interruptible_bids: depth.interruptible_bids.iter().map(level).collect(),
        interruptible_asks: depth.interruptible_asks.iter().map(level).collect(),
        interruptible_gpus_in_use: book.leases().map(|lease| u64::from(lease.gpus)).sum(),
        ..BookView::with_asks(
            class.to_string(),
            depth.bids.iter().map(level).collect(),
            depth.asks.iter().map(level).collect(),
            book.asks().map(|ask| (ask.remaining_gpus, ask.grade.uptime_7d_ppm)),
        )
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

/// Records how long each phase of a batch took (`capex_matcher_phase_seconds`), to see
/// where a batch's time goes: `checks` (BEGIN and the checks statement, one round trip, and
/// deciding from them), `book`, and `write` (the write statement and COMMIT with its
/// fsync, one round trip).
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

/// Where a preemption of the batch is written: an update of a lease that was live before
/// the batch (index into `preemptions`), or a lease the batch itself inserts (into `leases`).
enum PreemptedRow {
    Updated(usize),
    Inserted(usize),
}

/// What a committed batch tells the live feed.
struct Published {
    trades: Vec<Value>,
    orders: Vec<(Uuid, Value)>,
    /// New leases as (buyer, provider, job event): the job event also wakes the host's
    /// assignments long-poll.
    jobs: Vec<(Uuid, Uuid, Value)>,
}

/// Ledger accounts a batch moves credits between: their kind and balance before the batch
/// (locked wallets, the matcher's bid escrows, new escrows at zero), and which are new.
#[derive(Default)]
struct Accounts {
    before: BTreeMap<Uuid, (AccountKind, Decimal)>,
    new: Vec<(Uuid, Uuid, Uuid)>,
}

impl Accounts {
    fn existing(&mut self, account: Uuid, kind: AccountKind, balance: Decimal) {
        self.before.entry(account).or_insert((kind, balance));
    }

    /// Opens an escrow account of `owner` for `ref_id`; returns its id.
    fn open_escrow(&mut self, owner: Uuid, ref_id: Uuid) -> Uuid {
        let account = Uuid::now_v7();
        self.before.insert(account, (AccountKind::Escrow, Decimal::ZERO));
        self.new.push((account, owner, ref_id));
        account
    }
}

impl Matcher {
    pub(crate) fn new(
        class: String,
        pool: PgPool,
        feed: Feed,
        (book, resting): (Book, Resting),
        batch_max: usize,
        epoch: i64,
    ) -> Matcher {
        Matcher {
            class,
            pool,
            feed,
            conn: None,
            book,
            resting,
            batch_max: batch_max.max(1),
            snapshot: None,
            events: Vec::new(),
            epoch,
            last_host_check: Instant::now(),
            last_uptime_check: Instant::now(),
            regrades: Vec::new(),
            ended_leases: Vec::new(),
            preempt_grace: Duration::from_secs(30),
            wallets: HashMap::new(),
        }
    }

    pub(crate) fn with_preempt_grace(mut self, grace: Duration) -> Matcher {
        self.preempt_grace = grace;
        self
    }

    /// Serves requests until the channel closes or `shutdown` turns true.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
        tick_ms: u64,
        uptime_regrade: Duration,
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
                    let due_check = self.last_host_check.elapsed() >= SILENT_HOST_CHECK;
                    let cancels = self.asks_of_silent_hosts().await;
                    if due_check {
                        // Each ask host's uptime costs a scan of its week of reports (30-45 ms
                        // for 10-s reports, see crate::hosts::uptime) while the matcher waits:
                        // `CAPEX_UPTIME_REGRADE_S`, 60 by default, not every 2 s. A 7-day
                        // uptime moves by at most 0.01 % a minute, and a host that goes silent
                        // has its asks cancelled by the 2-s check anyway.
                        let with_uptime = self.last_uptime_check.elapsed() >= uptime_regrade;
                        if with_uptime {
                            self.last_uptime_check = Instant::now();
                        }
                        self.regrades = self.asks_fallen_below_their_grade(with_uptime).await;
                        self.ended_leases = self.leases_ended_elsewhere().await;
                    }
                    if !self.run_batch(cancels, true).await {
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
                Request::Book { reply } => {
                    let class = &self.class;
                    let book = &self.book;
                    let _ = reply.send(self.snapshot.get_or_insert_with(|| Arc::new(book_view(class, book))).clone());
                }
                Request::Place(req, reply) => items.push(Item::Place { req, reply, outcome: None }),
                Request::Cancel { order_id, owner, reply } => {
                    items.push(Item::Cancel { order_id, owner, reply, outcome: None, view: None })
                }
            }
        }
        if items.is_empty()
            && (!tick || (!self.has_expiry_due() && self.regrades.is_empty() && self.ended_leases.is_empty()))
        {
            return true;
        }
        let span = tracing::info_span!("matcher_batch", class = %self.class, size = items.len());
        self.settle_batch(items).instrument(span).await
    }

    /// Commits the batch's items and answers them; false when the matcher must stop.
    async fn settle_batch(&mut self, mut items: Vec<Item>) -> bool {
        let started = Instant::now();
        let size = items.len();
        let from_copies = self.decided_from_copies(&items);
        let unchecked = from_copies.is_some();
        let mut result = self.commit_batch(&mut items, from_copies).await;
        let mut attempts = 1;
        while let Err(err) = &result {
            // A batch decided from copies that were out of date (a wallet spent elsewhere, a
            // GPU taken or no longer attested), or one that lost a race with another
            // transaction, is rebuilt from the database and run again, checked. Whatever it
            // met has committed or rolled back by then, so the next attempt sees it.
            let conflict = err.code == BATCH_CONFLICT || err.code == TRANSACTION_CONFLICT;
            if !(conflict || unchecked && attempts == 1) || attempts >= BATCH_ATTEMPTS_MAX {
                break;
            }
            let counter = if unchecked && attempts == 1 {
                "capex_matcher_unchecked_retries_total"
            } else {
                "capex_matcher_batch_reruns_total"
            };
            metrics::counter!(counter, "class" => self.class.clone()).increment(1);
            tracing::info!(class = %self.class, error = %err.detail, attempts, "batch did not commit; checking it again");
            if attempts > 1 {
                tokio::time::sleep(capex_ledger::retry::pause(attempts - 1)).await;
            }
            attempts += 1;
            result = match self.reload().await {
                Ok(()) => {
                    items.iter_mut().for_each(Item::undecide);
                    self.commit_batch(&mut items, None).await
                }
                Err(reload) => Err(reload),
            };
        }
        match result {
            Ok(published) => {
                metrics::histogram!("capex_matcher_batch_size", "class" => self.class.clone()).record(size as f64);
                metrics::histogram!("capex_matcher_commit_seconds", "class" => self.class.clone())
                    .record(started.elapsed().as_secs_f64());
                if published.is_some() {
                    self.snapshot = None;
                }
                for item in items {
                    answer(item, None);
                }
                self.publish(published);
            }
            Err(err) => {
                tracing::error!(class = %self.class, error = %err.detail, "matcher batch failed; rebuilding the book");
                metrics::counter!("capex_matcher_batch_failures_total", "class" => self.class.clone()).increment(1);
                if let Err(reload) = self.reload().await {
                    // Without a trustworthy book the market must not trade: stop the matcher;
                    // the registry starts a fresh one (rebuilt from the database) on next use.
                    tracing::error!(class = %self.class, error = %reload.detail, "cannot rebuild the book");
                    for item in items {
                        answer(item, Some(err.clone()));
                    }
                    return false;
                }
                for item in items {
                    answer(item, Some(err.clone()));
                }
            }
        }
        true
    }

    /// Rebuilds the book and the copies (open orders, wallets) from the database.
    async fn reload(&mut self) -> Result<(), ApiError> {
        self.wallets.clear();
        self.snapshot = None;
        let (book, resting) = load_market(&self.pool, &self.class).await?;
        self.book = book;
        self.resting = resting;
        Ok(())
    }

    /// Cancels for the open asks whose host is no longer live, at most every
    /// [`SILENT_HOST_CHECK`]. Nobody waits for their answers.
    async fn asks_of_silent_hosts(&mut self) -> Vec<Request> {
        if self.last_host_check.elapsed() < SILENT_HOST_CHECK {
            return Vec::new();
        }
        self.last_host_check = Instant::now();
        let mut hosts: Vec<Uuid> = self.book.asks().map(|ask| ask.host.0).collect();
        if hosts.is_empty() {
            return Vec::new();
        }
        hosts.sort_unstable();
        hosts.dedup();
        let sql = format!("select h.host_id from hosts h where h.host_id = any($1) and not {HOST_LIVE_SQL}");
        let silent: Vec<Uuid> =
            match sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(&hosts).fetch_all(&self.pool).await {
                Ok(silent) => silent,
                Err(err) => {
                    tracing::warn!(class = %self.class, error = %err, "cannot check the liveness of ask hosts");
                    return Vec::new();
                }
            };
        let silent: HashSet<Uuid> = silent.into_iter().collect();
        self.book
            .asks()
            .filter(|ask| silent.contains(&ask.host.0))
            .map(|ask| {
                tracing::info!(class = %self.class, order_id = %ask.id.0, host_id = %ask.host.0,
                    "cancelling an ask: its host stopped reporting");
                let (reply, _) = oneshot::channel();
                Request::Cancel { order_id: ask.id.0, owner: ask.owner.0, reply }
            })
            .collect()
    }

    /// Resting asks whose GPUs' lowest verification level, or (when `with_uptime`) whose
    /// host's 7-day uptime, is now below the grade the book holds (a passed challenge or CC
    /// evidence ran out; the host missed reports): they are regraded down, so a bid
    /// requiring the old level or uptime no longer takes them. Grades never rise while an
    /// ask rests (its GPUs are not challenged while offered, and raising one could trade
    /// with bids whose wallets this tick does not lock); the ask is graded anew when placed
    /// again, or when the book is loaded. The uptime is computed once per host, however
    /// many asks it has.
    async fn asks_fallen_below_their_grade(&self, with_uptime: bool) -> Vec<(OrderId, AskGrade)> {
        let asks: Vec<Uuid> = self.book.asks().map(|ask| ask.id.0).collect();
        if asks.is_empty() {
            return Vec::new();
        }
        let sql = format!(
            "select ag.order_id, array_agg({GPU_LEVEL_SQL}) from ask_gpus ag
                 join host_gpus g using (gpu_uuid) join hosts h using (host_id)
             where ag.order_id = any($1) and ag.state = 'bound' group by ag.order_id"
        );
        let rows: Vec<(Uuid, Vec<String>)> =
            match sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&asks).fetch_all(&self.pool).await {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(class = %self.class, error = %err, "cannot read the levels of resting asks");
                    return Vec::new();
                }
            };
        let levels: HashMap<Uuid, Level> =
            rows.into_iter().filter_map(|(id, levels)| Some((id, Level::lowest(&levels)?))).collect();
        let mut uptimes: HashMap<Uuid, u32> = HashMap::new();
        if with_uptime {
            let hosts: Vec<Uuid> = self.book.asks().map(|ask| ask.host.0).collect::<HashSet<_>>().into_iter().collect();
            match uptime_ppm(&self.pool, &hosts, WINDOW_7D_S).await {
                Ok(rows) => uptimes.extend(rows),
                Err(err) => tracing::warn!(class = %self.class, error = %err, "cannot read the uptime of ask hosts"),
            }
        }
        self.book
            .asks()
            .filter_map(|ask| {
                let mut grade = ask.grade;
                if let Some(level) = levels.get(&ask.id.0) {
                    grade.verification = grade.verification.min((*level).into());
                }
                if let Some(ppm) = uptimes.get(&ask.host.0) {
                    grade.uptime_7d_ppm = grade.uptime_7d_ppm.min(*ppm);
                }
                (grade != ask.grade).then_some((ask.id, grade))
            })
            .collect()
    }

    /// The book's interruptible leases whose lease row is no longer live: their GPUs are
    /// idle again, for the book to give to waiting interruptible bids.
    async fn leases_ended_elsewhere(&self) -> Vec<(OrderId, OrderId)> {
        let held: HashMap<Uuid, (OrderId, OrderId)> = self
            .book
            .leases()
            .filter_map(|lease| {
                let ask = self.resting.get(&lease.ask_id.0)?;
                let held = ask.leases_held.iter().find(|h| h.bid_id == lease.lease_id.0)?;
                Some((held.lease_id, (lease.ask_id, lease.lease_id)))
            })
            .collect();
        if held.is_empty() {
            return Vec::new();
        }
        let ids: Vec<Uuid> = held.keys().copied().collect();
        let ended: Vec<Uuid> = match sqlx::query_scalar(
            "select lease_id from leases where lease_id = any($1) and state not in ('pending', 'running')",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        {
            Ok(ended) => ended,
            Err(err) => {
                tracing::warn!(class = %self.class, error = %err, "cannot read the state of interruptible leases");
                return Vec::new();
            }
        };
        ended.iter().filter_map(|id| held.get(id).copied()).collect()
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

    /// Runs the batch in one transaction; `None` when it changed nothing. `from_copies` is
    /// what [`Matcher::decided_from_copies`] found, for a batch that skips the checks
    /// statement.
    async fn commit_batch(
        &mut self,
        items: &mut [Item],
        from_copies: Option<Checked>,
    ) -> Result<Option<Published>, ApiError> {
        let (mut conn, mut prepared) = match self.conn.take() {
            Some(conn) => conn,
            None => (matcher_connection(&self.pool).await?, WriteStatements::default()),
        };
        let result = self.commit_batch_on(&mut conn, &mut prepared, items, from_copies).await;
        if result.is_ok() {
            self.conn = Some((conn, prepared));
        }
        result
    }

    async fn commit_batch_on(
        &mut self,
        conn: &mut PgConnection,
        prepared: &mut WriteStatements,
        items: &mut [Item],
        from_copies: Option<Checked>,
    ) -> Result<Option<Published>, ApiError> {
        let at_ms = now_ms().max(self.book.now_ms().unwrap_or(i64::MIN));
        let at = at_of(at_ms);
        let mut phase = PhaseTimer::new(&self.class);
        let unchecked = from_copies.is_some();
        let checked = match from_copies {
            Some(checked) => checked,
            None => {
                // The transaction is opened by the checks and closed by the writes (one round
                // trip each); on any error the connection is dropped, which rolls it back.
                let checked = checks::begin_and_run(conn, &self.class, &check_input(items)).await?;
                if checked.epoch != Some(self.epoch) {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "market_moving",
                        "this market moved to another process; retry",
                    ));
                }
                checked
            }
        };
        decide_idempotency(items, &checked);
        decide_funds(items, &checked);
        self.decide_gpus(items, &checked);
        phase.done("checks");

        // From here on the book changes: any failure reloads it (see run_batch).
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
            for (order_id, grade) in std::mem::take(&mut self.regrades) {
                tracing::info!(class = %self.class, order_id = %order_id.0, level = ?grade.verification,
                    uptime_7d_ppm = grade.uptime_7d_ppm,
                    "regrading an ask down: its GPUs' verification ran out or its host's uptime fell");
                self.book.apply(Command::Regrade { at_ms, order_id, grade }, &mut self.events);
                self.resting.regrade(&order_id.0, grade);
            }
            for (ask_id, lease_id) in std::mem::take(&mut self.ended_leases) {
                self.book.apply(Command::EndLease { at_ms, ask_id, lease_id }, &mut self.events);
            }
        }
        if self.events.is_empty() {
            // Nothing was applied: this also drops the Idempotency-Key claims of the batch.
            if !unchecked {
                sqlx::raw_sql("rollback").execute(&mut *conn).await?;
            }
            refuse_duplicates_of_refused(items);
            return Ok(None);
        }
        for (item, (start, end)) in items.iter_mut().zip(&own_events) {
            decide_from_events(item, &self.events[*start..*end]);
        }
        refuse_duplicates_of_refused(items);
        phase.done("book");

        let (mut orders, new_in_order) = self.touched_orders(items, at)?;
        let mut writes = BatchWrites::default();
        let mut accounts = Accounts::default();
        for wallet in checked.wallets.values() {
            accounts.existing(wallet.account_id, AccountKind::Wallet, wallet.balance);
        }
        for info in orders.values().filter(|o| o.side_bid && !o.is_new) {
            let account = info.escrow_account.ok_or_else(|| ApiError::internal("resting bid without escrow"))?;
            accounts.existing(account, AccountKind::Escrow, info.stored_held.as_decimal());
        }
        let wallet_of = |user: Uuid| -> Result<Uuid, ApiError> {
            checked
                .wallets
                .get(&user)
                .map(|w| w.account_id)
                .ok_or_else(|| ApiError::internal(format!("no locked wallet for {user}")))
        };
        let mut transfers: Vec<TransferSpec> = Vec::new();
        let mut leased_gpus: HashMap<(Uuid, String), Uuid> = HashMap::new();
        let mut fills: HashMap<Uuid, Vec<FillView>> = HashMap::new();
        // GPUs of interruptible leases preempted in this batch, and each preemption's
        // on-demand bid (its lease is named when its trade comes, right after).
        let mut freed_gpus: HashSet<String> = HashSet::new();
        let mut preempted_by: Vec<(Uuid, PreemptedRow)> = Vec::new();
        let mut preempted_jobs: Vec<(Uuid, Uuid, Value)> = Vec::new();

        for event in &self.events {
            match *event {
                Event::Accepted { order_id } => {
                    let info =
                        orders.get_mut(&order_id.0).ok_or_else(|| ApiError::internal("accepted unknown order"))?;
                    info.changed = true;
                    if info.side_bid {
                        info.wallet_account = Some(wallet_of(info.owner)?);
                    }
                    if let (true, Some(escrow)) = (info.side_bid, info.escrow_account) {
                        // Prefunded (a managed job's restart): the account holds the escrow.
                        accounts.existing(escrow, AccountKind::Escrow, info.held.as_decimal());
                    } else if info.side_bid {
                        let escrow = accounts.open_escrow(info.owner, order_id.0);
                        info.escrow_account = Some(escrow);
                        transfers.push(TransferSpec {
                            from: wallet_of(info.owner)?,
                            to: escrow,
                            amount: info.held,
                            kind: "escrow_hold".into(),
                            memo: format!("bid {}", order_id.0),
                            idempotency_key: None,
                        });
                    }
                }
                Event::Preempted { lease_id: bid_of_lease, ask_id, buyer, host, by_bid, .. } => {
                    let ask = orders.get_mut(&ask_id.0).ok_or_else(|| ApiError::internal("preempted unknown ask"))?;
                    let at_index =
                        ask.leases_held.iter().position(|h| h.bid_id == bid_of_lease.0).ok_or_else(|| {
                            ApiError::internal(format!("ask {} holds no lease of bid {}", ask_id.0, bid_of_lease.0))
                        })?;
                    let held = ask.leases_held.remove(at_index);
                    ask.changed = true;
                    freed_gpus.extend(held.gpu_uuids.iter().cloned());
                    preempted_jobs.push((
                        buyer.0,
                        ask.owner,
                        json!({"job_id": held.lease_id, "state": "preempting", "host_id": host.0}),
                    ));
                    let deadline = at_of(at_ms.saturating_add(self.preempt_grace.as_millis() as i64));
                    let new_row = writes.leases.iter().position(|l| l["lease_id"] == json!(held.lease_id));
                    if let Some(row) = new_row {
                        // Traded earlier in this batch: one statement cannot update a row it
                        // inserts, so the lease is inserted preempting.
                        let lease = &mut writes.leases[row];
                        lease["state"] = json!("preempting");
                        lease["preempted_at"] = json!(at);
                        lease["preempt_deadline"] = json!(deadline);
                        preempted_by.push((by_bid.0, PreemptedRow::Inserted(row)));
                    } else {
                        preempted_by.push((by_bid.0, PreemptedRow::Updated(writes.preemptions.len())));
                        writes.preemptions.push(Preemption {
                            lease_id: held.lease_id,
                            host_id: host.0,
                            preempted_at: at,
                            preempt_deadline: deadline,
                            preempted_by: None,
                        });
                    }
                    metrics::counter!("capex_preemptions_total", "class" => self.class.clone()).increment(1);
                }
                Event::LeaseEnded { ask_id, lease_id: bid_of_lease, .. } => {
                    // The lease row ended already (that is how the matcher learnt it); only
                    // the copy of the ask's leases changes.
                    if let Some(ask) = orders.get_mut(&ask_id.0) {
                        ask.leases_held.retain(|h| h.bid_id != bid_of_lease.0);
                    }
                }
                Event::Trade {
                    bid_id, ask_id, buyer, seller, host, gpus, price, duration_ms, priority, seq, ..
                } => {
                    let lease_id = Uuid::now_v7();
                    let interruptible = priority == Priority::Interruptible;
                    let trade_id = Uuid::now_v7();
                    let lease_escrow_account = accounts.open_escrow(buyer.0, lease_id);
                    let bid = orders.get_mut(&bid_id.0).ok_or_else(|| ApiError::internal("trade of unknown bid"))?;
                    let max_hours = bid.max_hours.ok_or_else(|| ApiError::internal("bid without max_hours"))?;
                    let bid_escrow = bid.escrow_account.ok_or_else(|| ApiError::internal("bid without escrow"))?;
                    let job = bid.job.clone().unwrap_or(Value::Null);
                    let trade_price = price.to_decimal();
                    let lease_escrow = reserve(trade_price, gpus, max_hours)
                        .ok_or_else(|| ApiError::internal("lease escrow does not fit"))?;
                    let refund = bid
                        .held
                        .checked_sub(lease_escrow)
                        .ok_or_else(|| ApiError::internal(format!("bid {} escrow below its lease", bid_id.0)))?;
                    // A resting bid (an interruptible one trades at the ask's lower price) may
                    // be refunded to a wallet this batch did not read: a credit needs only the
                    // account (the write moves it by a delta).
                    let buyer_wallet = match checked.wallets.get(&buyer.0) {
                        Some(wallet) => wallet.account_id,
                        None => {
                            let wallet = bid
                                .wallet_account
                                .ok_or_else(|| ApiError::internal(format!("no wallet known for {}", buyer.0)))?;
                            if !refund.is_zero() {
                                accounts.existing(wallet, AccountKind::Wallet, Decimal::ZERO);
                            }
                            wallet
                        }
                    };
                    bid.held = Credits::ZERO;
                    bid.gpus_remaining = 0;
                    bid.status = "filled";
                    bid.changed = true;
                    bid.closed = true;
                    transfers.push(TransferSpec {
                        from: bid_escrow,
                        to: lease_escrow_account,
                        amount: lease_escrow,
                        kind: "lease_escrow".into(),
                        memo: format!("lease {lease_id}"),
                        idempotency_key: None,
                    });
                    if !refund.is_zero() {
                        transfers.push(TransferSpec {
                            from: bid_escrow,
                            to: buyer_wallet,
                            amount: refund,
                            kind: "escrow_release".into(),
                            memo: format!("bid {} traded below its limit", bid_id.0),
                            idempotency_key: None,
                        });
                    }
                    let ask = orders.get_mut(&ask_id.0).ok_or_else(|| ApiError::internal("trade of unknown ask"))?;
                    // The ask's idle GPUs: bound and held by no interruptible lease. GPUs a
                    // preemption of this batch freed come last: the others are free now.
                    let held: HashSet<&String> = ask.leases_held.iter().flat_map(|h| &h.gpu_uuids).collect();
                    let mut idle: Vec<String> = ask.bound.iter().filter(|g| !held.contains(g)).cloned().collect();
                    idle.sort_by_key(|g| freed_gpus.contains(g));
                    if idle.len() < gpus as usize {
                        return Err(ApiError::internal(format!("ask {} has fewer idle GPUs than it sold", ask_id.0)));
                    }
                    let taken: Vec<String> = idle.into_iter().take(gpus as usize).collect();
                    ask.changed = true;
                    if interruptible {
                        // Still offered on demand: the GPUs stay bound to the ask.
                        ask.leases_held.push(HeldLease { bid_id: bid_id.0, lease_id, gpu_uuids: taken.clone() });
                    } else {
                        ask.bound.retain(|g| !taken.contains(g));
                        ask.gpus_remaining -= gpus as i32;
                        if ask.gpus_remaining <= 0 {
                            ask.status = "filled";
                            ask.closed = true;
                        }
                        for gpu in &taken {
                            leased_gpus.insert((ask_id.0, gpu.clone()), lease_id);
                        }
                        for (by_bid, row) in &preempted_by {
                            match row {
                                _ if *by_bid != bid_id.0 => {}
                                PreemptedRow::Updated(i) => writes.preemptions[*i].preempted_by = Some(lease_id),
                                PreemptedRow::Inserted(i) => writes.leases[*i]["preempted_by"] = json!(lease_id),
                            }
                        }
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
                        "job": job, "state": "pending", "priority": if interruptible { "interruptible" } else { "on_demand" },
                        "book_seq": seq,
                    }));
                    let fill = FillView { trade_id, lease_id, price: trade_price.normalize(), gpus: gpus as i32, at };
                    fills.entry(bid_id.0).or_default().push(fill.clone());
                    fills.entry(ask_id.0).or_default().push(fill);
                    metrics::counter!("capex_trades_total", "class" => self.class.clone()).increment(1);
                }
                Event::Cancelled { order_id, .. } | Event::Expired { order_id, .. } => {
                    let expired = matches!(event, Event::Expired { .. });
                    let info = orders.get_mut(&order_id.0).ok_or_else(|| ApiError::internal("unknown order closed"))?;
                    info.status = if expired { "expired" } else { "cancelled" };
                    info.changed = true;
                    info.closed = true;
                    if info.side_bid {
                        let amount = std::mem::replace(&mut info.held, Credits::ZERO);
                        if !amount.is_zero() {
                            transfers.push(TransferSpec {
                                from: info.escrow_account.ok_or_else(|| ApiError::internal("bid without escrow"))?,
                                to: wallet_of(info.owner)?,
                                amount,
                                kind: "escrow_release".into(),
                                memo: format!("bid {} cancelled", order_id.0),
                                idempotency_key: None,
                            });
                        }
                    }
                    // An ask's unsold GPUs are released below, from what is still bound.
                }
                // A grade is not stored: nothing to write.
                Event::Rejected { .. } | Event::Amended { .. } | Event::Regraded { .. } => {}
            }
        }

        let balances_after = self.ledger_writes(&mut writes, accounts, &transfers)?;
        if unchecked {
            writes.epoch.push(EpochGuard { class: self.class.clone(), epoch: self.epoch });
            for item in items.iter() {
                let Item::Place { req, outcome: Some(PlaceResult::Applied { gpus_bound, .. }), .. } = item else {
                    continue;
                };
                let NewOrder::Ask(ask) = &req.order else { continue };
                for gpu in gpus_bound {
                    writes.gpus_verified.push(GpuGuard {
                        host_id: ask.host_id,
                        owner_id: req.owner,
                        class: self.class.clone(),
                        gpu_uuid: gpu.clone(),
                    });
                }
            }
        }
        self.order_writes(&mut writes, &orders, &new_in_order, &leased_gpus, at);
        // Answers, and the idempotency records that replay them.
        for item in items.iter_mut() {
            let Item::Place { req, outcome, .. } = item else { continue };
            let claimed = req.idempotency.as_ref().map(|(key, _)| (req.owner, key.clone()));
            if !matches!(outcome, Some(PlaceResult::Applied { .. })) {
                if let (Some((user_id, idempotency_key)), Some(PlaceResult::Refused(_))) = (claimed, outcome.as_ref()) {
                    writes.claims_dropped.push(ClaimDrop { user_id, idempotency_key });
                }
                continue;
            }
            let info = orders.get(&req.order_id).ok_or_else(|| ApiError::internal("placed order vanished"))?;
            let view = self.order_view(req.order_id, info, &fills);
            if let Some((user_id, idempotency_key)) = claimed {
                writes.idempotency.push(IdempotencyRecord {
                    user_id,
                    idempotency_key,
                    response_status: StatusCode::CREATED.as_u16(),
                    response_body: serde_json::to_value(&view).map_err(ApiError::internal)?,
                });
            }
            *outcome = Some(PlaceResult::Placed(Box::new(view)));
        }
        for item in items.iter_mut() {
            let Item::Cancel { order_id, outcome: Some(Ok(())), view, .. } = item else { continue };
            let info = orders.get(order_id).ok_or_else(|| ApiError::internal("cancelled order vanished"))?;
            *view = Some(Box::new(self.order_view(*order_id, info, &fills)));
        }
        writes.execute_and_commit(conn, prepared, unchecked).await?;
        phase.done("write");
        for (user, wallet) in &checked.wallets {
            let balance = balances_after.get(&wallet.account_id).map(|(_, b)| *b).unwrap_or(wallet.balance);
            self.wallets.insert(*user, Wallet { account_id: wallet.account_id, balance });
        }

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
        let changed = orders
            .iter()
            .filter(|(_, o)| o.changed)
            .map(|(id, o)| (o.owner, json!({"class": self.class, "order_id": id, "status": o.status})))
            .collect();
        let mut jobs: Vec<(Uuid, Uuid, Value)> = writes
            .leases
            .iter()
            .filter_map(|l| {
                let buyer = l["buyer_id"].as_str()?.parse().ok()?;
                let provider = l["provider_id"].as_str()?.parse().ok()?;
                Some((buyer, provider, json!({"job_id": l["lease_id"], "state": "pending", "host_id": l["host_id"]})))
            })
            .collect();
        jobs.extend(preempted_jobs);
        self.resting.apply(orders);
        Ok(Some(Published { trades, orders: changed, jobs }))
    }

    /// Checks the batch's transfers against the accounts' balances (the ledger's rules) and
    /// adds the journal rows, the new escrow accounts and the changed balances.
    /// Returns every account's kind and balance after the batch.
    fn ledger_writes(
        &self,
        writes: &mut BatchWrites,
        accounts: Accounts,
        transfers: &[TransferSpec],
    ) -> Result<BTreeMap<Uuid, (AccountKind, Decimal)>, ApiError> {
        let mut after = accounts.before.clone();
        let specs: Vec<&TransferSpec> = transfers.iter().collect();
        apply_to_balances(&mut after, &specs)?;
        let balance_after = |account: &Uuid| after.get(account).map(|(_, b)| *b).unwrap_or(Decimal::ZERO);
        let new: HashSet<Uuid> = accounts.new.iter().map(|(id, _, _)| *id).collect();
        for (account_id, user_id, ref_id) in &accounts.new {
            writes.accounts_new.push(NewAccount {
                account_id: *account_id,
                user_id: *user_id,
                ref_id: *ref_id,
                balance: balance_after(account_id),
            });
        }
        for (account_id, (kind, old_balance)) in &accounts.before {
            let balance = balance_after(account_id);
            if !new.contains(account_id) && balance != *old_balance {
                writes.balances.push(BalanceChange {
                    account_id: *account_id,
                    old_balance: (*kind != AccountKind::Wallet).then_some(*old_balance),
                    delta: balance - *old_balance,
                });
            }
        }
        writes.journal = transfers
            .iter()
            .map(|t| JournalRow {
                transfer_id: Uuid::now_v7(),
                debit_account: t.from,
                credit_account: t.to,
                amount: t.amount.as_decimal(),
                kind: t.kind.clone(),
                memo: t.memo.clone(),
            })
            .collect();
        Ok(after)
    }

    /// New orders (in book order, which gives their `seq`), changed resting orders, and
    /// every ask GPU the batch bound, leased or released, each in its final state.
    fn order_writes(
        &self,
        writes: &mut BatchWrites,
        orders: &HashMap<Uuid, OrderInfo>,
        new_in_order: &[(Uuid, Vec<String>)],
        leased_gpus: &HashMap<(Uuid, String), Uuid>,
        at: DateTime<Utc>,
    ) {
        let closed_at = |o: &OrderInfo| if o.closed { Some(at) } else { None };
        let gpu_state = |order_id: Uuid, gpu: &String, o: &OrderInfo| match leased_gpus.get(&(order_id, gpu.clone())) {
            Some(lease_id) => ("leased", Some(*lease_id)),
            None if o.closed => ("released", None),
            None => ("bound", None),
        };
        for (id, gpus_bound) in new_in_order {
            let Some(o) = orders.get(id) else { continue };
            if !o.changed {
                // Refused by the book: never written.
                continue;
            }
            writes.orders_new.push(json!({
                "order_id": id, "class": self.class, "side": if o.side_bid { "bid" } else { "ask" },
                "owner_id": o.owner, "status": o.status, "tif": o.tif, "gpus": o.gpus,
                "gpus_remaining": o.gpus_remaining, "price": o.price, "max_hours": o.max_hours,
                "duration_ms": o.duration_ms, "job": o.job, "host_id": o.host_id,
                "min_verification": o.min_verification, "min_uptime_7d_ppm": o.min_uptime_7d_ppm,
                "priority": o.priority.as_str(), "interruptible_price": o.interruptible_price,
                "available_until": o.available_until, "created_at": o.created_at, "closed_at": closed_at(o),
            }));
            for gpu in gpus_bound {
                let (state, lease_id) = gpu_state(*id, gpu, o);
                writes.ask_gpus_new.push(AskGpu { order_id: *id, gpu_uuid: gpu.clone(), state, lease_id });
            }
        }
        for (id, o) in orders.iter().filter(|(_, o)| !o.is_new && o.changed) {
            writes.orders_changed.push(OrderChange {
                order_id: *id,
                old_status: "open",
                old_remaining: o.stored_remaining,
                status: o.status,
                gpus_remaining: o.gpus_remaining,
                closed_at: closed_at(o),
            });
            if o.side_bid {
                continue;
            }
            let before = self.resting.get(id).map(|r| r.bound.as_slice()).unwrap_or_default();
            for gpu in before {
                let (state, lease_id) = gpu_state(*id, gpu, o);
                if state != "bound" {
                    writes.ask_gpus_changed.push(AskGpuChange {
                        order_id: *id,
                        gpu_uuid: gpu.clone(),
                        old_state: "bound",
                        state,
                        lease_id,
                    });
                }
            }
        }
    }

    /// What the checks statement would tell this batch, from the matcher's copies alone, when
    /// they can tell it: no request has an Idempotency-Key; every bidder's and canceller's
    /// wallet is known and, as last seen, covers the batch's bids; asks' hosts and free GPUs
    /// come from their handlers' reads, less the GPUs this market's open asks offer.
    ///
    /// Nothing is locked. The write then proves what was assumed: the market's epoch, each
    /// bound GPU still free, and no wallet below zero (wallets move by deltas). If anything
    /// moved meanwhile the write fails, and the batch is run again, checked.
    fn decided_from_copies(&self, items: &[Item]) -> Option<Checked> {
        let mut wallets: HashMap<Uuid, Wallet> = HashMap::new();
        let mut needed: HashMap<Uuid, Decimal> = HashMap::new();
        let mut free_gpus: HashMap<Uuid, Vec<String>> = HashMap::new();
        let mut gpu_levels: HashMap<String, Level> = HashMap::new();
        let mut hosts: HashMap<Uuid, AskHost> = HashMap::new();
        for item in items {
            match item {
                Item::Place { req, .. } => {
                    if req.idempotency.is_some() {
                        return None;
                    }
                    match &req.order {
                        NewOrder::Bid(bid) => {
                            wallets.insert(req.owner, *self.wallets.get(&req.owner)?);
                            if bid.prefunded().is_none() {
                                *needed.entry(req.owner).or_default() += bid.escrow.as_decimal();
                            }
                        }
                        NewOrder::Ask(ask) => {
                            hosts.insert(ask.host_id, AskHost { owner_id: req.owner, live: true });
                            let free = free_gpus.entry(ask.host_id).or_default();
                            for (gpu, level) in &req.free_gpus {
                                if !self.resting.is_bound(gpu) && !free.contains(gpu) {
                                    free.push(gpu.clone());
                                    gpu_levels.insert(gpu.clone(), *level);
                                }
                            }
                        }
                    }
                }
                Item::Cancel { owner, .. } => {
                    wallets.insert(*owner, *self.wallets.get(owner)?);
                }
            }
        }
        if needed.iter().any(|(user, amount)| wallets[user].balance < *amount) {
            return None;
        }
        Some(Checked { epoch: Some(self.epoch), wallets, claimed: HashSet::new(), free_gpus, gpu_levels, hosts })
    }

    /// Picks the GPUs each ask will offer, among its host's attested free GPUs of this
    /// class not taken by an earlier ask of the batch; refuses asks for someone else's (or
    /// no) host, a host that is not live, or more GPUs than are free.
    fn decide_gpus(&self, items: &mut [Item], checked: &Checked) {
        let mut taken: HashSet<&String> = HashSet::new();
        for item in items.iter_mut() {
            let Item::Place { req, outcome: outcome @ None, .. } = item else { continue };
            let NewOrder::Ask(ask) = &req.order else { continue };
            let free: Vec<&String> = checked
                .free_gpus
                .get(&ask.host_id)
                .map(|gpus| gpus.iter().filter(|gpu| !taken.contains(gpu)).collect())
                .unwrap_or_default();
            let refusal = ask_refusal(checked.hosts.get(&ask.host_id), req.owner, free.len(), ask.gpus, &self.class);
            if let Some(err) = refusal {
                *outcome = Some(PlaceResult::Refused(err));
                continue;
            }
            let chosen: Vec<&String> = free.into_iter().take(ask.gpus as usize).collect();
            taken.extend(chosen.iter().copied());
            let verification = chosen
                .iter()
                .map(|gpu| checked.gpu_levels.get(*gpu).copied().unwrap_or(Level::Simulated))
                .min()
                .unwrap_or(Level::Simulated);
            // The host's uptime as the handler read it: it needs no lock, and computing it
            // here would scan the host's week of reports inside the batch's transaction.
            let grade = AskGrade { verification: verification.into(), uptime_7d_ppm: ask.host_uptime_7d_ppm };
            *outcome = Some(PlaceResult::Applied { gpus_bound: chosen.into_iter().cloned().collect(), grade });
        }
    }

    /// Every order the batch's events touch: new ones from the requests, resting ones from
    /// the matcher's copy. Also returns the new orders' ids (and asks' chosen GPUs) in the
    /// order the book took them.
    #[allow(clippy::type_complexity)]
    fn touched_orders(
        &self,
        items: &[Item],
        at: DateTime<Utc>,
    ) -> Result<(HashMap<Uuid, OrderInfo>, Vec<(Uuid, Vec<String>)>), ApiError> {
        let mut orders: HashMap<Uuid, OrderInfo> = HashMap::new();
        let mut new_in_order = Vec::new();
        for item in items {
            let Item::Place { req, outcome: Some(PlaceResult::Applied { gpus_bound, grade }), .. } = item else {
                continue;
            };
            let info = match &req.order {
                NewOrder::Bid(bid) => OrderInfo {
                    side_bid: true,
                    max_hours: Some(bid.max_hours),
                    duration_ms: Some(bid.duration_ms),
                    job: Some(bid.job.clone()),
                    min_verification: bid.min_verification,
                    min_uptime_7d_ppm: bid.min_uptime_7d_ppm,
                    held: bid.escrow,
                    escrow_account: bid.prefunded(),
                    priority: bid.priority,
                    ..OrderInfo::placed(req.owner, bid.gpus, bid.price.to_decimal(), bid.tif.as_str(), at)
                },
                NewOrder::Ask(ask) => OrderInfo {
                    side_bid: false,
                    host_id: Some(ask.host_id),
                    available_until: Some(ask.available_until),
                    bound: gpus_bound.clone(),
                    verification: Some(grade.verification.into()),
                    host_uptime_7d_ppm: Some(grade.uptime_7d_ppm),
                    interruptible_price: ask.interruptible_price.map(|p| p.to_decimal()),
                    ..OrderInfo::placed(req.owner, ask.gpus, ask.price.to_decimal(), ask.tif.as_str(), at)
                },
            };
            orders.insert(req.order_id, info);
            new_in_order.push((req.order_id, gpus_bound.clone()));
        }
        for event in &self.events {
            let ids: &[OrderId] = match event {
                Event::Trade { bid_id, ask_id, .. } => &[*bid_id, *ask_id],
                Event::Cancelled { order_id, .. } | Event::Expired { order_id, .. } => &[*order_id],
                Event::Preempted { ask_id, .. } | Event::LeaseEnded { ask_id, .. } => std::slice::from_ref(ask_id),
                _ => &[],
            };
            for id in ids {
                if orders.contains_key(&id.0) {
                    continue;
                }
                let info = self
                    .resting
                    .get(&id.0)
                    .ok_or_else(|| ApiError::internal(format!("book order {} is not an open order", id.0)))?;
                orders.insert(id.0, info.clone());
            }
        }
        Ok((orders, new_in_order))
    }

    /// The view of an order this batch placed or cancelled, as its owner will read it
    /// (fills of this batch only).
    fn order_view(&self, order_id: Uuid, o: &OrderInfo, fills: &HashMap<Uuid, Vec<FillView>>) -> OrderView {
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
            escrow: o.side_bid.then(|| if open_bid { o.held.as_decimal() } else { Decimal::ZERO }),
            host_id: o.host_id,
            created_at: o.created_at,
            min_verification: o.min_verification,
            verification: o.verification,
            min_reliability: MinReliabilityView::of_ppm(o.min_uptime_7d_ppm),
            host_uptime_7d: o.host_uptime_7d_ppm.map(fraction_of_ppm),
            priority: o.side_bid.then_some(o.priority),
            interruptible_price: o.interruptible_price.map(|p| p.normalize()),
            gpus_interruptible: (!o.side_bid)
                .then(|| o.leases_held.iter().map(|h| h.gpu_uuids.len() as i32).sum::<i32>()),
            fills: fills.get(&order_id).cloned().unwrap_or_default(),
            unfilled_reasons: if open_bid {
                self.book.why_unfilled(OrderId(order_id)).into_iter().map(UnfilledReasonView::from_book).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// A connection of the pool's, taken out of it for a matcher.
///
/// Every statement of a batch reaches a handful of rows by key, so it must never scan a
/// table. The planner would, on a young market: its statistics still describe nearly empty
/// tables (autovacuum analyzes them only after a while), and the generic plan of a prepared
/// statement keeps that choice. Measured on a fresh database: 2.5-4 ms of a batch went
/// into hash joins over every order and account, and bitmap scans read every bound GPU of
/// the exchange where one index probe per GPU was meant. Disabling scans, bitmap scans and
/// hash/merge joins on this connection alone leaves keyed index lookups as the only plans.
pub(super) async fn matcher_connection(pool: &PgPool) -> Result<PgConnection, ApiError> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::raw_sql(
        "set enable_seqscan = off; set enable_bitmapscan = off; set enable_hashjoin = off; \
         set enable_mergejoin = off; set plan_cache_mode = force_generic_plan",
    )
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(checks::prepare_sql())).execute(&mut conn).await?;
    Ok(conn)
}

/// What the checks statement must read and lock for this batch.
fn check_input(items: &[Item]) -> CheckInput {
    let mut input = CheckInput::default();
    for item in items {
        match item {
            Item::Place { req, .. } => {
                match &req.order {
                    NewOrder::Bid(_) => input.wallet_owners.push(req.owner),
                    NewOrder::Ask(ask) => input.ask_hosts.push(ask.host_id),
                }
                if let Some((key, hash)) = &req.idempotency {
                    input.keys.push(KeyClaim { user_id: req.owner, key: key.clone(), request_hash: hash.clone() });
                }
            }
            Item::Cancel { owner, .. } => input.wallet_owners.push(*owner),
        }
    }
    input
}

/// Requests whose Idempotency-Key this batch could not claim (used before, held by another
/// transaction that committed, or sent twice in this batch) are answered with the stored
/// response once the batch is done.
fn decide_idempotency(items: &mut [Item], checked: &Checked) {
    let mut unclaimed = checked.claimed.clone();
    for item in items.iter_mut() {
        if let Item::Place { req: PlaceRequest { owner, idempotency: Some((key, _)), .. }, outcome, .. } = item
            && !unclaimed.remove(&(*owner, key.clone()))
        {
            *outcome = Some(PlaceResult::Replay);
        }
    }
}

/// A request sent twice in one batch under one key waits on the first for its answer; when
/// the first was refused there is no stored response to replay, so the copy gets the same
/// refusal.
fn refuse_duplicates_of_refused(items: &mut [Item]) {
    let mut refused: HashMap<(Uuid, String), ApiError> = HashMap::new();
    for item in items.iter_mut() {
        let Item::Place { req: PlaceRequest { owner, idempotency: Some((key, _)), .. }, outcome, .. } = item else {
            continue;
        };
        match outcome {
            Some(PlaceResult::Refused(err)) => {
                refused.entry((*owner, key.clone())).or_insert_with(|| err.clone());
            }
            Some(PlaceResult::Replay) => {
                if let Some(err) = refused.get(&(*owner, key.clone())) {
                    *outcome = Some(PlaceResult::Refused(err.clone()));
                }
            }
            _ => {}
        }
    }
}

/// Refuses bids the locked wallets cannot cover, in batch order.
fn decide_funds(items: &mut [Item], checked: &Checked) {
    let mut available: HashMap<Uuid, Decimal> = checked.wallets.iter().map(|(u, w)| (*u, w.balance)).collect();
    for item in items.iter_mut() {
        let Item::Place { req, outcome: outcome @ None, .. } = item else { continue };
        let NewOrder::Bid(bid) = &req.order else { continue };
        if bid.prefunded().is_some() {
            // A restart bid: its escrow was funded when the job's last attempt ended.
            *outcome = Some(PlaceResult::Applied { gpus_bound: Vec::new(), grade: AskGrade::UNGRADED });
            continue;
        }
        let balance = available.entry(req.owner).or_insert(Decimal::ZERO);
        if *balance >= bid.escrow.as_decimal() {
            *balance -= bid.escrow.as_decimal();
            *outcome = Some(PlaceResult::Applied { gpus_bound: Vec::new(), grade: AskGrade::UNGRADED });
        } else {
            *outcome = Some(PlaceResult::Refused(ApiError::invalid(
                "price",
                "insufficient_funds",
                format!("the bid's escrow of {} credits is more than your available credits", bid.escrow),
            )));
        }
    }
}

/// Why an ask for `gpus` GPUs of `class` on a host (`None`: no such host) with `free` free
/// GPUs of that class cannot be placed by `owner`, if it cannot.
pub(crate) fn ask_refusal(
    host: Option<&AskHost>,
    owner: Uuid,
    free: usize,
    gpus: u32,
    class: &str,
) -> Option<ApiError> {
    match host {
        // Someone else's host looks exactly like no host.
        Some(host) if host.owner_id != owner => Some(unknown_host()),
        None => Some(unknown_host()),
        Some(host) if !host.live => {
            Some(ApiError::invalid("host_id", "host_not_live", "the host has not reported recently"))
        }
        Some(_) if free < gpus as usize => Some(ApiError::invalid(
            "gpus",
            "not_enough_free_gpus",
            format!("the host has {free} attested free {class} GPUs"),
        )),
        Some(_) => None,
    }
}

fn unknown_host() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_host", "you have no host with this id").with_field("host_id")
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
        Item::Cancel { reply, outcome, view, .. } => {
            let result = match (outcome, failure) {
                (Some(Err(err)), _) => Err(err),
                (_, Some(err)) => Err(err),
                (Some(Ok(())), None) => view.ok_or_else(|| ApiError::internal("cancelled order without its view")),
                (None, None) => Err(ApiError::internal("matcher left a cancel undecided")),
            };
            let _ = reply.send(result);
        }
    }
}

/// The book command for a request that passed the database checks.
fn command_of(item: &Item, at_ms: i64) -> Option<Command> {
    match item {
        Item::Place { req, outcome: Some(PlaceResult::Applied { grade, .. }), .. } => {
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
                        excluded_hosts: bid.excluded_hosts(),
                        requires: Requirements {
                            min_verification: bid.min_verification.map(Into::into),
                            min_uptime_7d_ppm: bid.min_uptime_7d_ppm,
                        },
                        priority: bid.priority.book(),
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
                        grade: *grade,
                        interruptible_price: ask.interruptible_price,
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
