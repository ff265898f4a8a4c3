//! Kill -9 the real server and start it again: the book it serves is the same, and no
//! acknowledged order is lost.

use std::time::Duration;

use capex_e2e::market::{
    Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, ask_body, bid_body, live_host, server_env, spawn_order_load,
};
use capex_e2e::{ServerProcess, fresh_database_url};
use serde_json::Value;
use sqlx::PgPool;

const CLASS: &str = "H100-80GB";

async fn book(api: &Api) -> Value {
    let (status, book) = api.get(&format!("/api/v1/markets/{CLASS}/book"), None).await.unwrap();
    assert_eq!(status, 200);
    book
}

#[tokio::test]
async fn book_and_acknowledged_orders_survive_kill_9() {
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

    // Phase 1, quiet: a book with several levels on both sides, some trades and cancels.
    let mut acked: Vec<(ApiUser, String, Value)> = Vec::new();
    for i in 0..24_u32 {
        let (user, host) = &users[(i % 4) as usize];
        let body = if i % 3 == 0 {
            ask_body(*host, 1 + i % 3, &format!("3.{}", i % 5), "gtc")
        } else {
            bid_body(1 + i % 2, "1.5", &format!("{}.{}", 1 + i % 3, i % 7), "gtc")
        };
        let (status, view) = api.place(user, CLASS, &body).await.unwrap();
        assert_eq!(status, 201, "{view}");
        acked.push((user.clone(), view["order_id"].as_str().unwrap().to_string(), view));
    }
    // A crossing bid and a cancel, so the database has trades and closed orders too.
    let (status, crossing) = api.place(&users[1].0, CLASS, &bid_body(1, "1", "9", "gtc")).await.unwrap();
    assert_eq!(status, 201);
    assert_eq!(crossing["status"], "filled");
    assert_eq!(api.cancel(&acked[1].0, &acked[1].1).await.unwrap(), 200);
    let before = book(&api).await;
    assert!(!before["bids"].as_array().unwrap().is_empty() && !before["asks"].as_array().unwrap().is_empty());

    server.kill();
    let mut server = ServerProcess::start(&env).await.unwrap();
    let api = Api::new(&server.base_url);
    assert_eq!(book(&api).await, before, "book after restart");

    // Phase 2, kill -9 while 8 clients are placing orders.
    let (tasks, acked_live) = spawn_order_load(&api, &users, CLASS, 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    for task in tasks {
        task.await.unwrap();
    }
    let acked_live = acked_live.lock().await.clone();
    assert!(acked_live.len() > 10, "only {} orders acknowledged before the kill", acked_live.len());

    let server = ServerProcess::start(&env).await.unwrap();
    let api = Api::new(&server.base_url);
    for (user, order_id) in acked.iter().map(|(u, id, _)| (u, id)).chain(acked_live.iter().map(|(u, id)| (u, id))) {
        let (status, view) = api.get(&format!("/api/v1/orders/{order_id}"), Some(user)).await.unwrap();
        assert_eq!(status, 200, "acknowledged order {order_id} missing after restart: {view}");
    }
    // The rebuilt book matches the open orders in the database, level by level.
    let levels: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select side, price::text, sum(gpus_remaining)::bigint, count(*) from orders
         where class = $1 and status = 'open' group by side, price
         order by side, case when side = 'bid' then -price else price end",
    )
    .bind(CLASS)
    .fetch_all(&pool)
    .await
    .unwrap();
    let served = book(&api).await;
    let mut from_db = (Vec::new(), Vec::new());
    for (side, price, gpus, orders) in levels {
        let price: rust_decimal::Decimal = price.parse().unwrap();
        let level = serde_json::json!({"price": price.normalize().to_string(), "gpus": gpus, "orders": orders});
        if side == "bid" { from_db.0.push(level) } else { from_db.1.push(level) }
    }
    assert_eq!(served["bids"], Value::Array(from_db.0));
    assert_eq!(served["asks"], Value::Array(from_db.1));
    eprintln!("restart: {} orders acknowledged during the kill run, all present", acked_live.len());
}
