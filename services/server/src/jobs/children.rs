//! Child bids: a running job (with its job token) or its owner places bids in any class,
//! paid from the owner's wallet within the `budget` the owner set on the job at submission.
//!
//! A child is a job of the same owner whose spec carries `parent_job_id` (stamped here,
//! never accepted from a request: `JobSpec` refuses unknown fields). What the children
//! use of the budget is what they hold and have spent: the balances of their orders' and
//! leases' escrows plus what their leases billed (their restarts included, as those carry
//! the stamp too). That sum only falls on its own (refunds); it grows only by a new child,
//! and new children of one parent are placed one at a time under a transaction-scoped
//! advisory lock on the parent, held from the check until the matcher has committed the
//! child's escrow. So two concurrent child bids can never both fit in the last of a budget.
//!
//! Way of a child bid: `place_child` (parse, budget check under the lock) → the market's
//! matcher (escrow from the owner's wallet, matching, trade, lease, in one batch) → reply.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use capex_core::Role;
use capex_ledger::retrying;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::settle::{self, Outbox};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, IdempotencyKey};
use crate::idempotency;
use crate::markets::matcher::{PlaceOutcome, PlaceRequest, Request};
use crate::markets::registry::reply;
use crate::markets::request::{self, NewOrder, OrderRequest};
use crate::markets::{OrderView, class};
use crate::params::ApiPath;
use crate::state::AppState;

/// Children listed under a job at most (a bound on the view; far more than a job places).
pub const CHILDREN_LISTED_MAX: i64 = 1000;

/// One child bid of a job, as the parent's view lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ChildView {
    /// The child's job id (its bid's order id): `GET /api/v1/jobs/{job_id}` once it traded.
    pub job_id: Uuid,
    pub class: String,
    /// The child bid's order status: open, filled, cancelled, ...
    pub status: String,
    pub gpus: i32,
    /// Limit price, credits per GPU-hour.
    #[schema(value_type = String)]
    pub price: Decimal,
    #[schema(value_type = Option<String>)]
    pub max_hours: Option<Decimal>,
    /// What the child holds in escrow now (its bid's and leases' escrows).
    #[schema(value_type = String)]
    pub held: Decimal,
    /// What the child's leases billed (gross).
    #[schema(value_type = String)]
    pub spent: Decimal,
    pub created_at: DateTime<Utc>,
}

/// The children of `parent` (oldest first), with what each holds and spent.
pub(crate) async fn children_of(conn: &mut PgConnection, parent: Uuid) -> Result<Vec<ChildView>, sqlx::Error> {
    let mut rows: Vec<ChildView> = sqlx::query_as(
        "select o.order_id as job_id, o.class, o.status, o.gpus, o.price, o.max_hours, o.created_at,
                coalesce((select sum(a.balance) from accounts a where a.kind = 'escrow' and a.ref_id in (
                    select order_id from orders where job_id = o.order_id
                    union all select lease_id from leases where job_id = o.order_id)), 0) as held,
                coalesce((select sum(l.cost) from leases l where l.job_id = o.order_id), 0) as spent
         from orders o
         where o.parent_job_id = $1 and o.order_id = o.job_id
         order by o.order_id limit $2",
    )
    .bind(parent)
    .bind(CHILDREN_LISTED_MAX)
    .fetch_all(conn)
    .await?;
    for row in &mut rows {
        row.price = row.price.normalize();
        row.max_hours = row.max_hours.map(|h| h.normalize());
        row.held = row.held.normalize();
        row.spent = row.spent.normalize();
    }
    Ok(rows)
}

/// What the children of `parent` hold and have spent, all together.
pub(crate) async fn budget_used(conn: &mut PgConnection, parent: Uuid) -> Result<Decimal, sqlx::Error> {
    let used: Decimal = sqlx::query_scalar(
        "select coalesce((select sum(a.balance) from accounts a where a.kind = 'escrow' and a.ref_id in (
                    select order_id from orders where parent_job_id = $1
                    union all select lease_id from leases where parent_job_id = $1)), 0)
              + coalesce((select sum(cost) from leases where parent_job_id = $1), 0)",
    )
    .bind(parent)
    .fetch_one(conn)
    .await?;
    Ok(used)
}

