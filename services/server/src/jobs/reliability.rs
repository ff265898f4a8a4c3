//! A host's reliability, from attested evidence only: its stored, signed report stream and
//! the outcomes of its leases. Public: aggregates only, nothing a provider would keep
//! private (no GPUs, no buyers, no earnings).
//!
//! Uptime over a window is [`crate::hosts::uptime`]'s one definition (the SQL function
//! `host_uptime_ppm`), the same the matcher grades asks with.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Problem};
use crate::hosts::uptime::{WINDOW_7D_S, WINDOW_24H_S, WINDOW_30D_S, fraction_of_ppm};
use crate::params::ApiPath;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReliabilityView {
    pub host_id: Uuid,
    pub report_interval_s: i32,
    /// Fractions of the window the host was attested up, 0 to 1 with 6 decimals.
    #[schema(value_type = String)]
    pub uptime_24h: Decimal,
    #[schema(value_type = String)]
    pub uptime_7d: Decimal,
    #[schema(value_type = String)]
    pub uptime_30d: Decimal,
    /// Leases that ended normally (exited, cancelled, max duration) and lost to silence.
    pub leases_completed: i64,
    pub leases_lost: i64,
    /// SLA credits the host's provider paid back to buyers for lost leases.
    #[schema(value_type = String)]
    pub sla_credits_paid: Decimal,
    /// Accepted reports in the last 30 days.
    pub reports_30d: i64,
    /// Proof-of-compute challenges of the host's GPUs decided in the last 30 days
    /// (docs/verification.md), passed and failed.
    pub challenges_passed_30d: i64,
    pub challenges_failed_30d: i64,
    pub computed_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    report_interval_s: i32,
    leases_completed: i64,
    leases_lost: i64,
    sla_credits_paid: Decimal,
    up_24h_ppm: i32,
    up_7d_ppm: i32,
    up_30d_ppm: i32,
    reports: i64,
    challenges_passed: i64,
    challenges_failed: i64,
    computed_at: DateTime<Utc>,
}

/// The host's reliability; `None` if there is no such host.
pub(crate) async fn reliability(pool: &sqlx::PgPool, host_id: Uuid) -> Result<Option<ReliabilityView>, ApiError> {
    let row: Option<Row> = sqlx::query_as(
        "select h.report_interval_s, h.leases_completed, h.leases_lost, h.sla_credits_paid,
                host_uptime_ppm(h.host_id, $2) as up_24h_ppm, host_uptime_ppm(h.host_id, $3) as up_7d_ppm,
                host_uptime_ppm(h.host_id, $4) as up_30d_ppm,
                (select count(*) from host_reports r
                 where r.host_id = h.host_id and r.measured_at >= now() - interval '30 days') as reports,
                (select count(*) from gpu_challenges c where c.host_id = h.host_id and c.state = 'passed'
                     and c.decided_at >= now() - interval '30 days') as challenges_passed,
                (select count(*) from gpu_challenges c where c.host_id = h.host_id and c.state = 'failed'
                     and c.decided_at >= now() - interval '30 days') as challenges_failed,
                now() as computed_at
         from hosts h where h.host_id = $1",
    )
    .bind(host_id)
    .bind(WINDOW_24H_S as f64)
    .bind(WINDOW_7D_S as f64)
    .bind(WINDOW_30D_S as f64)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let fraction = |ppm: i32| fraction_of_ppm(u32::try_from(ppm).unwrap_or(0));
    Ok(Some(ReliabilityView {
        host_id,
        report_interval_s: row.report_interval_s,
        uptime_24h: fraction(row.up_24h_ppm),
        uptime_7d: fraction(row.up_7d_ppm),
        uptime_30d: fraction(row.up_30d_ppm),
        leases_completed: row.leases_completed,
        leases_lost: row.leases_lost,
        sla_credits_paid: row.sla_credits_paid.normalize(),
        reports_30d: row.reports,
        challenges_passed_30d: row.challenges_passed,
        challenges_failed_30d: row.challenges_failed,
        computed_at: row.computed_at,
    }))
}

#[utoipa::path(get, path = "/api/v1/hosts/{host_id}/reliability", tag = "hosts",
    params(("host_id" = Uuid, Path, description = "The host")),
    responses((status = 200, body = ReliabilityView), (status = 404, body = Problem)))]
pub(crate) async fn get_reliability(
    State(state): State<AppState>,
    ApiPath(host_id): ApiPath<String>,
) -> ApiResult<Json<ReliabilityView>> {
    let host_id: Uuid = host_id.parse().map_err(|_| ApiError::not_found("host"))?;
    Ok(Json(reliability(&state.pool, host_id).await?.ok_or_else(|| ApiError::not_found("host"))?))
}
