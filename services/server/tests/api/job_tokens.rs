//! A job can steer itself (issue 17, part 4): each attempt's `CAPEX_JOB_TOKEN` reads its
//! own job, releases its GPUs, places and cancels child bids within the owner's budget,
//! reads market data and a fill estimate, and nothing else; it is refused once the
//! attempt ends.

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};
use crate::jobs::{CLASS, Host, World, dec, register_host, running, world};

/// A world whose buyer (100 credits) runs one job on the world's host (1 GPU at 1 per
/// GPU-hour for 2 hours: 2 held) with `budget`, and a second host ready for children.
struct Steer {
    w: World,
    job_id: String,
    token: String,
    second: Host,
    second_provider: TestUser,
}

async fn steer(pool: sqlx::PgPool, job: Value) -> Steer {
    let mut w = world(pool, 1).await;
    w.app.ask(&w.provider, CLASS, w.host.host_id, 1, "1").await;
    let bid = w
        .app
        .place_ok(
            &w.buyer,
            CLASS,
            &json!({"side": "bid", "gpus": 1, "max_hours": "2", "price": "1", "tif": "gtc", "job": job}),
        )
        .await;
    let job_id = bid["order_id"].as_str().unwrap().to_string();
    let lease_id = bid["fills"][0]["lease_id"].as_str().expect("the job traded").to_string();
    let path = format!("/api/v1/hosts/{}/assignments", w.host.host_id);
    let assigned: Value = w.host.request(&w.app, "GET", &path, "", b"").await.json().await.unwrap();
    let token = assigned["items"][0]["job_token"].as_str().expect("the assignment carries a job token").to_string();
    assert!(token.starts_with("cxj_"), "{token}");
    w.ack(&lease_id).await;
    w.report(running(&lease_id), true).await;
    let second_provider = w.app.register(&["provider"]).await;
    let mut second = register_host(&w.app, &second_provider, 1).await;
    second.report(&w.app, None, true).await;
    Steer { w, job_id, token, second, second_provider }
}

fn budgeted(budget: &str) -> Value {
    json!({"command": ["sh", "-c", "sleep 60"], "budget": budget})
}

fn child(price: &str) -> Value {
    json!({"class": CLASS, "side": "bid", "gpus": 1, "max_hours": "2", "price": price, "tif": "gtc",
           "job": {"command": ["sh", "-c", "echo child"]}})
}

async fn send(app: &TestApp, method: Method, path: &str, token: &str, body: Option<&Value>) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.header("idempotency-key", Uuid::now_v7().to_string()).json(body);
    }
    req.send().await.expect("request sent")
}

async fn place_child(s: &Steer, body: &Value) -> reqwest::Response {
    send(&s.w.app, Method::POST, &format!("/api/v1/jobs/{}/children", s.job_id), &s.token, Some(body)).await
}

