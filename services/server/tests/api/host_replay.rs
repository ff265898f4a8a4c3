//! Signed host requests (capex/host-request/v2) carry a nonce inside the signed bytes; the
//! same request sent again within the skew window is refused with `host_request_replayed`
//! and has no effect, even when both copies arrive at once.

use capex_core::report::{format_host_nonce, sign_host_request};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};
use crate::hosts::{TestHost, h100s, register_host, report, send_ok};

const CLASS: &str = "H100-80GB";

/// A captured host request: everything needed to send it again byte for byte.
#[derive(Clone)]
struct Signed {
    method: &'static str,
    path: String,
    time: String,
    nonce: String,
    signature: String,
    body: Vec<u8>,
}

struct World {
    app: TestApp,
    buyer: TestUser,
    provider: TestUser,
    host_id: Uuid,
    key: SigningKey,
}

async fn world(pool: sqlx::PgPool) -> World {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    app.mint(&operator, &buyer, "100").await;
    let host = register_host(&app, &provider, h100s(1)).await;
    send_ok(&app, &host, &report(&host, 0, 1_000)).await;
    let TestHost { host_id, key, .. } = host;
    World { app, buyer, provider, host_id, key }
}

impl World {
    fn sign(&self, method: &'static str, path: String, body: Vec<u8>) -> Signed {
        let nonce = format_host_nonce(&rand::random());
        let (time, signature) =
            sign_host_request(&self.key, method, &path, self.host_id, Utc::now().timestamp(), &nonce, &body);
        Signed { method, path, time, nonce, signature, body }
    }

    async fn send(&self, request: &Signed) -> Response {
        let url = self.app.url(&request.path);
        let req = if request.method == "GET" { self.app.client.get(url) } else { self.app.client.post(url) };
        req.header("x-capex-host-time", &request.time)
            .header("x-capex-host-nonce", &request.nonce)
            .header("x-capex-host-signature", &request.signature)
            .body(request.body.clone())
            .send()
            .await
            .unwrap()
    }

    /// Trades the host's GPU; returns the lease (job) id.
    async fn trade(&self) -> String {
        self.app.ask(&self.provider, CLASS, self.host_id, 1, "2").await;
        let bid = self.app.bid(&self.buyer, CLASS, 1, "1", "2").await;
        bid["fills"][0]["lease_id"].as_str().expect("the bid traded").to_string()
    }

