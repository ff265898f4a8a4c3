use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn same_idempotency_key_mints_once_with_identical_response(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let body = json!({"user_id": alice.user_id, "amount": "42.5"});

    let first = app.post_with_key("/api/v1/operator/mint", &op.token, "mint-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = app.post_with_key("/api/v1/operator/mint", &op.token, "mint-1", &body).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers().get("idempotent-replayed").unwrap(), "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    let minted: i64 =
        sqlx::query_scalar("select count(*) from journal where kind = 'mint'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(minted, 1);
    assert_eq!(app.wallet(&alice).await.0, "42.5");

    let different = app
        .post_with_key("/api/v1/operator/mint", &op.token, "mint-1", &json!({"user_id": alice.user_id, "amount": "43"}))
        .await;
    assert_problem(different, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    assert_eq!(app.wallet(&alice).await.0, "42.5");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn concurrent_duplicates_mint_once(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let body = json!({"user_id": alice.user_id, "amount": "7"});
    let sends = (0..8).map(|_| app.post_with_key("/api/v1/operator/mint", &op.token, "same-key", &body));
    let responses = futures::future::join_all(sends).await;
    for res in responses {
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    assert_eq!(app.wallet(&alice).await.0, "7");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn mint_needs_a_key_and_a_known_user(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let res =
        app.post("/api/v1/operator/mint", Some(&op.token), &json!({"user_id": alice.user_id, "amount": "1"})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "missing_idempotency_key").await;
    let res = app
        .post_with_key(
            "/api/v1/operator/mint",
            &op.token,
            "k2",
            &json!({"user_id": uuid::Uuid::now_v7(), "amount": "1"}),
        )
        .await;
    assert_eq!(assert_problem(res, StatusCode::NOT_FOUND, "unknown_user").await["field"], "user_id");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn invariants_report_ok_and_users_overview(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let bob = app.register(&["buyer"]).await;
    app.mint(&op, &alice, "100").await;
    app.post("/api/v1/transfers", Some(&alice.token), &json!({"to_user": bob.user_id, "amount": "33.333333"})).await;
    let report = app.get_json("/api/v1/operator/invariants", &op.token).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["total"], "0");
    assert!(report["accounts_checked"].as_i64().unwrap() >= 4);
    assert_eq!(report["violations"], json!([]));
    let fees = app.get_json("/api/v1/operator/fees", &op.token).await;
    assert_eq!(fees["minted"], "100");
    let users = app.get_json("/api/v1/operator/users", &op.token).await;
    let bob_row = users["items"].as_array().unwrap().iter().find(|u| u["email"] == bob.email).unwrap().clone();
    assert_eq!(bob_row["available"], "33.333333");
}
