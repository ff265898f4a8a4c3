//! Metering and settlement: the writes that move a lease's escrow. Every function runs in
//! the caller's transaction. Lock order, the same for the report writer, the sweeper and
//! the cancel handler: the host row, then its leases, then in ONE step every account the
//! transaction may move ([`lock_lease_accounts`]: the leases' escrows, their buyers' and
//! providers' wallets, the fees account; the ledger orders them). So they serialise per
//! lease and never wait on each other in a cycle, nor on a transfer or a matcher batch,
//! which lock their accounts in the same one step.

use std::collections::HashSet;

use capex_core::{Credits, LeaseReport};
use capex_ledger::{AccountSet, FEES_ACCOUNT, capture, lock_accounts, release, retrying, wallet_account};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::metering::{billable_ms, step, totals};
use crate::error::ApiError;
use crate::feed::Feed;

/// A report may bill at most this many report intervals since the lease was last billed.
pub const BILL_CAP_INTERVALS: i64 = 2;
/// A host that sent no valid report for this many intervals loses its leases.
pub const LOST_AFTER_INTERVALS: i64 = 3;

/// Lease states in which the GPUs are in use and the escrow still open. A `preempting`
/// lease is an interruptible one whose GPUs an on-demand trade took: it is billed up to
/// `preempted_at` and no further, and ends `preempted` when its job is gone.
pub const ACTIVE_STATES: [&str; 3] = ["pending", "running", "preempting"];

/// After its notice ran out, how long a preempting lease waits for its host to report the
/// job gone before the sweeper ends it anyway (a host that died meanwhile).
pub const PREEMPT_REPORT_SLACK_S: i64 = 10;

