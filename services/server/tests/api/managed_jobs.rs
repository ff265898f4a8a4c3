//! Managed jobs (issue 17): a job with a restart policy outlives its host. Attempts,
//! restarts placed by the exchange on another host, SLA credits for lost leases, giving
//! up, and the refusals of bad policies.

use std::time::Duration;

use capex_core::LeaseReport;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem};
use crate::jobs::{CLASS, Host, World, dec, register_host, running, world};

fn exited(lease_id: &str, code: i32) -> Option<Vec<LeaseReport>> {
    Some(vec![LeaseReport {
        lease_id: lease_id.parse().unwrap(),
        state: "exited".into(),
        pid: None,
        exit_code: Some(code),
    }])
}

fn managed_bid(price: &str, restart: Value) -> Value {
    json!({"side": "bid", "gpus": 1, "max_hours": "2", "price": price, "tif": "gtc",
           "job": {"command": ["sh", "-c", "exit 3"], "restart": restart}})
}

/// Polls the job until `done` holds (at most ~8 s), reporting `keep` alive meanwhile.
async fn wait_for(
    app: &TestApp,
    buyer: &TestUser,
    job_id: &str,
    mut keep: Option<&mut Host>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..80 {
        let job = app.get_json(&format!("/api/v1/jobs/{job_id}"), &buyer.token).await;
        if done(&job) {
            return job;
        }
        if let Some(host) = keep.as_deref_mut() {
            host.report(app, None, true).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} never got there: {}", app.get_json(&format!("/api/v1/jobs/{job_id}"), &buyer.token).await);
}

async fn second_provider(w: &World) -> (TestUser, Host) {
    let provider = w.app.register(&["provider"]).await;
    let mut host = register_host(&w.app, &provider, 1).await;
    host.report(&w.app, None, true).await;
    (provider, host)
}

async fn balance_of(w: &World, user: &TestUser) -> (Decimal, Decimal) {
    let (available, held) = w.app.wallet(user).await;
    (available.parse().unwrap(), held.parse().unwrap())
}

/// Attempt 1 fails (exit 3) on host A: the exchange places attempt 2 itself, which never
/// trades with host A (its ask is passed over: only_excluded_hosts) and runs on host B
/// under the same job id; attempt 2 fails too and the job gives up with its attempts
/// spent. The buyer pays exactly what the two attempts billed; nothing stays held.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_failed_attempt_restarts_on_another_host_under_the_same_job_id(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "1").await;
    let bid = w.app.place_ok(&w.buyer, CLASS, &managed_bid("1.5", json!({"on": ["failed"], "max_attempts": 2}))).await;
    let job_id = bid["order_id"].as_str().unwrap().to_string();
    let first = bid["fills"][0]["lease_id"].as_str().unwrap().to_string();
    assert_eq!(w.job(&job_id).await["lease_id"], first.as_str());
    assert_eq!(w.job(&first).await["job_id"], job_id.as_str());
    let assigned =
        w.host.request(&w.app, "GET", &format!("/api/v1/hosts/{}/assignments", w.host.host_id), "", b"").await;
    let assigned: Value = assigned.json().await.unwrap();
    assert_eq!(assigned["items"][0]["job_id"], job_id.as_str());
    assert_eq!(assigned["items"][0]["attempt"], 1);
    w.ack(&first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.report(running(&first), true).await;
    w.report(exited(&first, 3), true).await;

    let job = wait_for(&w.app, &w.buyer, &job_id, None, |j| j["job_state"] == "restarting").await;
    assert_eq!(job["attempts"][0]["end_reason"], "failed");
    assert_eq!(job["restart"]["max_attempts"], 2);
    assert_eq!(job["restart"]["max_price"], "1.5");
    let next_bid = job["next_bid_id"].as_str().expect("the next attempt's bid").to_string();
    // Host A offers its GPU again: the restart bid passes it over.
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "1").await;
    let mut order = Value::Null;
    for _ in 0..50 {
        // The restarter places it a moment after the attempt ended (404 until then).
        let res = w.app.get(&format!("/api/v1/orders/{next_bid}"), Some(&w.buyer.token)).await;
        if res.status() == StatusCode::OK {
            order = res.json().await.unwrap();
            if order["status"] == "open" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(order["status"], "open", "{order}");
    assert_eq!(order["unfilled_reasons"][0]["code"], "only_excluded_hosts", "{order}");

    let (_provider_b, mut host_b) = second_provider(&w).await;
    w.app.ask(&_provider_b, CLASS, host_b.host_id, 1, "1.2").await;
    let job = wait_for(&w.app, &w.buyer, &job_id, None, |j| j["attempt"] == 2).await;
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(job["job_state"], "running");
    assert_eq!(job["host_id"], host_b.host_id.to_string());
    assert_eq!(job["price"], "1.5", "the resting restart bid's price is the trade price");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["host_id"], w.host.host_id.to_string());
    let second = job["lease_id"].as_str().unwrap().to_string();
    host_b.ack(&w.app, &second).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    host_b.report(&w.app, running(&second), true).await;
    host_b.report(&w.app, exited(&second, 3), true).await;

    let job = wait_for(&w.app, &w.buyer, &job_id, None, |j| j["job_state"] == "gave_up").await;
    assert_eq!(job["end_reason"], "attempts_exhausted");
    let cost: Decimal = job["attempts"].as_array().unwrap().iter().map(|a| dec(&a["cost"])).sum();
    assert!(cost > Decimal::ZERO);
    assert_eq!(balance_of(&w, &w.buyer).await, (Decimal::from(100) - cost, Decimal::ZERO));
    w.invariants_ok().await;
    // Attempt 1's logs stay readable by number.
    let logs = w.app.get(&format!("/api/v1/jobs/{job_id}/logs?attempt=1"), Some(&w.buyer.token)).await;
    assert_eq!(logs.status(), StatusCode::OK);
    let res = w.app.get(&format!("/api/v1/jobs/{job_id}/logs?attempt=7"), Some(&w.buyer.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "unknown_attempt").await;
}

/// Host A goes silent with attempt 1 running: the lease is lost, the buyer is paid the SLA
/// credit (a tenth of what it billed) from the provider's wallet, and attempt 2 is placed
/// on host B at once. Cancelling the job by its id stops attempt 2 and refunds it.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_lost_host_pays_the_sla_credit_and_the_job_moves(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    let (provider_b, mut host_b) = second_provider(&w).await;
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "36").await;
    let bid = w.app.place_ok(&w.buyer, CLASS, &managed_bid("36", json!({"on": ["host_lost"]}))).await;
    let job_id = bid["order_id"].as_str().unwrap().to_string();
    let first = bid["fills"][0]["lease_id"].as_str().unwrap().to_string();
    w.ack(&first).await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.report(running(&first), true).await;
        host_b.report(&w.app, None, true).await;
    }
    let billed = dec(&w.job(&first).await["cost_so_far"]);
    assert!(billed > Decimal::ZERO);
    w.app.ask(&provider_b, CLASS, host_b.host_id, 1, "30").await;
    // Host A says nothing more; B keeps reporting.
    let job = wait_for(&w.app, &w.buyer, &job_id, Some(&mut host_b), |j| j["attempt"] == 2).await;
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["end_reason"], "host_lost");
    let credit = dec(&attempts[0]["sla_credit"]);
    assert_eq!(credit, (billed / Decimal::from(10)).round_dp_with_strategy(6, rust_decimal::RoundingStrategy::ToZero));
    assert_eq!(dec(&job["sla_credits"]), credit);
    assert_eq!(job["host_id"], host_b.host_id.to_string());
    let memo: String =
        sqlx::query_scalar("select memo from journal where kind = 'sla_credit'").fetch_one(&w.app.pool).await.unwrap();
    assert_eq!(memo, format!("lease {first} host_lost"));
    // The buyer's and the provider's ledgers both show it.
    for user in [&w.buyer, &w.provider] {
        let ledger = w.app.get_json("/api/v1/wallet/ledger", &user.token).await;
        assert!(ledger["items"].as_array().unwrap().iter().any(|l| l["kind"] == "sla_credit"), "{ledger}");
    }
    let res = w.app.post(&format!("/api/v1/jobs/{job_id}/cancel"), Some(&w.buyer.token), &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["job_state"], "ended");
    let paid: Decimal = job["attempts"].as_array().unwrap().iter().map(|a| dec(&a["cost"])).sum();
    assert_eq!(balance_of(&w, &w.buyer).await, (Decimal::from(100) - paid + credit, Decimal::ZERO));
    w.invariants_ok().await;
}

