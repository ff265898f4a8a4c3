//! The buyer's (and the provider's) view of jobs: a job is a lease and its job spec.
//! The buyer sees everything; the provider sees its hosts' jobs without the env values;
//! anyone else gets 404.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use capex_ledger::retrying;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::settle::{self, Outbox};
use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult, Problem};
use crate::hosts::views::{
    Telemetry, TelemetryQuery, TelemetryWindow, read_telemetry, telemetry_limit, telemetry_since,
};
use crate::params::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Jobs per page at most.
pub const JOBS_PAGE_MAX: i64 = 200;
/// Log lines per page at most.
pub const LOG_PAGE_MAX: i64 = 1000;
/// Longest a `follow` request waits for new lines.
pub const LOG_FOLLOW_S_MAX: u64 = 25;
const LOG_FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    /// The job's stable id: the order id of the bid that submitted it. Every attempt
    /// (lease) of the job has it.
    pub job_id: Uuid,
    /// The attempt this view's lease fields describe (the latest one the caller may see,
    /// unless the path named a lease).
    pub lease_id: Uuid,
    /// Its number: 1, then one more per restart.
    pub attempt: i32,
    /// This attempt's lease state: pending, running, preempting, exited, cancelled,
    /// host_lost, max_duration, preempted.
    pub state: String,
    /// The job's state: running, preempting (an on-demand buyer took this interruptible
    /// attempt's GPUs: the job got SIGTERM and is killed at `preempt_deadline`), restarting
    /// (the exchange is placing its next attempt, or that bid waits in the book), gave_up,
    /// or ended.
    pub job_state: String,
    /// `on_demand` or `interruptible` (the bid's priority).
    pub priority: String,
    /// A preempted attempt: when its GPUs went to the on-demand buyer (billing stopped) and
    /// when its job is killed.
    pub preempted_at: Option<DateTime<Utc>>,
    pub preempt_deadline: Option<DateTime<Utc>>,
    /// Why the job gave up or ended (attempts_exhausted, deadline, insufficient_funds,
    /// placement_refused, bid_cancelled, or the last attempt's end), when it has.
    pub end_reason: Option<String>,
    /// The exchange-placed bid of the next attempt while it is being placed or waits.
    pub next_bid_id: Option<Uuid>,
    /// The job's restart policy (`on`, `max_attempts`, `max_price`), if it has one.
    #[schema(value_type = Option<Object>)]
    pub restart: Option<Value>,
    /// Every attempt the caller may see (the buyer all of them), in order; filled in by
    /// `GET /api/v1/jobs/{id}` and cancel, empty in lists.
    pub attempts: Vec<super::AttemptView>,
    /// SLA credits paid to the buyer over the attempts shown.
    #[schema(value_type = String)]
    pub sla_credits: Decimal,
    pub class: String,
    pub host_id: Uuid,
    pub gpu_uuids: Vec<String>,
    pub gpus: i32,
    /// Trade price, credits per GPU-hour.
    pub price: Decimal,
    pub max_hours: Decimal,
    /// Time billed so far (only intervals an accepted report attested).
    pub billed_seconds: Decimal,
    /// Gross billed so far (provider's part plus the fee).
    pub cost_so_far: Decimal,
    pub fee_so_far: Decimal,
    /// What the lease escrow still holds (0 once settled: the rest went back to the buyer).
    pub escrow_left: Decimal,
    pub exit_code: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub max_end_at: DateTime<Utc>,
    pub command: Vec<String>,
    pub image: Option<String>,
    /// The job's environment (buyer only; the provider sees the names, values blanked).
    pub env: BTreeMap<String, String>,
    /// "buyer" or "provider": how the caller relates to the job.
    pub role: String,
    /// The job that placed this one as a child bid (with its job token), if any.
    pub parent_job_id: Option<Uuid>,
    /// Credits the job may spend on child bids (set at submission), if any.
    #[schema(value_type = Option<String>)]
    pub budget: Option<Decimal>,
    /// What its children hold and have spent of the budget; filled in by
    /// `GET /api/v1/jobs/{id}` (buyer only), 0 in lists.
    #[schema(value_type = String)]
    pub budget_used: Decimal,
    /// The job's child bids (buyer only), oldest first; filled in by `GET /api/v1/jobs/{id}`.
    pub children: Vec<super::children::ChildView>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    /// The attempt that printed the line.
    pub attempt: i32,
    pub seq: i64,
    /// stdout, stderr or system.
    pub stream: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    pub items: Vec<LogLine>,
    /// Pass as `after` to get the lines after these.
    pub next_after: i64,
    /// The job has ended: no more lines will come once these are read.
    pub ended: bool,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    lease_id: Uuid,
    state: String,
    class: String,
    host_id: Uuid,
    gpu_uuids: Vec<String>,
    gpus: i32,
    price: Decimal,
    max_hours: Decimal,
    billed_ms: i64,
    cost: Decimal,
    fee: Decimal,
    escrow_left: Decimal,
    exit_code: Option<i32>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    max_end_at: DateTime<Utc>,
    job: Value,
    buyer_id: Uuid,
    job_id: Option<Uuid>,
    attempt: Option<i32>,
    sla_credit: Decimal,
    priority: String,
    preempted_at: Option<DateTime<Utc>>,
    preempt_deadline: Option<DateTime<Utc>>,
    job_row_state: Option<String>,
    job_row_attempt: Option<i32>,
    next_state: Option<String>,
    next_order_id: Option<Uuid>,
    job_end_reason: Option<String>,
}

