//! One matcher per market across processes.
//!
//! A process may run a market's matcher only while it holds that market's Postgres
//! advisory lock, taken on a dedicated connection that lives as long as the matcher. When
//! the owner dies its connection closes, Postgres releases the lock, and the next process
//! to try (every [`CLAIM_INTERVAL`], or on the next request) takes over and rebuilds the
//! book from the committed orders. Each takeover bumps the market's epoch in
//! `market_owners`; every batch checks it under a row lock, so a process that lost its lock
//! but not its life cannot commit again. Requests for a market owned elsewhere are
//! forwarded to the owner's advertised URL.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::ApiError;
use crate::state::AppState;

/// How often a process tries to take over markets whose owner is gone.
pub(crate) const CLAIM_INTERVAL: Duration = Duration::from_secs(1);
/// Header marking a request forwarded by another process, so it is never forwarded again.
pub(crate) const FORWARDED_HEADER: &str = "x-capex-forwarded";
/// Largest body forwarded to a market's owner (orders are small).
const FORWARD_BODY_BYTES_MAX: usize = 64 * 1024;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The market lock, held for as long as the matcher runs.
pub(crate) struct Claim {
    pub(crate) conn: PgConnection,
    pub(crate) epoch: i64,
}

/// Takes the market's advisory lock if no other process holds it, and records this process
/// as the owner with a new epoch.
pub(crate) async fn try_claim(pool: &PgPool, class: &str, owner_url: &str) -> Result<Option<Claim>, ApiError> {
    let mut conn = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtextextended('capex-market:' || $1, 0))")
        .bind(class)
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        let _ = conn.close().await;
        return Ok(None);
    }
    let epoch: i64 = sqlx::query_scalar(
        "insert into market_owners (class, owner_url) values ($1, $2)
         on conflict (class) do update set owner_url = excluded.owner_url, epoch = market_owners.epoch + 1,
             updated_at = now()
         returning epoch",
    )
    .bind(class)
    .bind(owner_url)
    .fetch_one(&mut conn)
    .await?;
    tracing::info!(class, epoch, owner_url, "market claimed");
    Ok(Some(Claim { conn, epoch }))
}

pub(crate) async fn owner_url(pool: &PgPool, class: &str) -> Result<Option<String>, ApiError> {
    Ok(sqlx::query_scalar("select owner_url from market_owners where class = $1")
        .bind(class)
        .fetch_optional(pool)
        .await?)
}

/// Lets a request through when this process owns (or can claim) its market; otherwise
/// forwards it to the owner and returns the owner's answer.
pub(crate) async fn route_to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Only the path is held across awaits: a request body is not Sync.
    let path = request.uri().path().to_string();
    match market_of(&state, &path).await {
        Ok(Some((class, order))) => match state.markets.ensure_local(&class).await {
            Ok(true) => {
                let mut request = request;
                if let Some(order) = order {
                    request.extensions_mut().insert(order);
                }
                next.run(request).await
            }
            Ok(false) => forward(&state, &class, request).await.unwrap_or_else(IntoResponse::into_response),
            Err(err) => err.into_response(),
        },
        // Not a market request (or an order id that names nothing): the handler decides.
        Ok(None) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// The order an order route names, as the routing read it; handed to the handler (request
/// extension) so it need not read it again.
#[derive(Debug, Clone)]
pub(crate) struct OrderRef {
    pub(crate) order_id: uuid::Uuid,
    pub(crate) class: String,
    pub(crate) owner_id: uuid::Uuid,
    pub(crate) status: String,
}

/// The market a request is about: from the path for market routes, from the order for
/// order routes (with the order).
async fn market_of(state: &AppState, path: &str) -> Result<Option<(String, Option<OrderRef>)>, ApiError> {
    if let Some(rest) = path.strip_prefix("/api/v1/markets/") {
        let Some(class) = rest.split('/').next().filter(|c| !c.is_empty()) else { return Ok(None) };
        // Refused before anything is claimed: a claim holds two Postgres connections for as
        // long as the process runs, so a made-up class must never get one.
        super::class::require_known(&state.pool, &state.config.market_classes, class).await?;
        return Ok(Some((class.to_string(), None)));
    }
    if let Some(id) = path.strip_prefix("/api/v1/orders/") {
        let Ok(order_id) = id.parse::<uuid::Uuid>() else { return Ok(None) };
        let row: Option<(String, uuid::Uuid, String)> =
            sqlx::query_as("select class, owner_id, status from orders where order_id = $1")
                .bind(order_id)
                .fetch_optional(&state.pool)
                .await?;
        return Ok(
            row.map(|(class, owner_id, status)| (class.clone(), Some(OrderRef { order_id, class, owner_id, status })))
        );
    }
    Ok(None)
}

async fn forward(state: &AppState, class: &str, request: Request) -> Result<Response, ApiError> {
    let moving =
        || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "market_moving", "this market is changing owner; retry");
    if request.headers().contains_key(FORWARDED_HEADER) {
        return Err(moving());
    }
    let owner = owner_url(&state.pool, class).await?.ok_or_else(moving)?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, FORWARD_BODY_BYTES_MAX)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body too large"))?;
    let url =
        format!("{}{}", owner.trim_end_matches('/'), parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut outgoing = state.forwarder.request(parts.method.clone(), &url).timeout(FORWARD_TIMEOUT).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing = outgoing.header(HeaderName::from_static(FORWARDED_HEADER), "1");
    let answer = outgoing.send().await.map_err(|err| {
        tracing::warn!(class, owner, error = %err, "market owner unreachable");
        moving()
    })?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(|_| moving())?;
    response.body(Body::from(bytes)).map_err(ApiError::internal)
}