/// The budget the owner set on the job `job_id` (its submitting bid's spec), or `None`
/// when the job has none; `Err` 404 when `owner` has no such job.
async fn budget_of(conn: &mut PgConnection, owner: Uuid, job_id: Uuid) -> Result<Option<Decimal>, ApiError> {
    let job: Option<Option<Value>> =
        sqlx::query_scalar("select job from orders where order_id = $1 and owner_id = $2 and side = 'bid'")
            .bind(job_id)
            .bind(owner)
            .fetch_optional(&mut *conn)
            .await?;
    let job = job.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(job.and_then(|j| j["budget"].as_str().and_then(|b| b.parse::<Decimal>().ok())))
}

/// The job a children route acts on: the token's own job (any other id is 404), or for the
/// owner the job id in the path.
fn parent_of(caller: &Caller, id: &str) -> Result<Uuid, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found("job"))?;
    caller.require_job(id)?;
    Ok(match caller {
        Caller::Job(job) => job.job_id,
        Caller::User(_) => id,
    })
}

/// Serialises child placements of one parent (see the module docs).
async fn lock_parent(conn: &mut PgConnection, parent: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('capex/job-children/' || $1::text, 0))")
        .bind(parent)
        .execute(conn)
        .await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/children", tag = "jobs",
    params(("id" = Uuid, Path, description = "The parent job (a job token: its own job only)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key place one child")),
    request_body(content = Object, description = "A bid (as for POST /api/v1/markets/{class}/orders, side \"bid\") plus `class`, the GPU class of the child's market"),
    security(("bearer" = [])),
    responses((status = 201, body = OrderView, description = "The child bid, as the matcher left it (filled when an ask took it)"),
        (status = 400, body = Problem, description = "invalid_json, invalid_idempotency_key"),
        (status = 403, body = Problem, description = "forbidden: the owner lacks the buyer role"),
        (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 401, body = Problem, description = "invalid_job_token, job_token_revoked"),
        (status = 404, body = Problem, description = "not_found: no such job of the caller's; unknown_market"),
        (status = 422, body = Problem, description = "no_budget: the job has no budget; budget_exceeded: the children would hold and spend more than the budget; children_are_bids; validation errors"),
        (status = 503, body = Problem, description = "market_owned_elsewhere: with several server processes, a child bid is placed only by the process that matches its market (not forwarded yet); matcher_stopped")))]
pub(crate) async fn place_child(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    key: Option<IdempotencyKey>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let parent = parent_of(&caller, &id)?;
    let owner = caller.user_id();
    if let Caller::User(user) = &caller {
        user.require(Role::Buyer)?;
    }
    let mut conn = state.pool.acquire().await?;
    let Some(budget) = budget_of(&mut conn, owner, parent).await? else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_budget",
            "the job has no budget: set job.budget when submitting it to let it place child bids",
        ));
    };
    drop(conn);
    let Value::Object(mut fields) = body.clone() else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the body is a JSON object"));
    };
    let class = match fields.remove("class") {
        Some(Value::String(class)) => class,
        Some(_) => return Err(ApiError::invalid("class", "invalid_field", "class is a GPU class name")),
        None => return Err(ApiError::invalid("class", "missing_field", "class: the child's GPU class")),
    };
    class::require_known(&state.pool, &state.config.market_classes, &class).await?;
    let bytes = serde_json::to_vec(&Value::Object(fields)).map_err(ApiError::internal)?;
    let req: OrderRequest = crate::extract::parse_json(&bytes)?;
    let NewOrder::Bid(mut bid) = request::parse(&req, state.config.max_hours, Utc::now())? else {
        return Err(ApiError::invalid("side", "children_are_bids", "a job's children are bids (side \"bid\")"));
    };
    let order_id = Uuid::now_v7();
    crate::jobs::restart::stamp_first_attempt(&mut bid.job, order_id);
    if let Value::Object(map) = &mut bid.job {
        map.insert("parent_job_id".into(), json!(parent));
    }
    let hash = idempotency::request_hash(&format!("POST /api/v1/jobs/{parent}/children"), &body);
    if let Some(key) = &key
        && let Some(replayed) = idempotency::replay(&state.pool, owner, key, &hash).await?
    {
        return Ok(replayed);
    }
    let escrow = bid.escrow.as_decimal();
    // Held until the matcher has committed the child: no other child of this parent is
    // checked against the budget in between.
    let mut tx = state.pool.begin().await?;
    lock_parent(&mut tx, parent).await?;
    let used = budget_used(&mut tx, parent).await?;
    if used + escrow > budget {
        metrics::counter!("capex_child_bids_refused_total", "code" => "budget_exceeded").increment(1);
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "budget_exceeded",
            format!(
                "the job's children hold and spent {} of its budget {}; this bid would hold {} more",
                used.normalize(),
                budget.normalize(),
                escrow.normalize()
            ),
        ));
    }
    let handle = state.markets.handle(&class).await?;
    let (reply_tx, rx) = oneshot::channel();
    let place = PlaceRequest {
        order_id,
        owner,
        order: NewOrder::Bid(bid),
        idempotency: key.as_ref().map(|k| (k.0.clone(), hash.clone())),
        free_gpus: Vec::new(),
    };
    handle.send(Request::Place(place, reply_tx))?;
    let outcome = reply(rx).await;
    tx.commit().await?;
    match outcome? {
        PlaceOutcome::Placed(view) => Ok((StatusCode::CREATED, Json(*view)).into_response()),
        PlaceOutcome::Replay => {
            let key = key.ok_or_else(|| ApiError::internal("replay without a key"))?;
            idempotency::replay(&state.pool, owner, &key, &hash)
                .await?
                .ok_or_else(|| ApiError::internal("idempotency record missing after replay"))
        }
    }
}