/// Feed events gathered inside a transaction and published after it commits.
#[derive(Default)]
pub(crate) struct Outbox(Vec<(&'static str, Uuid, Value)>);

impl Outbox {
    pub(crate) fn push(&mut self, kind: &'static str, user: Uuid, data: Value) {
        self.0.push((kind, user, data));
    }

    pub(crate) fn publish(self, feed: &Feed) {
        for (kind, user, data) in self.0 {
            feed.private(kind, user, data);
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LeaseRow {
    pub(crate) lease_id: Uuid,
    pub(crate) host_id: Uuid,
    pub(crate) buyer_id: Uuid,
    pub(crate) provider_id: Uuid,
    pub(crate) gpu_uuids: Vec<String>,
    pub(crate) gpus: i32,
    pub(crate) price: Decimal,
    pub(crate) state: String,
    pub(crate) billed_until: Option<DateTime<Utc>>,
    pub(crate) billed_ms: i64,
    pub(crate) cost: Decimal,
    pub(crate) fee: Decimal,
    pub(crate) max_end_at: DateTime<Utc>,
    /// The job spec (with the job's id, this attempt's number and its restart policy).
    pub(crate) job: Value,
    pub(crate) job_id: Option<Uuid>,
    pub(crate) attempt: Option<i32>,
    /// Set when an on-demand trade preempted this interruptible lease: billing stops here.
    pub(crate) preempted_at: Option<DateTime<Utc>>,
    /// When a preempted lease's job is killed.
    pub(crate) preempt_deadline: Option<DateTime<Utc>>,
}

pub(crate) const LEASE_ROW_COLUMNS: &str = "lease_id, host_id, buyer_id, provider_id, gpu_uuids, gpus, price, state, \
     billed_until, billed_ms, cost, fee, max_end_at, job, job_id, attempt, preempted_at, preempt_deadline";

/// The lease, locked after its host's row: the report writer locks hosts before leases
/// (and settling updates the host's reliability counters), so everyone else takes the
/// locks in that order too and no two writers wait on each other. `None`: no such lease.
pub(crate) async fn lock_host_and_lease(
    conn: &mut PgConnection,
    lease_id: Uuid,
) -> Result<Option<LeaseRow>, sqlx::Error> {
    let host: Option<Uuid> = sqlx::query_scalar("select host_id from leases where lease_id = $1")
        .bind(lease_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(host_id) = host else { return Ok(None) };
    // `no key update`: the host's row is referenced by leases and trades that matchers
    // insert (their foreign keys take `key share` locks, which this does not block).
    sqlx::query("select 1 from hosts where host_id = $1 for no key update").bind(host_id).execute(&mut *conn).await?;
    let lease = lock_lease(conn, lease_id).await?;
    if let Some(lease) = &lease {
        lock_lease_accounts(conn, std::slice::from_ref(lease)).await?;
    }
    Ok(lease)
}

/// Locks, in the ledger's one step, every account that metering or settling `leases` may
/// move: their escrows, their providers' and buyers' wallets, and the fees account. Call
/// it after the leases are locked and before any of them is billed or settled.
pub(crate) async fn lock_lease_accounts(conn: &mut PgConnection, leases: &[LeaseRow]) -> Result<(), sqlx::Error> {
    if leases.is_empty() {
        return Ok(());
    }
    let mut set = AccountSet::default().fees();
    for lease in leases {
        set = set.escrow_of(lease.lease_id).wallet_of(lease.provider_id).wallet_of(lease.buyer_id);
    }
    lock_accounts(conn, &set).await.map_err(|err| match err {
        capex_ledger::LedgerError::Database(db) => db,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    Ok(())
}

/// The lease, locked; `None` if there is no such lease.
pub(crate) async fn lock_lease(conn: &mut PgConnection, lease_id: Uuid) -> Result<Option<LeaseRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {LEASE_ROW_COLUMNS} from leases where lease_id = $1 for no key update"
    )))
    .bind(lease_id)
    .fetch_optional(conn)
    .await
}

/// The lease escrow's balance; the caller holds it locked ([`lock_lease_accounts`]).
async fn escrow_left(conn: &mut PgConnection, lease_id: Uuid) -> Result<Decimal, sqlx::Error> {
    let balance: Option<Decimal> =
        sqlx::query_scalar("select balance from accounts where kind = 'escrow' and ref_id = $1")
            .bind(lease_id)
            .fetch_optional(conn)
            .await?;
    Ok(balance.unwrap_or(Decimal::ZERO))
}

fn job_event(lease: &LeaseRow, state: &str) -> Value {
    json!({"job_id": lease.lease_id, "state": state, "host_id": lease.host_id})
}

/// Marks a pending lease running from `at` (billing starts there).
pub(crate) async fn start(
    conn: &mut PgConnection,
    lease: &mut LeaseRow,
    at: DateTime<Utc>,
    out: &mut Outbox,
) -> Result<(), sqlx::Error> {
    if lease.state != "pending" {
        return Ok(());
    }
    sqlx::query(
        "update leases set state = 'running', started_at = $2, billed_until = $2, acked_at = coalesce(acked_at, $2)
         where lease_id = $1",
    )
    .bind(lease.lease_id)
    .bind(at)
    .execute(conn)
    .await?;
    lease.state = "running".into();
    lease.billed_until = Some(at);
    out.push("job", lease.buyer_id, job_event(lease, "running"));
    out.push("job", lease.provider_id, job_event(lease, "running"));
    Ok(())
}

/// Bills a running lease from `billed_until` to `until` (never past `max_end_at`), at most
/// `cap_ms` of it; the rest of the interval is skipped, never billed later.
pub(crate) async fn bill(
    conn: &mut PgConnection,
    lease: &mut LeaseRow,
    until: DateTime<Utc>,
    cap_ms: i64,
    fee_rate: Decimal,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    let Some(from) = lease.billed_until else { return Ok(()) };
    // The notice a preempted lease gets is not billed.
    let until = until.min(lease.max_end_at).min(lease.preempted_at.unwrap_or(until));
    if until <= from {
        return Ok(());
    }
    let ms = billable_ms((until - from).num_milliseconds(), cap_ms);
    let billed_ms = lease.billed_ms + ms;
    let left = escrow_left(conn, lease.lease_id).await?;
    let before = (lease.cost, lease.fee);
    let after = totals(lease.price, lease.gpus, billed_ms, fee_rate, lease.cost + left);
    let s = step(before, after);
    if s.provider > Decimal::ZERO {
        let wallet = wallet_account(conn, lease.provider_id).await?;
        capture(conn, lease.lease_id, wallet, Credits::from_db(s.provider), "settlement", &memo(lease)).await?;
    }
    if s.fee > Decimal::ZERO {
        capture(conn, lease.lease_id, FEES_ACCOUNT, Credits::from_db(s.fee), "fee", &memo(lease)).await?;
    }
    sqlx::query("update leases set billed_until = $2, billed_ms = $3, cost = $4, fee = $5 where lease_id = $1")
        .bind(lease.lease_id)
        .bind(until)
        .bind(billed_ms)
        .bind(after.0)
        .bind(after.1)
        .execute(&mut *conn)
        .await?;
    lease.billed_until = Some(until);
    lease.billed_ms = billed_ms;
    lease.cost = after.0;
    lease.fee = after.1;
    if s.gross > Decimal::ZERO {
        out.push("wallet", lease.provider_id, json!({"reason": "settlement", "job_id": lease.lease_id}));
        out.push(
            "job",
            lease.buyer_id,
            json!({"job_id": lease.lease_id, "state": lease.state, "host_id": lease.host_id,
                   "cost_so_far": lease.cost.normalize(), "billed_ms": billed_ms}),
        );
    }
    Ok(())
}

fn memo(lease: &LeaseRow) -> String {
    format!("lease {}", lease.lease_id)
}

/// Closes an active lease in `state`, returning the rest of its escrow to the buyer and
/// counting it in the host's reliability record.
pub(crate) async fn settle(
    conn: &mut PgConnection,
    lease: &mut LeaseRow,
    state: &'static str,
    exit_code: Option<i32>,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    if !ACTIVE_STATES.contains(&lease.state.as_str()) {
        return Ok(());
    }
    // A managed job's next attempt is funded from this escrow first (same transaction).
    super::restart::after_attempt(conn, lease, state, exit_code, out).await?;
    let refund = escrow_left(conn, lease.lease_id).await?;
    if refund > Decimal::ZERO {
        release(conn, lease.lease_id, Credits::from_db(refund), &format!("lease {} {state}", lease.lease_id)).await?;
    }
    sqlx::query("update leases set state = $2, ended_at = now(), exit_code = $3 where lease_id = $1")
        .bind(lease.lease_id)
        .bind(state)
        .bind(exit_code)
        .execute(&mut *conn)
        .await?;
    let column_sql = if state == "host_lost" {
        "update hosts set leases_lost = leases_lost + 1 where host_id = $1"
    } else {
        "update hosts set leases_completed = leases_completed + 1 where host_id = $1"
    };
    sqlx::query(column_sql).bind(lease.host_id).execute(&mut *conn).await?;
    lease.state = state.into();
    metrics::counter!("capex_leases_ended_total", "state" => state).increment(1);
    let event = json!({"job_id": lease.lease_id, "state": state, "host_id": lease.host_id, "exit_code": exit_code,
                       "cost": lease.cost.normalize(), "refund": refund.normalize()});
    out.push("job", lease.buyer_id, event.clone());
    out.push("job", lease.provider_id, event);
    out.push("wallet", lease.buyer_id, json!({"reason": "refund", "job_id": lease.lease_id}));
    Ok(())
}

/// What metering needs from one accepted report.
pub(crate) struct ReportForMetering<'a> {
    pub(crate) host_id: Uuid,
    pub(crate) interval_s: u32,
    pub(crate) gpus: HashSet<&'a str>,
    pub(crate) leases: &'a [LeaseReport],
}

/// Locks the active leases of `host_ids` (whose rows the caller locked) and every account
/// metering them may move, in the lock order of this module's docs. Returns the leases by
/// lease id.
pub(crate) async fn lock_active_leases(
    conn: &mut PgConnection,
    host_ids: &[Uuid],
) -> Result<Vec<LeaseRow>, sqlx::Error> {
    let leases: Vec<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {LEASE_ROW_COLUMNS} from leases
         where host_id = any($1) and state in ('pending', 'running', 'preempting')
         order by lease_id for no key update"
    )))
    .bind(host_ids)
    .fetch_all(&mut *conn)
    .await?;
    lock_lease_accounts(conn, &leases).await?;
    Ok(leases)
}

