use capex_server::auth::jwt::{Claims, JWT_AUDIENCE, JWT_ISSUER, JwtKeys};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem};

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn register_login_and_me(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["buyer", "provider"]).await;
    let me = app.get_json("/api/v1/me", &user.token).await;
    assert_eq!(me["email"], user.email);
    assert_eq!(me["roles"], json!(["buyer", "provider"]));
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn duplicate_email_and_bad_registrations_are_refused(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["buyer"]).await;
    let res = app
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"email": user.email.to_uppercase(), "password": PASSWORD, "roles": ["buyer"]}),
        )
        .await;
    assert_eq!(assert_problem(res, StatusCode::CONFLICT, "email_taken").await["field"], "email");

    let res = app
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"email": "x@example.test", "password": "short", "roles": ["buyer"]}),
        )
        .await;
    assert_eq!(assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_password").await["field"], "password");

    let res = app
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"email": "not-an-email", "password": PASSWORD, "roles": ["buyer"]}),
        )
        .await;
    assert_eq!(assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_email").await["field"], "email");

    let res = app
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"email": "op@example.test", "password": PASSWORD, "roles": ["operator"]}),
        )
        .await;
    assert_eq!(assert_problem(res, StatusCode::FORBIDDEN, "forbidden_role").await["field"], "roles");

    let res = app
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"email": "r@example.test", "password": PASSWORD, "roles": ["king"]}),
        )
        .await;
    assert_eq!(assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await["field"], "roles[0]");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn wrong_password_is_refused(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["buyer"]).await;
    let res = app.post("/api/v1/auth/login", None, &json!({"email": user.email, "password": "wrong password"})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let res =
        app.post("/api/v1/auth/login", None, &json!({"email": "nobody@example.test", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

fn claims(user_id: uuid::Uuid, exp_offset_s: i64, aud: &str) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims { sub: user_id, iss: JWT_ISSUER.into(), aud: aud.into(), iat: now, exp: now + exp_offset_s }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn bad_tokens_get_401(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["buyer"]).await;
    let keys = &app.state.jwt;

    let good = keys.sign(&claims(user.user_id, 600, JWT_AUDIENCE)).unwrap();
    assert_eq!(app.get("/api/v1/me", Some(&good)).await.status(), StatusCode::OK);

    let expired = keys.sign(&claims(user.user_id, -120, JWT_AUDIENCE)).unwrap();
    let wrong_aud = keys.sign(&claims(user.user_id, 600, "someone-else")).unwrap();
    let other_keys = JwtKeys::new(b"another-secret-another-secret-another!!", 600);
    let wrong_signature = other_keys.sign(&claims(user.user_id, 600, JWT_AUDIENCE)).unwrap();
    // Same claims and key, but the header claims HS512: the pinned algorithm refuses it.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(user.user_id, 600, JWT_AUDIENCE),
        &jsonwebtoken::EncodingKey::from_secret(b"test-secret-test-secret-test-secret!"),
    )
    .unwrap();
    // alg "none": header and payload with an empty signature.
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let tampered = format!("{}.{}.{}x", parts[0], parts[1], parts[2]);

    for (name, token) in [
        ("expired", expired),
        ("wrong aud", wrong_aud),
        ("wrong signature", wrong_signature),
        ("alg HS512", hs512),
        ("alg none", alg_none),
        ("tampered", tampered),
        ("garbage", "not-a-token".to_string()),
        ("unknown api key", "capex_deadbeef".to_string()),
    ] {
        let res = app.get("/api/v1/me", Some(&token)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let res = app.get("/api/v1/me", None).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn api_keys_authenticate_and_are_stored_hashed(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["provider"]).await;
    let res = app.post("/api/v1/auth/api-keys", Some(&user.token), &json!({"name": "rack 3 agent"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: serde_json::Value = res.json().await.unwrap();
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("capex_"));
    let me = app.get_json("/api/v1/me", key).await;
    assert_eq!(me["user_id"], user.user_id.to_string());
    let stored: i64 = sqlx::query_scalar("select count(*) from api_keys where key_hash = $1 or prefix = $1")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the key itself is never stored");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn roles_are_cached_for_their_ttl_then_read_again(pool: sqlx::PgPool) {
    use capex_server::auth::roles::ROLES_TTL;
    let app = TestApp::spawn(pool).await;
    let user = app.register(&["buyer"]).await;
    let res = app.get("/api/v1/operator/invariants", Some(&user.token)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // A role granted in the database (no endpoint grants roles) applies once the cached
    // roles expire, not before.
    sqlx::query("update users set roles = array['buyer', 'operator'] where user_id = $1")
        .bind(user.user_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let res = app.get("/api/v1/operator/invariants", Some(&user.token)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    tokio::time::sleep(ROLES_TTL + std::time::Duration::from_millis(500)).await;
    let res = app.get("/api/v1/operator/invariants", Some(&user.token)).await;
    assert_eq!(res.status(), StatusCode::OK);
}