#[utoipa::path(delete, path = "/api/v1/jobs/{id}/children/{child_id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "The parent job (a job token: its own job only)"),
        ("child_id" = Uuid, Path, description = "The child's job id (its bid's order id)")),
    security(("bearer" = [])),
    responses((status = 200, body = ChildView, description = "The child after the cancel: its open bid cancelled (escrow back), or its running lease settled as cancelled"),
        (status = 401, body = Problem, description = "invalid_job_token, job_token_revoked"),
        (status = 404, body = Problem, description = "not_found: no such child of this job"),
        (status = 409, body = Problem, description = "child_ended: nothing of the child is open or running")))]
pub(crate) async fn cancel_child(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, child)): ApiPath<(String, String)>,
) -> ApiResult<Json<ChildView>> {
    let parent = parent_of(&caller, &id)?;
    let owner = caller.user_id();
    let child: Uuid = child.parse().map_err(|_| ApiError::not_found("child"))?;
    let found: Option<(String, String)> = sqlx::query_as(
        "select class, status from orders
         where order_id = $1 and job_id = $1 and parent_job_id = $2 and owner_id = $3",
    )
    .bind(child)
    .bind(parent)
    .bind(owner)
    .fetch_optional(&state.pool)
    .await?;
    let Some((class, status)) = found else { return Err(ApiError::not_found("child")) };
    if status == "open" {
        let handle = state.markets.handle(&class).await?;
        let (tx, rx) = oneshot::channel();
        handle.send(Request::Cancel { order_id: child, owner, reply: tx })?;
        reply(rx).await?;
    } else {
        let lease: Option<Uuid> = sqlx::query_scalar(
            "select lease_id from leases where job_id = $1 and buyer_id = $2 and state in ('pending', 'running')
             order by attempt desc limit 1",
        )
        .bind(child)
        .bind(owner)
        .fetch_optional(&state.pool)
        .await?;
        let Some(lease_id) = lease else {
            return Err(ApiError::new(StatusCode::CONFLICT, "child_ended", "the child has nothing open or running"));
        };
        let outbox = retrying("cancel_child", || cancel_child_lease(&state.pool, owner, lease_id)).await?;
        outbox.publish(&state.feed);
    }
    let mut conn = state.pool.acquire().await?;
    let view = children_of(&mut conn, parent).await?.into_iter().find(|c| c.job_id == child);
    view.map(Json).ok_or_else(|| ApiError::not_found("child"))
}

async fn cancel_child_lease(pool: &sqlx::PgPool, owner: Uuid, lease_id: Uuid) -> ApiResult<Outbox> {
    let mut tx = pool.begin().await?;
    let mut lease = settle::lock_host_and_lease(&mut tx, lease_id)
        .await?
        .filter(|l| l.buyer_id == owner)
        .ok_or_else(|| ApiError::not_found("child"))?;
    let mut outbox = Outbox::default();
    if settle::ACTIVE_STATES.contains(&lease.state.as_str()) {
        settle::settle(&mut tx, &mut lease, "cancelled", None, &mut outbox).await?;
    }
    tx.commit().await?;
    Ok(outbox)
}
