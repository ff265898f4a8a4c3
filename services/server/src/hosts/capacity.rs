//! Liveness and attested capacity: what the order book may offer, and the public
//! capacity summary.
//!
//! A host is live while it is active and a valid report arrived within
//! [`LIVENESS_INTERVALS`] of its report intervals (server clock). A GPU is attested when
//! it was in the host's latest valid report (`last_seen_at` equals the host's
//! `last_report_at`: both are set to the same `now()` in the transaction that accepts it).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;
use crate::state::AppState;

/// Report intervals a host may stay silent before it stops being live.
pub const LIVENESS_INTERVALS: i32 = 3;

/// SQL truth value "host `h` is live". Keep `LIVENESS_INTERVALS` (3) in step.
pub(crate) const LIVE_SQL: &str = "(h.status = 'active' and h.last_report_at is not null \
     and h.last_report_at > now() - make_interval(secs => 3 * h.report_interval_s))";

/// SQL truth value "GPU `g` of host `h` is attested idle": in the host's latest valid
/// report, running no foreign process. The order book also excludes GPUs bound to asks
/// and leases.
pub(crate) const GPU_IDLE_SQL: &str = "g.last_seen_at >= h.last_report_at and g.foreign_processes = 0";

/// Attested live GPUs of one class.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassCapacity {
    pub class: String,
    /// Live hosts with at least one attested GPU of this class.
    pub live_hosts: i64,
    /// Attested GPUs running no process at all.
    pub free_gpus: i64,
    /// Attested GPUs running at least one process (a lease's or a foreign one).
    pub busy_gpus: i64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    pub items: Vec<ClassCapacity>,
}

#[utoipa::path(get, path = "/api/v1/capacity", tag = "hosts",
    responses((status = 200, body = Capacity, description = "Attested live GPUs per class")))]
pub(crate) async fn get_capacity(State(state): State<AppState>) -> ApiResult<Json<Capacity>> {
    let sql = format!(
        "select g.class, count(distinct h.host_id) as live_hosts,
                count(*) filter (where g.processes = 0) as free_gpus,
                count(*) filter (where g.processes > 0) as busy_gpus
         from host_gpus g join hosts h using (host_id)
         where {LIVE_SQL} and g.last_seen_at >= h.last_report_at
         group by g.class order by g.class"
    );
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&state.pool).await?;
    let items = rows
        .into_iter()
        .map(|(class, live_hosts, free_gpus, busy_gpus)| ClassCapacity { class, live_hosts, free_gpus, busy_gpus })
        .collect();
    Ok(Json(Capacity { items }))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::error::ApiError;

    #[test]
    fn live_sql_uses_the_liveness_constant() {
        assert!(LIVE_SQL.contains(&format!("{LIVENESS_INTERVALS} * h.report_interval_s")));
    }

    async fn host_with_gpus(conn: &mut sqlx::PgConnection) -> Uuid {
        let email = format!("{}@example.test", Uuid::now_v7().simple());
        let owner = crate::auth::create_user(conn, &email, "password password".into(), &[capex_core::Role::Provider])
            .await
            .unwrap();
        let host_id = Uuid::now_v7();
        sqlx::query(
            "insert into hosts (host_id, owner_id, name, public_key, report_interval_s) values ($1, $2, 'h', $3, 10)",
        )
        .bind(host_id)
        .bind(owner.user_id)
        .bind(host_id.as_bytes().repeat(2))
        .execute(&mut *conn)
        .await
        .unwrap();
        for (index, class) in [(0, "H100-80GB"), (1, "H100-80GB"), (2, "L4-24GB")] {
            sqlx::query(
                "insert into host_gpus (gpu_uuid, host_id, gpu_index, name, class, memory_total_mib)
                 values ($1, $2, $3, 'gpu', $4, 1)",
            )
            .bind(format!("GPU-{host_id}-{index}"))
            .bind(host_id)
            .bind(index)
            .bind(class)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        host_id
    }

    async fn host_is_live(conn: &mut sqlx::PgConnection, host_id: Uuid) -> Result<bool, ApiError> {
        let sql = format!("select {LIVE_SQL} from hosts h where h.host_id = $1");
        let live: Option<bool> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(host_id).fetch_optional(conn).await?;
        Ok(live.unwrap_or(false))
    }

    /// The host's live, attested idle GPUs as `(gpu_uuid, class)` in index order.
    async fn attested_idle_gpus(
        conn: &mut sqlx::PgConnection,
        host_id: Uuid,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let sql = format!(
            "select g.gpu_uuid, g.class from host_gpus g join hosts h using (host_id)
             where h.host_id = $1 and {LIVE_SQL} and {GPU_IDLE_SQL} order by g.gpu_index"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(host_id).fetch_all(conn).await?)
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn attested_idle_gpus_follow_liveness_and_foreign_processes(pool: sqlx::PgPool) {
        let mut conn = pool.acquire().await.unwrap();
        let host_id = host_with_gpus(&mut conn).await;
        // Registered but never reported: not live, nothing attested.
        assert!(!host_is_live(&mut conn, host_id).await.unwrap());
        assert_eq!(attested_idle_gpus(&mut conn, host_id).await.unwrap(), vec![]);

        // A report just now covered GPUs 0 and 1; GPU 1 runs a foreign process.
        sqlx::query("update hosts set last_report_at = now() where host_id = $1")
            .bind(host_id)
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query(
            "update host_gpus set last_seen_at = now(), foreign_processes = case when gpu_index = 1 then 1 else 0 end,
                    processes = case when gpu_index = 1 then 1 else 0 end
             where host_id = $1 and gpu_index < 2",
        )
        .bind(host_id)
        .execute(&mut *conn)
        .await
        .unwrap();
        assert!(host_is_live(&mut conn, host_id).await.unwrap());
        assert_eq!(
            attested_idle_gpus(&mut conn, host_id).await.unwrap(),
            vec![(format!("GPU-{host_id}-0"), "H100-80GB".to_string())]
        );

        // Silent for more than three intervals: not live, nothing attested.
        sqlx::query("update hosts set last_report_at = now() - interval '31 seconds' where host_id = $1")
            .bind(host_id)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert!(!host_is_live(&mut conn, host_id).await.unwrap());
        assert_eq!(attested_idle_gpus(&mut conn, host_id).await.unwrap(), vec![]);

        // Live again but disabled: nothing either.
        sqlx::query("update hosts set last_report_at = now(), status = 'disabled' where host_id = $1")
            .bind(host_id)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert!(!host_is_live(&mut conn, host_id).await.unwrap());
        assert_eq!(attested_idle_gpus(&mut conn, host_id).await.unwrap(), vec![]);
        assert!(!host_is_live(&mut conn, Uuid::now_v7()).await.unwrap(), "unknown host");
    }
}