/// Meters one accepted report: starts leases the host says are running, bills every
/// running lease whose GPUs the report shows for the time since it was last billed
/// (capped at [`BILL_CAP_INTERVALS`]), and closes leases that exited or reached their end.
/// `leases` are the host's active leases, locked with their accounts by
/// [`lock_active_leases`]; those that end are removed.
pub(crate) async fn meter_report(
    conn: &mut PgConnection,
    report: &ReportForMetering<'_>,
    leases: &mut Vec<LeaseRow>,
    now: DateTime<Utc>,
    fee_rate: Decimal,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    let cap_ms = BILL_CAP_INTERVALS * 1000 * i64::from(report.interval_s);
    for lease in leases.iter_mut().filter(|l| l.host_id == report.host_id) {
        let reported = report.leases.iter().find(|l| l.lease_id == lease.lease_id);
        if lease.state == "preempting" {
            // Billed up to the preemption; over once the host no longer runs the job (it
            // exited on SIGTERM, was killed at the deadline, or never started).
            bill(conn, lease, now, cap_ms, fee_rate, out).await?;
            if reported.is_none_or(|l| l.state != "running") {
                let exit_code = reported.and_then(|l| l.exit_code);
                settle(conn, lease, "preempted", exit_code, out).await?;
            }
            continue;
        }
        if lease.state == "pending" {
            // The host says it started the job but its acknowledgement has not come.
            if reported.is_some_and(|l| l.state != "cancelled") {
                start(conn, lease, now, out).await?;
            }
            continue;
        }
        let shows_gpus = lease.gpu_uuids.iter().all(|g| report.gpus.contains(g.as_str()));
        // No attested GPUs, no pay: the interval is skipped (billed_until still moves on).
        bill(conn, lease, now, if shows_gpus { cap_ms } else { 0 }, fee_rate, out).await?;
        if let Some(l) = reported.filter(|l| l.state == "exited") {
            settle(conn, lease, "exited", l.exit_code, out).await?;
        } else if now >= lease.max_end_at || reported.is_some_and(|l| l.state == "max_duration") {
            settle(conn, lease, "max_duration", None, out).await?;
        }
    }
    leases.retain(|l| ACTIVE_STATES.contains(&l.state.as_str()));
    Ok(())
}

