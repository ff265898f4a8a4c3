//! Attested capacity of hosts, as the markets need it: liveness and idle GPUs come from
//! [`crate::hosts::capacity`]; what the book adds is that a GPU offered by an open ask or
//! used by a live lease is not free.

use sqlx::PgConnection;
use uuid::Uuid;

pub(crate) use crate::hosts::capacity::{LIVE_SQL as HOST_LIVE_SQL, attested_idle_gpus, host_is_live};

use crate::error::ApiError;

/// The SQL condition for "this GPU (aliased `g`) is taken": offered by an open ask or in a
/// lease that is not over.
pub(crate) const GPU_TAKEN_SQL: &str =
    "exists (select 1 from ask_gpus a where a.gpu_uuid = g.gpu_uuid and a.state = 'bound')
     or exists (select 1 from leases l where l.host_id = g.host_id
                and l.state in ('pending', 'starting', 'running') and g.gpu_uuid = any(l.gpu_uuids))";

/// The SQL condition for "GPU `g` of host `h` is attested idle" (as `attested_idle_gpus`).
pub(crate) const GPU_IDLE_SQL: &str = "g.last_seen_at >= h.last_report_at and g.foreign_processes = 0";

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