async fn json_of(res: reqwest::Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn orders_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from orders").fetch_one(&app.pool).await.unwrap()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_job_token_reads_its_own_job_and_no_other(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    let job = json_of(app.get(&format!("/api/v1/jobs/{}", s.job_id), Some(&s.token)).await, StatusCode::OK).await;
    assert_eq!(job["job_id"], s.job_id.as_str());
    assert_eq!(job["state"], "running");
    // 1 GPU x 2 h at 1 held; the first report may have billed a moment of it.
    assert_eq!(dec(&job["escrow_left"]) + dec(&job["cost_so_far"]), Decimal::from(2));
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(job["budget"], "5");
    assert_eq!(job["budget_used"], "0");
    assert!(job["parent_job_id"].is_null());
    // Another job of the same owner, on the second host: not the token's, so not found.
    app.ask(&s.second_provider, CLASS, s.second.host_id, 1, "1").await;
    let other = app.bid(&s.w.buyer, CLASS, 1, "1", "1").await;
    let other_job = other["order_id"].as_str().unwrap();
    assert_eq!(other["status"], "filled");
    for (method, path) in [
        (Method::GET, format!("/api/v1/jobs/{other_job}")),
        (Method::GET, format!("/api/v1/jobs/{}", Uuid::now_v7())),
        (Method::POST, format!("/api/v1/jobs/{other_job}/release")),
    ] {
        let res = send(app, method.clone(), &path, &s.token, None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let res = send(app, Method::POST, &format!("/api/v1/jobs/{other_job}/children"), &s.token, Some(&child("1"))).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // The other job still runs: the refused release touched nothing.
    assert_eq!(app.get_json(&format!("/api/v1/jobs/{other_job}"), &s.w.buyer.token).await["state"], "pending");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_child_bid_within_the_budget_fills_paid_from_the_owners_wallet(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    let before = s.w.available(&s.w.buyer).await;
    assert_eq!(before, Decimal::from(98));
    app.ask(&s.second_provider, CLASS, s.second.host_id, 1, "0.5").await;
    let placed = json_of(place_child(&s, &child("1")).await, StatusCode::CREATED).await;
    assert_eq!(placed["status"], "filled", "{placed}");
    let child_job = placed["order_id"].as_str().unwrap().to_string();
    // Traded at the ask's 0.5 for 1 GPU x 2 h: 1 held in the child's lease, from the owner.
    let child_view = app.get_json(&format!("/api/v1/jobs/{child_job}"), &s.w.buyer.token).await;
    assert_eq!(child_view["parent_job_id"], s.job_id.as_str());
    assert_eq!(child_view["host_id"], s.second.host_id.to_string());
    assert_eq!(dec(&child_view["escrow_left"]), Decimal::from(1));
    assert_eq!(s.w.available(&s.w.buyer).await, before - Decimal::from(1));
    let parent = app.get_json(&format!("/api/v1/jobs/{}", s.job_id), &s.token).await;
    let children = parent["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{parent}");
    assert_eq!(children[0]["job_id"], child_job.as_str());
    assert_eq!(children[0]["held"], "1");
    assert_eq!(children[0]["spent"], "0");
    assert_eq!(parent["budget_used"], "1");
    // The child is the owner's job: it shows in the owner's list.
    let list = app.get_json("/api/v1/jobs", &s.w.buyer.token).await;
    assert!(list["items"].as_array().unwrap().iter().any(|j| j["job_id"] == child_job.as_str()));
    s.w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn child_bids_over_the_budget_are_refused_and_write_nothing(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    let (journal, orders, available) =
        (app.journal_rows().await, orders_count(app).await, s.w.available(&s.w.buyer).await);
    // 3 x 1 GPU x 2 h = 6 > 5.
    let body =
        assert_problem(place_child(&s, &child("3")).await, StatusCode::UNPROCESSABLE_ENTITY, "budget_exceeded").await;
    assert!(body["detail"].as_str().unwrap().contains("budget 5"), "{body}");
    assert_eq!(
        (app.journal_rows().await, orders_count(app).await, s.w.available(&s.w.buyer).await),
        (journal, orders, available)
    );
    // 4 fits and rests (no ask); then 2 more would make 6: refused; the cancel of the
    // first frees its 4, and the 2 fits.
    let first = json_of(place_child(&s, &child("2")).await, StatusCode::CREATED).await;
    assert_eq!(first["status"], "open");
    let first_id = first["order_id"].as_str().unwrap();
    assert_problem(place_child(&s, &child("1")).await, StatusCode::UNPROCESSABLE_ENTITY, "budget_exceeded").await;
    let path = format!("/api/v1/jobs/{}/children/{first_id}", s.job_id);
    let cancelled = json_of(send(app, Method::DELETE, &path, &s.token, None).await, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["held"], "0");
    assert_eq!(s.w.available(&s.w.buyer).await, available);
    let res = send(app, Method::DELETE, &path, &s.token, None).await;
    assert_problem(res, StatusCode::CONFLICT, "child_ended").await;
    json_of(place_child(&s, &child("1")).await, StatusCode::CREATED).await;
    // Not bids, bad bids, unknown markets.
    let ask = json!({"class": CLASS, "side": "ask", "host_id": s.second.host_id, "gpus": 1, "price": "1",
                     "available_until": "2099-01-01T00:00:00Z", "tif": "gtc"});
    assert_problem(place_child(&s, &ask).await, StatusCode::UNPROCESSABLE_ENTITY, "children_are_bids").await;
    let mut no_class = child("1");
    no_class.as_object_mut().unwrap().remove("class");
    let body =
        assert_problem(place_child(&s, &no_class).await, StatusCode::UNPROCESSABLE_ENTITY, "missing_field").await;
    assert_eq!(body["field"], "class");
    let mut unknown = child("1");
    unknown["class"] = json!("Z999-1GB");
    assert_problem(place_child(&s, &unknown).await, StatusCode::NOT_FOUND, "unknown_market").await;
    let mut spoofed = child("1");
    spoofed["job"]["parent_job_id"] = json!(Uuid::now_v7());
    assert_problem(place_child(&s, &spoofed).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown_field").await;
    s.w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_job_without_a_budget_places_no_children(pool: sqlx::PgPool) {
    let s = steer(pool, json!({"command": ["sh"]})).await;
    let orders = orders_count(&s.w.app).await;
    assert_problem(place_child(&s, &child("1")).await, StatusCode::UNPROCESSABLE_ENTITY, "no_budget").await;
    assert_eq!(orders_count(&s.w.app).await, orders);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_job_cancels_only_its_own_children(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    // Below any ask, so it rests.
    let mine = json_of(place_child(&s, &child("0.2")).await, StatusCode::CREATED).await;
    let mine = mine["order_id"].as_str().unwrap();
    // A bid of the owner's that is not a child of this job.
    let plain = app.bid(&s.w.buyer, CLASS, 1, "1", "0.1").await;
    let plain = plain["order_id"].as_str().unwrap();
    for path in [
        format!("/api/v1/jobs/{}/children/{plain}", s.job_id),
        format!("/api/v1/jobs/{}/children/{}", s.job_id, Uuid::now_v7()),
        format!("/api/v1/jobs/{plain}/children/{mine}"),
    ] {
        assert_problem(send(app, Method::DELETE, &path, &s.token, None).await, StatusCode::NOT_FOUND, "not_found")
            .await;
    }
    // The owner's own login: a child of another job is not found under this one either.
    let path = format!("/api/v1/jobs/{plain}/children/{mine}");
    assert_problem(send(app, Method::DELETE, &path, &s.w.buyer.token, None).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    assert_eq!(app.order(&s.w.buyer, &json!(plain)).await["status"], "open");
    assert_eq!(app.order(&s.w.buyer, &json!(mine)).await["status"], "open");
    // A child that runs is cancelled as a lease: its escrow comes back.
    app.ask(&s.second_provider, CLASS, s.second.host_id, 1, "1").await;
    let running_child = json_of(place_child(&s, &child("1")).await, StatusCode::CREATED).await;
    assert_eq!(running_child["status"], "filled");
    let id = running_child["order_id"].as_str().unwrap();
    let path = format!("/api/v1/jobs/{}/children/{id}", s.job_id);
    let view = json_of(send(app, Method::DELETE, &path, &s.token, None).await, StatusCode::OK).await;
    assert_eq!(view["held"], "0", "{view}");
    assert_eq!(app.get_json(&format!("/api/v1/jobs/{id}"), &s.w.buyer.token).await["state"], "cancelled");
    s.w.invariants_ok().await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn release_bills_the_attested_time_refunds_the_rest_and_revokes_the_token(pool: sqlx::PgPool) {
    let mut s = steer(pool, json!({"command": ["sh"], "restart": {"on": ["failed", "host_lost"]}})).await;
    let lease: String = s.w.job(&s.job_id).await["lease_id"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.w.report(running(&lease), true).await;
    let res = send(&s.w.app, Method::POST, &format!("/api/v1/jobs/{}/release", s.job_id), &s.token, None).await;
    let job = json_of(res, StatusCode::OK).await;
    assert_eq!(job["state"], "released");
    assert_eq!(job["job_state"], "ended", "no restart follows a release: {job}");
    assert_eq!(job["end_reason"], "released");
    assert!(job["next_bid_id"].is_null());
    assert_eq!(dec(&job["escrow_left"]), Decimal::ZERO);
    let cost = dec(&job["cost_so_far"]);
    assert!(cost > Decimal::ZERO, "the attested time is billed: {job}");
    assert_eq!(s.w.available(&s.w.buyer).await, Decimal::from(100) - cost);
    assert_eq!(s.w.app.wallet(&s.w.buyer).await.1, "0");
    s.w.invariants_ok().await;
    // Revoked at once: every route refuses the token now.
    let res = s.w.app.get(&format!("/api/v1/jobs/{}", s.job_id), Some(&s.token)).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "job_token_revoked").await;
    let res = send(&s.w.app, Method::POST, &format!("/api/v1/jobs/{}/release", s.job_id), &s.token, None).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "job_token_revoked").await;
    assert_problem(place_child(&s, &child("1")).await, StatusCode::UNAUTHORIZED, "job_token_revoked").await;
    // The owner releasing an ended job: nothing runs.
    let res = send(&s.w.app, Method::POST, &format!("/api/v1/jobs/{}/release", s.job_id), &s.w.buyer.token, None).await;
    assert_problem(res, StatusCode::CONFLICT, "job_ended").await;
    // The host is no longer told to run it.
    let path = format!("/api/v1/hosts/{}/assignments", s.w.host.host_id);
    let assigned: Value = s.w.host.request(&s.w.app, "GET", &path, "", b"").await.json().await.unwrap();
    assert!(assigned["items"].as_array().unwrap().is_empty(), "{assigned}");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_token_of_an_ended_attempt_and_a_forged_token_are_refused(pool: sqlx::PgPool) {
    let mut s = steer(pool, budgeted("5")).await;
    let lease: String = s.w.job(&s.job_id).await["lease_id"].as_str().unwrap().to_string();
    let exited = vec![capex_core::LeaseReport {
        lease_id: lease.parse().unwrap(),
        state: "exited".into(),
        pid: None,
        exit_code: Some(0),
    }];
    s.w.report(Some(exited), true).await;
    assert_eq!(s.w.job(&s.job_id).await["state"], "exited");
    let res = s.w.app.get(&format!("/api/v1/jobs/{}", s.job_id), Some(&s.token)).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "job_token_revoked").await;
    // A token whose MAC is altered, or one for a lease id it was not minted for.
    let mut forged = s.token.clone();
    let last = if forged.ends_with('0') { '1' } else { '0' };
    forged.pop();
    forged.push(last);
    let other = format!("cxj_{}{}", Uuid::now_v7().simple(), &s.token[4 + 32..]);
    for token in [forged.as_str(), other.as_str(), "cxj_", "cxj_nothex"] {
        let res = s.w.app.get(&format!("/api/v1/jobs/{}", s.job_id), Some(token)).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_job_token").await;
    }
}

/// Fills `{param}`s of an OpenAPI path with ids of the world (the class for `{class}`).
fn fill_path(path: &str, id: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(if &rest[start + 1..end] == "class" { CLASS } else { id });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every operation of the OpenAPI document that needs authentication, other than the four
/// a job may call about itself, refuses the job token (401 or 403); no transfer, order,
/// wallet read, API key or other job is reachable with it. Public market data stays public.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_job_token_is_refused_on_every_other_route(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    let spec: Value = app.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    let allowed = [
        ("GET", "/api/v1/jobs/{id}"),
        ("POST", "/api/v1/jobs/{id}/release"),
        ("POST", "/api/v1/jobs/{id}/children"),
        ("DELETE", "/api/v1/jobs/{id}/children/{child_id}"),
    ];
    let (journal, orders) = (app.journal_rows().await, orders_count(app).await);
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            if allowed.contains(&(method.as_str(), path.as_str())) {
                continue;
            }
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            // The agent's routes, signed with the host key: a bearer token is not a signature.
            let host_signed = path.starts_with("/api/v1/hosts/{host_id}/leases/") || path.ends_with("/assignments");
            if !secured && !host_signed {
                continue;
            }
            let url = fill_path(path, &s.job_id);
            let body = json!({"amount": "1", "to_user_id": s.w.provider.user_id, "name": "x"});
            let res = send(app, method.parse().unwrap(), &url, &s.token, Some(&body)).await;
            let status = res.status();
            let text = res.text().await.unwrap();
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
                "{method} {path} answered {status} to a job token: {text}"
            );
            if secured {
                assert!(text.contains("job_token_not_allowed"), "{method} {path}: {text}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} operations checked");
    assert_eq!((app.journal_rows().await, orders_count(app).await), (journal, orders));
    // The job's own view and the public market data answer.
    assert_eq!(app.get(&format!("/api/v1/jobs/{}", s.job_id), Some(&s.token)).await.status(), StatusCode::OK);
    for path in ["/api/v1/markets", &format!("/api/v1/markets/{CLASS}/trades")] {
        assert_eq!(app.get(path, Some(&s.token)).await.status(), StatusCode::OK, "{path}");
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_fill_estimate_comes_from_the_resting_book_and_recent_fills(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    let estimate = |q: &str| format!("/api/v1/markets/{CLASS}/estimate?{q}");
    // The first trade (1 GPU at 1) is the only fill; nothing rests.
    let e = json_of(app.get(&estimate("gpus=1&price=1&max_hours=1"), Some(&s.token)).await, StatusCode::OK).await;
    assert_eq!(e["basis"], "recent_fills", "{e}");
    assert_eq!(e["fills_in_window"], 1);
    assert_eq!(e["bids_ahead"], 0);
    assert_eq!(e["expected_wait_s"], 86_400);
    // Below every fill's price, or more GPUs than any fill had: no estimate.
    for q in ["gpus=1&price=0.5&max_hours=1", "gpus=2&price=1&max_hours=1"] {
        let e = json_of(app.get(&estimate(q), None).await, StatusCode::OK).await;
        assert_eq!(e["basis"], "no_recent_fills", "{q}: {e}");
        assert!(e["expected_wait_s"].is_null());
    }
    // An ask that fits rests now: no wait; one that is too dear does not count.
    app.ask(&s.second_provider, CLASS, s.second.host_id, 1, "0.8").await;
    let e = json_of(app.get(&estimate("gpus=1&price=0.9&max_hours=1"), None).await, StatusCode::OK).await;
    assert_eq!(
        (e["basis"].as_str(), e["expected_wait_s"].as_i64(), e["fitting_asks"].as_i64()),
        (Some("resting_ask"), Some(0), Some(1))
    );
    let e = json_of(app.get(&estimate("gpus=1&price=0.7&max_hours=1"), None).await, StatusCode::OK).await;
    assert_eq!(e["fitting_asks"], 0);
    for (q, field) in [
        ("price=1&max_hours=1", "gpus"),
        ("gpus=0&price=1&max_hours=1", "gpus"),
        ("gpus=1&price=-1&max_hours=1", "price"),
        ("gpus=1&price=1.0000001&max_hours=1", "price"),
        ("gpus=1&price=1", "max_hours"),
        ("gpus=x&price=1&max_hours=1", "gpus"),
    ] {
        let body = assert_problem(app.get(&estimate(q), None).await, StatusCode::BAD_REQUEST, "invalid_query").await;
        assert_eq!(body["field"], field, "{q}: {body}");
    }
    let res = app.get("/api/v1/markets/Z999-1GB/estimate?gpus=1&price=1&max_hours=1", None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "unknown_market").await;
}

/// A child bid retried with the same Idempotency-Key is placed once and counted once
/// against the budget; the same key with another body is refused.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_retried_child_bid_is_placed_once(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let app = &s.w.app;
    let path = format!("/api/v1/jobs/{}/children", s.job_id);
    let post = |body: Value| {
        app.client.post(app.url(&path)).bearer_auth(&s.token).header("idempotency-key", "child-a").json(&body).send()
    };
    let first = json_of(post(child("2")).await.unwrap(), StatusCode::CREATED).await;
    let again = json_of(post(child("2")).await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(first["order_id"], again["order_id"]);
    let parent = app.get_json(&format!("/api/v1/jobs/{}", s.job_id), &s.token).await;
    assert_eq!(parent["children"].as_array().unwrap().len(), 1);
    assert_eq!(parent["budget_used"], "4");
    let res = post(child("1")).await.unwrap();
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
}

/// Child bids placed at the same moment are checked one at a time: of several that each
/// fit the budget alone but not together, exactly one is placed.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn concurrent_child_bids_never_overspend_the_budget(pool: sqlx::PgPool) {
    let s = steer(pool, budgeted("5")).await;
    let bodies: Vec<Value> = (0..4).map(|_| child("2")).collect();
    let answers = post_children_at_once(&s, &bodies).await;
    let placed = answers.iter().filter(|&&status| status == StatusCode::CREATED).count();
    let refused = answers.iter().filter(|&&status| status == StatusCode::UNPROCESSABLE_ENTITY).count();
    assert_eq!((placed, refused), (1, 3), "{answers:?}");
    let parent = s.w.app.get_json(&format!("/api/v1/jobs/{}", s.job_id), &s.token).await;
    assert_eq!(parent["budget_used"], "4");
    s.w.invariants_ok().await;
}

async fn post_children_at_once(s: &Steer, bodies: &[Value]) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        let req =
            s.w.app
                .client
                .post(s.w.app.url(&format!("/api/v1/jobs/{}/children", s.job_id)))
                .bearer_auth(&s.token)
                .header("idempotency-key", Uuid::now_v7().to_string())
                .json(body);
        tasks.spawn(async move { req.send().await.expect("request sent").status() });
    }
    tasks.join_all().await
}
