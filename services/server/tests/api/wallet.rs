use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn transfer_moves_credits_and_shows_in_both_ledgers(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let bob = app.register(&["buyer"]).await;
    app.mint(&op, &alice, "100.5").await;

    let res = app
        .post(
            "/api/v1/transfers",
            Some(&alice.token),
            &json!({"to_user": bob.user_id, "amount": "0.25", "memo": "lunch"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(app.wallet(&alice).await, ("100.25".into(), "0".into()));
    assert_eq!(app.wallet(&bob).await, ("0.25".into(), "0".into()));

    let bob_ledger = app.get_json("/api/v1/wallet/ledger", &bob.token).await;
    let items = bob_ledger["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["direction"], "credit");
    assert_eq!(items[0]["amount"], "0.25");
    assert_eq!(items[0]["memo"], "lunch");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn overdraft_is_refused_and_nothing_is_written(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let bob = app.register(&["buyer"]).await;
    app.mint(&op, &alice, "10").await;
    let before = app.journal_rows().await;

    let res = app
        .post("/api/v1/transfers", Some(&alice.token), &json!({"to_user": bob.user_id, "amount": "10.000001"}))
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds").await;
    assert_eq!(body["field"], "amount");

    assert_eq!(app.journal_rows().await, before);
    assert_eq!(app.wallet(&alice).await.0, "10");
    assert_eq!(app.wallet(&bob).await.0, "0");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn transfer_to_unknown_user_or_self_is_refused(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.register(&["buyer"]).await;
    let res = app
        .post("/api/v1/transfers", Some(&alice.token), &json!({"to_user": uuid::Uuid::now_v7(), "amount": "1"}))
        .await;
    assert_eq!(assert_problem(res, StatusCode::NOT_FOUND, "unknown_user").await["field"], "to_user");
    let res =
        app.post("/api/v1/transfers", Some(&alice.token), &json!({"to_user": alice.user_id, "amount": "1"})).await;
    assert_eq!(assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "same_account").await["field"], "to_user");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn users_see_only_their_own_wallet_and_ledger(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let bob = app.register(&["buyer"]).await;
    app.mint(&op, &alice, "70").await;
    app.mint(&op, &bob, "30").await;

    assert_eq!(app.wallet(&alice).await.0, "70");
    assert_eq!(app.wallet(&bob).await.0, "30");
    let alice_lines = app.get_json("/api/v1/wallet/ledger", &alice.token).await;
    let bob_lines = app.get_json("/api/v1/wallet/ledger", &bob.token).await;
    let ids = |v: &Value| v["items"].as_array().unwrap().iter().map(|l| l["transfer_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&alice_lines).len(), 1);
    assert_eq!(ids(&bob_lines).len(), 1);
    assert_ne!(ids(&alice_lines), ids(&bob_lines));
    assert_eq!(alice_lines["items"][0]["amount"], "70");

    // A buyer cannot reach operator routes that take another user's id.
    let res = app.get("/api/v1/operator/users", Some(&alice.token)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .post_with_key("/api/v1/operator/mint", &alice.token, "k", &json!({"user_id": alice.user_id, "amount": "5"}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app.get("/api/v1/operator/invariants", Some(&bob.token)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn ledger_pages_with_a_cursor(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    for i in 1..=5 {
        app.mint(&op, &alice, &i.to_string()).await;
    }
    let first = app.get_json("/api/v1/wallet/ledger?limit=2", &alice.token).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["amount"], "5");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app.get_json(&format!("/api/v1/wallet/ledger?limit=2&cursor={cursor}"), &alice.token).await;
    assert_eq!(second["items"][0]["amount"], "3");
    let cursor = second["next_cursor"].as_str().unwrap();
    let third = app.get_json(&format!("/api/v1/wallet/ledger?limit=2&cursor={cursor}"), &alice.token).await;
    assert_eq!(third["items"].as_array().unwrap().len(), 1);
    assert!(third["next_cursor"].is_null());

    let res = app.get("/api/v1/wallet/ledger?cursor=garbage", Some(&alice.token)).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    let res = app.get("/api/v1/wallet/ledger?limit=0", Some(&alice.token)).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_limit").await;
}
