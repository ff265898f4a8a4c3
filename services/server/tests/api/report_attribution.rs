//! A host's report counts hold only what the host itself signed: refusals decided before
//! its signature verified (anyone can send those to any host's URL) are counted by code
//! for the operator, never on the host.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};
use crate::hosts::{TestHost, h100s, register_host, report, seal, send_ok, send_raw};

async fn send(app: &TestApp, host_id: Uuid, body: &Value) -> Response {
    send_raw(app, host_id, serde_json::to_vec(body).unwrap()).await
}

/// The host's report counts as its owner reads them: accepted, duplicate, refused by code.
async fn counts(app: &TestApp, owner: &TestUser, host: &TestHost) -> Value {
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
    let victim = register_host(&app, &owner, h100s(1)).await;
    let stranger = app.register(&["provider"]).await;
    let attacker = register_host(&app, &stranger, h100s(1)).await;
    send_ok(&app, &victim, &report(&victim, 0, 1_000)).await;
    let before = counts(&app, &owner, &victim).await;
    assert_eq!(before, json!({"accepted": 1, "duplicate": 0, "refused": {}}));

    let next = report(&victim, 1, 2_000);
    let sealed = seal(&victim.key, &next);
    // No signature at all.
    let res = send(&app, victim.host_id, &json!({"payload": sealed.payload})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_envelope").await;
    let res = send(&app, victim.host_id, &json!({"payload": sealed.payload, "signature": ""})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_base64").await;
    // Signed by another host's key (the attacker's own, registered host).
    let by_other = seal(&attacker.key, &next);
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
    let replay = seal(&victim.key, &report(&victim, 0, 1_500));
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
