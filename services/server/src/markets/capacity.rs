//! Attested capacity of hosts, as the markets need it: liveness and idle GPUs come from
//! [`crate::hosts::capacity`]; what the book adds is that a GPU offered by an open ask or
//! used by a live lease is not free.

use sqlx::PgPool;
use uuid::Uuid;

use super::checks::AskHost;
use crate::error::ApiError;
pub(crate) use crate::hosts::capacity::{GPU_IDLE_SQL, LIVE_SQL as HOST_LIVE_SQL};
use crate::hosts::uptime::UPTIME_7D_PPM_SQL;
use crate::verification::level::{GPU_LEVEL_SQL, Level};

/// The SQL condition for "this GPU (aliased `g`) is not taken": offered by no open ask and
/// in no lease that is not over, and not under a proof-of-compute challenge (a challenge
/// takes the whole GPU for its duration, and its time bound assumes nothing else runs).
///
/// The open-ask test must probe `ask_gpus_one_open_ask` once per GPU. Statistics taken
/// while `ask_gpus` was nearly empty make every bound GPU of the exchange look like a
/// handful of rows, and the planner then read them all on every call: hashed (in an `or`)
/// or materialized under an anti-join. `offset 0` keeps the subquery a per-row subplan,
/// where the probe is the only sensible path. Tested in `markets::plans`.
pub(crate) const GPU_UNTAKEN_SQL: &str =
    "not exists (select 1 from ask_gpus a where a.gpu_uuid = g.gpu_uuid and a.state = 'bound' offset 0)
     and not exists (select 1 from leases l where l.host_id = g.host_id
                and l.state in ('pending', 'running', 'preempting') and g.gpu_uuid = any(l.gpu_uuids))
     and not exists (select 1 from gpu_challenges c where c.gpu_uuid = g.gpu_uuid
                and c.state in ('issued', 'committed') offset 0)";

/// The SQL condition for "this lease (aliased `l`) is a live interruptible one": its GPUs
/// are still its own, and still offered on demand by its ask (a preempting one has handed
/// them over). The predicate of the index `leases_interruptible_live`.
pub(crate) const INTERRUPTIBLE_LIVE_SQL: &str = "l.priority = 'interruptible' and l.state in ('pending', 'running')";

/// Owner, liveness, blocked, free GPUs, their levels and the 7-day uptime in ppm.
type AskHostRow = (Uuid, bool, bool, Vec<String>, Vec<String>, i32);

/// A host as an ask's handler reads it: its owner and liveness, its free GPUs of `class`
/// in GPU index order, whether failed challenges block it from asking, and its 7-day
/// uptime in ppm (the ask's grade; computed here, outside the matcher); `None` if there
/// is no such host. One query, before the matcher, so that asks it refuses never wait for
/// a batch.
pub(crate) async fn ask_host(
    pool: &PgPool,
    host_id: Uuid,
    class: &str,
) -> Result<Option<(AskHost, (Vec<(String, Level)>, bool, u32))>, ApiError> {
    let sql = format!(
        "select h.owner_id, {HOST_LIVE_SQL} as live, h.challenge_blocked_at is not null as blocked,
                array(select g.gpu_uuid from host_gpus g
                      where g.host_id = h.host_id and g.class = $2 and {GPU_IDLE_SQL} and {GPU_UNTAKEN_SQL}
                      order by g.gpu_index) as free,
                array(select {GPU_LEVEL_SQL} from host_gpus g
                      where g.host_id = h.host_id and g.class = $2 and {GPU_IDLE_SQL} and {GPU_UNTAKEN_SQL}
                      order by g.gpu_index) as levels,
                {UPTIME_7D_PPM_SQL} as uptime_7d_ppm
         from hosts h where h.host_id = $1"
    );
    let row: Option<AskHostRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(host_id).bind(class).fetch_optional(pool).await?;
    let Some((owner_id, live, blocked, free, levels, uptime_7d_ppm)) = row else { return Ok(None) };
    let uptime_7d_ppm = u32::try_from(uptime_7d_ppm).unwrap_or(0).min(capex_book::PPM_MAX);
    let free = free
        .into_iter()
        .zip(levels)
        .map(|(gpu, level)| Ok((gpu, level.parse().map_err(|_| ApiError::internal("unknown GPU level"))?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Some((AskHost { owner_id, live }, (free, blocked, uptime_7d_ppm))))
}
