//! Every error is `application/problem+json`, and the OpenAPI document says what the
//! server does: query and path errors, unsupported methods and unknown API paths are
//! problems; secured operations document 401; error responses are problem+json.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};

async fn send(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("request sent")
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn query_errors_are_400_problems_naming_the_parameter(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let buyer = app.register(&["buyer"]).await;
    let job = Uuid::now_v7();
    let host = Uuid::now_v7();
    for (path, field) in [
        ("/api/v1/jobs?limit=abc".to_string(), "limit"),
        ("/api/v1/jobs?cursor=not-a-uuid".to_string(), "cursor"),
        (format!("/api/v1/jobs/{job}/logs?after=abc"), "after"),
        (format!("/api/v1/jobs/{job}/logs?limit=1&limit=2"), "limit"),
        (format!("/api/v1/jobs/{job}/logs?follow=abc"), "follow"),
        (format!("/api/v1/hosts/{host}/assignments?wait=abc"), "wait"),
        (format!("/api/v1/hosts/{host}/assignments?wait=-1"), "wait"),
        ("/api/v1/wallet/ledger?limit=x".to_string(), "limit"),
        ("/api/v1/markets/H100-80GB/trades?limit=x".to_string(), "limit"),
    ] {
        let res = app.get(&path, Some(&buyer.token)).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;
        assert_eq!(body["field"], field, "{path}: {body}");
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn malformed_path_ids_are_404_problems_naming_the_parameter(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let lease = Uuid::now_v7();
    let host = Uuid::now_v7();
    for (method, path, field) in [
        (Method::GET, "/api/v1/hosts/not-a-uuid/assignments".to_string(), "host_id"),
        (Method::POST, format!("/api/v1/hosts/not-a-uuid/leases/{lease}/ack"), "host_id"),
        (Method::POST, format!("/api/v1/hosts/{host}/leases/not-a-uuid/ack"), "lease_id"),
        (Method::POST, format!("/api/v1/hosts/{host}/leases/not-a-uuid/logs"), "lease_id"),
    ] {
        let res = send(&app, method, &path, None).await;
        let body = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(body["field"], field, "{path}: {body}");
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_body_over_the_limit_is_a_413_problem(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let path = format!("/api/v1/hosts/{}/leases/{}/ack", Uuid::now_v7(), Uuid::now_v7());
    let res = app.client.post(app.url(&path)).body(vec![b'x'; 65 * 1024]).send().await.unwrap();
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
}

/// Walks the served document: every documented path answers a method it does not list
/// with a 405 problem whose `Allow` lists exactly the documented methods.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn every_route_answers_an_unsupported_method_with_a_405_problem_and_allow(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let spec: Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() > 30, "{} paths", paths.len());
    for (template, item) in paths {
        let path = template
            .replace("{class}", "H100-80GB")
            .replace("{id}", &Uuid::now_v7().to_string())
            .replace("{host_id}", &Uuid::now_v7().to_string())
            .replace("{lease_id}", &Uuid::now_v7().to_string());
        let mut documented: Vec<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        if documented.iter().any(|m| m == "GET") {
            documented.push("HEAD".into());
        }
        documented.sort();
        let res = send(&app, Method::PATCH, &path, None).await;
        let mut allowed: Vec<String> = res.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        allowed.sort();
        let body = assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        assert_eq!(allowed, documented, "{template}: {body}");
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn unknown_api_paths_are_404_problems(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in ["/api", "/api/", "/api/v2/jobs", "/api/v1/nope", "/api/v1/jobs/x/y/z"] {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let res = send(&app, method.clone(), path, None).await;
            let body = assert_problem(res, StatusCode::NOT_FOUND, "no_such_route").await;
            assert!(body["detail"].is_string(), "{method} {path}");
        }
    }
}

fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_openapi_document_documents_401_and_problem_json_errors(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let spec: Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    let ops = operations(&spec);
    let secured = ops.iter().filter(|(_, _, op)| op["security"].as_array().is_some_and(|s| !s.is_empty())).count();
    assert!(secured >= 20, "only {secured} secured operations");
    for (method, path, op) in &ops {
        let responses = op["responses"].as_object().unwrap();
        if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
            assert!(responses.contains_key("401"), "{method} {path} is secured but does not document 401");
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let has = |place: &str| params.iter().any(|p| p["in"] == place);
        if has("query") || has("header") {
            assert!(responses.contains_key("400"), "{method} {path} reads a query or header but has no 400");
        }
        if has("path") {
            assert!(responses.contains_key("404"), "{method} {path} has path parameters but no 404");
        }
        if op["requestBody"]["content"]["application/json"].is_object() {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{method} {path} takes JSON but has no {status}");
            }
        }
        for (status, response) in responses {
            if status.parse::<u16>().unwrap() >= 400 {
                let content: Vec<&String> = response["content"].as_object().unwrap().keys().collect();
                assert_eq!(content, ["application/problem+json"], "{method} {path} {status}");
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_openapi_document_declares_json_bodies_and_the_server_limits(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let spec: Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    for path in ["/api/v1/hosts", "/api/v1/hosts/{host_id}/reports"] {
        let body = &spec["paths"][path]["post"]["requestBody"]["content"];
        assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["application/json"], "{path}");
        assert_eq!(body["application/json"]["schema"]["$ref"], "#/components/schemas/SignedEnvelope", "{path}");
    }
    let schemas = &spec["components"]["schemas"];
    assert_eq!(schemas["SignedEnvelope"]["type"], "object");
    assert!(spec["paths"]["/api/v1/hosts/{host_id}/leases/{lease_id}/ack"]["post"]["requestBody"].is_null());
    let order = &spec["paths"]["/api/v1/markets/{class}/orders"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(order["schema"]["$ref"], "#/components/schemas/OrderRequest");
    assert_eq!(schemas["OrderRequest"]["oneOf"].as_array().unwrap().len(), 2);
    assert_eq!(schemas["NewApiKey"]["properties"]["name"]["minLength"], 1);
    assert!(schemas["TransferRequest"]["properties"]["amount"]["pattern"].is_string());
    assert!(schemas["MintRequest"]["properties"]["amount"]["pattern"].is_string());
    let mint = &spec["paths"]["/api/v1/operator/mint"]["post"]["parameters"];
    let key = mint.as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").unwrap();
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["minLength"], 1);
    assert_eq!(key["schema"]["maxLength"], 200);
}
