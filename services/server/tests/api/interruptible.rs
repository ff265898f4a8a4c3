//! Interruptible capacity (issue 18): an ask's idle GPUs sold cheaper to interruptible
//! bids, still offered on demand; an on-demand bid preempts them with notice, in the same
//! matcher batch as its trade; the preempted lease is billed up to the preemption and no
//! further, and a managed job may restart after it. Reports are posted directly, signed
//! with a test host key.

use std::time::Duration;

use capex_core::LeaseReport;
use capex_server::Config;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, ask_body, assert_problem};
use crate::jobs::{CLASS, Host, dec, register_host, running};

/// Seconds of notice a preempted job gets in these tests.
const GRACE_S: u64 = 2;

struct World {
    app: TestApp,
    provider: TestUser,
    /// Buys interruptible capacity.
    spot: TestUser,
    /// Buys on demand.
    urgent: TestUser,
    host: Host,
}

async fn world(pool: sqlx::PgPool, gpus: usize) -> World {
    let app = TestApp::spawn_with(pool, Config { preempt_grace_s: GRACE_S, ..Config::for_tests() }).await;
    let operator = app.operator().await;
    let spot = app.register(&["buyer"]).await;
    let urgent = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    app.mint(&operator, &spot, "100").await;
    app.mint(&operator, &urgent, "100").await;
    let mut host = register_host(&app, &provider, gpus).await;
    host.report(&app, None, true).await;
    World { app, provider, spot, urgent, host }
}

fn interruptible_ask(w: &World, gpus: u32, price: &str, interruptible_price: &str) -> Value {
    let mut body = ask_body(w.host.host_id, gpus, price, "gtc");
    body["interruptible_price"] = json!(interruptible_price);
    body
}

fn bid(gpus: u32, price: &str, priority: &str) -> Value {
    json!({"side": "bid", "gpus": gpus, "max_hours": "1", "price": price, "tif": "gtc", "priority": priority,
           "job": {"command": ["sh", "-c", "sleep 600"]}})
}

fn lease_of(order: &Value) -> String {
    order["fills"][0]["lease_id"].as_str().unwrap_or_else(|| panic!("the order did not trade: {order}")).to_string()
}

fn reports(states: &[(&str, &str)]) -> Option<Vec<LeaseReport>> {
    Some(
        states
            .iter()
            .map(|(lease_id, state)| LeaseReport {
                lease_id: lease_id.parse().unwrap(),
                state: (*state).into(),
                pid: (*state == "running").then_some(42),
                exit_code: (*state != "running").then_some(-1),
            })
            .collect(),
    )
}

async fn available(app: &TestApp, user: &TestUser) -> Decimal {
    app.wallet(user).await.0.parse().unwrap()
}

