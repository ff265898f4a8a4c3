//! Managed jobs: when an attempt (a lease) of a job with a restart policy ends for a reason
//! the policy lists, the exchange places the job's next attempt itself.
//!
//! The way of a restart:
//! 1. [`after_attempt`], inside the transaction that settles the lease (sweeper for
//!    `host_lost`, report writer for `failed`), under the lease's account locks: decides the
//!    next bid (same GPUs and class, the time left to the job's deadline, the policy's
//!    `max_price`, every host that failed the job excluded), opens its escrow and funds it
//!    through the ledger from the lease's escrow (topped up from the wallet when the
//!    policy's price needs more), then records it in `jobs` as `placing`. Funding and the
//!    end of the attempt commit together, so the money never passes through the wallet.
//! 2. The restarter ([`start_restarter`]), woken by the settle's feed event (or its tick),
//!    hands the bid to the market's matcher — the single writer of the book — as a
//!    prefunded bid (`NewBid::restart`: the matcher takes the escrow as it is rather than
//!    holding it from the wallet). The bid then trades or waits like any other.
//! 3. A job gives up (`jobs.state = gave_up`, the rest of its escrow back in the wallet)
//!    when its attempts run out, its deadline leaves no time, the wallet cannot top the
//!    escrow up, the book refuses the bid, or the bid is still waiting at the deadline.

use std::time::Duration;

use axum::http::StatusCode;
use capex_book::{EXCLUDED_HOSTS_MAX, ExcludedHosts, HostId, Price};
use capex_core::Credits;
use capex_ledger::{AccountSet, TransferSpec, lock_accounts, open_escrow, post_transfers, release, wallet_account};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::settle::{LeaseRow, Outbox};
use crate::error::ApiError;
use crate::markets::matcher::{PlaceOutcome, PlaceRequest, Request};
use crate::markets::money::{MS_PER_HOUR, reserve};
use crate::markets::registry::reply;
use crate::markets::request::{NewBid, NewOrder, RestartBid, RestartOn, RestartPolicy, TimeInForce};
use crate::state::AppState;

/// How often the restarter looks for restart bids to place, waiting bids past their
/// deadline and placements left behind by a process that stopped.
pub const RESTARTER_TICK: Duration = Duration::from_millis(250);
/// A bid handed to a matcher this long ago without an answer recorded is looked at again.
pub const SENDING_STALE_S: f64 = 30.0;
/// Restart bids placed per restarter pass at most.
pub const RESTARTS_PER_PASS_MAX: i64 = 64;

/// The next attempt's bid as the restarter hands it to the matcher (`jobs.next_bid`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NextBid {
    pub(crate) class: String,
    pub(crate) gpus: u32,
    pub(crate) price: Decimal,
    pub(crate) max_hours: Decimal,
    pub(crate) duration_ms: i64,
    pub(crate) job: Value,
    pub(crate) escrow: Decimal,
    pub(crate) escrow_account: Uuid,
}

/// Why a job gave up.
pub(crate) const ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";
pub(crate) const DEADLINE: &str = "deadline";
pub(crate) const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
pub(crate) const PLACEMENT_REFUSED: &str = "placement_refused";
pub(crate) const BID_CANCELLED: &str = "bid_cancelled";

/// The restart policy stored in a job spec, if any.
pub(crate) fn policy_of(job: &Value) -> Option<RestartPolicy> {
    serde_json::from_value(job.get("restart")?.clone()).ok()
}

