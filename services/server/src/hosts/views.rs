//! Reading hosts: the provider's list, one host with its GPUs and report health, and
//! per-GPU telemetry from the stored reports.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use capex_core::{ReportPayload, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::capacity::LIVE_SQL;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::params::ApiQuery;
use crate::state::AppState;

/// A host as its owner sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    pub host_id: Uuid,
    pub name: String,
    /// "active" or "disabled".
    pub status: String,
    /// base64 of the host's ed25519 public key.
    pub public_key: String,
    pub report_interval_s: i32,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub created_at: DateTime<Utc>,
    /// A valid report arrived within the last three report intervals.
    pub live: bool,
    pub last_report_at: Option<DateTime<Utc>>,
    /// Sequence number of the last accepted report (absent before the first).
    pub last_seq: Option<i64>,
    pub gpus: Vec<GpuView>,
    /// Reports accepted so far.
    pub reports_accepted: i64,
    /// Harmless repeats of the last accepted report.
    pub reports_duplicate: i64,
    /// Refused reports by code (`invalid_signature`, `replayed_sequence`, ...).
    pub reports_refused: BTreeMap<String, i64>,
    /// Reliability: leases that ended normally (exited, cancelled, max duration) and
    /// leases lost because the host stopped reporting.
    pub leases_completed: i64,
    pub leases_lost: i64,
    /// The probe the host registered with: nvml or simulated.
    pub backend: String,
    /// Set while failed challenges block the host from placing asks.
    pub challenge_blocked_at: Option<DateTime<Utc>>,
    /// Credits this host's leases paid its owner: the billed cost less the operator's fee,
    /// summed over every lease the host ran. The same credits arrive in the owner's wallet
    /// as `settlement` lines (`GET /api/v1/wallet` `earned` sums them over all hosts).
    #[schema(value_type = String, example = "0.078")]
    pub earnings: rust_decimal::Decimal,
}

/// One GPU and what the latest valid report said about it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpuView {
    pub uuid: String,
    pub index: i32,
    pub name: String,
    /// Market class, e.g. `H100-80GB`.
    pub class: String,
    pub memory_total_mib: i64,
    pub pci_bus_id: Option<String>,
    /// In the latest valid report of a live host. This says the host's signed report
    /// lists the GPU, not that the hardware is real: see `verification`.
    pub reporting: bool,
    /// What the exchange itself checked: simulated, reported, challenged or cc_attested,
    /// with the deadlines that hold the level (GET /api/v1/hosts/{id}/verification has
    /// the evidence).
    pub verification: crate::verification::views::GpuVerification,
    /// The latest report shows a compute process on it (a lease's or a foreign one).
    /// Says nothing of asks: see `state`.
    pub busy: bool,
    /// What the GPU is doing now: `idle`, `offered` (bound to the open ask `order_id`),
    /// `leased` (in the lease `lease_id`), `interruptible` (in the interruptible lease
    /// `lease_id`, still offered on demand by `order_id`), `preempting` (the interruptible
    /// lease `lease_id` was preempted and its job has its notice), `under_challenge`
    /// (`challenge_id`), `foreign_process` or `offline`. More states may be added; treat an unknown one as
    /// taken.
    pub state: super::gpu_state::GpuState,
    /// The open ask the GPU is bound to (state `offered`; also set while a foreign process
    /// or a challenge keeps that ask from selling it).
    pub order_id: Option<Uuid>,
    /// The lease that has the GPU (state `leased`); `GET /api/v1/jobs/{lease_id}` shows its job.
    pub lease_id: Option<Uuid>,
    /// The open proof-of-compute challenge on the GPU (state `under_challenge`).
    pub challenge_id: Option<Uuid>,
    pub utilization_pct: Option<i32>,
    pub memory_used_mib: Option<i64>,
    pub power_w: Option<f64>,
    pub energy_mj: Option<i64>,
    pub temperature_c: Option<i32>,
    /// Compute processes in the latest report, and how many of them are foreign (not a lease).
    pub processes: i32,
    pub foreign_processes: i32,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct HostRow {
    host_id: Uuid,
    owner_id: Uuid,
    name: String,
    status: String,
    public_key: Vec<u8>,
    report_interval_s: i32,
    driver_version: Option<String>,
    cuda_version: Option<String>,
    created_at: DateTime<Utc>,
    live: bool,
    last_report_at: Option<DateTime<Utc>>,
    last_seq: i64,
    leases_completed: i64,
    leases_lost: i64,
    backend: String,
    challenge_blocked_at: Option<DateTime<Utc>>,
    earnings: rust_decimal::Decimal,
}