async fn invariants_ok(app: &TestApp) {
    let mut conn = app.pool.acquire().await.unwrap();
    let report = capex_ledger::check_invariants(&mut conn).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

fn floor6(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(6, rust_decimal::RoundingStrategy::ToZero)
}

async fn host_assignments(w: &World) -> Value {
    let path = format!("/api/v1/hosts/{}/assignments", w.host.host_id);
    let res = w.host.request(&w.app, "GET", &path, "?wait=0", b"").await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The whole life of a preempted lease: it trades at the ask's interruptible price while
/// its GPUs stay offered on demand; an on-demand bid takes them at once (the trade does
/// not wait), the lease turns `preempting` with a deadline GRACE_S out, the host is told
/// to stop it and to start the new lease on the same GPU; reports during the notice bill
/// nothing; once the host says the job is gone the lease ends `preempted` and its buyer
/// pays exactly the billed time at the interruptible price.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn an_on_demand_bid_preempts_an_interruptible_lease_with_notice_and_exact_money(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    let ask = w.app.place_ok(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", "0.5")).await;
    assert_eq!(ask["interruptible_price"], "0.5");
    assert_eq!(ask["gpus_interruptible"], 0);
    let book = w.app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &w.spot.token).await;
    assert_eq!(book["interruptible_asks"], json!([{"price": "0.5", "gpus": 1, "orders": 1}]));

    // The interruptible bid's limit is 1.5; it trades at the ask's interruptible price.
    let spot = w.app.place_ok(&w.spot, CLASS, &bid(1, "1.5", "interruptible")).await;
    assert_eq!(spot["priority"], "interruptible");
    assert_eq!(spot["status"], "filled");
    assert_eq!(spot["fills"][0]["price"], "0.5");
    let spot_lease = lease_of(&spot);
    assert_eq!(available(&w.app, &w.spot).await, Decimal::new(995, 1), "0.5 x 1 GPU x 1 h in escrow");
    // The GPU is still offered on demand, and shown in interruptible use.
    let ask = w.app.order(&w.provider, &ask["order_id"]).await;
    assert_eq!((ask["status"].as_str(), ask["gpus_remaining"].as_i64()), (Some("open"), Some(1)));
    assert_eq!(ask["gpus_interruptible"], 1);
    let book = w.app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &w.spot.token).await;
    assert_eq!(book["asks"], json!([{"price": "2", "gpus": 1, "orders": 1}]));
    assert_eq!(book["interruptible_asks"], json!([]));
    assert_eq!(book["interruptible_gpus_in_use"], 1);
    let markets = w.app.get_json("/api/v1/markets", &w.spot.token).await;
    let market = markets["items"].as_array().unwrap().iter().find(|m| m["class"] == CLASS).unwrap().clone();
    assert_eq!((market["best_ask"].as_str(), market["best_interruptible_ask"].as_str()), (Some("2"), Some("0.5")));
    assert_eq!(market["interruptible_gpus"], 1);

    w.host.ack(&w.app, &spot_lease).await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.host.report(&w.app, running(&spot_lease), true).await;
    }
    let before = w.app.get_json(&format!("/api/v1/jobs/{spot_lease}"), &w.spot.token).await;
    assert!(dec(&before["cost_so_far"]) > Decimal::ZERO, "billed while running: {before}");

    // The on-demand bid trades at once, at the on-demand price, on the same GPU.
    let urgent = w.app.place_ok(&w.urgent, CLASS, &bid(1, "2", "on_demand")).await;
    assert_eq!(urgent["status"], "filled");
    assert_eq!(urgent["fills"][0]["price"], "2");
    let urgent_lease = lease_of(&urgent);
    let traded_at: DateTime<Utc> = urgent["fills"][0]["at"].as_str().unwrap().parse().unwrap();
    let job = w.app.get_json(&format!("/api/v1/jobs/{spot_lease}"), &w.spot.token).await;
    assert_eq!(job["state"], "preempting", "{job}");
    let (preempted_at, deadline, by): (DateTime<Utc>, DateTime<Utc>, Option<uuid::Uuid>) =
        sqlx::query_as("select preempted_at, preempt_deadline, preempted_by from leases where lease_id = $1::uuid")
            .bind(&spot_lease)
            .fetch_one(&w.app.pool)
            .await
            .unwrap();
    assert_eq!(preempted_at, traded_at, "the preemption commits with the trade");
    assert_eq!(deadline - preempted_at, chrono::Duration::seconds(GRACE_S as i64));
    assert_eq!(by.map(|b| b.to_string()), Some(urgent_lease.clone()));
    let ask = w.app.order(&w.provider, &ask["order_id"]).await;
    assert_eq!(ask["status"], "filled");

    // The host is told: stop the preempted job by the deadline, start the new one.
    let assigned = host_assignments(&w).await;
    let items = assigned["items"].as_array().unwrap();
    let of = |id: &str| items.iter().find(|a| a["lease_id"] == id).cloned().unwrap_or_else(|| panic!("{assigned}"));
    assert_eq!(of(&spot_lease)["state"], "preempting");
    let listed: DateTime<Utc> = of(&spot_lease)["preempt_deadline"].as_str().unwrap().parse().unwrap();
    assert_eq!(listed, deadline);
    assert_eq!(of(&urgent_lease)["state"], "pending");
    assert_eq!(of(&urgent_lease)["gpu_uuids"], of(&spot_lease)["gpu_uuids"]);

    // During the notice the job still runs; nothing more is billed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.host.report(&w.app, reports(&[(&spot_lease, "running")]), true).await;
    let during = w.app.get_json(&format!("/api/v1/jobs/{spot_lease}"), &w.spot.token).await;
    assert_eq!(during["state"], "preempting");
    let (billed_until,): (Option<DateTime<Utc>>,) =
        sqlx::query_as("select billed_until from leases where lease_id = $1::uuid")
            .bind(&spot_lease)
            .fetch_one(&w.app.pool)
            .await
            .unwrap();
    assert!(billed_until.unwrap() <= preempted_at, "billed past the preemption: {billed_until:?}");

    // Killed at the deadline: the host reports it gone and starts the on-demand job.
    w.host.report(&w.app, reports(&[(&spot_lease, "cancelled")]), true).await;
    let ended = w.app.get_json(&format!("/api/v1/jobs/{spot_lease}"), &w.spot.token).await;
    assert_eq!(ended["state"], "preempted", "{ended}");
    assert_eq!(dec(&ended["escrow_left"]), Decimal::ZERO);
    let billed = dec(&ended["billed_seconds"]);
    let cost = dec(&ended["cost_so_far"]);
    assert_eq!(cost, floor6(Decimal::new(5, 1) * billed / Decimal::from(3600)), "0.5 x 1 GPU x billed time");
    assert_eq!(available(&w.app, &w.spot).await, Decimal::from(100) - cost, "the unbilled escrow came back");
    assert_eq!(w.host.ack(&w.app, &urgent_lease).await["state"], "running");
    let assigned = host_assignments(&w).await;
    let ids: Vec<&str> = assigned["items"].as_array().unwrap().iter().filter_map(|a| a["lease_id"].as_str()).collect();
    assert_eq!(ids, vec![urgent_lease.as_str()]);
    invariants_ok(&w.app).await;
}

