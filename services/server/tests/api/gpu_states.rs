//! What each GPU of a host is doing (`state` in `GET /api/v1/hosts/{id}`), and a host's
//! earnings against the wallet's `settlement` lines.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::jobs::{CLASS, dec, running, world};

fn gpu<'a>(host: &'a Value, uuid: &str) -> &'a Value {
    host["gpus"].as_array().unwrap().iter().find(|g| g["uuid"] == uuid).unwrap()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn each_gpu_says_whether_it_is_idle_offered_leased_challenged_or_foreign(pool: sqlx::PgPool) {
    let w = world(pool, 5).await;
    let path = format!("/api/v1/hosts/{}", w.host.host_id);
    let host = w.app.get_json(&path, &w.provider.token).await;
    for uuid in &w.host.gpus {
        assert_eq!(gpu(&host, uuid)["state"], "idle", "{host}");
        assert!(gpu(&host, uuid)["order_id"].is_null());
    }

    // An ask binds three GPUs (in index order): offered, naming the ask, though nothing runs.
    let ask = w.app.ask(&w.provider, CLASS, w.host.host_id, 3, "2").await;
    let host = w.app.get_json(&path, &w.provider.token).await;
    for uuid in &w.host.gpus[..3] {
        assert_eq!(gpu(&host, uuid)["state"], "offered");
        assert_eq!(gpu(&host, uuid)["order_id"], ask["order_id"]);
        assert_eq!(gpu(&host, uuid)["busy"], false, "no process runs on an offered GPU");
    }
    // A bid for one takes the first: leased, naming the lease; the other two stay offered.
    let bid = w.app.bid(&w.buyer, CLASS, 1, "1", "2").await;
    let lease_id = bid["fills"][0]["lease_id"].clone();
    assert!(lease_id.is_string(), "{bid}");
    let host = w.app.get_json(&path, &w.provider.token).await;
    let leased: Vec<&Value> = host["gpus"].as_array().unwrap().iter().filter(|g| g["state"] == "leased").collect();
    assert_eq!(leased.len(), 1, "{host}");
    assert_eq!(leased[0]["lease_id"], lease_id);
    let offered = host["gpus"].as_array().unwrap().iter().filter(|g| g["state"] == "offered").count();
    assert_eq!(offered, 2);

    // A foreign process on an idle GPU, an open challenge on the other.
    let (fourth, fifth) = (&w.host.gpus[3], &w.host.gpus[4]);
    sqlx::query("update host_gpus set foreign_processes = 1, processes = 1 where gpu_uuid = $1")
        .bind(fourth)
        .execute(&w.app.pool)
        .await
        .unwrap();
    let challenge_id = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into gpu_challenges (challenge_id, host_id, gpu_uuid, class, reason, seed, n, k, commit_by)
         values ($1, $2, $3, $4, 'operator', $5, 64, 4, now() + interval '1 minute')",
    )
    .bind(challenge_id)
    .bind(w.host.host_id)
    .bind(fifth)
    .bind(CLASS)
    .bind(vec![7u8; 32])
    .execute(&w.app.pool)
    .await
    .unwrap();
    let host = w.app.get_json(&path, &w.provider.token).await;
    assert_eq!(gpu(&host, fourth)["state"], "foreign_process");
    assert_eq!(gpu(&host, fifth)["state"], "under_challenge");
    assert_eq!(gpu(&host, fifth)["challenge_id"], challenge_id.to_string());

    // The list shows the same states.
    let list = w.app.get_json("/api/v1/hosts", &w.provider.token).await;
    assert_eq!(list["items"][0]["gpus"], host["gpus"]);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn host_earnings_equal_the_settlements_paid_into_the_wallet(pool: sqlx::PgPool) {
    let mut w = world(pool, 2).await;
    let path = format!("/api/v1/hosts/{}", w.host.host_id);
    assert_eq!(dec(&w.app.get_json(&path, &w.provider.token).await["earnings"]), Decimal::ZERO);
    let job_id = w.trade(1, "1", "3").await;
    w.ack(&job_id).await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        w.report(running(&job_id), true).await;
    }
    let host = w.app.get_json(&path, &w.provider.token).await;
    let earnings = dec(&host["earnings"]);
    let job = w.job(&job_id).await;
    assert!(earnings > Decimal::ZERO);
    assert_eq!(earnings, dec(&job["cost_so_far"]) - dec(&job["fee_so_far"]), "cost less the fee");
    let wallet = w.app.get_json("/api/v1/wallet", &w.provider.token).await;
    assert_eq!(dec(&wallet["earned"]), earnings, "{wallet}");
    assert_eq!(dec(&wallet["available"]), earnings, "the provider had nothing else");
    let ledger = w.app.get_json("/api/v1/wallet/ledger?limit=200", &w.provider.token).await;
    let settled: Decimal = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "settlement")
        .map(|l| dec(&l["amount"]))
        .sum();
    assert_eq!(settled, earnings);
    // A buyer earns nothing.
    assert_eq!(dec(&w.app.get_json("/api/v1/wallet", &w.buyer.token).await["earned"]), Decimal::ZERO);
}
