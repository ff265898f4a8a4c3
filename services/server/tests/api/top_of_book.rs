//! The top of the book order by order, and why a best bid at or above the best ask has not
//! traded (`GET /api/v1/markets/{class}/top`).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem};

const CLASS: &str = "RTX4090-24GB";

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_bid_above_an_ask_too_small_for_it_is_explained(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    app.mint(&operator, &buyer, "100").await;
    let host = app.live_host(&provider, CLASS, 1).await;

    let empty = app.get_json(&format!("/api/v1/markets/{CLASS}/top"), &buyer.token).await;
    assert_eq!(empty["crossed"], false);
    assert_eq!(empty["summary"], "The book is empty.");

    let ask = app.ask(&provider, CLASS, host, 1, "0.45").await;
    let bid = app.bid(&buyer, CLASS, 2, "1", "0.46").await;
    assert_eq!(bid["status"], "open", "2 GPUs cannot come from a 1-GPU ask");

    let res = app.get(&format!("/api/v1/markets/{CLASS}/top"), None).await;
    assert_eq!(res.status(), StatusCode::OK, "public");
    let top: serde_json::Value = res.json().await.unwrap();
    assert_eq!(top["crossed"], true, "{top}");
    assert_eq!(top["bids"][0]["order_id"], bid["order_id"]);
    assert_eq!(top["bids"][0]["gpus"], 2);
    assert_eq!(top["bids"][0]["price"], "0.46");
    assert_eq!(top["asks"][0]["order_id"], ask["order_id"]);
    assert_eq!(top["asks"][0]["gpus"], 1);
    assert_eq!(top["asks"][0]["host_id"], host.to_string());
    assert_eq!(top["asks"][0]["host_name"], "test-host");
    assert!(top["asks"][0].get("owner_id").is_none(), "owners stay private");
    let pair = &top["crossing"][0];
    assert_eq!(pair["bid_order_id"], bid["order_id"]);
    assert_eq!(pair["ask_order_id"], ask["order_id"]);
    assert_eq!(
        pair["reasons"],
        json!([{"code": "bid_wants_more_gpus", "message":
        "the bid wants 2 GPUs on one host and this ask offers 1: a bid is never split across asks or hosts"}])
    );
    let summary = top["summary"].as_str().unwrap();
    assert!(summary.contains("0.46 for 2 GPUs") && summary.contains("0.45 for 1 GPU on test-host"), "{summary}");

    // A bid the ask can serve trades at once and leaves no crossing.
    app.bid(&buyer, CLASS, 1, "1", "0.5").await;
    let top = app.get_json(&format!("/api/v1/markets/{CLASS}/top"), &buyer.token).await;
    assert_eq!(top["asks"], json!([]));
    assert_eq!(top["crossed"], false);
    assert!(top["summary"].as_str().unwrap().starts_with("No provider offers GPUs"));
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn an_unknown_market_has_no_top(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.get("/api/v1/markets/NOPE-1GB/top", None).await;
    assert_eq!(assert_problem(res, StatusCode::NOT_FOUND, "unknown_market").await["field"], "class");
}
