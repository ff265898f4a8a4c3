//! The wallet's movements grouped by lease and order, and its balance over time.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::helpers::assert_problem;
use crate::jobs::{dec, running, world};

fn group<'a>(page: &'a Value, kind: &str, ref_id: &str) -> &'a Value {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == kind && g["ref_id"] == ref_id)
        .unwrap_or_else(|| panic!("no {kind} group {ref_id} in {page}"))
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_leases_settlements_are_one_group_that_adds_up_to_the_wallet(pool: sqlx::PgPool) {
    let mut w = world(pool, 2).await;
    let job_id = w.trade(1, "1", "3").await;
    w.ack(&job_id).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        w.report(running(&job_id), true).await;
    }
    let job = w.job(&job_id).await;

    // The provider: one lease group with every settlement line in it.
    let page = w.app.get_json("/api/v1/wallet/movements", &w.provider.token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let lease = group(&page, "lease", &job_id);
    let settled = dec(&job["cost_so_far"]) - dec(&job["fee_so_far"]);
    assert_eq!(dec(&lease["wallet_delta"]), settled);
    assert_eq!(dec(&lease["held_delta"]), Decimal::ZERO);
    assert_eq!(lease["kinds"][0]["kind"], "settlement");
    assert_eq!(lease["host_id"], w.host.host_id.to_string());
    assert_eq!(lease["class"], crate::jobs::CLASS);
    let ledger = w.app.get_json("/api/v1/wallet/ledger?limit=200", &w.provider.token).await;
    assert_eq!(lease["entries"], ledger["items"].as_array().unwrap().len() as i64);

    // The buyer: the mint, the bid's order (hold, and the move into the lease's escrow),
    // the lease (its escrow, held). Wallet deltas sum to available, held deltas to held.
    let page = w.app.get_json("/api/v1/wallet/movements", &w.buyer.token).await;
    let items = page["items"].as_array().unwrap();
    let sum = |field: &str| items.iter().map(|g| dec(&g[field])).sum::<Decimal>();
    let (available, held) = w.app.wallet(&w.buyer).await;
    assert_eq!(sum("wallet_delta"), available.parse::<Decimal>().unwrap(), "{page}");
    assert_eq!(sum("held_delta"), held.parse::<Decimal>().unwrap(), "{page}");
    let lease = group(&page, "lease", &job_id);
    assert_eq!(lease["order_id"], job["job_id"], "the buyer's own order of the lease is the bid");
    assert!(items.iter().any(|g| g["group"] == "transfer" && g["kinds"][0]["kind"] == "mint"));

    // Balance over time: the last point is the wallet now.
    let history = w.app.get_json("/api/v1/wallet/balance-history", &w.buyer.token).await;
    let last = history["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(dec(&last["available"]), available.parse::<Decimal>().unwrap());
    assert_eq!(dec(&last["held"]), held.parse::<Decimal>().unwrap());
    assert_eq!(dec(&history["points"][0]["available"]), Decimal::from(100), "the mint comes first");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn movements_page_with_cursors_and_refuse_bad_ones(pool: sqlx::PgPool) {
    let w = world(pool, 2).await;
    for price in ["1", "1.5", "2"] {
        w.app.bid(&w.buyer, crate::jobs::CLASS, 1, "1", price).await;
    }
    // Three orders and the mint: two pages of two.
    let first = w.app.get_json("/api/v1/wallet/movements?limit=2", &w.buyer.token).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a second page").to_string();
    let second = w.app.get_json(&format!("/api/v1/wallet/movements?limit=2&cursor={cursor}"), &w.buyer.token).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
    assert_eq!(second["items"][1]["group"], "transfer");
    for g in first["items"].as_array().unwrap() {
        assert_eq!(g["group"], "order");
        assert_eq!(g["kinds"][0]["kind"], "escrow_hold");
        assert_eq!(dec(&g["wallet_delta"]), -dec(&g["held_delta"]));
    }

    let bad = w.app.get("/api/v1/wallet/movements?cursor=abc", Some(&w.buyer.token)).await;
    let body = assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    assert_eq!(body["field"], "cursor");
    let bad = w.app.get("/api/v1/wallet/movements?limit=0", Some(&w.buyer.token)).await;
    assert_eq!(assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_limit").await["field"], "limit");
    let bad = w.app.get("/api/v1/wallet/balance-history?points=5000", Some(&w.buyer.token)).await;
    assert_eq!(assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_limit").await["field"], "points");
    let anonymous = w.app.get("/api/v1/wallet/movements", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