/// An on-demand bid takes idle GPUs before any interruptible ones, then preempts the
/// cheapest interruptible lease first and, among equally cheap ones, the newest; whole
/// leases only, and GPUs a preemption freed beyond the trade's need go straight to a
/// waiting interruptible bid.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn preemption_takes_the_cheapest_then_newest_lease_and_reoffers_the_rest(pool: sqlx::PgPool) {
    let w = world(pool, 4).await;
    w.app.place_ok(&w.provider, CLASS, &interruptible_ask(&w, 4, "3", "1")).await;
    // Two interruptible leases, 1 GPU (older) and 2 GPUs (newer): both trade at the ask's
    // interruptible price, so they tie on price and the newer goes first.
    let old = lease_of(&w.app.place_ok(&w.spot, CLASS, &bid(1, "1.2", "interruptible")).await);
    let new = lease_of(&w.app.place_ok(&w.spot, CLASS, &bid(2, "1.1", "interruptible")).await);
    // One GPU idle: a 1-GPU on-demand bid takes it and preempts nobody.
    let first = lease_of(&w.app.place_ok(&w.urgent, CLASS, &bid(1, "3", "on_demand")).await);
    let state = |id: String| {
        let app = &w.app;
        let token = w.spot.token.clone();
        async move { app.get_json(&format!("/api/v1/jobs/{id}"), &token).await["state"].as_str().unwrap().to_string() }
    };
    assert_eq!(state(old.clone()).await, "pending");
    assert_eq!(state(new.clone()).await, "pending");
    // A waiting interruptible bid, then an on-demand bid for 1 GPU: it preempts the newest
    // lease (2 GPUs, whole), leaving 1 GPU idle, which the waiting bid takes.
    let waiting = w.app.place_ok(&w.spot, CLASS, &bid(1, "1.5", "interruptible")).await;
    assert_eq!(waiting["status"], "open");
    let second = lease_of(&w.app.place_ok(&w.urgent, CLASS, &bid(1, "3", "on_demand")).await);
    assert_eq!(state(new.clone()).await, "preempting");
    assert_eq!(state(old.clone()).await, "pending");
    let waiting = w.app.order(&w.spot, &waiting["order_id"]).await;
    assert_eq!(waiting["status"], "filled", "the surplus GPU went to the waiting interruptible bid: {waiting}");
    // No GPU is in two live leases (preempting ones hand theirs over).
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select g, count(*) from leases, unnest(gpu_uuids) g where state in ('pending', 'running') group by g",
    )
    .fetch_all(&w.app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "{rows:?}");
    let new_gpus: Vec<String> = sqlx::query_scalar("select unnest(gpu_uuids) from leases where lease_id = $1::uuid")
        .bind(&new)
        .fetch_all(&w.app.pool)
        .await
        .unwrap();
    let second_gpus: Vec<String> = sqlx::query_scalar("select unnest(gpu_uuids) from leases where lease_id = $1::uuid")
        .bind(&second)
        .fetch_all(&w.app.pool)
        .await
        .unwrap();
    assert!(new_gpus.contains(&second_gpus[0]), "the on-demand lease runs on a preempted GPU");
    assert_ne!(first, second);
    invariants_ok(&w.app).await;
}

