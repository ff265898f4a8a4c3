//! Bad input of every kind is a 4xx problem naming the field, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem};

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn bad_amounts_are_refused_with_the_field_named(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let cases = [
        (json!("1.0000001"), "amount_too_precise"),
        (json!(1.0000001), "amount_too_precise"),
        (json!("-5"), "negative_amount"),
        (json!(-5), "negative_amount"),
        (json!("0"), "zero_amount"),
        (json!(0), "zero_amount"),
        (json!("1000000000000000.5"), "amount_too_large"),
        (json!("99999999999999999999999999999999999"), "amount_too_large"),
        (json!(1e300), "amount_too_large"),
        (json!("ten"), "invalid_amount"),
        (json!(true), "invalid_field"),
        (json!(null), "invalid_field"),
        (json!({"value": 1}), "invalid_field"),
    ];
    for (i, (amount, code)) in cases.into_iter().enumerate() {
        let res = app
            .post_with_key(
                "/api/v1/operator/mint",
                &op.token,
                &format!("k{i}"),
                &json!({"user_id": alice.user_id, "amount": amount}),
            )
            .await;
        assert!(res.status().is_client_error(), "{amount}: {}", res.status());
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, code).await;
        assert_eq!(body["field"], "amount", "{amount}");
    }
    assert_eq!(app.journal_rows().await, 0);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn malformed_bodies_are_client_errors(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.register(&["buyer"]).await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/transfers"))
            .bearer_auth(&alice.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(send("{not json", "application/json").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_json").await;
    assert_problem(send("", "application/json").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_json").await;
    assert_problem(
        send("{}", "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let missing = assert_problem(
        send("{}", "application/json").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
    )
    .await;
    assert_eq!(missing["field"], "to_user");
    let bad_uuid = assert_problem(
        send(r#"{"to_user": "nope", "amount": "1"}"#, "application/json").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(bad_uuid["field"], "to_user");
    let unknown = assert_problem(
        send(r#"{"to_user": "0190f0b0-0000-7000-8000-000000000000", "amount": "1", "extra": 1}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_field",
    )
    .await;
    assert_eq!(unknown["field"], "extra");

    let huge = "x".repeat(200_000);
    let res = app
        .client
        .post(app.url("/api/v1/transfers"))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"memo": "{huge}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let res = app.get("/api/v1/no-such-thing", None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "no_such_route").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn health_metrics_and_openapi_are_served(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.get("/healthz", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let _ = app.get("/api/v1/me", None).await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("capex_http_requests_total"), "{metrics}");
    let spec: serde_json::Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/wallet",
        "/api/v1/wallet/ledger",
        "/api/v1/transfers",
        "/api/v1/operator/mint",
        "/api/v1/operator/invariants",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    let docs = app.get("/api/v1/docs/", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
}