const JOB_SELECT: &str = "select l.lease_id, l.state, t.class, l.host_id, l.gpu_uuids, l.gpus, l.price, l.max_hours,
        l.billed_ms, l.cost, l.fee, coalesce(a.balance, 0) as escrow_left, l.exit_code, l.created_at, l.started_at,
        l.ended_at, l.max_end_at, l.job, l.buyer_id, l.job_id, l.attempt, l.sla_credit,
        l.priority, l.preempted_at, l.preempt_deadline,
        j.state as job_row_state, j.attempt as job_row_attempt, j.next_state, j.next_order_id,
        j.end_reason as job_end_reason
     from leases l join trades t using (trade_id)
     left join accounts a on a.kind = 'escrow' and a.ref_id = l.lease_id
     left join jobs j on j.job_id = l.job_id";

fn view_of(row: JobRow, caller: Uuid) -> JobView {
    let buyer = row.buyer_id == caller;
    let command = row.job["command"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let env = row.job["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (k.clone(), if buyer { v.as_str().unwrap_or_default().to_string() } else { String::new() })
                })
                .collect()
        })
        .unwrap_or_default();
    let attempt = row.attempt.unwrap_or(1);
    let job_row = row.job_row_state.as_deref().zip(row.job_row_attempt);
    let job_state = super::attempts::job_state(&row.state, attempt, job_row, row.next_state.as_deref());
    let end_reason = match job_state {
        "gave_up" => row.job_end_reason.clone(),
        "ended" => super::attempts::end_reason(&row.state, row.exit_code),
        _ => None,
    };
    JobView {
        job_id: row.job_id.unwrap_or(row.lease_id),
        lease_id: row.lease_id,
        attempt,
        job_state: job_state.into(),
        priority: row.priority,
        preempted_at: row.preempted_at,
        preempt_deadline: row.preempt_deadline,
        end_reason,
        next_bid_id: row
            .next_state
            .is_some()
            .then_some(row.next_order_id)
            .flatten()
            .filter(|_| buyer && job_state == "restarting"),
        restart: row.job.get("restart").cloned(),
        attempts: Vec::new(),
        sla_credits: row.sla_credit.normalize(),
        state: row.state,
        class: row.class,
        host_id: row.host_id,
        gpu_uuids: row.gpu_uuids,
        gpus: row.gpus,
        price: row.price.normalize(),
        max_hours: row.max_hours.normalize(),
        billed_seconds: (Decimal::from(row.billed_ms) / Decimal::from(1000)).normalize(),
        cost_so_far: row.cost.normalize(),
        fee_so_far: row.fee.normalize(),
        escrow_left: row.escrow_left.normalize(),
        exit_code: row.exit_code,
        created_at: row.created_at,
        started_at: row.started_at,
        ended_at: row.ended_at,
        max_end_at: row.max_end_at,
        command,
        image: row.job["image"].as_str().map(String::from),
        env,
        role: if buyer { "buyer" } else { "provider" }.into(),
        parent_job_id: row.job["parent_job_id"].as_str().and_then(|id| id.parse().ok()),
        budget: row.job["budget"].as_str().and_then(|b| b.parse::<Decimal>().ok()).map(|b| b.normalize()),
        budget_used: Decimal::ZERO,
        children: Vec::new(),
    }
}

