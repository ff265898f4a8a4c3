//! The matcher's statements read the rows a batch touches, not the exchange: measured with
//! EXPLAIN ANALYZE on a matcher connection, with statistics taken while the tables were
//! nearly empty (as on a young exchange, before autovacuum catches up).

use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::matcher::matcher_connection;
use super::writes::{AskGpuChange, BatchWrites, OrderChange, WriteStatements};

pub(super) const CLASS: &str = "H100-80GB";
pub(super) const GPUS_PER_HOST: i64 = 64;

pub(super) async fn live_host(conn: &mut PgConnection, owner: Uuid) -> Uuid {
    let host_id = Uuid::now_v7();
    sqlx::query(
        "insert into hosts (host_id, owner_id, name, public_key, report_interval_s, last_report_at)
         values ($1, $2, 'h', $3, 3600, now())",
    )
    .bind(host_id)
    .bind(owner)
    .bind(host_id.as_bytes().repeat(2))
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into host_gpus (gpu_uuid, host_id, gpu_index, name, class, memory_total_mib, last_seen_at)
         select $1::text || '-' || i, $1, i, 'GPU', $2, 81920, now() from generate_series(0, $3 - 1) as i",
    )
    .bind(host_id)
    .bind(CLASS)
    .bind(GPUS_PER_HOST)
    .execute(&mut *conn)
    .await
    .unwrap();
    host_id
}

/// An open ask offering every GPU of `host_id`; returns the ask's id.
pub(super) async fn ask_binding_all_gpus(conn: &mut PgConnection, owner: Uuid, host_id: Uuid) -> Uuid {
    let order_id = Uuid::now_v7();
    sqlx::query(
        "insert into orders (order_id, class, side, owner_id, tif, gpus, gpus_remaining, price, host_id, available_until)
         values ($1, $2, 'ask', $3, 'gtc', $4, $4, 2, $5, now() + interval '1 day')",
    )
    .bind(order_id)
    .bind(CLASS)
    .bind(owner)
    .bind(GPUS_PER_HOST as i32)
    .bind(host_id)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("insert into ask_gpus (order_id, gpu_uuid) select $1, gpu_uuid from host_gpus where host_id = $2")
        .bind(order_id)
        .bind(host_id)
        .execute(&mut *conn)
        .await
        .unwrap();
    order_id
}

/// Rows the scans of `table` read over the whole plan (returned or filtered out, every loop).
fn rows_read(plan: &Value, table: &str) -> f64 {
    let scan = plan["Node Type"].as_str().is_some_and(|node| node.ends_with("Scan"));
    let own = if scan && plan["Relation Name"] == table {
        let field = |name: &str| plan[name].as_f64().unwrap_or(0.0);
        (field("Actual Rows") + field("Rows Removed by Filter") + field("Rows Removed by Index Recheck"))
            * field("Actual Loops")
    } else {
        0.0
    };
    let inner: f64 =
        plan["Plans"].as_array().map(|plans| plans.iter().map(|p| rows_read(p, table)).sum()).unwrap_or(0.0);
    own + inner
}

async fn explain(conn: &mut PgConnection, execute: &str) -> Value {
    let sql = format!("explain (analyze, format json) {execute}");
    let plan: sqlx::types::Json<Value> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await.unwrap();
    plan.0[0]["Plan"].clone()
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_batch_reads_only_the_rows_it_touches(pool: PgPool) {
    let mut setup = pool.acquire().await.unwrap();
    let owner = crate::auth::create_user(
        &mut setup,
        "provider@example.test",
        "password password".into(),
        &[capex_core::Role::Provider],
    )
    .await
    .unwrap()
    .user_id;
    // Statistics of a young exchange: one host, nothing offered yet.
    let free_host = live_host(&mut setup, owner).await;
    sqlx::raw_sql("analyze").execute(&mut *setup).await.unwrap();
    // Then the exchange grows: three more hosts, all of their GPUs bound to open asks.
    let mut asks = Vec::new();
    for _ in 0..3 {
        let host = live_host(&mut setup, owner).await;
        asks.push(ask_binding_all_gpus(&mut setup, owner, host).await);
    }
    let bound = 3.0 * GPUS_PER_HOST as f64;

    let conn = &mut matcher_connection(&pool).await.unwrap();
    // The checks for an ask on the free host: one probe of the bound GPUs per GPU of that
    // host (none is bound, so each probe reads nothing), and that host's GPUs only.
    let document = json!({"class": CLASS, "owners": [], "keys": [], "ask_hosts": [free_host]});
    let checks = explain(conn, &format!("execute matcher_checks('{document}')")).await;
    sqlx::raw_sql("rollback").execute(&mut *conn).await.unwrap();
    assert!(rows_read(&checks, "ask_gpus") < bound, "the checks read every bound GPU: {checks:#}");
    assert_eq!(rows_read(&checks, "host_gpus"), GPUS_PER_HOST as f64, "{checks:#}");

    // Writes that cancel one ask: its order and its GPUs by key, not every bound GPU.
    let gpus: Vec<String> = sqlx::query_scalar("select gpu_uuid from ask_gpus where order_id = $1")
        .bind(asks[0])
        .fetch_all(&mut *setup)
        .await
        .unwrap();
    let writes = BatchWrites {
        orders_changed: vec![OrderChange {
            order_id: asks[0],
            old_status: "open",
            old_remaining: GPUS_PER_HOST as i32,
            status: "cancelled",
            gpus_remaining: GPUS_PER_HOST as i32,
            closed_at: Some(chrono::Utc::now()),
        }],
        ask_gpus_changed: gpus
            .iter()
            .map(|gpu| AskGpuChange {
                order_id: asks[0],
                gpu_uuid: gpu.clone(),
                old_state: "bound",
                state: "released",
                lease_id: None,
            })
            .collect(),
        ..BatchWrites::default()
    };
    // Prepared the way a batch prepares it, then explained with the batch's document.
    sqlx::raw_sql("begin").execute(&mut *conn).await.unwrap();
    let mut prepared = WriteStatements::default();
    let statement = writes.statement_for(&mut prepared).unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.prepare.expect("a new connection prepares")))
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan = explain(conn, &statement.execute).await;
    sqlx::raw_sql("rollback").execute(&mut *conn).await.unwrap();
    assert_eq!(rows_read(&plan, "ask_gpus"), GPUS_PER_HOST as f64, "the writes read other GPUs: {plan:#}");
    assert_eq!(rows_read(&plan, "orders"), 1.0, "{plan:#}");
}
