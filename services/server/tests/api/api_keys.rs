//! API keys: the owner lists them (never the secret) and revokes them; a revoked key is
//! refused from the very next request, whatever the role cache holds.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};

async fn create_key(app: &TestApp, user: &TestUser, name: &str) -> Value {
    let res = app.post("/api/v1/auth/api-keys", Some(&user.token), &json!({"name": name})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn list(app: &TestApp, token: &str) -> (Vec<Value>, String) {
    let res = app.get("/api/v1/auth/api-keys", Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    (body["items"].as_array().unwrap().clone(), text)
}

async fn last_used(app: &TestApp, api_key_id: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("select last_used_at from api_keys where api_key_id = $1")
        .bind(api_key_id.as_str().unwrap().parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_owner_lists_keys_without_their_secret(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["provider"]).await;
    let first = create_key(&app, &user, "rack 3 agent").await;
    let second = create_key(&app, &user, "ci").await;

    let (items, text) = list(&app, &user.token).await;
    assert_eq!(items.len(), 2, "{text}");
    assert_eq!(items[0]["api_key_id"], first["api_key_id"]);
    assert_eq!(items[0]["name"], "rack 3 agent");
    assert_eq!(items[0]["prefix"], first["prefix"]);
    assert_eq!(items[0]["created_at"], first["created_at"]);
    assert_eq!(items[0]["last_used_at"], Value::Null, "never used yet");
    assert_eq!(items[1]["api_key_id"], second["api_key_id"]);
    for key in [&first, &second] {
        let secret = key["key"].as_str().unwrap();
        assert!(!text.contains(secret), "the listing shows a key's secret: {text}");
        assert!(!text.contains(&capex_server::auth::api_keys::hash(secret)), "the listing shows a hash");
    }
    let fields: Vec<&String> = items[0].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["api_key_id", "created_at", "last_used_at", "name", "prefix"]);

    // Using a key records when, at most once a minute: a second use writes nothing.
    let secret = first["key"].as_str().unwrap();
    app.get_json("/api/v1/me", secret).await;
    let used = last_used(&app, &first["api_key_id"]).await.expect("last_used_at set by the first use");
    app.get_json("/api/v1/me", secret).await;
    assert_eq!(last_used(&app, &first["api_key_id"]).await, Some(used), "not a write per request");
    let (items, _) = list(&app, secret).await; // a key may list its owner's keys
    assert!(items[0]["last_used_at"].is_string(), "{items:?}");
    assert_eq!(items[1]["last_used_at"], Value::Null);

    // Another user sees none of them.
    let other = app.register(&["buyer"]).await;
    let (items, _) = list(&app, &other.token).await;
    assert!(items.is_empty());
    assert_problem(app.get("/api/v1/auth/api-keys", None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_revoked_key_is_refused_at_once(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["provider"]).await;
    let key = create_key(&app, &user, "agent").await;
    let kept = create_key(&app, &user, "kept").await;
    let secret = key["key"].as_str().unwrap();
    // The user's roles are now in the role cache (10 s), through this very key.
    app.get_json("/api/v1/me", secret).await;
    app.get_json("/api/v1/wallet", secret).await;

    let path = format!("/api/v1/auth/api-keys/{}", key["api_key_id"].as_str().unwrap());
    let res = app.delete(&path, &user.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get("/api/v1/me", Some(secret)).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_problem(app.get("/api/v1/wallet", Some(secret)).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // The owner's login and other keys still work; the revoked key leaves the listing.
    app.get_json("/api/v1/me", kept["key"].as_str().unwrap()).await;
    let (items, _) = list(&app, &user.token).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["api_key_id"], kept["api_key_id"]);
    // Revoking again changes nothing.
    assert_eq!(app.delete(&path, &user.token).await.status(), StatusCode::NO_CONTENT);
    // A key can revoke itself.
    let kept_secret = kept["key"].as_str().unwrap();
    let kept_path = format!("/api/v1/auth/api-keys/{}", kept["api_key_id"].as_str().unwrap());
    assert_eq!(app.delete(&kept_path, kept_secret).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get("/api/v1/me", Some(kept_secret)).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn another_user_s_key_cannot_be_revoked(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let owner = app.register(&["provider"]).await;
    let other = app.register(&["provider"]).await;
    let key = create_key(&app, &owner, "agent").await;
    let path = format!("/api/v1/auth/api-keys/{}", key["api_key_id"].as_str().unwrap());
    assert_problem(app.delete(&path, &other.token).await, StatusCode::NOT_FOUND, "not_found").await;
    let unknown = format!("/api/v1/auth/api-keys/{}", Uuid::now_v7());
    assert_problem(app.delete(&unknown, &owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    let not_an_id = "/api/v1/auth/api-keys/not-a-uuid";
    assert_problem(app.delete(not_an_id, &owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.client.delete(app.url(&path)).send().await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // The key still works for its owner.
    let me = app.get_json("/api/v1/me", key["key"].as_str().unwrap()).await;
    assert_eq!(me["user_id"], owner.user_id.to_string());
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn api_key_routes_are_in_the_openapi_document(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let spec: Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    let keys = &spec["paths"]["/api/v1/auth/api-keys"];
    assert!(keys["get"]["responses"]["200"].is_object(), "{keys}");
    assert!(keys["post"].is_object());
    let one = &spec["paths"]["/api/v1/auth/api-keys/{api_key_id}"]["delete"]["responses"];
    for status in ["204", "401", "404"] {
        assert!(one[status].is_object(), "DELETE api-keys/{{id}} documents {status}: {one}");
    }
    assert!(spec["components"]["schemas"]["ApiKeyView"].is_object());
}