/// The next attempt would need more than the wallet holds at the policy's price: the job
/// gives up at once and everything not billed is back.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_restart_the_wallet_cannot_fund_gives_up(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "1").await;
    let bid = w.app.place_ok(&w.buyer, CLASS, &managed_bid("1", json!({"on": ["failed"], "max_price": "1000"}))).await;
    let job_id = bid["order_id"].as_str().unwrap().to_string();
    let first = bid["fills"][0]["lease_id"].as_str().unwrap().to_string();
    w.ack(&first).await;
    w.report(exited(&first, 1), true).await;
    let job = wait_for(&w.app, &w.buyer, &job_id, None, |j| j["job_state"] == "gave_up").await;
    assert_eq!(job["end_reason"], "insufficient_funds");
    let cost = dec(&job["cost_so_far"]);
    assert_eq!(balance_of(&w, &w.buyer).await, (Decimal::from(100) - cost, Decimal::ZERO));
    w.invariants_ok().await;
}

/// A job that exits 0, or fails for a reason its policy does not list, simply ends.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn an_unlisted_end_does_not_restart(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "1").await;
    let bid = w.app.place_ok(&w.buyer, CLASS, &managed_bid("1", json!({"on": ["host_lost"]}))).await;
    let job_id = bid["order_id"].as_str().unwrap().to_string();
    let first = bid["fills"][0]["lease_id"].as_str().unwrap().to_string();
    w.ack(&first).await;
    w.report(exited(&first, 2), true).await;
    let job = wait_for(&w.app, &w.buyer, &job_id, None, |j| j["job_state"] == "ended").await;
    assert_eq!(job["end_reason"], "failed");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert!(job["next_bid_id"].is_null());
}

