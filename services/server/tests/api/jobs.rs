//! Jobs: placement endpoints (host-signed), metering from signed reports, settlement on
//! exit, cancel, max duration and host loss, and the buyer's views. Reports are posted
//! directly, signed with a test host key.

use std::time::Duration;

use capex_core::report::{encode_public_key, format_host_nonce, sign_host_request};
use capex_core::{
    GpuSample, INVENTORY_DOMAIN, InventoryGpu, InventoryPayload, LeaseReport, REPORT_DOMAIN, ReportPayload,
    SignedEnvelope,
};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use reqwest::{Response, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};

pub(crate) const CLASS: &str = "H100-80GB";

pub(crate) struct Host {
    pub(crate) host_id: Uuid,
    key: SigningKey,
    pub(crate) gpus: Vec<String>,
    seq: u64,
    energy_mj: u64,
}

pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) buyer: TestUser,
    pub(crate) provider: TestUser,
    pub(crate) host: Host,
}

pub(crate) async fn world(pool: sqlx::PgPool, gpus: usize) -> World {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    app.mint(&operator, &buyer, "100").await;
    let host = register_host(&app, &provider, gpus).await;
    let mut w = World { app, buyer, provider, host };
    w.report(None, true).await;
    w
}

/// Registers a host of `gpus` H100s for `provider` (reporting every second).
pub(crate) async fn register_host(app: &TestApp, provider: &TestUser, gpus: usize) -> Host {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let uuids: Vec<String> = (0..gpus).map(|_| format!("GPU-{}", Uuid::new_v4())).collect();
    let inventory = InventoryPayload {
        public_key: encode_public_key(&key.verifying_key()),
        name: "rack-1".into(),
        created_at: Utc::now(),
        interval_s: 1,
        backend: capex_core::GpuBackend::Nvml,
        driver_version: None,
        cuda_version: None,
        gpus: uuids
            .iter()
            .enumerate()
            .map(|(i, uuid)| InventoryGpu {
                index: i as u32,
                uuid: uuid.clone(),
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_total_mib: 81_559,
                pci_bus_id: None,
            })
            .collect(),
    };
    let res = app
        .post(
            "/api/v1/hosts",
            Some(&provider.token),
            &json!(SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &inventory)),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap_or_default());
    let body: Value = res.json().await.unwrap();
    Host { host_id: body["host_id"].as_str().unwrap().parse().unwrap(), key, gpus: uuids, seq: 0, energy_mj: 0 }
}

impl Host {
    /// Sends the host's next signed report; `show_gpus: false` leaves the GPUs out.
    pub(crate) async fn report(&mut self, app: &TestApp, leases: Option<Vec<LeaseReport>>, show_gpus: bool) {
        let now = Utc::now();
        self.energy_mj += 1000;
        let gpus = if show_gpus { self.gpus.clone() } else { vec![] };
        let payload = ReportPayload {
            host_id: self.host_id,
            seq: self.seq,
            sent_at: now,
            measured_at: now,
            interval_s: 1,
            backend: capex_core::GpuBackend::Nvml,
            gpus: gpus
                .iter()
                .map(|uuid| GpuSample {
                    uuid: uuid.clone(),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    memory_total_mib: 81_559,
                    memory_used_mib: 0,
                    utilization_pct: 0,
                    power_mw: 70_000,
                    energy_mj: self.energy_mj,
                    temperature_c: 35,
                    processes: vec![],
                })
                .collect(),
            leases,
        };
        self.seq += 1;
        let envelope = SignedEnvelope::seal_json(REPORT_DOMAIN, &self.key, &payload);
        let res = app.post(&format!("/api/v1/hosts/{}/reports", self.host_id), None, &json!(envelope)).await;
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
    }

