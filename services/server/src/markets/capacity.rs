//! Attested capacity of hosts, as the markets need it.
//!
//! Stand-in for `hosts::capacity` (being written on the `agent` branch): when that module
//! is merged, `host_is_live` and `attested_idle_gpus` here are replaced by its functions of
//! the same names and meaning. The rule: a host is live while its status is `active` and a
//! valid report arrived within 3 report intervals; its idle GPUs are those whose latest
//! report shows no foreign process.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// The SQL condition for a live host, on a `hosts` row aliased `h`.
pub(crate) const HOST_LIVE_SQL: &str =
    "h.status = 'active' and h.last_report_at > now() - make_interval(secs => 3 * h.report_interval_s)";

/// The SQL condition for "this GPU (aliased `g`) is taken": offered by an open ask or in a
/// lease that is not over.
pub(crate) const GPU_TAKEN_SQL: &str =
    "exists (select 1 from ask_gpus a where a.gpu_uuid = g.gpu_uuid and a.state = 'bound')
     or exists (select 1 from leases l where l.host_id = g.host_id
                and l.state in ('pending', 'starting', 'running') and g.gpu_uuid = any(l.gpu_uuids))";

/// Whether the host is live (see the module docs).
pub(crate) async fn host_is_live(conn: &mut PgConnection, host_id: Uuid) -> Result<bool, ApiError> {
    let live: Option<bool> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select {HOST_LIVE_SQL} from hosts h where h.host_id = $1")))
            .bind(host_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(live.unwrap_or(false))
}

/// `(gpu_uuid, class)` of the host's GPUs that its latest report shows idle; empty when the
/// host is not live.
pub(crate) async fn attested_idle_gpus(
    conn: &mut PgConnection,
    host_id: Uuid,
) -> Result<Vec<(String, String)>, ApiError> {
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select g.gpu_uuid, g.class from host_gpus g join hosts h using (host_id)
         where g.host_id = $1 and g.foreign_processes = 0 and {HOST_LIVE_SQL}
         order by g.gpu_index"
    )))
    .bind(host_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// The host's idle GPUs of `class` that no open ask offers and no live lease uses, in GPU
/// index order: what a new ask on this host may offer.
pub(crate) async fn free_gpus(conn: &mut PgConnection, host_id: Uuid, class: &str) -> Result<Vec<String>, ApiError> {
    let idle = attested_idle_gpus(conn, host_id).await?;
    let candidates: Vec<String> = idle.into_iter().filter(|(_, c)| c == class).map(|(uuid, _)| uuid).collect();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let taken: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select g.gpu_uuid from host_gpus g where g.gpu_uuid = any($1) and ({GPU_TAKEN_SQL})"
    )))
    .bind(&candidates)
    .fetch_all(&mut *conn)
    .await?;
    Ok(candidates.into_iter().filter(|uuid| !taken.contains(uuid)).collect())
}