/// The hosts a stored job spec excludes.
fn excluded_of(job: &Value) -> Vec<Uuid> {
    job.get("excluded_hosts")
        .and_then(Value::as_array)
        .map(|hosts| hosts.iter().filter_map(|h| h.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whole thousandths of an hour (what a bid's `max_hours` may hold) in `ms`.
fn hours_in(ms: i64) -> Decimal {
    Decimal::new(ms.max(0) / (MS_PER_HOUR / 1000), 3)
}

/// Stamps a new bid's job spec with its job's identity: the job id is the bid's order id.
pub(crate) fn stamp_first_attempt(job: &mut Value, job_id: Uuid) {
    if let Value::Object(map) = job {
        map.insert("job_id".into(), json!(job_id));
        map.insert("attempt".into(), json!(1));
    }
}

/// What the job's row says, if it has one.
#[derive(sqlx::FromRow)]
struct JobRecord {
    attempt: i32,
    deadline: DateTime<Utc>,
}

/// Records the job's end (no next attempt) on its row, creating the row for a managed job.
async fn record_end(
    conn: &mut PgConnection,
    lease: &LeaseRow,
    job_id: Uuid,
    class: &str,
    state: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into jobs (job_id, owner_id, class, state, attempt, deadline, end_reason)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (job_id) do update set state = $4, end_reason = $7, next_state = null, next_bid = null,
             updated_at = now()",
    )
    .bind(job_id)
    .bind(lease.buyer_id)
    .bind(class)
    .bind(state)
    .bind(lease.attempt.unwrap_or(1))
    .bind(lease.max_end_at)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Decides and funds the next attempt of the lease's job after the lease ended in `state`
/// (with `exit_code`). Runs in the settling transaction, before the rest of the lease
/// escrow is refunded, with the lease's escrow and its buyer's wallet locked
/// ([`super::settle::lock_lease_accounts`]). A lease of a job without a restart policy,
/// or one that ended for a reason the policy does not list, changes nothing but the
/// record of a managed job's end.
pub(crate) async fn after_attempt(
    conn: &mut PgConnection,
    lease: &LeaseRow,
    state: &str,
    exit_code: Option<i32>,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    let (Some(job_id), Some(policy)) = (lease.job_id, policy_of(&lease.job)) else { return Ok(()) };
    let attempt = lease.attempt.unwrap_or(1);
    let record: Option<JobRecord> = sqlx::query_as("select attempt, deadline from jobs where job_id = $1 for update")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    if record.as_ref().is_some_and(|r| r.attempt > attempt) {
        // A later attempt exists already: this one's end changes nothing.
        return Ok(());
    }
    let class: String =
        sqlx::query_scalar("select t.class from leases l join trades t using (trade_id) where l.lease_id = $1")
            .bind(lease.lease_id)
            .fetch_one(&mut *conn)
            .await?;
    let reason = match (state, exit_code) {
        ("host_lost", _) => Some(RestartOn::HostLost),
        ("exited", code) if code != Some(0) => Some(RestartOn::Failed),
        ("preempted", _) => Some(RestartOn::Preempted),
        _ => None,
    };
    if !reason.is_some_and(|r| policy.on.contains(&r)) {
        record_end(conn, lease, job_id, &class, "ended", state).await?;
        return Ok(());
    }
    let max_attempts = policy.max_attempts.unwrap_or(crate::markets::request::MAX_ATTEMPTS_DEFAULT);
    let next = attempt + 1;
    let deadline = record.as_ref().map_or(lease.max_end_at, |r| r.deadline);
    let hours = hours_in((deadline - Utc::now()).num_milliseconds());
    let mut excluded: Vec<Uuid> = excluded_of(&lease.job);
    // A preempted host did not fail the job: an on-demand buyer outbid it there.
    if state != "preempted" && !excluded.contains(&lease.host_id) {
        excluded.push(lease.host_id);
    }
    let price = policy.max_price.as_ref().and_then(|p| p.as_str()?.parse::<Decimal>().ok()).unwrap_or(lease.price);
    let why = if i64::from(next) > max_attempts {
        Some(ATTEMPTS_EXHAUSTED)
    } else if hours <= Decimal::ZERO {
        Some(DEADLINE)
    } else if excluded.len() > EXCLUDED_HOSTS_MAX {
        Some(ATTEMPTS_EXHAUSTED)
    } else {
        None
    };
    if let Some(why) = why {
        return gave_up(conn, lease, job_id, &class, why, out).await;
    }
    let escrow = reserve(price, lease.gpus as u32, hours).ok_or_else(|| ApiError::internal("restart escrow"))?;
    let left: Decimal = sqlx::query_scalar("select balance from accounts where kind = 'escrow' and ref_id = $1")
        .bind(lease.lease_id)
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(Decimal::ZERO);
    let from_lease = left.min(escrow.as_decimal());
    let top_up = escrow.as_decimal() - from_lease;
    let wallet = wallet_account(conn, lease.buyer_id).await?;
    if top_up > Decimal::ZERO {
        let balance: Decimal = sqlx::query_scalar("select balance from accounts where account_id = $1")
            .bind(wallet)
            .fetch_one(&mut *conn)
            .await?;
        if balance < top_up {
            return gave_up(conn, lease, job_id, &class, INSUFFICIENT_FUNDS, out).await;
        }
    }
    let order_id = Uuid::now_v7();
    // A new row no other transaction can see: opening it takes no lock out of order.
    let account = open_escrow(conn, lease.buyer_id, order_id).await?;
    let lease_escrow: Uuid =
        sqlx::query_scalar("select account_id from accounts where kind = 'escrow' and ref_id = $1")
            .bind(lease.lease_id)
            .fetch_one(&mut *conn)
            .await?;
    let memo = format!("job {job_id} attempt {next} after lease {} {state}", lease.lease_id);
    let mut transfers = Vec::new();
    if from_lease > Decimal::ZERO {
        transfers.push(TransferSpec {
            from: lease_escrow,
            to: account,
            amount: Credits::from_db(from_lease),
            kind: "job_restart".into(),
            memo: memo.clone(),
            idempotency_key: Some(format!("job_restart:{}", lease.lease_id)),
        });
    }
    if top_up > Decimal::ZERO {
        transfers.push(TransferSpec {
            from: wallet,
            to: account,
            amount: Credits::from_db(top_up),
            kind: "escrow_hold".into(),
            memo,
            idempotency_key: Some(format!("job_restart_top_up:{}", lease.lease_id)),
        });
    }
    post_transfers(conn, &transfers).await?;
    let mut job = lease.job.clone();
    if let Value::Object(map) = &mut job {
        map.insert("attempt".into(), json!(next));
        map.insert("excluded_hosts".into(), json!(excluded));
    }
    let duration_ms =
        (hours * Decimal::from(MS_PER_HOUR)).trunc().try_into().map_err(|_| ApiError::internal("restart duration"))?;
    let bid = NextBid {
        class: class.clone(),
        gpus: lease.gpus as u32,
        price,
        max_hours: hours,
        duration_ms,
        job,
        escrow: escrow.as_decimal(),
        escrow_account: account,
    };
    sqlx::query(
        "insert into jobs (job_id, owner_id, class, state, attempt, deadline, next_order_id, next_state, next_bid)
         values ($1, $2, $3, 'active', $4, $5, $6, 'placing', $7)
         on conflict (job_id) do update set state = 'active', attempt = $4, next_order_id = $6,
             next_state = 'placing', next_bid = $7, end_reason = null, updated_at = now()",
    )
    .bind(job_id)
    .bind(lease.buyer_id)
    .bind(&class)
    .bind(next)
    .bind(deadline)
    .bind(order_id)
    .bind(serde_json::to_value(&bid).map_err(ApiError::internal)?)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("capex_job_restarts_total", "reason" => state.to_string()).increment(1);
    tracing::info!(%job_id, lease_id = %lease.lease_id, attempt = next, %order_id, "job restarting");
    out.push(
        "job",
        lease.buyer_id,
        json!({"job_id": job_id, "lease_id": lease.lease_id, "state": "restarting", "attempt": next,
               "next_bid_id": order_id, "restart": true}),
    );
    Ok(())
}

async fn gave_up(
    conn: &mut PgConnection,
    lease: &LeaseRow,
    job_id: Uuid,
    class: &str,
    why: &'static str,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    record_end(conn, lease, job_id, class, "gave_up", why).await?;
    metrics::counter!("capex_jobs_gave_up_total", "reason" => why).increment(1);
    tracing::info!(%job_id, lease_id = %lease.lease_id, reason = why, "job gave up");
    out.push("job", lease.buyer_id, json!({"job_id": job_id, "state": "gave_up", "end_reason": why}));
    Ok(())
}

/// Places the restart bids the settle transactions funded, until `stop` is cancelled.
pub fn start_restarter(state: AppState, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = state.feed.subscribe();
        let mut tick = tokio::time::interval(RESTARTER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                event = events.recv() => match event {
                    Ok(event) if event.kind == "job" && event.data["restart"] == true => {}
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
            if state.pool.is_closed() {
                break;
            }
            if let Err(err) = restart_pass(&state).await {
                tracing::warn!(error = %err.detail, "restarter pass failed");
            }
        }
    })
}

#[derive(sqlx::FromRow)]
struct Claimed {
    job_id: Uuid,
    owner_id: Uuid,
    next_order_id: Uuid,
    next_bid: Value,
}

/// One pass: tidy placements a stopped process left, place what is funded, follow the
/// bids that wait, and give up those past their deadline.
async fn restart_pass(state: &AppState) -> Result<(), ApiError> {
    let pool = &state.pool;
    // Handed to a matcher by a process that stopped before it recorded the answer.
    sqlx::query(
        "update jobs j set next_state = case when exists (select 1 from orders o where o.order_id = j.next_order_id)
                                           then 'waiting' else 'placing' end, updated_at = now()
         where next_state = 'sending' and updated_at < now() - make_interval(secs => $1)",
    )
    .bind(SENDING_STALE_S)
    .execute(pool)
    .await?;
    let claimed: Vec<Claimed> = sqlx::query_as(
        "update jobs set next_state = 'sending', updated_at = now()
         where job_id in (select job_id from jobs where next_state = 'placing' order by updated_at
                          limit $1 for update skip locked)
         returning job_id, owner_id, next_order_id, next_bid",
    )
    .bind(RESTARTS_PER_PASS_MAX)
    .fetch_all(pool)
    .await?;
    for job in claimed {
        if let Err(err) = place(state, &job).await {
            tracing::warn!(job_id = %job.job_id, error = %err.detail, "restart placement failed; retrying");
            set_next_state(state, job.job_id, "placing").await?;
        }
    }
    // Waiting bids that traded, or that somebody cancelled.
    sqlx::query(
        "update jobs j set next_state = null, next_bid = null, updated_at = now()
         from orders o where o.order_id = j.next_order_id and j.next_state = 'waiting' and o.status = 'filled'",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "update jobs j set next_state = null, next_bid = null, state = 'gave_up', end_reason = $1, updated_at = now()
         from orders o where o.order_id = j.next_order_id and j.next_state = 'waiting'
           and o.status in ('cancelled', 'expired')",
    )
    .bind(BID_CANCELLED)
    .execute(pool)
    .await?;
    // Still waiting at the deadline: cancelled through the matcher (which refunds it).
    let late: Vec<(Uuid, Uuid, Uuid, String)> = sqlx::query_as(
        "select job_id, owner_id, next_order_id, class from jobs
         where next_state = 'waiting' and deadline <= now() limit $1",
    )
    .bind(RESTARTS_PER_PASS_MAX)
    .fetch_all(pool)
    .await?;
    for (job_id, owner, order_id, class) in late {
        let Ok(handle) = state.markets.handle(&class).await else { continue };
        let (tx, rx) = tokio::sync::oneshot::channel();
        handle.send(Request::Cancel { order_id, owner, reply: tx })?;
        match reply(rx).await {
            Ok(_) => {
                sqlx::query(
                    "update jobs set next_state = null, next_bid = null, state = 'gave_up', end_reason = $2,
                         updated_at = now() where job_id = $1 and next_order_id = $3",
                )
                .bind(job_id)
                .bind(DEADLINE)
                .bind(order_id)
                .execute(pool)
                .await?;
                tracing::info!(%job_id, "restart bid not filled before the job's deadline; job gave up");
            }
            Err(err) => tracing::info!(%job_id, error = %err.detail, "cancelling a late restart bid"),
        }
    }
    Ok(())
}

async fn set_next_state(state: &AppState, job_id: Uuid, next: &str) -> Result<(), ApiError> {
    sqlx::query("update jobs set next_state = $2, updated_at = now() where job_id = $1")
        .bind(job_id)
        .bind(next)
        .execute(&state.pool)
        .await?;
    Ok(())
}

/// Hands one funded restart bid to its market's matcher and records the answer.
async fn place(state: &AppState, job: &Claimed) -> Result<(), ApiError> {
    let bid: NextBid = serde_json::from_value(job.next_bid.clone()).map_err(ApiError::internal)?;
    let handle = match state.markets.handle(&bid.class).await {
        Ok(handle) => handle,
        // The owning process's restarter places it.
        Err(err) if err.code == "market_owned_elsewhere" => return set_next_state(state, job.job_id, "placing").await,
        Err(err) => return Err(err),
    };
    let price = Price::from_decimal(bid.price).map_err(|err| ApiError::internal(format!("{err:?}")))?;
    let excluded: Vec<HostId> = excluded_of(&bid.job).into_iter().map(HostId).collect();
    // The restart requires what the job's first bid required of its GPUs and its host, at
    // the same priority.
    let first: Option<(Option<String>, Option<i32>, String)> =
        sqlx::query_as("select min_verification, min_uptime_7d_ppm, priority from orders where order_id = $1")
            .bind(job.job_id)
            .fetch_optional(&state.pool)
            .await?;
    let (min_verification, min_uptime_7d_ppm, priority) = first.unwrap_or_default();
    let priority = crate::markets::request::BidPriority::of_db(&priority);
    let min_verification = min_verification.and_then(|text| text.parse::<crate::verification::Level>().ok());
    let min_uptime_7d_ppm = min_uptime_7d_ppm.and_then(|ppm| u32::try_from(ppm).ok());
    let order = NewOrder::Bid(NewBid {
        min_verification,
        min_uptime_7d_ppm,
        priority,
        gpus: bid.gpus,
        price,
        max_hours: bid.max_hours,
        duration_ms: bid.duration_ms,
        tif: TimeInForce::Gtc,
        job: bid.job.clone(),
        escrow: Credits::from_db(bid.escrow),
        restart: Some(Box::new(RestartBid {
            excluded_hosts: ExcludedHosts::new(&excluded).unwrap_or(ExcludedHosts::NONE),
            prefunded: bid.escrow_account,
        })),
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let request =
        PlaceRequest { order_id: job.next_order_id, owner: job.owner_id, order, idempotency: None, free_gpus: vec![] };
    handle.send(Request::Place(request, tx))?;
    match reply(rx).await {
        Ok(PlaceOutcome::Placed(view)) => {
            let next = if view.status == "open" { Some("waiting") } else { None };
            sqlx::query(
                "update jobs set next_state = $2, next_bid = case when $2 is null then null else next_bid end,
                     updated_at = now() where job_id = $1",
            )
            .bind(job.job_id)
            .bind(next)
            .execute(&state.pool)
            .await?;
            Ok(())
        }
        Ok(PlaceOutcome::Replay) => Err(ApiError::internal("restart bid replayed")),
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => Err(err),
        Err(err) => {
            tracing::warn!(job_id = %job.job_id, error = %err.detail, "the book refused a restart bid; job gives up");
            refund_refused(state, job, &bid).await
        }
    }
}

/// A restart bid the book refused: its escrow goes back to the wallet, the job gives up.
async fn refund_refused(state: &AppState, job: &Claimed, bid: &NextBid) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let set = AccountSet::default().escrow_of(job.next_order_id).wallet_of(job.owner_id);
    let locked = lock_accounts(&mut tx, &set).await?;
    let held = locked.get(&bid.escrow_account).map(|(_, b)| *b).unwrap_or(Decimal::ZERO);
    if held > Decimal::ZERO {
        release(&mut tx, job.next_order_id, Credits::from_db(held), &format!("job {} restart refused", job.job_id))
            .await?;
    }
    sqlx::query(
        "update jobs set next_state = null, next_bid = null, state = 'gave_up', end_reason = $2, updated_at = now()
         where job_id = $1",
    )
    .bind(job.job_id)
    .bind(PLACEMENT_REFUSED)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_counted_in_whole_thousandths_of_an_hour() {
        assert_eq!(hours_in(3_600_000), Decimal::new(1000, 3));
        assert_eq!(hours_in(3_599), Decimal::ZERO);
        assert_eq!(hours_in(7_300), Decimal::new(2, 3));
        assert_eq!(hours_in(-5), Decimal::ZERO);
    }
}
