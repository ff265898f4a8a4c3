//! Hosts: registration with a signed inventory, signed reports and every refusal code,
//! host views, telemetry and capacity.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use capex_core::report::encode_public_key;
use capex_core::{
    GpuProcess, GpuSample, INVENTORY_DOMAIN, InventoryGpu, InventoryPayload, REPORT_DOMAIN, ReportPayload,
    SignedEnvelope,
};
use chrono::{Duration, Utc};
use ed25519_dalek::SigningKey;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};

pub struct TestHost {
    pub host_id: Uuid,
    pub key: SigningKey,
    pub gpus: Vec<(String, String)>,
}

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

fn inventory(key: &SigningKey, gpus: &[(String, String)]) -> SignedEnvelope {
    inventory_with(key, gpus, capex_core::GpuBackend::Nvml)
}

pub(crate) fn inventory_with(
    key: &SigningKey,
    gpus: &[(String, String)],
    backend: capex_core::GpuBackend,
) -> SignedEnvelope {
    let payload = InventoryPayload {
        public_key: encode_public_key(&key.verifying_key()),
        name: "rack-1".into(),
        created_at: Utc::now(),
        interval_s: 10,
        backend,
        driver_version: Some("550.54".into()),
        cuda_version: Some("12.4".into()),
        gpus: gpus
            .iter()
            .enumerate()
            .map(|(i, (uuid, name))| InventoryGpu {
                index: i as u32,
                uuid: uuid.clone(),
                name: name.clone(),
                memory_total_mib: if name.contains("L4") { 23_034 } else { 81_559 },
                pci_bus_id: Some(format!("00000000:{i:02X}:00.0")),
            })
            .collect(),
    };
    SignedEnvelope::seal_json(INVENTORY_DOMAIN, key, &payload)
}

pub(crate) fn h100s(n: usize) -> Vec<(String, String)> {
    (0..n).map(|_| (format!("GPU-{}", Uuid::new_v4()), "NVIDIA H100 80GB HBM3".to_string())).collect()
}

async fn provider(app: &TestApp) -> TestUser {
    app.register(&["provider"]).await
}

pub(crate) async fn register_host(app: &TestApp, user: &TestUser, gpus: Vec<(String, String)>) -> TestHost {
    register_host_with(app, user, gpus, capex_core::GpuBackend::Nvml).await
}

pub(crate) async fn register_host_with(
    app: &TestApp,
    user: &TestUser,
    gpus: Vec<(String, String)>,
    backend: capex_core::GpuBackend,
) -> TestHost {
    let key = new_key();
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(inventory_with(&key, &gpus, backend))).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap_or_default());
    let body: Value = res.json().await.unwrap();
    TestHost { host_id: body["host_id"].as_str().unwrap().parse().unwrap(), key, gpus }
}

pub(crate) fn report(host: &TestHost, seq: u64, energy_mj: u64) -> ReportPayload {
    let now = Utc::now();
    ReportPayload {
        host_id: host.host_id,
        seq,
        sent_at: now,
        measured_at: now,
        interval_s: 10,
        backend: capex_core::GpuBackend::Nvml,
        gpus: host
            .gpus
            .iter()
            .map(|(uuid, name)| GpuSample {
                uuid: uuid.clone(),
                name: name.clone(),
                memory_total_mib: 81_559,
                memory_used_mib: 0,
                utilization_pct: 0,
                power_mw: 70_000,
                energy_mj,
                temperature_c: 35,
                processes: vec![],
            })
            .collect(),
        leases: None,
    }
}

pub(crate) fn seal(key: &SigningKey, report: &ReportPayload) -> SignedEnvelope {
    SignedEnvelope::seal_json(REPORT_DOMAIN, key, report)
}

