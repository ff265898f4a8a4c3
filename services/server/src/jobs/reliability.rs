//! A host's reliability, from attested evidence only: its stored, signed report stream and
//! the outcomes of its leases. Public: aggregates only, nothing a provider would keep
//! private (no GPUs, no buyers, no earnings).
//!
//! Uptime over a window: the time between consecutive accepted reports counts as up when
//! the gap is at most 2 report intervals, as down otherwise; the time since the last
//! report counts the same way up to now. The window starts at its length before now, or
//! when the host registered if that is later. Measured on the reports' signed
//! `measured_at`, one index scan over the last 30 days.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Problem};
use crate::params::ApiPath;
use crate::state::AppState;

/// A gap between reports longer than this many intervals counts as down.
pub const UP_GAP_INTERVALS: i64 = 2;

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
    pub computed_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    report_interval_s: i32,
    leases_completed: i64,
    leases_lost: i64,
    sla_credits_paid: Decimal,
    created_at: DateTime<Utc>,
    up_24h_s: Option<f64>,
    up_7d_s: Option<f64>,
    up_30d_s: Option<f64>,
    last_at: Option<DateTime<Utc>>,
    reports: i64,
}

/// `up_s` seconds up out of the window of `window_s` ending `now`, started no earlier than
/// `since`; the tail since `last` counts as up while it is short.
fn uptime(up_s: f64, window_s: f64, since: DateTime<Utc>, now: DateTime<Utc>, tail_s: f64) -> Decimal {
    let observed_s = window_s.min(((now - since).num_milliseconds() as f64 / 1000.0).max(0.0));
    if observed_s <= 0.0 {
        return Decimal::ZERO;
    }
    let ratio = ((up_s + tail_s) / observed_s).clamp(0.0, 1.0);
    // Ratios are reported, never summed into money: a float is exact enough here.
    Decimal::from_f64_retain(ratio)
        .unwrap_or(Decimal::ZERO)
        .round_dp_with_strategy(6, RoundingStrategy::ToZero)
        .normalize()
}

/// The host's reliability; `None` if there is no such host.
pub(crate) async fn reliability(pool: &sqlx::PgPool, host_id: Uuid) -> Result<Option<ReliabilityView>, ApiError> {
    let row: Option<Row> = sqlx::query_as(
        "with h as (select * from hosts where host_id = $1),
              r as (select measured_at as t, lag(measured_at) over (order by measured_at) as prev
                    from host_reports where host_id = $1 and measured_at >= now() - interval '30 days'),
              g as (select t, prev, extract(epoch from t - prev)::float8 as gap_s from r where prev is not null)
         select h.report_interval_s, h.leases_completed, h.leases_lost, h.sla_credits_paid, h.created_at,
                (select sum(gap_s) from g where gap_s <= h.report_interval_s * $2
                    and prev >= now() - interval '24 hours') as up_24h_s,
                (select sum(gap_s) from g where gap_s <= h.report_interval_s * $2
                    and prev >= now() - interval '7 days') as up_7d_s,
                (select sum(gap_s) from g where gap_s <= h.report_interval_s * $2) as up_30d_s,
                (select max(t) from r) as last_at,
                (select count(*) from r) as reports
         from h",
    )
    .bind(host_id)
    .bind(UP_GAP_INTERVALS as f64)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let now = Utc::now();
    let gap_max_s = (i64::from(row.report_interval_s) * UP_GAP_INTERVALS) as f64;
    let tail_s = row
        .last_at
        .map(|last| ((now - last).num_milliseconds() as f64 / 1000.0).max(0.0))
        .filter(|tail| *tail <= gap_max_s)
        .unwrap_or(0.0);
    let day_s = 86_400.0;
    Ok(Some(ReliabilityView {
        host_id,
        report_interval_s: row.report_interval_s,
        uptime_24h: uptime(row.up_24h_s.unwrap_or(0.0), day_s, row.created_at, now, tail_s),
        uptime_7d: uptime(row.up_7d_s.unwrap_or(0.0), 7.0 * day_s, row.created_at, now, tail_s),
        uptime_30d: uptime(row.up_30d_s.unwrap_or(0.0), 30.0 * day_s, row.created_at, now, tail_s),
        leases_completed: row.leases_completed,
        leases_lost: row.leases_lost,
        sla_credits_paid: row.sla_credits_paid.normalize(),
        reports_30d: row.reports,
        computed_at: now,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_attested_share_of_the_observed_window() {
        let now = Utc::now();
        let hour_ago = now - chrono::Duration::hours(1);
        // Registered an hour ago, up for half of it.
        assert_eq!(uptime(1800.0, 86_400.0, hour_ago, now, 0.0), Decimal::new(5, 1));
        // Older than the window: the whole window counts.
        let long_ago = now - chrono::Duration::days(60);
        assert_eq!(uptime(43_200.0, 86_400.0, long_ago, now, 0.0), Decimal::new(5, 1));
        assert_eq!(uptime(90_000.0, 86_400.0, long_ago, now, 10.0), Decimal::ONE);
        assert_eq!(uptime(0.0, 86_400.0, now, now, 0.0), Decimal::ZERO);
    }
}
