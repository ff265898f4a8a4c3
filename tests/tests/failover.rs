//! Two capex-server processes on one database: each market is matched by exactly one of
//! them (the other forwards to it), and when the owner dies the other takes the market
//! over within seconds, with no acknowledged order lost.

use std::time::{Duration, Instant};

use capex_e2e::market::{Api, OPERATOR_EMAIL, OPERATOR_PASSWORD, bid_body, server_env};
use capex_e2e::{ServerProcess, fresh_database_url};
use sqlx::PgPool;

async fn owners(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("select class, owner_url, epoch from market_owners order by class").fetch_all(pool).await.unwrap()
}

#[tokio::test]
async fn each_market_has_one_owner_and_the_survivor_takes_over() {
    let database_url = fresh_database_url().unwrap();
    let env = server_env(&database_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a = ServerProcess::start(&env).await.unwrap();
    let b = ServerProcess::start(&env).await.unwrap();
    let pool = PgPool::connect(&database_url).await.unwrap();
    let (api_a, api_b) = (Api::new(&a.base_url), Api::new(&b.base_url));
    let operator = api_a.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await.unwrap();
    let buyer = api_a.funded_user(&operator, "10000").await.unwrap();

    // The first order of a market makes the receiving process its owner.
    let mut acked = Vec::new();
    let (status, h100) = api_a.place(&buyer, "H100-80GB", &bid_body(1, "1", "2.5", "gtc")).await.unwrap();
    assert_eq!(status, 201, "{h100}");
    acked.push(h100["order_id"].as_str().unwrap().to_string());
    let (status, a100) = api_b.place(&buyer, "A100-80GB", &bid_body(1, "1", "1.5", "gtc")).await.unwrap();
    assert_eq!(status, 201, "{a100}");
    acked.push(a100["order_id"].as_str().unwrap().to_string());
    let before = owners(&pool).await;
    assert_eq!(
        before.iter().map(|(c, url, _)| (c.as_str(), url.as_str())).collect::<Vec<_>>(),
        [("A100-80GB", b.base_url.as_str()), ("H100-80GB", a.base_url.as_str())]
    );

    // Orders sent to the other process are forwarded to the owner: ownership does not move.
    for i in 0..5 {
        let (status, view) =
            api_b.place(&buyer, "H100-80GB", &bid_body(1, "1", &format!("2.{i}"), "gtc")).await.unwrap();
        assert_eq!(status, 201, "{view}");
        acked.push(view["order_id"].as_str().unwrap().to_string());
        let (status, view) =
            api_a.place(&buyer, "A100-80GB", &bid_body(1, "1", &format!("1.{i}"), "gtc")).await.unwrap();
        assert_eq!(status, 201, "{view}");
        acked.push(view["order_id"].as_str().unwrap().to_string());
    }
    assert_eq!(owners(&pool).await, before, "forwarding never moves a market");
    let book_a = api_a.get("/api/v1/markets/H100-80GB/book", None).await.unwrap();
    let book_b = api_b.get("/api/v1/markets/H100-80GB/book", None).await.unwrap();
    assert_eq!(book_a, book_b, "both processes serve the owner's book");
    assert_eq!(book_a.1["bids"].as_array().unwrap().iter().map(|l| l["orders"].as_i64().unwrap()).sum::<i64>(), 6);

    // The owner of H100 dies; the survivor takes the market over and keeps trading.
    a.kill();
    let killed = Instant::now();
    let took_over = loop {
        let now = owners(&pool).await;
        if now.iter().all(|(_, url, _)| url == &b.base_url) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no takeover within 10 s: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("failover: H100-80GB taken over {took_over:?} after the owner was killed");
    let h100_epoch = owners(&pool).await.into_iter().find(|(c, ..)| c == "H100-80GB").unwrap().2;
    assert!(h100_epoch > before.iter().find(|(c, ..)| c == "H100-80GB").unwrap().2, "takeover bumps the epoch");

    let (status, view) = api_b.place(&buyer, "H100-80GB", &bid_body(1, "1", "2.9", "gtc")).await.unwrap();
    assert_eq!(status, 201, "{view}");
    acked.push(view["order_id"].as_str().unwrap().to_string());
    for order_id in &acked {
        let (status, view) = api_b.get(&format!("/api/v1/orders/{order_id}"), Some(&buyer)).await.unwrap();
        assert_eq!(status, 200, "acknowledged order {order_id} lost: {view}");
        assert_eq!(view["status"], "open");
    }
    let (_, book) = api_b.get("/api/v1/markets/H100-80GB/book", None).await.unwrap();
    assert_eq!(book["bids"].as_array().unwrap().iter().map(|l| l["orders"].as_i64().unwrap()).sum::<i64>(), 7);
}