    async fn log_rows(&self, lease_id: &str) -> i64 {
        sqlx::query_scalar("select count(*) from lease_logs where lease_id = $1")
            .bind(lease_id.parse::<Uuid>().unwrap())
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    fn logs(&self, lease_id: &str, lines: &[&str]) -> Signed {
        let chunks: Vec<Value> = lines.iter().map(|l| json!({"stream": "stdout", "text": l})).collect();
        let body = serde_json::to_vec(&json!({ "chunks": chunks })).unwrap();
        self.sign("POST", format!("/api/v1/hosts/{}/leases/{lease_id}/logs", self.host_id), body)
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_replayed_log_upload_is_refused_and_stored_once(pool: sqlx::PgPool) {
    let w = world(pool).await;
    let lease_id = w.trade().await;
    let upload = w.logs(&lease_id, &["epoch 1\n", "epoch 2\n"]);
    let res = w.send(&upload).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
    assert_problem(w.send(&upload).await, StatusCode::CONFLICT, "host_request_replayed").await;
    assert_eq!(w.log_rows(&lease_id).await, 2, "the replay stored nothing");
    let logs = w.app.get_json(&format!("/api/v1/jobs/{lease_id}/logs"), &w.buyer.token).await;
    assert_eq!(logs["items"].as_array().unwrap().len(), 2, "{logs}");

    // Two copies at the same moment: one is stored, the other refused.
    let upload = w.logs(&lease_id, &["epoch 3\n"]);
    let (a, b) = tokio::join!(w.send(&upload), w.send(&upload));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    assert_eq!(w.log_rows(&lease_id).await, 3);

    // The same lines signed afresh (a new nonce) are a new upload.
    let res = w.send(&w.logs(&lease_id, &["epoch 3\n"])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(w.log_rows(&lease_id).await, 4);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn replayed_acks_and_assignment_polls_are_refused(pool: sqlx::PgPool) {
    let w = world(pool).await;
    let lease_id = w.trade().await;

    let poll = w.sign("GET", format!("/api/v1/hosts/{}/assignments", w.host_id), vec![]);
    let res = w.send(&poll).await;
    assert_eq!(res.status(), StatusCode::OK);
    let assigned: Value = res.json().await.unwrap();
    assert_eq!(assigned["items"][0]["lease_id"], lease_id.as_str());
    assert_problem(w.send(&poll).await, StatusCode::CONFLICT, "host_request_replayed").await;

    let ack = w.sign("POST", format!("/api/v1/hosts/{}/leases/{lease_id}/ack", w.host_id), vec![]);
    let res = w.send(&ack).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "running");
    assert_problem(w.send(&ack).await, StatusCode::CONFLICT, "host_request_replayed").await;
    let starts: i64 = sqlx::query_scalar("select count(*) from leases where lease_id = $1 and started_at is not null")
        .bind(lease_id.parse::<Uuid>().unwrap())
        .fetch_one(&w.app.pool)
        .await
        .unwrap();
    assert_eq!(starts, 1);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_nonce_is_signed_and_required(pool: sqlx::PgPool) {
    let w = world(pool).await;
    let path = format!("/api/v1/hosts/{}/assignments", w.host_id);
    let signed = w.sign("GET", path.clone(), vec![]);

    // Another nonce under the same signature: the signature no longer verifies.
    let swapped = Signed { nonce: format_host_nonce(&rand::random()), ..signed.clone() };
    assert_problem(w.send(&swapped).await, StatusCode::UNAUTHORIZED, "invalid_host_signature").await;
    // The same nonce spelled in capitals is refused, not taken for a new one.
    let upper = Signed { nonce: signed.nonce.to_uppercase(), ..signed.clone() };
    assert_problem(w.send(&upper).await, StatusCode::UNAUTHORIZED, "invalid_host_signature").await;
    let short = Signed { nonce: "abc123".into(), ..signed.clone() };
    assert_problem(w.send(&short).await, StatusCode::UNAUTHORIZED, "invalid_host_signature").await;
    // A v1 request (no nonce header) is refused.
    let res = w
        .app
        .client
        .get(w.app.url(&path))
        .header("x-capex-host-time", &signed.time)
        .header("x-capex-host-signature", &signed.signature)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "host_signature_missing").await;
    // None of those spent the nonce: the genuine request still goes through, once.
    assert_eq!(w.send(&signed).await.status(), StatusCode::OK);
    assert_problem(w.send(&signed).await, StatusCode::CONFLICT, "host_request_replayed").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn nonces_older_than_the_window_are_pruned(pool: sqlx::PgPool) {
    let w = world(pool).await;
    let skew_s = w.app.state.config.report_skew_s as i64;
    let old: [u8; 16] = rand::random();
    let recent: [u8; 16] = rand::random();
    for (nonce, age_s) in [(old, 2 * skew_s + 60), (recent, skew_s)] {
        sqlx::query(
            "insert into host_request_nonces (host_id, nonce, created_at)
             values ($1, $2, now() - make_interval(secs => $3))",
        )
        .bind(w.host_id)
        .bind(nonce.as_slice())
        .bind(age_s as f64)
        .execute(&w.app.pool)
        .await
        .unwrap();
    }
    let res = w.send(&w.sign("GET", format!("/api/v1/hosts/{}/assignments", w.host_id), vec![])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let kept: Vec<Vec<u8>> = sqlx::query_scalar("select nonce from host_request_nonces where host_id = $1")
        .bind(w.host_id)
        .fetch_all(&w.app.pool)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2, "the old nonce pruned, the recent and the new one kept");
    assert!(kept.contains(&recent.to_vec()));
    assert!(!kept.contains(&old.to_vec()));
}