/// When an interruptible job ends by itself its GPUs are idle again and the next
/// interruptible bid gets them (the matcher learns it within its 2-s check).
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn an_ended_interruptible_lease_frees_its_gpus_for_the_next_interruptible_bid(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    w.app.place_ok(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", "0.5")).await;
    let first = lease_of(&w.app.place_ok(&w.spot, CLASS, &bid(1, "1", "interruptible")).await);
    let next = w.app.place_ok(&w.urgent, CLASS, &bid(1, "1", "interruptible")).await;
    assert_eq!(next["status"], "open");
    assert_eq!(next["unfilled_reasons"][0]["code"], "no_host_with_enough_gpus", "{next}");
    w.host.ack(&w.app, &first).await;
    w.host.report(&w.app, reports(&[(&first, "exited")]), true).await;
    for _ in 0..50 {
        if w.app.order(&w.urgent, &next["order_id"]).await["status"] == "filled" {
            invariants_ok(&w.app).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the freed GPU never went to the waiting interruptible bid");
}

/// A managed interruptible job that lists `preempted` is placed again, at the same
/// priority, on any host (the preempted host did not fail it).
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_managed_job_restarts_after_preemption(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    w.app.place_ok(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", "0.5")).await;
    let mut body = bid(1, "1", "interruptible");
    body["job"]["restart"] = json!({"on": ["preempted"], "max_attempts": 2});
    let spot = w.app.place_ok(&w.spot, CLASS, &body).await;
    let job_id = spot["order_id"].as_str().unwrap().to_string();
    let first = lease_of(&spot);
    w.host.ack(&w.app, &first).await;
    w.app.place_ok(&w.urgent, CLASS, &bid(1, "2", "on_demand")).await;
    w.host.report(&w.app, reports(&[(&first, "cancelled")]), true).await;
    for _ in 0..80 {
        let job = w.app.get_json(&format!("/api/v1/jobs/{job_id}"), &w.spot.token).await;
        let placed: Option<(String, Option<Value>)> = match job["next_bid_id"].as_str() {
            Some(next) => {
                sqlx::query_as("select priority, job -> 'excluded_hosts' from orders where order_id = $1::uuid")
                    .bind(next)
                    .fetch_optional(&w.app.pool)
                    .await
                    .unwrap()
            }
            None => None,
        };
        if let Some((priority, excluded)) = placed {
            assert_eq!(job["job_state"], "restarting", "{job}");
            assert_eq!(job["attempts"][0]["end_reason"], "preempted", "{job}");
            assert_eq!(priority, "interruptible", "the restart keeps the job's priority");
            assert_eq!(excluded, Some(json!([])), "a preempting host is not excluded");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = w.app.get_json(&format!("/api/v1/jobs/{job_id}"), &w.spot.token).await;
    panic!("the job never restarted: {job}");
}

/// A preempting lease whose host says nothing about it after its deadline ends
/// `preempted` anyway (the sweeper), with its escrow returned.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_preempting_lease_ends_after_its_deadline_even_if_the_host_is_silent_about_it(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    w.app.place_ok(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", "0.5")).await;
    let spot = lease_of(&w.app.place_ok(&w.spot, CLASS, &bid(1, "1", "interruptible")).await);
    w.host.ack(&w.app, &spot).await;
    w.app.place_ok(&w.urgent, CLASS, &bid(1, "2", "on_demand")).await;
    // The host keeps reporting the job running (a stuck agent): past the deadline and the
    // slack, the exchange ends it all the same.
    for _ in 0..((GRACE_S + 12) * 4) {
        w.host.report(&w.app, running(&spot), true).await;
        let job = w.app.get_json(&format!("/api/v1/jobs/{spot}"), &w.spot.token).await;
        if job["state"] == "preempted" {
            assert_eq!(dec(&job["escrow_left"]), Decimal::ZERO);
            invariants_ok(&w.app).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the preempting lease never ended");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn interruptible_fields_are_checked_and_named(pool: sqlx::PgPool) {
    let w = world(pool, 1).await;
    for (price, code) in [("2", "interruptible_price_not_below_price"), ("3", "interruptible_price_not_below_price")] {
        let res = w.app.place(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", price)).await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, code).await;
        assert_eq!(body["field"], "interruptible_price");
    }
    for bad in ["0", "-1", "0.0000001", "abc"] {
        let res = w.app.place(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", bad)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], "interruptible_price", "{bad}: {body}");
    }
    let mut ask = ask_body(w.host.host_id, 1, "2", "gtc");
    ask["priority"] = json!("interruptible");
    let body = assert_problem(
        w.app.place(&w.provider, CLASS, &ask).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "field_not_allowed",
    )
    .await;
    assert_eq!(body["field"], "priority");
    let mut on_bid = bid(1, "1", "interruptible");
    on_bid["interruptible_price"] = json!("0.5");
    let body = assert_problem(
        w.app.place(&w.spot, CLASS, &on_bid).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "field_not_allowed",
    )
    .await;
    assert_eq!(body["field"], "interruptible_price");
    let res = w.app.place(&w.spot, CLASS, &bid(1, "1", "sometimes")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing was stored by the refusals.
    let orders: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(&w.app.pool).await.unwrap();
    assert_eq!(orders, 0);
    // An ask without an interruptible price sells nothing to interruptible bids.
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "1").await;
    let spot = w.app.place_ok(&w.spot, CLASS, &bid(1, "5", "interruptible")).await;
    assert_eq!(spot["status"], "open");
    assert_eq!(spot["unfilled_reasons"][0]["code"], "no_interruptible_asks", "{spot}");
}

/// The matcher's batch is one transaction: a fault in the write of the trade undoes the
/// preemption it caused, and a fault in the preemption undoes the trade. Each fault is a
/// trigger that fails the statement as a lost race would; the batch is retried, fails,
/// and the bid is answered 503 with nothing written. With the fault gone, the same
/// request (same Idempotency-Key) trades and preempts together.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_preemption_and_its_trade_commit_together_or_not_at_all(pool: sqlx::PgPool) {
    let w = world(pool, 1).await;
    w.app.place_ok(&w.provider, CLASS, &interruptible_ask(&w, 1, "2", "0.5")).await;
    let spot = lease_of(&w.app.place_ok(&w.spot, CLASS, &bid(1, "1", "interruptible")).await);
    w.host.ack(&w.app, &spot).await;
    sqlx::raw_sql(
        "create function fail_batch() returns trigger language plpgsql as $$
         begin raise exception 'injected fault' using errcode = 'serialization_failure'; end $$;",
    )
    .execute(&w.app.pool)
    .await
    .unwrap();
    let faults = [
        ("the trade", "create trigger fault before insert on trades for each row execute function fail_batch()"),
        (
            "the preemption",
            "create trigger fault before update on leases for each row
             when (new.state = 'preempting') execute function fail_batch()",
        ),
    ];
    for (i, (what, trigger)) in faults.iter().enumerate() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*trigger)).execute(&w.app.pool).await.unwrap();
        let key = format!("urgent-{i}");
        let res = w
            .app
            .post_with_key(&format!("/api/v1/markets/{CLASS}/orders"), &w.urgent.token, &key, &bid(1, "2", "on_demand"))
            .await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "a fault in {what}: {}", res.text().await.unwrap());
        let state: String = sqlx::query_scalar("select state from leases where lease_id = $1::uuid")
            .bind(&spot)
            .fetch_one(&w.app.pool)
            .await
            .unwrap();
        assert_eq!(state, "running", "a fault in {what} left the preemption");
        let trades: i64 = sqlx::query_scalar("select count(*) from trades").fetch_one(&w.app.pool).await.unwrap();
        assert_eq!(trades, 1, "a fault in {what} left the trade");
        assert_eq!(available(&w.app, &w.urgent).await, Decimal::from(100), "a fault in {what} moved money");
        let table = if i == 0 { "trades" } else { "leases" };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop trigger fault on {table}")))
            .execute(&w.app.pool)
            .await
            .unwrap();
    }
    let res = w
        .app
        .post_with_key(
            &format!("/api/v1/markets/{CLASS}/orders"),
            &w.urgent.token,
            "urgent-1",
            &bid(1, "2", "on_demand"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let urgent: Value = res.json().await.unwrap();
    assert_eq!(urgent["status"], "filled");
    let state: String = sqlx::query_scalar("select state from leases where lease_id = $1::uuid")
        .bind(&spot)
        .fetch_one(&w.app.pool)
        .await
        .unwrap();
    assert_eq!(state, "preempting");
    invariants_ok(&w.app).await;
}
