//! SIGTERM while clients place orders: the server drains what is in flight, exits cleanly,
//! and every order it acknowledged is there after it starts again.

use std::sync::Arc;
use std::time::Duration;

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, ask_body, bid_body, live_host, server_env};
use capex_e2e::{ServerProcess, fresh_database_url};
use sqlx::PgPool;
use tokio::sync::Mutex;

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

    let acked: Arc<Mutex<Vec<(ApiUser, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..8_usize {
        let api = api.clone();
        let (user, host) = users[c % 4].clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000_u32 {
                let body = if (i as usize + c).is_multiple_of(4) {
                    ask_body(host, 1, &format!("4.{}", i % 9), "gtc")
                } else {
                    bid_body(1, "1", &format!("1.{}", i % 9), "gtc")
                };
                match api.place(&user, CLASS, &body).await {
                    Ok((201, view)) => {
                        acked.lock().await.push((user.clone(), view["order_id"].as_str().unwrap().to_string()))
                    }
                    Ok(_) => {}
                    Err(_) => return, // the server has stopped listening
                }
            }
        }));
    }
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
