//! A job's attempts: each lease of a job is one attempt of it, numbered from 1. The job's
//! id is the order id of the bid that submitted it; `GET /api/v1/jobs/{id}` takes either
//! that id (the job, shown at its latest attempt) or a lease id (that attempt).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// One attempt of a job: a lease on one host.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1 for the bid's own lease, then one more per restart.
    pub attempt: i32,
    pub lease_id: Uuid,
    pub host_id: Uuid,
    /// The lease's state: pending, running, exited, cancelled, max_duration, host_lost.
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why the attempt ended (its final state; `failed` for a non-zero exit), or null.
    pub end_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// Seconds billed (only what accepted reports attested).
    #[schema(value_type = String)]
    pub billed: Decimal,
    /// Credits billed, gross.
    #[schema(value_type = String)]
    pub cost: Decimal,
    /// Credits paid back to the buyer because the host was lost (SLA credit).
    #[schema(value_type = String)]
    pub sla_credit: Decimal,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: Option<i32>,
    lease_id: Uuid,
    host_id: Uuid,
    state: String,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    billed_ms: i64,
    cost: Decimal,
    sla_credit: Decimal,
}

/// Why an attempt in `state` with `exit_code` ended, if it has.
pub(crate) fn end_reason(state: &str, exit_code: Option<i32>) -> Option<String> {
    match state {
        "pending" | "running" | "preempting" => None,
        "exited" if exit_code != Some(0) => Some("failed".into()),
        other => Some(other.into()),
    }
}

/// The attempts of `job_id` that `caller` may see (the buyer all, a provider those on its
/// hosts), in order.
pub(crate) async fn attempts(pool: &PgPool, job_id: Uuid, caller: Uuid) -> Result<Vec<AttemptView>, ApiError> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "select attempt, lease_id, host_id, state, started_at, ended_at, exit_code, billed_ms, cost, sla_credit
         from leases where job_id = $1 and (buyer_id = $2 or provider_id = $2) order by attempt, lease_id",
    )
    .bind(job_id)
    .bind(caller)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AttemptView {
            attempt: r.attempt.unwrap_or(1),
            lease_id: r.lease_id,
            host_id: r.host_id,
            end_reason: end_reason(&r.state, r.exit_code),
            state: r.state,
            started_at: r.started_at,
            ended_at: r.ended_at,
            exit_code: r.exit_code,
            billed: (Decimal::from(r.billed_ms) / Decimal::from(1000)).normalize(),
            cost: r.cost.normalize(),
            sla_credit: r.sla_credit.normalize(),
        })
        .collect())
}

/// The lease an id names for `caller`: the lease itself, or the latest attempt of the job
/// with that id that the caller may see.
pub(crate) async fn resolve(pool: &PgPool, id: Uuid, caller: Uuid) -> Result<Option<Uuid>, ApiError> {
    let lease: Option<Uuid> = sqlx::query_scalar(
        "select lease_id from leases where (lease_id = $1 or job_id = $1) and (buyer_id = $2 or provider_id = $2)
         order by (lease_id = $1) desc, attempt desc, lease_id desc limit 1",
    )
    .bind(id)
    .bind(caller)
    .fetch_optional(pool)
    .await?;
    Ok(lease)
}

/// The job-level state of a job, seen from one of its attempts (`attempt`, its lease in
/// `lease_state`) and its `jobs` row (state, last placed attempt, next bid's state):
/// running (an attempt is pending or running), preempting (the running attempt is
/// interruptible and an on-demand buyer took its GPUs: it was sent SIGTERM and is killed
/// at the end of its notice), restarting (the exchange is placing the next attempt, or its
/// bid waits in the book), gave_up, or ended.
pub(crate) fn job_state(
    lease_state: &str,
    attempt: i32,
    row: Option<(&str, i32)>,
    next_state: Option<&str>,
) -> &'static str {
    let active = ["pending", "running"].contains(&lease_state);
    match row {
        _ if lease_state == "preempting" => "preempting",
        Some(("gave_up", _)) => "gave_up",
        Some(("active", last)) if last > attempt => {
            if next_state.is_some() {
                "restarting"
            } else {
                "running"
            }
        }
        _ if active => "running",
        Some(("active", _)) if next_state.is_some() => "restarting",
        _ => "ended",
    }
}