    /// A request signed with the host's key.
    pub(crate) async fn request(&self, app: &TestApp, method: &str, path: &str, query: &str, body: &[u8]) -> Response {
        let nonce = format_host_nonce(&rand::random());
        let (time, signature) =
            sign_host_request(&self.key, method, path, self.host_id, Utc::now().timestamp(), &nonce, body);
        let url = app.url(&format!("{path}{query}"));
        let req = if method == "GET" { app.client.get(url) } else { app.client.post(url) };
        req.header("x-capex-host-time", time)
            .header("x-capex-host-nonce", nonce)
            .header("x-capex-host-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn ack(&self, app: &TestApp, lease_id: &str) -> Value {
        let path = format!("/api/v1/hosts/{}/leases/{lease_id}/ack", self.host_id);
        let res = self.request(app, "POST", &path, "", b"").await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

impl World {
    /// Sends the next signed report; `show_gpus: false` leaves the GPUs out.
    pub(crate) async fn report(&mut self, leases: Option<Vec<LeaseReport>>, show_gpus: bool) {
        self.host.report(&self.app, leases, show_gpus).await;
    }

    async fn host_request(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Response {
        self.host.request(&self.app, method, path, query, body).await
    }

    async fn assignments(&self, query: &str) -> Value {
        let path = format!("/api/v1/hosts/{}/assignments", self.host.host_id);
        let res = self.host_request("GET", &path, query, b"").await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    pub(crate) async fn ack(&self, lease_id: &str) -> Value {
        self.host.ack(&self.app, lease_id).await
    }

    /// Crosses an ask of the whole host at `price` with a bid for `gpus`; returns the job id.
    pub(crate) async fn trade(&self, gpus: u32, max_hours: &str, price: &str) -> String {
        self.app.ask(&self.provider, CLASS, self.host.host_id, self.host.gpus.len() as u32, price).await;
        let bid = self
            .app
            .place_ok(
                &self.buyer,
                CLASS,
                &json!({"side": "bid", "gpus": gpus, "max_hours": max_hours, "price": price, "tif": "gtc",
                        "job": {"command": ["sh", "-c", "echo hi"], "env": {"SECRET": "s3cret"}}}),
            )
            .await;
        bid["fills"][0]["lease_id"].as_str().expect("the bid traded").to_string()
    }

    pub(crate) async fn job(&self, id: &str) -> Value {
        self.app.get_json(&format!("/api/v1/jobs/{id}"), &self.buyer.token).await
    }

    pub(crate) async fn available(&self, user: &TestUser) -> Decimal {
        self.app.wallet(user).await.0.parse().unwrap()
    }

    pub(crate) async fn fees(&self) -> Decimal {
        sqlx::query_scalar("select balance from accounts where kind = 'fees'")
            .fetch_optional(&self.app.pool)
            .await
            .unwrap()
            .unwrap_or(Decimal::ZERO)
    }

    pub(crate) async fn invariants_ok(&self) {
        let mut conn = self.app.pool.acquire().await.unwrap();
        let report = capex_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(report.ok(), "{report:?}");
    }
}

pub(crate) fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}")).parse().unwrap()
}

pub(crate) fn running(lease_id: &str) -> Option<Vec<LeaseReport>> {
    Some(vec![LeaseReport {
        lease_id: lease_id.parse().unwrap(),
        state: "running".into(),
        pid: Some(42),
        exit_code: None,
    }])
}

fn floor6(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(6, rust_decimal::RoundingStrategy::ToZero)
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn full_cycle_bills_attested_time_and_refunds_the_rest(pool: sqlx::PgPool) {
    let mut w = world(pool, 2).await;
    let job_id = w.trade(1, "1", "2").await;
    // The trade escrowed 2 credits x 1 GPU x 1 h.
    assert_eq!(w.available(&w.buyer).await, Decimal::from(98));
    let job = w.job(&job_id).await;
    assert_eq!(job["state"], "pending");
    assert_eq!(job["class"], CLASS);
    assert_eq!(job["env"]["SECRET"], "s3cret");
    assert_eq!(dec(&job["escrow_left"]), Decimal::from(2));

    let assigned = w.assignments("?wait=0").await;
    assert_eq!(assigned["items"].as_array().unwrap().len(), 1);
    assert_eq!(assigned["items"][0]["lease_id"], job_id.as_str());
    assert_eq!(assigned["items"][0]["job"]["command"][0], "sh");
    assert_eq!(w.ack(&job_id).await["state"], "running");

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        w.report(running(&job_id), true).await;
    }
    let job = w.job(&job_id).await;
    assert_eq!(job["state"], "running");
    let billed = dec(&job["billed_seconds"]);
    assert!(billed > Decimal::ONE && billed < Decimal::from(3), "billed {billed}");
    assert_eq!(dec(&job["cost_so_far"]), floor6(Decimal::from(2) * billed / Decimal::from(3600)));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let exited =
        vec![LeaseReport { lease_id: job_id.parse().unwrap(), state: "exited".into(), pid: None, exit_code: Some(0) }];
    w.report(Some(exited), true).await;
    let job = w.job(&job_id).await;
    assert_eq!(job["state"], "exited");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(dec(&job["escrow_left"]), Decimal::ZERO);
    let billed = dec(&job["billed_seconds"]);
    let cost = dec(&job["cost_so_far"]);
    assert_eq!(cost, floor6(Decimal::from(2) * billed / Decimal::from(3600)), "price x G x billed time");
    let fee = floor6(cost * Decimal::new(2, 2));
    assert_eq!(dec(&job["fee_so_far"]), fee);
    assert_eq!(w.available(&w.buyer).await, Decimal::from(100) - cost, "the rest was refunded");
    assert_eq!(w.available(&w.provider).await, cost - fee);
    assert_eq!(w.fees().await, fee);
    w.invariants_ok().await;

    // The finished lease leaves the host's assignments and counts as completed.
    assert!(w.assignments("").await["items"].as_array().unwrap().is_empty());
    let host = w.app.get_json(&format!("/api/v1/hosts/{}", w.host.host_id), &w.provider.token).await;
    assert_eq!(host["leases_completed"], 1);
    assert_eq!(host["leases_lost"], 0);
    let list = w.app.get_json("/api/v1/jobs", &w.buyer.token).await;
    assert_eq!(list["items"][0]["lease_id"], job_id.as_str());
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_silent_gap_and_a_report_without_the_gpus_are_not_billed(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    let job_id = w.trade(1, "0.01", "3600").await; // 1 credit per GPU-second: easy to read
    w.ack(&job_id).await;
    // A report that does not show the lease's GPUs bills nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.report(running(&job_id), false).await;
    assert_eq!(dec(&w.job(&job_id).await["billed_seconds"]), Decimal::ZERO);
    // 2.6 s of silence (under the 3 intervals that lose the host): at most 2 intervals billed.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    w.report(running(&job_id), true).await;
    let job = w.job(&job_id).await;
    assert_eq!(dec(&job["billed_seconds"]), Decimal::from(2), "capped at two report intervals");
    assert_eq!(dec(&job["cost_so_far"]), Decimal::from(2));
    w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn buyer_cancel_stops_billing_and_refunds(pool: sqlx::PgPool) {
    let mut w = world(pool, 2).await;
    let job_id = w.trade(1, "1", "2").await;
    w.ack(&job_id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.report(running(&job_id), true).await;

    // Others do not see the job; the provider sees it without env values and cannot cancel.
    let stranger = w.app.register(&["buyer"]).await;
    let res = w.app.get(&format!("/api/v1/jobs/{job_id}"), Some(&stranger.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let seen = w.app.get_json(&format!("/api/v1/jobs/{job_id}"), &w.provider.token).await;
    assert_eq!(seen["role"], "provider");
    assert_eq!(seen["env"]["SECRET"], "");
    let res = w.app.post(&format!("/api/v1/jobs/{job_id}/cancel"), Some(&w.provider.token), &json!({})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let res = w.app.post(&format!("/api/v1/jobs/{job_id}/cancel"), Some(&w.buyer.token), &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "cancelled");
    let cost = dec(&job["cost_so_far"]);
    assert_eq!(dec(&job["escrow_left"]), Decimal::ZERO);
    // The agent learns of it: the lease leaves the host's assignments.
    assert!(w.assignments("").await["items"].as_array().unwrap().is_empty());
    // Later reports bill nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.report(running(&job_id), true).await;
    assert_eq!(dec(&w.job(&job_id).await["cost_so_far"]), cost);
    assert_eq!(w.available(&w.buyer).await, Decimal::from(100) - cost);
    let res = w.app.post(&format!("/api/v1/jobs/{job_id}/cancel"), Some(&w.buyer.token), &json!({})).await;
    assert_problem(res, StatusCode::CONFLICT, "job_ended").await;
    w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_silent_host_loses_its_leases_and_the_escrow_returns(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    let job_id = w.trade(1, "1", "2").await;
    w.ack(&job_id).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    w.report(running(&job_id), true).await;
    let cost = dec(&w.job(&job_id).await["cost_so_far"]);
    // No report for more than 3 intervals (1 s each): the sweeper closes the lease.
    let mut state = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        state = w.job(&job_id).await["state"].as_str().unwrap().to_string();
        if state == "host_lost" {
            break;
        }
    }
    assert_eq!(state, "host_lost");
    // The SLA credit (a tenth of what the lease billed) came from the provider's earnings.
    let credit = floor6(cost / Decimal::from(10));
    assert_eq!(dec(&w.job(&job_id).await["sla_credits"]), credit);
    assert_eq!(w.available(&w.buyer).await, Decimal::from(100) - cost + credit);
    let host = w.app.get_json(&format!("/api/v1/hosts/{}", w.host.host_id), &w.provider.token).await;
    assert_eq!(host["leases_lost"], 1);
    w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_lease_ends_at_its_max_duration_and_bills_no_further(pool: sqlx::PgPool) {
    let mut w = world(pool, 1).await;
    let job_id = w.trade(1, "0.001", "3600").await; // 3.6 s at 1 credit per second
    w.ack(&job_id).await;
    let mut state = String::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.report(running(&job_id), true).await;
        state = w.job(&job_id).await["state"].as_str().unwrap().to_string();
        if state != "running" {
            break;
        }
    }
    assert_eq!(state, "max_duration");
    let job = w.job(&job_id).await;
    assert!(dec(&job["billed_seconds"]) <= Decimal::new(36, 1), "{job}");
    assert!(dec(&job["cost_so_far"]) <= Decimal::new(36, 1));
    w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn host_requests_need_the_host_signature_and_logs_round_trip(pool: sqlx::PgPool) {
    let w = world(pool, 1).await;
    let path = format!("/api/v1/hosts/{}/assignments", w.host.host_id);
    let res = w.app.get(&path, None).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "host_signature_missing").await;
    let other = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let nonce = format_host_nonce(&rand::random());
    let (time, sig) = sign_host_request(&other, "GET", &path, w.host.host_id, Utc::now().timestamp(), &nonce, b"");
    let res = w
        .app
        .client
        .get(w.app.url(&path))
        .header("x-capex-host-time", time)
        .header("x-capex-host-nonce", &nonce)
        .header("x-capex-host-signature", sig)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_host_signature").await;
    let stale = Utc::now().timestamp() - 3600;
    let (time, sig) = sign_host_request(&w.host.key, "GET", &path, w.host.host_id, stale, &nonce, b"");
    let res = w
        .app
        .client
        .get(w.app.url(&path))
        .header("x-capex-host-time", time)
        .header("x-capex-host-nonce", &nonce)
        .header("x-capex-host-signature", sig)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "host_time_skew").await;

    // A long-poll wakes as soon as a trade gives the host a lease.
    let started = std::time::Instant::now();
    let poll = w.assignments("?wait=10");
    let trade = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.trade(1, "1", "2").await
    };
    let (assigned, job_id) = tokio::join!(poll, trade);
    assert!(started.elapsed() < Duration::from_secs(3), "woke in {:?}", started.elapsed());
    assert_eq!(assigned["items"][0]["lease_id"], job_id.as_str());

    let logs_path = format!("/api/v1/hosts/{}/leases/{job_id}/logs", w.host.host_id);
    let body = serde_json::to_vec(
        &json!({"chunks": [{"stream": "stdout", "text": "GPU-a\n"}, {"stream": "stdout", "text": "done\n"}]}),
    )
    .unwrap();
    let res = w.host_request("POST", &logs_path, "", &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    let bad = serde_json::to_vec(&json!({"chunks": [{"stream": "tty", "text": "x"}]})).unwrap();
    let res = w.host_request("POST", &logs_path, "", &bad).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_stream").await;
    let logs = w.app.get_json(&format!("/api/v1/jobs/{job_id}/logs"), &w.buyer.token).await;
    assert_eq!(logs["items"].as_array().unwrap().len(), 2);
    assert_eq!(logs["items"][1]["text"], "done\n");
    let next = logs["next_after"].as_i64().unwrap();
    let more = w.app.get_json(&format!("/api/v1/jobs/{job_id}/logs?after={next}"), &w.buyer.token).await;
    assert!(more["items"].as_array().unwrap().is_empty());
    let res = w.app.get(&format!("/api/v1/jobs/{job_id}/logs"), Some(&w.provider.token)).await;
    assert_eq!(res.status(), StatusCode::OK, "the provider may read its host's job logs");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_job_s_telemetry_is_its_gpus_while_the_lease_lasted(pool: sqlx::PgPool) {
    let mut w = world(pool, 2).await; // one report of both GPUs before the trade
    let job_id = w.trade(1, "1", "2").await;
    w.ack(&job_id).await;
    w.report(running(&job_id), true).await;
    w.report(running(&job_id), true).await;
    let exited =
        vec![LeaseReport { lease_id: job_id.parse().unwrap(), state: "exited".into(), pid: None, exit_code: Some(0) }];
    w.report(Some(exited), true).await;
    assert_eq!(w.job(&job_id).await["state"], "exited");
    w.report(None, true).await; // after the end: not the job's
    let leased = w.job(&job_id).await["gpu_uuids"][0].as_str().unwrap().to_string();

    // The host's owner sees both GPUs in all five reports; the job shows only its GPU, in
    // the three reports from the trade to the exit.
    let host = w.app.get_json(&format!("/api/v1/hosts/{}/telemetry", w.host.host_id), &w.provider.token).await;
    assert_eq!(host["gpus"].as_array().unwrap().len(), 2);
    assert_eq!(host["gpus"][0]["samples"].as_array().unwrap().len(), 5);
    let path = format!("/api/v1/jobs/{job_id}/telemetry");
    for user in [&w.buyer, &w.provider] {
        let telemetry = w.app.get_json(&path, &user.token).await;
        assert_eq!(telemetry["host_id"], w.host.host_id.to_string());
        let gpus = telemetry["gpus"].as_array().unwrap();
        assert_eq!(gpus.len(), 1, "{telemetry}");
        assert_eq!(gpus[0]["uuid"], leased.as_str());
        assert_eq!(gpus[0]["samples"].as_array().unwrap().len(), 3, "{telemetry}");
        assert_eq!(gpus[0]["samples"][0]["power_w"], 70.0);
        assert_eq!(telemetry["next_since"], Value::Null);
    }

    // Paging: `since` moves through the window but never widens it.
    let first = w.app.get_json(&format!("{path}?limit=2"), &w.buyer.token).await;
    assert_eq!(first["gpus"][0]["samples"].as_array().unwrap().len(), 2);
    let next = first["next_since"].as_str().expect("a full page says where to go on").replace('+', "%2B");
    let rest = w.app.get_json(&format!("{path}?since={next}"), &w.buyer.token).await;
    assert_eq!(rest["gpus"][0]["samples"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_since"], Value::Null);
    let early = w.app.get_json(&format!("{path}?since=2000-01-01T00:00:00Z"), &w.buyer.token).await;
    assert_eq!(early["gpus"][0]["samples"].as_array().unwrap().len(), 3);

    // Nobody else learns anything: the same 404 as an unknown job.
    let stranger = w.app.register(&["buyer", "provider"]).await;
    let res = w.app.get(&path, Some(&stranger.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = w.app.get(&format!("/api/v1/jobs/{}/telemetry", Uuid::new_v4()), Some(&w.buyer.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = w.app.get("/api/v1/jobs/not-a-job/telemetry", Some(&w.buyer.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = w.app.get(&path, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = w.app.get(&format!("{path}?limit=0"), Some(&w.buyer.token)).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_limit").await;
    let res = w.app.get(&format!("{path}?since=yesterday"), Some(&w.buyer.token)).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;

    let spec: Value = w.app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    assert!(spec["paths"]["/api/v1/jobs/{id}/telemetry"]["get"].is_object(), "missing from the OpenAPI document");
}