#[derive(sqlx::FromRow)]
struct GpuRow {
    host_id: Uuid,
    gpu_uuid: String,
    gpu_index: i32,
    name: String,
    class: String,
    memory_total_mib: i64,
    pci_bus_id: Option<String>,
    in_latest: bool,
    utilization_pct: Option<i32>,
    memory_used_mib: Option<i64>,
    power_mw: Option<i64>,
    energy_mj: Option<i64>,
    temperature_c: Option<i32>,
    processes: i32,
    foreign_processes: i32,
    last_seen_at: Option<DateTime<Utc>>,
}

fn host_select() -> String {
    format!(
        "select h.host_id, h.owner_id, h.name, h.status, h.public_key, h.report_interval_s, h.driver_version,
                h.cuda_version, h.created_at, {LIVE_SQL} as live, h.last_report_at, h.last_seq,
                h.leases_completed, h.leases_lost, h.backend, h.challenge_blocked_at,
                (select coalesce(sum(l.cost - l.fee), 0) from leases l where l.host_id = h.host_id) as earnings
         from hosts h"
    )
}

/// Loads full views of these hosts, in the order given.
async fn load_views(conn: &mut sqlx::PgConnection, rows: Vec<HostRow>) -> Result<Vec<HostView>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|h| h.host_id).collect();
    let gpus: Vec<GpuRow> = sqlx::query_as(
        "select g.host_id, g.gpu_uuid, g.gpu_index, g.name, g.class, g.memory_total_mib, g.pci_bus_id,
                coalesce(g.last_seen_at >= h.last_report_at, false) as in_latest, g.utilization_pct,
                g.memory_used_mib, g.power_mw, g.energy_mj, g.temperature_c, g.processes, g.foreign_processes,
                g.last_seen_at
         from host_gpus g join hosts h using (host_id)
         where g.host_id = any($1) order by g.host_id, g.gpu_index",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let levels: HashMap<String, crate::verification::views::GpuVerification> =
        crate::verification::views::gpu_levels(&mut *conn, &ids)
            .await?
            .into_iter()
            .map(|(_, v)| (v.gpu_uuid.clone(), v))
            .collect();
    let activity = super::gpu_state::gpu_activity(&mut *conn, &ids).await?;
    let counts: Vec<(Uuid, String, i64)> =
        sqlx::query_as("select host_id, code, count from host_report_counts where host_id = any($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let views = rows
        .into_iter()
        .map(|h| {
            let gpus = gpus
                .iter()
                .filter(|g| g.host_id == h.host_id)
                .map(|g| {
                    let act = activity.get(&g.gpu_uuid).cloned().unwrap_or_default();
                    Ok(GpuView {
                        uuid: g.gpu_uuid.clone(),
                        index: g.gpu_index,
                        name: g.name.clone(),
                        class: g.class.clone(),
                        memory_total_mib: g.memory_total_mib,
                        pci_bus_id: g.pci_bus_id.clone(),
                        reporting: h.live && g.in_latest,
                        verification: levels
                            .get(&g.gpu_uuid)
                            .cloned()
                            .ok_or_else(|| ApiError::internal("GPU without a verification row"))?,
                        busy: g.processes > 0,
                        state: act.state(),
                        order_id: act.order_id,
                        lease_id: act.lease_id,
                        challenge_id: act.challenge_id,
                        utilization_pct: g.utilization_pct,
                        memory_used_mib: g.memory_used_mib,
                        power_w: g.power_mw.map(|mw| mw as f64 / 1000.0),
                        energy_mj: g.energy_mj,
                        temperature_c: g.temperature_c,
                        processes: g.processes,
                        foreign_processes: g.foreign_processes,
                        last_seen_at: g.last_seen_at,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let (mut reports_accepted, mut reports_duplicate) = (0, 0);
            let mut reports_refused = BTreeMap::new();
            for (_, code, n) in counts.iter().filter(|c| c.0 == h.host_id) {
                match code.as_str() {
                    "accepted" => reports_accepted = *n,
                    "duplicate" => reports_duplicate = *n,
                    _ => {
                        reports_refused.insert(code.clone(), *n);
                    }
                }
            }
            Ok(HostView {
                host_id: h.host_id,
                name: h.name,
                status: h.status,
                public_key: BASE64.encode(&h.public_key),
                report_interval_s: h.report_interval_s,
                driver_version: h.driver_version,
                cuda_version: h.cuda_version,
                created_at: h.created_at,
                live: h.live,
                last_report_at: h.last_report_at,
                last_seq: (h.last_seq >= 0).then_some(h.last_seq),
                gpus,
                reports_accepted,
                reports_duplicate,
                reports_refused,
                leases_completed: h.leases_completed,
                leases_lost: h.leases_lost,
                backend: h.backend,
                challenge_blocked_at: h.challenge_blocked_at,
                earnings: h.earnings.normalize(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(views)
}

/// One host's full view, whoever owns it (callers check ownership).
pub(crate) async fn load_host_view(conn: &mut sqlx::PgConnection, host_id: Uuid) -> Result<Option<HostView>, ApiError> {
    let sql = format!("{} where h.host_id = $1", host_select());
    let row: Option<HostRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(host_id).fetch_optional(&mut *conn).await?;
    let Some(row) = row else { return Ok(None) };
    Ok(load_views(conn, vec![row]).await?.pop())
}

/// The host if `auth` may read it (its owner, or an operator); otherwise "not found",
/// so nobody learns which host ids exist.
async fn owned_host(conn: &mut sqlx::PgConnection, auth: &AuthUser, host_id: Uuid) -> Result<HostRow, ApiError> {
    let sql = format!("{} where h.host_id = $1", host_select());
    let row: Option<HostRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(host_id).fetch_optional(&mut *conn).await?;
    match row {
        Some(row) if row.owner_id == auth.user_id || auth.has(Role::Operator) => Ok(row),
        _ => Err(ApiError::not_found("host")),
    }
}

fn parse_host_id(path: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    path.map(|Path(id)| id).map_err(|_| ApiError::not_found("host"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostListQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Hosts per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostPage {
    pub items: Vec<HostView>,
    pub next_cursor: Option<Uuid>,
}

pub const HOST_PAGE_MAX: i64 = 100;
pub const HOST_PAGE_DEFAULT: i64 = 50;

#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts", params(HostListQuery), security(("bearer" = [])),
    responses((status = 200, body = HostPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub(crate) async fn list_hosts(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(query): ApiQuery<HostListQuery>,
) -> ApiResult<Json<HostPage>> {
    let limit = query.limit.unwrap_or(HOST_PAGE_DEFAULT);
    if !(1..=HOST_PAGE_MAX).contains(&limit) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", "limit must be 1 to 100").with_field("limit")
        );
    }
    let mut conn = state.pool.acquire().await?;
    let sql = format!(
        "{} where h.owner_id = $1 and ($2::uuid is null or h.host_id > $2) order by h.host_id limit $3",
        host_select()
    );
    let mut rows: Vec<HostRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(auth.user_id)
        .bind(query.cursor)
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|h| h.host_id)
    } else {
        None
    };
    let items = load_views(&mut conn, rows).await?;
    Ok(Json(HostPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/hosts/{host_id}", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path)),
    responses((status = 200, body = HostView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_host(
    State(state): State<AppState>,
    auth: AuthUser,
    path: Result<Path<Uuid>, PathRejection>,
) -> ApiResult<Json<HostView>> {
    let host_id = parse_host_id(path)?;
    let mut conn = state.pool.acquire().await?;
    let row = owned_host(&mut conn, &auth, host_id).await?;
    let view = load_views(&mut conn, vec![row]).await?.pop().ok_or_else(|| ApiError::not_found("host"))?;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TelemetryQuery {
    /// Only samples measured after this time (RFC 3339). Default: the last hour.
    pub since: Option<DateTime<Utc>>,
    /// Most reports to read, 1 to 2000 (default 500).
    #[param(minimum = 1, maximum = 2000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TelemetryPoint {
    pub at: DateTime<Utc>,
    pub utilization_pct: u32,
    pub power_w: f64,
    pub temperature_c: i32,
    pub memory_used_mib: u64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpuSeries {
    pub uuid: String,
    pub samples: Vec<TelemetryPoint>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Telemetry {
    pub host_id: Uuid,
    /// One series per GPU, by UUID.
    pub gpus: Vec<GpuSeries>,
    /// Pass as `since` to read on when the page was full; absent when all was read.
    pub next_since: Option<DateTime<Utc>>,
}

pub const TELEMETRY_REPORTS_MAX: i64 = 2000;
pub const TELEMETRY_REPORTS_DEFAULT: i64 = 500;
/// Default look-back when `since` is absent.
pub const TELEMETRY_WINDOW_S: i64 = 3600;

/// Which stored reports a telemetry read covers.
pub(crate) struct TelemetryWindow<'a> {
    /// Only reports measured after this time.
    pub(crate) since: DateTime<Utc>,
    /// Only reports measured at or before this time (none: up to now).
    pub(crate) until: Option<DateTime<Utc>>,
    /// Only these GPUs (none: every GPU in the reports).
    pub(crate) gpu_uuids: Option<&'a [String]>,
    /// Most reports to read.
    pub(crate) limit: i64,
}

/// The report limit of a telemetry query, checked.
pub(crate) fn telemetry_limit(query: &TelemetryQuery) -> Result<i64, ApiError> {
    let limit = query.limit.unwrap_or(TELEMETRY_REPORTS_DEFAULT);
    if !(1..=TELEMETRY_REPORTS_MAX).contains(&limit) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", "limit must be 1 to 2000").with_field("limit")
        );
    }
    Ok(limit)
}

/// The `since` of a telemetry query, checked against the times a client may send.
pub(crate) fn telemetry_since(query: &TelemetryQuery) -> Result<Option<DateTime<Utc>>, ApiError> {
    query.since.map(|since| crate::input::check_time("since", since)).transpose()
}

/// Per-GPU series from a host's stored (verified) reports in `window`, oldest first. The
/// caller has checked that its user may read them.
pub(crate) async fn read_telemetry(
    conn: &mut sqlx::PgConnection,
    host_id: Uuid,
    window: &TelemetryWindow<'_>,
) -> Result<Telemetry, ApiError> {
    let rows: Vec<(DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
        "select measured_at, payload from host_reports
         where host_id = $1 and measured_at > $2 and ($3::timestamptz is null or measured_at <= $3)
         order by measured_at, seq limit $4",
    )
    .bind(host_id)
    .bind(window.since)
    .bind(window.until)
    .bind(window.limit)
    .fetch_all(&mut *conn)
    .await?;
    let next_since = if rows.len() as i64 == window.limit { rows.last().map(|r| r.0) } else { None };
    let mut series: BTreeMap<String, Vec<TelemetryPoint>> = BTreeMap::new();
    for (at, payload) in rows {
        // Stored payloads were verified and parsed on the way in; one that no longer
        // parses (an older schema) is skipped rather than failing the whole page.
        let Ok(report) = serde_json::from_slice::<ReportPayload>(&payload) else { continue };
        for gpu in report.gpus {
            if window.gpu_uuids.is_some_and(|wanted| !wanted.contains(&gpu.uuid)) {
                continue;
            }
            series.entry(gpu.uuid).or_default().push(TelemetryPoint {
                at,
                utilization_pct: gpu.utilization_pct,
                power_w: gpu.power_mw as f64 / 1000.0,
                temperature_c: gpu.temperature_c,
                memory_used_mib: gpu.memory_used_mib,
            });
        }
    }
    let gpus = series.into_iter().map(|(uuid, samples)| GpuSeries { uuid, samples }).collect();
    Ok(Telemetry { host_id, gpus, next_since })
}

#[utoipa::path(get, path = "/api/v1/hosts/{host_id}/telemetry", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), TelemetryQuery),
    responses((status = 200, body = Telemetry), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_telemetry(
    State(state): State<AppState>,
    auth: AuthUser,
    path: Result<Path<Uuid>, PathRejection>,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
) -> ApiResult<Json<Telemetry>> {
    let host_id = parse_host_id(path)?;
    let limit = telemetry_limit(&query)?;
    let since = telemetry_since(&query)?.unwrap_or_else(|| Utc::now() - chrono::Duration::seconds(TELEMETRY_WINDOW_S));
    let mut conn = state.pool.acquire().await?;
    owned_host(&mut conn, &auth, host_id).await?;
    let window = TelemetryWindow { since, until: None, gpu_uuids: None, limit };
    Ok(Json(read_telemetry(&mut conn, host_id, &window).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportListQuery {
    /// `next_cursor` of the previous page: only reports with a lower sequence number.
    pub cursor: Option<i64>,
    /// Reports per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// One accepted report as stored: the signed bytes, their signature and the parsed payload.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredReport {
    pub seq: i64,
    pub sent_at: DateTime<Utc>,
    pub measured_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// base64 of the exact payload bytes the host signed.
    pub payload: String,
    /// base64 of the signature over `capex/report/v1 || payload`; re-verifiable with the host's public key.
    pub signature: String,
    /// The payload parsed, for reading.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportPage {
    pub items: Vec<StoredReport>,
    pub next_cursor: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StoredReportRow {
    seq: i64,
    sent_at: DateTime<Utc>,
    measured_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

pub const REPORT_PAGE_MAX: i64 = 200;
pub const REPORT_PAGE_DEFAULT: i64 = 50;

#[utoipa::path(get, path = "/api/v1/hosts/{host_id}/reports", tag = "hosts", security(("bearer" = [])),
    params(("host_id" = Uuid, Path), ReportListQuery),
    responses((status = 200, body = ReportPage), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_reports(
    State(state): State<AppState>,
    auth: AuthUser,
    path: Result<Path<Uuid>, PathRejection>,
    ApiQuery(query): ApiQuery<ReportListQuery>,
) -> ApiResult<Json<ReportPage>> {
    let host_id = parse_host_id(path)?;
    let limit = query.limit.unwrap_or(REPORT_PAGE_DEFAULT);
    if !(1..=REPORT_PAGE_MAX).contains(&limit) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_limit", "limit must be 1 to 200").with_field("limit")
        );
    }
    let mut conn = state.pool.acquire().await?;
    owned_host(&mut conn, &auth, host_id).await?;
    let mut rows: Vec<StoredReportRow> = sqlx::query_as(
        "select seq, sent_at, measured_at, received_at, payload, signature from host_reports
         where host_id = $1 and ($2::int8 is null or seq < $2) order by seq desc limit $3",
    )
    .bind(host_id)
    .bind(query.cursor)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|r| StoredReport {
            seq: r.seq,
            sent_at: r.sent_at,
            measured_at: r.measured_at,
            received_at: r.received_at,
            report: serde_json::from_slice(&r.payload).unwrap_or(serde_json::Value::Null),
            payload: BASE64.encode(&r.payload),
            signature: BASE64.encode(&r.signature),
        })
        .collect();
    Ok(Json(ReportPage { items, next_cursor }))
}
