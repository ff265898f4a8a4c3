//! SIGTERM while clients place orders: the server drains what is in flight, exits cleanly,
//! and every order it acknowledged is there after it starts again.

use std::time::Duration;

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, live_host, server_env, spawn_order_load};
use capex_e2e::{ServerProcess, fresh_database_url};
use sqlx::PgPool;

const CLASS: &str = "H100-80GB";

#[tokio::test]
async fn sigterm_during_order_load_loses_no_acknowledged_order() {
    let database_url = fresh_database_url().unwrap();
    let env = server_env(&database_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = ServerProcess::start(&env).await.unwrap();
    let pool = PgPool::connect(&database_url).await.unwrap();
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await.unwrap();
    let mut users: Vec<(ApiUser, uuid::Uuid)> = Vec::new();
    for _ in 0..4 {
        let user = api.funded_user(&operator, "10000").await.unwrap();
        let host = live_host(&pool, user.user_id, CLASS, 16).await.unwrap();
        users.push((user, host));
    }

    let (tasks, acked) = spawn_order_load(&api, &users, CLASS, 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = server.terminate().unwrap();
    assert!(status.success(), "a graceful shutdown exits 0, got {status}");
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 10, "only {} orders acknowledged before SIGTERM", acked.len());

    let server = ServerProcess::start(&env).await.unwrap();
    let api = Api::new(&server.base_url);
    for (user, order_id) in &acked {
        let (status, view) = api.get(&format!("/api/v1/orders/{order_id}"), Some(user)).await.unwrap();
        assert_eq!(status, 200, "acknowledged order {order_id} missing after SIGTERM: {view}");
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(&pool).await.unwrap();
    assert!(stored as usize >= acked.len());
    eprintln!("shutdown: {} orders acknowledged before SIGTERM, all present", acked.len());
}
