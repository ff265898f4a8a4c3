//! Leases as jobs (DESIGN section 7): placement on the winning host, the buyer's view of
//! the job and its logs, metering from signed reports and settlement.
//!
//! Placement transport: the agent long-polls `GET /api/v1/hosts/{id}/assignments?wait=`,
//! authenticated by a signature of the host key over the request (see
//! [`capex_core::report::host_request_message`]). Long-polling rather than a WebSocket
//! because the agent already speaks plain signed HTTP to the exchange (reports, spool), it
//! passes every proxy, a lost connection needs no reconnect state (the next poll returns
//! the host's full set of active leases, so nothing is missed), and the server wakes the
//! poll from the live feed's job events the moment a trade or cancel commits, so a new
//! lease reaches the agent within milliseconds.

pub mod attempts;
pub mod children;
pub mod host;
pub mod metering;
mod nonces;
pub mod reliability;
pub mod restart;
pub mod routes;
pub mod settle;
pub mod sla;

use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::feed::Feed;

pub use attempts::AttemptView;
pub(crate) use host::authenticate_host;
pub use restart::start_restarter;
pub use routes::{JobPage, JobView, LogLine, LogPage};

/// How accepted reports bill leases.
#[derive(Clone)]
pub struct Metering {
    /// The operator's share of each billed amount (`CAPEX_FEE_RATE`).
    pub fee_rate: Decimal,
    /// Where job and wallet events go after each committed batch.
    pub feed: Option<Feed>,
}

pub fn router() -> Router<crate::AppState> {
    Router::new()
        .route("/api/v1/jobs", get(routes::list_jobs))
        .route("/api/v1/jobs/{id}", get(routes::get_job))
        .route("/api/v1/jobs/{id}/logs", get(routes::get_logs))
        .route("/api/v1/jobs/{id}/telemetry", get(routes::get_telemetry))
        .route("/api/v1/jobs/{id}/cancel", post(routes::cancel_job))
        .route("/api/v1/jobs/{id}/release", post(routes::release_job))
        .route("/api/v1/jobs/{id}/children", post(children::place_child))
        .route("/api/v1/jobs/{id}/children/{child_id}", delete(children::cancel_child))
        .route("/api/v1/hosts/{host_id}/assignments", get(host::assignments))
        .route("/api/v1/hosts/{host_id}/reliability", get(reliability::get_reliability))
        .route("/api/v1/hosts/{host_id}/leases/{lease_id}/ack", post(host::ack))
        .route("/api/v1/hosts/{host_id}/leases/{lease_id}/logs", post(host::upload_logs))
}

/// The sweeper: closes leases past their max end and those of hosts that went silent.
/// Runs until `stop` is cancelled (a sweep under way finishes first) or the pool closes.
pub fn start_sweeper(
    pool: PgPool,
    feed: Feed,
    every: Duration,
    sla_rate: Decimal,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if pool.is_closed() {
                break;
            }
            let mut outbox = settle::Outbox::default();
            let swept = settle::sweep(&pool, sla_rate, &mut outbox).await;
            match swept {
                Ok(closed) => {
                    if closed > 0 {
                        tracing::info!(closed, "sweeper closed leases");
                    }
                    outbox.publish(&feed);
                }
                Err(err) => tracing::warn!(error = %err.detail, "lease sweep failed"),
            }
        }
    })
}