fn parse_job_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("job"))
}

/// The view of the job or attempt `id` names (a job id: its latest attempt; a lease id:
/// that attempt), with the job's attempts the caller may see.
async fn load(state: &AppState, caller: Uuid, id: Uuid) -> Result<JobView, ApiError> {
    let lease_id =
        super::attempts::resolve(&state.pool, id, caller).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let row: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{JOB_SELECT} where l.lease_id = $1 and (l.buyer_id = $2 or l.provider_id = $2)"
    )))
    .bind(lease_id)
    .bind(caller)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("job"))?;
    let mut view = view_of(row, caller);
    view.attempts = super::attempts::attempts(&state.pool, view.job_id, caller).await?;
    view.sla_credits = view.attempts.iter().map(|a| a.sla_credit).sum::<Decimal>().normalize();
    if view.role == "buyer" {
        let mut conn = state.pool.acquire().await?;
        view.children = super::children::children_of(&mut conn, view.job_id).await?;
        if view.budget.is_some() || !view.children.is_empty() {
            view.budget_used = super::children::budget_used(&mut conn, view.job_id).await?.normalize();
        }
    }
    Ok(view)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// The last job id of the previous page.
    cursor: Option<Uuid>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = JobPage), (status = 401, body = Problem)))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    let limit = q.limit.unwrap_or(50).clamp(1, JOBS_PAGE_MAX);
    let mut rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{JOB_SELECT} where (l.buyer_id = $1 or l.provider_id = $1)
           and ($2::text is null or l.state = $2) and ($3::uuid is null or l.lease_id < $3)
         order by l.lease_id desc limit $4"
    )))
    .bind(auth.user_id)
    .bind(&q.state)
    .bind(q.cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.lease_id.to_string())
    } else {
        None
    };
    let items = rows.into_iter().map(|r| view_of(r, auth.user_id)).collect();
    Ok(Json(JobPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path, description = "Job (lease) id")),
    security(("bearer" = [])),
    description = "A login token or API key reads any job the caller bought or hosts; a running attempt's job token (CAPEX_JOB_TOKEN) reads its own job only (any other id is 404).",
    responses((status = 200, body = JobView),
        (status = 401, body = Problem, description = "invalid_job_token, job_token_revoked"),
        (status = 404, body = Problem)))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    let id = parse_job_id(&id)?;
    caller.require_job(id)?;
    Ok(Json(load(&state, caller.user_id(), id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// The attempt whose lines to read (default: the one the path names, for a job id its latest).
    #[param(minimum = 1)]
    attempt: Option<i32>,
    /// Lines after this sequence number (default: from the start).
    after: Option<i64>,
    /// Wait up to this many seconds (at most 25; `true` = 25) for new lines if there are none.
    #[param(pattern = "^(true|false|[0-9]{1,19})?$")]
    follow: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", params(("id" = Uuid, Path, description = "Job id"), LogQuery),
    security(("bearer" = [])), responses((status = 200, body = LogPage), (status = 404, body = Problem)))]
pub(crate) async fn get_logs(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<LogPage>> {
    let job_id = parse_job_id(&id)?;
    let follow_s = match q.follow.as_deref() {
        None | Some("false") | Some("0") | Some("") => 0,
        Some("true") => LOG_FOLLOW_S_MAX,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "follow is true, false or a number of seconds")
                .with_field("follow")
        })?,
    }
    .min(LOG_FOLLOW_S_MAX);
    let after = q.after.unwrap_or(-1);
    let limit = q.limit.unwrap_or(LOG_PAGE_MAX).clamp(1, LOG_PAGE_MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(follow_s);
    let first = load(&state, auth.user_id, job_id).await?;
    let lease_id = match q.attempt {
        None => first.lease_id,
        Some(n) => first.attempts.iter().find(|a| a.attempt == n).map(|a| a.lease_id).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_attempt", format!("the job has no attempt {n} you may see"))
                .with_field("attempt")
        })?,
    };
    loop {
        let (lease_state, attempt): (String, Option<i32>) =
            sqlx::query_as("select state, attempt from leases where lease_id = $1")
                .bind(lease_id)
                .fetch_one(&state.pool)
                .await?;
        let attempt = attempt.unwrap_or(1);
        let ended = !settle::ACTIVE_STATES.contains(&lease_state.as_str());
        let rows: Vec<(i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "select seq, stream, text, at from lease_logs where lease_id = $1 and seq > $2 order by seq limit $3",
        )
        .bind(lease_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&state.pool)
        .await?;
        let shutting_down = state.shutdown.is_cancelled();
        if !rows.is_empty() || ended || tokio::time::Instant::now() >= deadline || shutting_down {
            let next_after = rows.last().map(|r| r.0).unwrap_or(after);
            let items =
                rows.into_iter().map(|(seq, stream, text, at)| LogLine { attempt, seq, stream, text, at }).collect();
            return Ok(Json(LogPage { items, next_after, ended }));
        }
        // A shutdown answers at once with what is there; the client follows again.
        tokio::select! {
            _ = state.shutdown.cancelled() => {}
            _ = tokio::time::sleep(LOG_FOLLOW_POLL) => {}
        }
    }
}

