//! A host's report counts hold only what the host itself signed: refusals decided before
//! its signature verified (anyone can send those to any host's URL) are counted by code
//! for the operator, never on the host.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use capex_core::report::encode_public_key;
use capex_core::{
    GpuSample, INVENTORY_DOMAIN, InventoryGpu, InventoryPayload, REPORT_DOMAIN, ReportPayload, SignedEnvelope,
};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};

struct Host {
    host_id: Uuid,
    key: SigningKey,
    gpu: String,
}

async fn register_host(app: &TestApp, owner: &TestUser) -> Host {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let gpu = format!("GPU-{}", Uuid::new_v4());
    let inventory = InventoryPayload {
        public_key: encode_public_key(&key.verifying_key()),
        name: "rack-1".into(),
        created_at: Utc::now(),
        interval_s: 10,
        driver_version: None,
        cuda_version: None,
        gpus: vec![InventoryGpu {
            index: 0,
            uuid: gpu.clone(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: 81_559,
            pci_bus_id: None,
        }],
    };
    let envelope = SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &inventory);
    let res = app.post("/api/v1/hosts", Some(&owner.token), &json!(envelope)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap_or_default());
    let body: Value = res.json().await.unwrap();
    Host { host_id: body["host_id"].as_str().unwrap().parse().unwrap(), key, gpu }
}

fn report(host: &Host, seq: u64, energy_mj: u64) -> ReportPayload {
    let now = Utc::now();
    ReportPayload {
        host_id: host.host_id,
        seq,
        sent_at: now,
        measured_at: now,
        interval_s: 10,
        gpus: vec![GpuSample {
            uuid: host.gpu.clone(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: 81_559,
            memory_used_mib: 0,
            utilization_pct: 0,
            power_mw: 70_000,
            energy_mj,
            temperature_c: 35,
            processes: vec![],
        }],
        leases: None,
    }
}

async fn send(app: &TestApp, host_id: Uuid, body: &Value) -> Response {
    app.post(&format!("/api/v1/hosts/{host_id}/reports"), None, body).await
}

async fn send_ok(app: &TestApp, host: &Host, report: &ReportPayload) {
    let res = send(app, host.host_id, &json!(SignedEnvelope::seal_json(REPORT_DOMAIN, &host.key, report))).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
}

/// The host's report counts as its owner reads them: accepted, duplicate, refused by code.
async fn counts(app: &TestApp, owner: &TestUser, host: &Host) -> Value {
    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &owner.token).await;
    json!({"accepted": view["reports_accepted"], "duplicate": view["reports_duplicate"],
           "refused": view["reports_refused"]})
}

async fn unattributed(app: &TestApp, operator: &TestUser) -> Value {
    let list = app.get_json("/api/v1/operator/report-refusals", &operator.token).await;
    let mut by_code = serde_json::Map::new();
    for item in list["items"].as_array().unwrap() {
        by_code.insert(item["code"].as_str().unwrap().to_string(), item["count"].clone());
    }
    Value::Object(by_code)
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn refusals_not_signed_by_the_host_are_not_counted_on_it(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let owner = app.register(&["provider"]).await;
    let victim = register_host(&app, &owner).await;
    let stranger = app.register(&["provider"]).await;
    let attacker = register_host(&app, &stranger).await;
    send_ok(&app, &victim, &report(&victim, 0, 1_000)).await;
    let before = counts(&app, &owner, &victim).await;
    assert_eq!(before, json!({"accepted": 1, "duplicate": 0, "refused": {}}));

    let next = report(&victim, 1, 2_000);
    let sealed = SignedEnvelope::seal_json(REPORT_DOMAIN, &victim.key, &next);
    // No signature at all.
    let res = send(&app, victim.host_id, &json!({"payload": sealed.payload})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_envelope").await;
    let res = send(&app, victim.host_id, &json!({"payload": sealed.payload, "signature": ""})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_base64").await;
    // Signed by another host's key (the attacker's own, registered host).
    let by_other = SignedEnvelope::seal_json(REPORT_DOMAIN, &attacker.key, &next);
    let res = send(&app, victim.host_id, &json!(by_other)).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    // An all-zero signature.
    let zeros = json!({"payload": sealed.payload, "signature": BASE64.encode([0u8; 64])});
    let res = send(&app, victim.host_id, &zeros).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    // Too large to read.
    let res = send(&app, victim.host_id, &json!({"payload": "A".repeat(70 * 1024), "signature": ""})).await;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "report_too_large").await;

    // A report the host did sign, with an old sequence number: the host's own refusal.
    let replay = SignedEnvelope::seal_json(REPORT_DOMAIN, &victim.key, &report(&victim, 0, 1_500));
    let res = send(&app, victim.host_id, &json!(replay)).await;
    assert_problem(res, StatusCode::CONFLICT, "replayed_sequence").await;
    // The next good report flushes every count held so far, in its batch's transaction.
    send_ok(&app, &victim, &next).await;

    let after = counts(&app, &owner, &victim).await;
    assert_eq!(after, json!({"accepted": 2, "duplicate": 0, "refused": {"replayed_sequence": 1}}));
    let attacker_view = app.get_json(&format!("/api/v1/hosts/{}", attacker.host_id), &stranger.token).await;
    assert_eq!(attacker_view["reports_refused"], json!({}), "nor on the key's own host");

    // The operator still sees them, by code.
    let global = unattributed(&app, &operator).await;
    assert_eq!(
        global,
        json!({"invalid_base64": 1, "invalid_envelope": 1, "invalid_signature": 2, "report_too_large": 1})
    );
    // An unknown host's refusals go there too.
    let res = send(&app, Uuid::now_v7(), &json!(by_other)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "unknown_host").await;
    send_ok(&app, &victim, &report(&victim, 2, 3_000)).await;
    assert_eq!(unattributed(&app, &operator).await["unknown_host"], 1);
    // Only the operator reads them.
    let res = app.get("/api/v1/operator/report-refusals", Some(&owner.token)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}