pub(crate) async fn send_raw(app: &TestApp, host_id: Uuid, body: Vec<u8>) -> Response {
    app.client
        .post(app.url(&format!("/api/v1/hosts/{host_id}/reports")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn send(app: &TestApp, host_id: Uuid, envelope: &SignedEnvelope) -> Response {
    send_raw(app, host_id, serde_json::to_vec(envelope).unwrap()).await
}

pub(crate) async fn send_ok(app: &TestApp, host: &TestHost, report: &ReportPayload) -> Value {
    let res = send(app, host.host_id, &seal(&host.key, report)).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
    res.json().await.unwrap()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn registered_host_reports_and_shows_up_in_views_and_capacity(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = provider(&app).await;
    let mut gpus = h100s(2);
    gpus.push((format!("GPU-{}", Uuid::new_v4()), "NVIDIA L4".into()));
    let host = register_host(&app, &user, gpus).await;

    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &user.token).await;
    assert_eq!(view["live"], false, "not live before its first report");
    assert_eq!(view["gpus"][0]["class"], "H100-80GB");
    assert_eq!(view["gpus"][2]["class"], "L4-24GB");
    assert_eq!(view["driver_version"], "550.54");

    let mut first = report(&host, 0, 1_000);
    first.gpus[1].processes = vec![GpuProcess { pid: 4242, used_memory_mib: 1000, lease_id: None }];
    first.gpus[1].utilization_pct = 80;
    let receipt = send_ok(&app, &host, &first).await;
    assert_eq!(receipt, json!({"status": "accepted", "seq": 0}));
    send_ok(&app, &host, &report(&host, 1, 2_000)).await;

    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &user.token).await;
    assert_eq!(view["live"], true);
    assert_eq!(view["last_seq"], 1);
    assert_eq!(view["reports_accepted"], 2);
    assert_eq!(view["gpus"][1]["busy"], false, "the second report shows no process");
    assert_eq!(view["gpus"][0]["reporting"], true);
    assert_eq!(view["gpus"][0]["verification"]["level"], "reported");
    assert_eq!(view["gpus"][0]["energy_mj"], 2_000);
    assert_eq!(view["gpus"][0]["power_w"], 70.0);

    let list = app.get_json("/api/v1/hosts", &user.token).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["next_cursor"], Value::Null);

    // Capacity is public.
    let res = app.get("/api/v1/capacity", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let capacity: Value = res.json().await.unwrap();
    assert_eq!(
        capacity,
        json!({"items": [
            {"class": "H100-80GB", "live_hosts": 1, "free_gpus": 2, "busy_gpus": 0},
            {"class": "L4-24GB", "live_hosts": 1, "free_gpus": 1, "busy_gpus": 0},
        ]})
    );

    let since = (Utc::now() - Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ");
    let telemetry = app.get_json(&format!("/api/v1/hosts/{}/telemetry?since={since}", host.host_id), &user.token).await;
    let series = telemetry["gpus"].as_array().unwrap();
    assert_eq!(series.len(), 3);
    let busy = series.iter().find(|s| s["uuid"] == host.gpus[1].0.as_str()).unwrap();
    assert_eq!(busy["samples"].as_array().unwrap().len(), 2);
    assert_eq!(busy["samples"][0]["utilization_pct"], 80);
    assert_eq!(busy["samples"][0]["power_w"], 70.0);
    assert!(busy["samples"][0]["at"].is_string());

    // The stored history: exact signed bytes, newest first, re-verifiable.
    let history = app.get_json(&format!("/api/v1/hosts/{}/reports?limit=1", host.host_id), &user.token).await;
    assert_eq!(history["items"][0]["seq"], 1);
    assert_eq!(history["next_cursor"], 1);
    let stored = SignedEnvelope {
        payload: history["items"][0]["payload"].as_str().unwrap().to_string(),
        signature: history["items"][0]["signature"].as_str().unwrap().to_string(),
    };
    assert!(stored.open(REPORT_DOMAIN, &host.key.verifying_key()).is_ok());
    let older = app.get_json(&format!("/api/v1/hosts/{}/reports?cursor=1", host.host_id), &user.token).await;
    assert_eq!(older["items"][0]["seq"], 0);
    assert_eq!(older["items"][0]["report"]["gpus"][1]["processes"][0]["pid"], 4242);
    assert_eq!(older["next_cursor"], Value::Null);

    // Nobody else sees the host.
    let stranger = provider(&app).await;
    let res = app.get(&format!("/api/v1/hosts/{}", host.host_id), Some(&stranger.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.get(&format!("/api/v1/hosts/{}/telemetry", host.host_id), Some(&stranger.token)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.get_json("/api/v1/hosts", &stranger.token).await["items"], json!([]));
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_silent_host_stops_being_live_and_leaves_capacity(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = provider(&app).await;
    let host = register_host(&app, &user, h100s(1)).await;
    let mut first = report(&host, 0, 1);
    first.interval_s = 1;
    send_ok(&app, &host, &first).await;
    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &user.token).await;
    assert_eq!(view["live"], true);
    assert_eq!(view["report_interval_s"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &user.token).await;
    assert_eq!(view["live"], false, "three intervals without a report");
    assert_eq!(view["gpus"][0]["reporting"], false);
    let capacity: Value = app.get("/api/v1/capacity", None).await.json().await.unwrap();
    assert_eq!(capacity, json!({"items": []}));
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn registration_is_idempotent_and_a_gpu_belongs_to_one_host(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = provider(&app).await;
    let key = new_key();
    let gpus = h100s(2);
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(inventory(&key, &gpus))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let first: Value = res.json().await.unwrap();

    // The same key again (a retried register) answers with the same host.
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(inventory(&key, &gpus))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["host_id"], first["host_id"]);

    // Another host claiming one of these GPUs is refused, whoever asks.
    let other = provider(&app).await;
    let claim = vec![gpus[1].clone()];
    let res = app.post("/api/v1/hosts", Some(&other.token), &json!(inventory(&new_key(), &claim))).await;
    let body = assert_problem(res, StatusCode::CONFLICT, "gpu_already_registered").await;
    assert_eq!(body["field"], "payload.gpus[0].uuid");
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(inventory(&new_key(), &claim))).await;
    assert_problem(res, StatusCode::CONFLICT, "gpu_already_registered").await;

    // Someone else's host key cannot be registered to another account.
    let res = app.post("/api/v1/hosts", Some(&other.token), &json!(inventory(&key, &h100s(1)))).await;
    assert_problem(res, StatusCode::CONFLICT, "host_key_registered").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn registration_refusals(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = provider(&app).await;
    let key = new_key();

    let res = app.post("/api/v1/hosts", None, &json!(inventory(&key, &h100s(1)))).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let buyer = app.register(&["buyer"]).await;
    let res = app.post("/api/v1/hosts", Some(&buyer.token), &json!(inventory(&key, &h100s(1)))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // Signed by a key other than the one it names.
    let mut forged = inventory(&key, &h100s(1));
    forged.signature = inventory(&new_key(), &h100s(1)).signature;
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(forged)).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // A report signature is not an inventory signature (domain separation).
    let mut cross = inventory(&key, &h100s(1));
    let payload = BASE64.decode(&cross.payload).unwrap();
    cross.signature = SignedEnvelope::seal(REPORT_DOMAIN, &key, &payload).signature;
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(cross)).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(inventory(&key, &[]))).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_gpus").await;
    let gpu = h100s(1).remove(0);
    let res = app.post("/api/v1/hosts", Some(&user.token), &json!(inventory(&key, &[gpu.clone(), gpu]))).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_gpu_uuid").await;

    let res = app.post("/api/v1/hosts", Some(&user.token), &json!({"payload": "%%%", "signature": "AA=="})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_base64").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn every_report_refusal_has_its_code_and_is_counted(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = provider(&app).await;
    let host = register_host(&app, &user, h100s(2)).await;
    let other = register_host(&app, &user, h100s(1)).await;
    send_ok(&app, &host, &report(&host, 0, 5_000)).await;
    let url_id = host.host_id;

    // Forged signature: random bytes.
    let mut forged = seal(&host.key, &report(&host, 1, 6_000));
    forged.signature = BASE64.encode(rand::random::<[u8; 32]>().repeat(2));
    assert_problem(send(&app, url_id, &forged).await, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // Signed by another host's key.
    let by_other = seal(&other.key, &report(&host, 1, 6_000));
    assert_problem(send(&app, url_id, &by_other).await, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // Payload altered after signing.
    let mut altered = seal(&host.key, &report(&host, 1, 6_000));
    let mut bytes = BASE64.decode(&altered.payload).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap().replace("6000", "9000");
    assert_ne!(text.as_bytes(), bytes.as_slice());
    bytes = text.into_bytes();
    altered.payload = BASE64.encode(&bytes);
    assert_problem(send(&app, url_id, &altered).await, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // Replays: the same bytes are a no-op; anything else at or below the last seq is refused.
    let one = seal(&host.key, &report(&host, 1, 6_000));
    assert_eq!(send(&app, url_id, &one).await.status(), StatusCode::OK);
    let res = send(&app, url_id, &one).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "duplicate", "seq": 1}));
    let res = send(&app, url_id, &seal(&host.key, &report(&host, 1, 6_001))).await;
    assert_problem(res, StatusCode::CONFLICT, "replayed_sequence").await;
    let res = send(&app, url_id, &seal(&host.key, &report(&host, 0, 6_001))).await;
    assert_problem(res, StatusCode::CONFLICT, "replayed_sequence").await;

    // sent_at outside the skew window (120 s), both ways.
    let mut future = report(&host, 2, 7_000);
    future.sent_at = Utc::now() + Duration::seconds(600);
    assert_problem(
        send(&app, url_id, &seal(&host.key, &future)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "sent_at_future",
    )
    .await;
    let mut stale = report(&host, 2, 7_000);
    stale.sent_at = Utc::now() - Duration::seconds(600);
    assert_problem(
        send(&app, url_id, &seal(&host.key, &stale)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "sent_at_stale",
    )
    .await;

    // A GPU registered to another host.
    let mut foreign = report(&host, 2, 7_000);
    foreign.gpus[1].uuid = other.gpus[0].0.clone();
    assert_problem(
        send(&app, url_id, &seal(&host.key, &foreign)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "foreign_gpu",
    )
    .await;

    // Energy counter going backwards.
    let backwards = report(&host, 2, 5_999);
    let res = send(&app, url_id, &seal(&host.key, &backwards)).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "energy_went_backwards").await;

    // A report that claims to be another host's, signed by this host.
    let mut mismatch = report(&host, 2, 7_000);
    mismatch.host_id = other.host_id;
    let res = send(&app, url_id, &seal(&host.key, &mismatch)).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "host_mismatch").await;

    // Oversized body.
    let mut huge = report(&host, 2, 7_000);
    huge.gpus[0].name = "x".repeat(70 * 1024);
    let res = send(&app, url_id, &seal(&host.key, &huge)).await;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "report_too_large").await;

    // Malformed envelope JSON, malformed base64, and signed bytes that are not a report.
    let res = send_raw(&app, url_id, b"{\"payload\": ".to_vec()).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_envelope").await;
    let res = send_raw(&app, url_id, br#"{"payload": "not base64!", "signature": "AA=="}"#.to_vec()).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_base64").await;
    let not_json = SignedEnvelope::seal(REPORT_DOMAIN, &host.key, b"this is not json");
    assert_problem(send(&app, url_id, &not_json).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload").await;
    let wrong_shape = SignedEnvelope::seal(REPORT_DOMAIN, &host.key, br#"{"seq": 2}"#);
    assert_problem(send(&app, url_id, &wrong_shape).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload").await;

    // Unknown host (and a path that is not a host id at all).
    let res = send(&app, Uuid::now_v7(), &seal(&host.key, &report(&host, 2, 7_000))).await;
    assert_problem(res, StatusCode::NOT_FOUND, "unknown_host").await;
    let res = app.client.post(app.url("/api/v1/hosts/nope/reports")).body("{}").send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND, "unknown_host").await;

    // A disabled host is refused.
    sqlx::query("update hosts set status = 'disabled' where host_id = $1")
        .bind(other.host_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let res = send(&app, other.host_id, &seal(&other.key, &report(&other, 0, 1))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "host_inactive").await;

    // None of that stopped the next good report.
    send_ok(&app, &host, &report(&host, 2, 7_000)).await;

    // Report health per host, by code.
    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &user.token).await;
    let counts = &view;
    assert_eq!(view["reports_accepted"], 3);
    assert_eq!(view["reports_duplicate"], 1);
    let refused = &view["reports_refused"];
    assert_eq!(refused["invalid_payload"], 2, "{counts}");
    for code in [
        "replayed_sequence",
        "sent_at_future",
        "sent_at_stale",
        "foreign_gpu",
        "energy_went_backwards",
        "host_mismatch",
    ] {
        assert!(refused[code].as_i64().unwrap_or(0) >= 1, "{code} counted: {counts}");
    }
    // Refusals before the signature verified may come from anyone: not the host's counts
    // but the operator's, by code (see report_attribution.rs).
    for code in ["invalid_signature", "report_too_large", "invalid_envelope", "invalid_base64"] {
        assert!(refused.get(code).is_none(), "{code} not counted on the host: {counts}");
    }
    let operator = app.operator().await;
    let global = app.get_json("/api/v1/operator/report-refusals", &operator.token).await;
    let global_count =
        |code: &str| global["items"].as_array().unwrap().iter().find(|i| i["code"] == code).map(|i| i["count"].clone());
    assert_eq!(global_count("invalid_signature"), Some(json!(3)), "{global}");
    for code in ["report_too_large", "invalid_envelope", "invalid_base64", "unknown_host"] {
        assert!(global_count(code).is_some(), "{code} counted for the operator: {global}");
    }

    // And in Prometheus, by code.
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    for code in ["invalid_signature", "replayed_sequence", "unknown_host", "report_too_large", "host_inactive"] {
        assert!(metrics.contains(&format!("capex_report_refusals_total{{code=\"{code}\"}}")), "{code} in metrics");
    }
    assert!(metrics.contains("capex_reports_total{outcome=\"accepted\"}"));
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn concurrent_reports_from_many_hosts_are_all_accepted_in_order(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = provider(&app).await;
    let mut hosts = Vec::new();
    for _ in 0..8 {
        hosts.push(register_host(&app, &user, h100s(1)).await);
    }
    let hosts = std::sync::Arc::new(hosts);
    let mut tasks = Vec::new();
    for i in 0..hosts.len() {
        let hosts = hosts.clone();
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/hosts/{}/reports", hosts[i].host_id));
        tasks.push(tokio::spawn(async move {
            let host = &hosts[i];
            for seq in 0..25u64 {
                let body = serde_json::to_vec(&seal(&host.key, &report(host, seq, seq * 10))).unwrap();
                let res = client.post(&url).body(body).send().await.unwrap();
                assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from host_reports").fetch_one(&app.pool).await.unwrap();
    assert_eq!(rows, 8 * 25);
    for host in hosts.iter() {
        let last: i64 = sqlx::query_scalar("select last_seq from hosts where host_id = $1")
            .bind(host.host_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(last, 24);
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn host_routes_are_in_the_openapi_document(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let spec: Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    for path in [
        "/api/v1/hosts",
        "/api/v1/hosts/{host_id}",
        "/api/v1/hosts/{host_id}/reports",
        "/api/v1/hosts/{host_id}/telemetry",
        "/api/v1/capacity",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
}