/// Every bad restart policy or budget is refused with the field it names.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn bad_restart_policies_are_refused_by_field(pool: sqlx::PgPool) {
    let w = world(pool, 1).await;
    let cases = [
        (json!({"on": []}), "job.restart.on"),
        (json!({"on": ["failed"], "max_attempts": 0}), "job.restart.max_attempts"),
        (json!({"on": ["failed"], "max_attempts": 6}), "job.restart.max_attempts"),
        (json!({"on": ["failed"], "max_price": "0"}), "job.restart.max_price"),
        (json!({"on": ["failed"], "max_price": "1.0000001"}), "job.restart.max_price"),
    ];
    for (restart, field) in cases {
        let res = w.app.place(&w.buyer, CLASS, &managed_bid("1", restart.clone())).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{restart}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{restart}: {body}");
    }
    // An unknown reason is refused (`preempted` is one since interruptible capacity).
    let res = w.app.place(&w.buyer, CLASS, &managed_bid("1", json!({"on": ["evicted"]}))).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let mut bid = managed_bid("1", json!({"on": ["failed"]}));
    bid["job"]["budget"] = json!("-1");
    let res = w.app.place(&w.buyer, CLASS, &bid).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["field"], "job.budget", "{body}");
}

/// Reliability is public and attested: uptime from the stored report stream, leases
/// completed and lost, SLA credits paid; an unknown host is 404.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_host_s_reliability_comes_from_its_reports_and_leases(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.report(None, true).await;
    }
    let path = format!("/api/v1/hosts/{}/reliability", w.host.host_id);
    let res = w.app.get(&path, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["reports_30d"], 4);
    assert_eq!(view["leases_lost"], 0);
    let uptime = dec(&view["uptime_24h"]);
    assert!(uptime > Decimal::new(5, 1) && uptime <= Decimal::ONE, "{view}");
    assert_eq!(view["uptime_7d"], view["uptime_24h"], "a young host is judged on its own lifetime");
    // A lost lease shows, with its SLA credit.
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "36").await;
    let bid = w.app.place_ok(&w.buyer, CLASS, &managed_bid("36", json!({"on": ["failed"]}))).await;
    let lease = bid["fills"][0]["lease_id"].as_str().unwrap().to_string();
    w.ack(&lease).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.report(running(&lease), true).await;
    let job = wait_for(&w.app, &w.buyer, &lease, None, |j| j["state"] == "host_lost").await;
    let view = w.app.get_json(&path, &w.buyer.token).await;
    assert_eq!(view["leases_lost"], 1);
    assert_eq!(dec(&view["sla_credits_paid"]), dec(&job["sla_credits"]));
    assert!(dec(&view["uptime_24h"]) < uptime, "the silence counts as down: {view}");
    let res = w.app.get(&format!("/api/v1/hosts/{}/reliability", uuid::Uuid::now_v7()), None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}