/// Closes leases past their max end and leases of hosts silent for
/// [`LOST_AFTER_INTERVALS`]; bills nothing (no report, no pay). One transaction per lease,
/// so the sweeper never holds two hosts' locks at once. Returns how many closed.
pub(crate) async fn sweep(pool: &sqlx::PgPool, sla_rate: Decimal, out: &mut Outbox) -> Result<usize, ApiError> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "select l.lease_id, (h.last_report_at is null
                 or h.last_report_at < now() - make_interval(secs => h.report_interval_s * $1::float8)) as lost
         from leases l join hosts h using (host_id)
         where l.state in ('pending', 'running', 'preempting')
           and (l.max_end_at <= now()
                or (l.state = 'preempting' and l.preempt_deadline < now() - make_interval(secs => $2::float8))
                or h.last_report_at is null
                or h.last_report_at < now() - make_interval(secs => h.report_interval_s * $1::float8))
         order by l.lease_id limit 1000",
    )
    .bind(LOST_AFTER_INTERVALS as f64)
    .bind(PREEMPT_REPORT_SLACK_S as f64)
    .fetch_all(pool)
    .await?;
    let mut closed = 0;
    for (lease_id, lost) in rows {
        if let Some(events) = retrying("sweep_lease", || sweep_lease(pool, lease_id, lost, sla_rate)).await? {
            out.0.extend(events.0);
            closed += 1;
        }
    }
    Ok(closed)
}

/// Closes one lease the sweeper found, in its own transaction, if it is still lost or past
/// its end under the locks. Returns its events when it closed.
async fn sweep_lease(
    pool: &sqlx::PgPool,
    lease_id: Uuid,
    lost: bool,
    sla_rate: Decimal,
) -> Result<Option<Outbox>, ApiError> {
    let mut tx = pool.begin().await?;
    let Some(mut lease) = lock_host_and_lease(&mut tx, lease_id).await? else { return Ok(None) };
    // Decided on a snapshot: check again under the locks (a report may just have come).
    let still: Option<bool> = sqlx::query_scalar(
        "select (h.last_report_at is null
                 or h.last_report_at < now() - make_interval(secs => h.report_interval_s * $2::float8))
         from hosts h where h.host_id = $1",
    )
    .bind(lease.host_id)
    .bind(LOST_AFTER_INTERVALS as f64)
    .fetch_optional(&mut *tx)
    .await?;
    let lost = lost && still.unwrap_or(false);
    if !ACTIVE_STATES.contains(&lease.state.as_str()) {
        return Ok(None);
    }
    let mut events = Outbox::default();
    if lease.state == "preempting" {
        // Its notice ran out long enough ago, or its host went silent: the GPUs are the
        // on-demand lease's, whatever the host says later.
        let overdue =
            lease.preempt_deadline.is_some_and(|d| d < Utc::now() - chrono::Duration::seconds(PREEMPT_REPORT_SLACK_S));
        if !(lost || overdue || lease.max_end_at <= Utc::now()) {
            return Ok(None);
        }
        settle(&mut tx, &mut lease, "preempted", None, &mut events).await?;
        tx.commit().await?;
        return Ok(Some(events));
    }
    if !lost && lease.max_end_at > Utc::now() {
        return Ok(None);
    }
    if lost {
        super::sla::credit_lost_lease(&mut tx, &lease, sla_rate, &mut events).await?;
    }
    settle(&mut tx, &mut lease, if lost { "host_lost" } else { "max_duration" }, None, &mut events).await?;
    tx.commit().await?;
    Ok(Some(events))
}