/// The attested telemetry of a job's GPUs: the samples of exactly the lease's GPU UUIDs in
/// the host's signed reports measured while the lease existed (from the trade to its end,
/// or now while it runs). The buyer and the host's provider may read it; anyone else gets
/// the same 404 as an unknown job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/telemetry", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"), TelemetryQuery), security(("bearer" = [])),
    responses((status = 200, body = Telemetry), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_telemetry(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
) -> ApiResult<Json<Telemetry>> {
    let job_id = parse_job_id(&id)?;
    let limit = telemetry_limit(&query)?;
    let since = telemetry_since(&query)?;
    let job = load(&state, auth.user_id, job_id).await?;
    // `since` only narrows the lease's window (it pages through a long job), never widens it.
    let since = since.map_or(job.created_at, |since| since.max(job.created_at));
    let window = TelemetryWindow { since, until: job.ended_at, gpu_uuids: Some(&job.gpu_uuids), limit };
    let mut conn = state.pool.acquire().await?;
    Ok(Json(read_telemetry(&mut conn, job.host_id, &window).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "job_ended")))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    let job_id = parse_job_id(&id)?;
    let lease_id =
        super::attempts::resolve(&state.pool, job_id, auth.user_id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let outbox = retrying("cancel_job", || end_lease(&state.pool, auth.user_id, lease_id, "cancelled")).await?;
    outbox.publish(&state.feed);
    Ok(Json(load(&state, auth.user_id, job_id).await?))
}

/// Settles the buyer's lease as `end` (cancelled or released) in one transaction; its
/// events to publish.
async fn end_lease(pool: &sqlx::PgPool, buyer: Uuid, job_id: Uuid, end: &'static str) -> ApiResult<Outbox> {
    let mut tx = pool.begin().await?;
    let mut lease = settle::lock_host_and_lease(&mut tx, job_id)
        .await?
        .filter(|l| l.buyer_id == buyer)
        .ok_or_else(|| ApiError::not_found("job"))?;
    if !settle::ACTIVE_STATES.contains(&lease.state.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_ended",
            format!("the job already ended: {}", lease.state),
        ));
    }
    let mut outbox = Outbox::default();
    // Billing stops here: only what accepted reports attested so far is paid.
    settle::settle(&mut tx, &mut lease, end, None, &mut outbox).await?;
    tx.commit().await?;
    Ok(outbox)
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/release", tag = "jobs", params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    description = "Releases the job's GPUs early: its running attempt ends `released`, is billed only what accepted reports attested, and the rest of its escrow goes back to the buyer at once. No restart follows, whatever the job's policy. Meant for the job itself (its job token), the buyer may call it too.",
    responses((status = 200, body = JobView),
        (status = 401, body = Problem, description = "invalid_job_token, job_token_revoked"),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "job_ended: no attempt of the job is running")))]
pub(crate) async fn release_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    let id = parse_job_id(&id)?;
    caller.require_job(id)?;
    let owner = caller.user_id();
    let lease_id = match &caller {
        // The token's own attempt, never another one of the job.
        Caller::Job(job) => job.lease_id,
        Caller::User(_) => {
            super::attempts::resolve(&state.pool, id, owner).await?.ok_or_else(|| ApiError::not_found("job"))?
        }
    };
    let outbox = retrying("release_job", || end_lease(&state.pool, owner, lease_id, "released")).await?;
    outbox.publish(&state.feed);
    Ok(Json(load(&state, owner, id).await?))
}
