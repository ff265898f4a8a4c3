//! Input rules at the edge: control characters in text and out-of-range times are refused
//! with a 422 naming the field and nothing stored, a bad order is refused alone (never
//! failing other buyers' orders in its matcher batch), and every paged route pages through
//! all rows at its documented maximum.

use std::collections::HashSet;

use capex_core::report::{encode_public_key, format_host_nonce, sign_host_request};
use capex_core::{
    GpuSample, INVENTORY_DOMAIN, InventoryGpu, InventoryPayload, REPORT_DOMAIN, ReportPayload, SignedEnvelope,
};
use chrono::{DateTime, NaiveDate, Utc};
use ed25519_dalek::SigningKey;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, TestUser, assert_problem, bid_body};

const CLASS: &str = "H100-80GB";
const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}"))).fetch_one(&app.pool).await.unwrap()
}

/// Asserts a 422 with this code naming this field.
async fn assert_refused(res: Response, code: &str, field: &str) {
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    assert_eq!(body["field"], field, "{body}");
}

fn a_long_time_ago() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(-5000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn control_characters_in_account_and_wallet_text_are_refused_naming_the_field(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let bob = app.register(&["buyer"]).await;
    app.mint(&operator, &alice, "100").await;
    let (users, journal) = (count(&app, "users").await, app.journal_rows().await);

    let register = |email: &str, password: &str| json!({"email": email, "password": password, "roles": ["buyer"]});
    let res = app.post("/api/v1/auth/register", None, &register("a\u{0}b@example.test", PASSWORD)).await;
    assert_refused(res, "invalid_text", "email").await;
    let res = app.post("/api/v1/auth/register", None, &register("ok@example.test", "correct\u{0}horse")).await;
    assert_refused(res, "invalid_text", "password").await;
    let res = app.post("/api/v1/auth/register", None, &register("ok@example.test", &"x".repeat(257))).await;
    assert_refused(res, "text_too_long", "password").await;
    let res =
        app.post("/api/v1/auth/login", None, &json!({"email": "a\u{0}@example.test", "password": PASSWORD})).await;
    assert_refused(res, "invalid_text", "email").await;
    let res = app.post("/api/v1/auth/login", None, &json!({"email": alice.email, "password": "x\u{1b}y"})).await;
    assert_refused(res, "invalid_text", "password").await;
    assert_eq!(count(&app, "users").await, users);

    let res = app.post("/api/v1/auth/api-keys", Some(&alice.token), &json!({"name": "rack\u{0}3"})).await;
    assert_refused(res, "invalid_text", "name").await;
    let res = app.post("/api/v1/auth/api-keys", Some(&alice.token), &json!({"name": "rack\n3"})).await;
    assert_refused(res, "invalid_text", "name").await;
    assert_eq!(count(&app, "api_keys").await, 0);

    let transfer = |memo: &str| json!({"to_user": bob.user_id, "amount": "1", "memo": memo});
    let res = app.post("/api/v1/transfers", Some(&alice.token), &transfer("rent\u{0}")).await;
    assert_refused(res, "invalid_text", "memo").await;
    let res = app.post("/api/v1/transfers", Some(&alice.token), &transfer(&"m".repeat(201))).await;
    assert_refused(res, "text_too_long", "memo").await;
    let mint = json!({"user_id": bob.user_id, "amount": "5", "memo": "bonus\u{0}"});
    let res = app.post_with_key("/api/v1/operator/mint", &operator.token, "mint-nul", &mint).await;
    assert_refused(res, "invalid_text", "memo").await;
    assert_eq!(app.journal_rows().await, journal);

    // What the rules allow still works: non-ASCII text, and the longest memo.
    let res = app.post("/api/v1/transfers", Some(&alice.token), &transfer(&"é".repeat(200))).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn control_characters_in_queries_and_paths_are_refused_naming_the_parameter(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.register(&["buyer"]).await;
    // Query errors are 400 and name the parameter (the API's rule for query strings).
    for (path, field) in [
        ("/api/v1/jobs?state=%00", "state"),
        ("/api/v1/jobs?state=running%0A", "state"),
        ("/api/v1/orders?status=all&cursor=%00", "cursor"),
        ("/api/v1/wallet/ledger?cursor=1.credit%00", "cursor"),
    ] {
        let res = app.get(path, Some(&alice.token)).await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_text").await;
        assert_eq!(body["field"], field, "{body}");
    }
    // A path that holds one names nothing: 404, as a malformed id is.
    for path in
        ["/api/v1/markets/H100-80GB%00/book", "/api/v1/jobs/%17%C2%B1", "/api/v1/hosts/%C3%B2%C2%82%0A/assignments"]
    {
        let res = app.get(path, Some(&alice.token)).await;
        let body = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(body["field"], "path", "{body}");
    }
    assert_eq!(app.get("/api/v1/jobs?state=running", Some(&alice.token)).await.status(), StatusCode::OK);
}

fn inventory(key: &SigningKey, gpus: usize) -> InventoryPayload {
    InventoryPayload {
        public_key: encode_public_key(&key.verifying_key()),
        name: "rack-1".into(),
        created_at: Utc::now(),
        interval_s: 10,
        backend: capex_core::GpuBackend::Nvml,
        driver_version: Some("550.54".into()),
        cuda_version: Some("12.4".into()),
        gpus: (0..gpus)
            .map(|i| InventoryGpu {
                index: i as u32,
                uuid: format!("GPU-{}", Uuid::new_v4()),
                name: GPU_NAME.into(),
                memory_total_mib: 81_559,
                pci_bus_id: Some(format!("00000000:{i:02X}:00.0")),
            })
            .collect(),
    }
}

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn control_characters_in_a_signed_inventory_are_refused_naming_the_field(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let provider = app.register(&["provider"]).await;
    type Edit = fn(&mut InventoryPayload);
    let cases: [(Edit, &str); 6] = [
        (|inv| inv.name = "rack\u{0}1".into(), "payload.name"),
        (|inv| inv.driver_version = Some("550\u{0}".into()), "payload.driver_version"),
        (|inv| inv.cuda_version = Some("12.4\u{1b}".into()), "payload.cuda_version"),
        (|inv| inv.gpus[1].uuid = "GPU-\u{0}".into(), "payload.gpus[1].uuid"),
        (|inv| inv.gpus[0].name = "NVIDIA\u{0}H100".into(), "payload.gpus[0].name"),
        (|inv| inv.gpus[1].pci_bus_id = Some("0000\u{0}".into()), "payload.gpus[1].pci_bus_id"),
    ];
    for (edit, field) in cases {
        let key = new_key();
        let mut payload = inventory(&key, 2);
        edit(&mut payload);
        let envelope = SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &payload);
        let res = app.post("/api/v1/hosts", Some(&provider.token), &json!(envelope)).await;
        assert_refused(res, "invalid_text", field).await;
    }
    let key = new_key();
    let mut payload = inventory(&key, 1);
    payload.gpus[0].pci_bus_id = Some("0".repeat(129));
    let envelope = SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &payload);
    let res = app.post("/api/v1/hosts", Some(&provider.token), &json!(envelope)).await;
    assert_refused(res, "text_too_long", "payload.gpus[0].pci_bus_id").await;
    assert_eq!(count(&app, "hosts").await, 0);
    assert_eq!(count(&app, "host_gpus").await, 0);
}

fn with_job(job: Value) -> Value {
    let mut body = bid_body(1, "1", "2", "gtc");
    body["job"] = job;
    body
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_bid_whose_job_holds_control_characters_is_refused_naming_the_field(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    app.mint(&operator, &buyer, "100").await;
    for (job, code, field) in [
        (json!({"command": ["py\u{0}thon"]}), "invalid_text", "job.command[0]"),
        (json!({"command": ["python", "train.py", "\u{0}"]}), "invalid_text", "job.command[2]"),
        (json!({"command": ["python", "\u{1b}[31m"]}), "invalid_text", "job.command[1]"),
        (json!({"command": ["python"], "env": {"EPOCHS": "3\u{0}"}}), "invalid_text", "job.env.EPOCHS"),
        (json!({"command": ["python"], "image": "pytorch\u{0}:2"}), "invalid_text", "job.image"),
        (json!({"command": ["python", "x".repeat(4097)]}), "text_too_long", "job.command[1]"),
    ] {
        let res = app.place(&buyer, CLASS, &with_job(job.clone())).await;
        assert_refused(res, code, field).await;
    }
    // A NUL in an environment variable's name: the field names the key with the NUL escaped.
    let res = app.place(&buyer, CLASS, &with_job(json!({"command": ["python"], "env": {"A\u{0}": "1"}}))).await;
    assert_refused(res, "invalid_text", "job.env.A\\u{0}").await;
    assert_eq!(count(&app, "orders").await, 0);
    assert_eq!(app.wallet(&buyer).await, ("100".to_string(), "0".to_string()));

    // Tabs and line breaks belong in arguments and values (a script, a certificate).
    let job = json!({"command": ["sh", "-c", "echo a\n\techo b"], "env": {"CERT": "-----BEGIN-----\r\nabc\r\n"}});
    let placed = app.place_ok(&buyer, CLASS, &with_job(job)).await;
    let id = placed["order_id"].as_str().unwrap();
    let stored: Value = sqlx::query_scalar("select job from orders where order_id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored["command"][2], "echo a\n\techo b");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_bad_bid_beside_other_buyers_good_bids_fails_alone(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let good = app.register(&["buyer"]).await;
    let bad = app.register(&["buyer"]).await;
    app.mint(&operator, &good, "1000").await;
    app.mint(&operator, &bad, "1000").await;
    let bad_job = json!({"command": ["python", "a\u{0}b"], "env": {"K": "v\u{0}"}, "image": "i\u{0}"});
    let (good_bid, bad_bid) = (bid_body(1, "1", "1", "gtc"), with_job(bad_job));
    for round in 0..3 {
        // Sent together, so that the matcher would take them in one batch.
        let goods = (0..8).map(|_| app.place(&good, CLASS, &good_bid));
        let (goods, refused) = tokio::join!(futures::future::join_all(goods), app.place(&bad, CLASS, &bad_bid));
        for res in goods {
            assert_eq!(res.status(), StatusCode::CREATED, "round {round}: {}", res.text().await.unwrap());
        }
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_text").await;
    }
    let orders: Vec<Uuid> =
        sqlx::query_scalar("select distinct owner_id from orders").fetch_all(&app.pool).await.unwrap();
    assert_eq!(orders, vec![good.user_id]);
    assert_eq!(count(&app, "orders").await, 24);
}

/// A registered host with its signing key and GPU uuids.
struct SignedHost {
    host_id: Uuid,
    key: SigningKey,
    gpus: Vec<String>,
}

async fn register_host(app: &TestApp, provider: &TestUser, gpus: usize) -> SignedHost {
    let key = new_key();
    let payload = inventory(&key, gpus);
    let envelope = SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &payload);
    let res = app.post("/api/v1/hosts", Some(&provider.token), &json!(envelope)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    let body: Value = res.json().await.unwrap();
    SignedHost {
        host_id: body["host_id"].as_str().unwrap().parse().unwrap(),
        key,
        gpus: payload.gpus.into_iter().map(|g| g.uuid).collect(),
    }
}

fn report(host: &SignedHost, seq: u64) -> ReportPayload {
    let now = Utc::now();
    ReportPayload {
        host_id: host.host_id,
        seq,
        sent_at: now,
        measured_at: now,
        interval_s: 10,
        backend: capex_core::GpuBackend::Nvml,
        gpus: host
            .gpus
            .iter()
            .map(|uuid| GpuSample {
                uuid: uuid.clone(),
                name: GPU_NAME.into(),
                memory_total_mib: 81_559,
                memory_used_mib: 0,
                utilization_pct: 0,
                power_mw: 70_000,
                energy_mj: 1000 + seq,
                temperature_c: 35,
                processes: vec![],
            })
            .collect(),
        leases: None,
    }
}

async fn send_report(app: &TestApp, host: &SignedHost, report: &ReportPayload) -> Response {
    let envelope = SignedEnvelope::seal_json(REPORT_DOMAIN, &host.key, report);
    app.post(&format!("/api/v1/hosts/{}/reports", host.host_id), None, &json!(envelope)).await
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_report_with_bad_text_or_times_is_refused_alone(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let provider = app.register(&["provider"]).await;
    let good = register_host(&app, &provider, 1).await;
    let bad = register_host(&app, &provider, 1).await;
    let mut long_ago = report(&bad, 0);
    long_ago.measured_at = a_long_time_ago();
    let mut nul_name = report(&bad, 0);
    nul_name.gpus[0].name = "NVIDIA\u{0}".into();
    for (seq, refused) in [long_ago, nul_name].into_iter().enumerate() {
        // Sent together, so that the ingester would write them in one batch.
        let fine = report(&good, seq as u64);
        let (accepted, refused) = tokio::join!(send_report(&app, &good, &fine), send_report(&app, &bad, &refused));
        assert_eq!(accepted.status(), StatusCode::OK, "{}", accepted.text().await.unwrap());
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload").await;
    }
    let stored: Vec<Uuid> =
        sqlx::query_scalar("select distinct host_id from host_reports").fetch_all(&app.pool).await.unwrap();
    assert_eq!(stored, vec![good.host_id]);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn out_of_range_times_are_refused_naming_the_field(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let provider = app.register(&["provider"]).await;
    let host = app.live_host(&provider, CLASS, 1).await;
    let res =
        app.get(&format!("/api/v1/hosts/{host}/telemetry?since=-5000-01-01T00:00:00Z"), Some(&provider.token)).await;
    assert_refused(res, "invalid_time", "since").await;
    let res =
        app.get(&format!("/api/v1/hosts/{host}/telemetry?since=0000-12-31T23:59:59Z"), Some(&provider.token)).await;
    assert_refused(res, "invalid_time", "since").await;
    let ok =
        app.get(&format!("/api/v1/hosts/{host}/telemetry?since=0001-01-01T00:00:00Z"), Some(&provider.token)).await;
    assert_eq!(ok.status(), StatusCode::OK);

    let ask = |until: &str| json!({"side": "ask", "host_id": host, "gpus": 1, "price": "2", "tif": "gtc", "available_until": until});
    let res = app.place(&provider, CLASS, &ask("+20000-01-01T00:00:00Z")).await;
    assert_refused(res, "invalid_time", "available_until").await;
    let res = app.place(&provider, CLASS, &ask("-5000-01-01T00:00:00Z")).await;
    assert_refused(res, "invalid_time", "available_until").await;
    assert_eq!(count(&app, "orders").await, 0);
    app.place_ok(&provider, CLASS, &ask("9999-12-31T23:59:59Z")).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn job_output_keeps_its_control_characters_and_nul_becomes_a_replacement_character(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let operator = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    app.mint(&operator, &buyer, "100").await;
    let host = register_host(&app, &provider, 1).await;
    assert_eq!(send_report(&app, &host, &report(&host, 0)).await.status(), StatusCode::OK);
    app.ask(&provider, CLASS, host.host_id, 1, "2").await;
    let bid = app.bid(&buyer, CLASS, 1, "1", "2").await;
    let job_id = bid["fills"][0]["lease_id"].as_str().expect("the bid traded").to_string();

    let path = format!("/api/v1/hosts/{}/leases/{job_id}/logs", host.host_id);
    let body =
        serde_json::to_vec(&json!({"chunks": [{"stream": "stdout", "text": "\u{1b}[32mok\u{0}\tdone\r\n"}]})).unwrap();
    let nonce = format_host_nonce(&rand::random());
    let (time, signature) =
        sign_host_request(&host.key, "POST", &path, host.host_id, Utc::now().timestamp(), &nonce, &body);
    let res = app
        .client
        .post(app.url(&path))
        .header("x-capex-host-time", time)
        .header("x-capex-host-signature", signature)
        .header("x-capex-host-nonce", nonce)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let logs = app.get_json(&format!("/api/v1/jobs/{job_id}/logs"), &buyer.token).await;
    assert_eq!(logs["items"][0]["text"], "\u{1b}[32mok\u{FFFD}\tdone\r\n");

    let res =
        app.get(&format!("/api/v1/jobs/{job_id}/telemetry?since=-5000-01-01T00:00:00Z"), Some(&buyer.token)).await;
    assert_refused(res, "invalid_time", "since").await;
}

/// Reads every page of `path` (which has a `?`) at `limit`, following `cursor_field` of each
/// page as the `cursor_param` of the next; returns the items of each page.
async fn pages(
    app: &TestApp,
    token: &str,
    path: &str,
    limit: i64,
    cursor_param: &str,
    cursor_field: &str,
) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}&limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&{cursor_param}={}", cursor.replace('+', "%2B")));
        }
        let page = app.get_json(&url, token).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let next = match &page[cursor_field] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        let empty = items.is_empty();
        pages.push(items);
        match next {
            Some(next) if !empty => cursor = Some(next),
            _ => return pages,
        }
        assert!(pages.len() < 100, "{path} does not end");
    }
}

/// Asserts that `pages` hold `total` distinct items (by `key`), full pages of `limit` first.
fn assert_paged_through(pages: &[Vec<Value>], limit: i64, total: usize, key: &str) {
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let full = total / limit as usize;
    assert!(sizes.len() > full, "{sizes:?}");
    assert!(sizes[..full].iter().all(|&n| n == limit as usize), "{sizes:?}");
    let keys: HashSet<String> = pages.iter().flatten().map(|item| item[key].to_string()).collect();
    assert_eq!(keys.len(), total, "{sizes:?}");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_wallet_ledger_pages_through_every_line_at_its_maximum(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.register(&["buyer"]).await;
    let lines = 450;
    let mut tx = app.pool.begin().await.unwrap();
    let wallet = capex_ledger::wallet_account(&mut tx, alice.user_id).await.unwrap();
    for i in 0..lines {
        let spec = capex_ledger::TransferSpec {
            from: capex_ledger::TREASURY_ACCOUNT,
            to: wallet,
            amount: capex_core::Credits::positive(rust_decimal::Decimal::ONE).unwrap(),
            kind: "mint".into(),
            memo: format!("line {i}"),
            idempotency_key: None,
        };
        capex_ledger::post_transfer(&mut tx, spec).await.unwrap();
    }
    tx.commit().await.unwrap();
    let max = capex_ledger::HISTORY_PAGE_MAX;
    let pages = pages(&app, &alice.token, "/api/v1/wallet/ledger?", max, "cursor", "next_cursor").await;
    assert_paged_through(&pages, max, lines, "entry_id");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn host_lists_reports_and_telemetry_page_through_every_row_at_their_maximum(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let provider = app.register(&["provider"]).await;
    let hosts = 230;
    for _ in 0..hosts {
        app.live_host(&provider, CLASS, 1).await;
    }
    let pages_of_hosts = pages(&app, &provider.token, "/api/v1/hosts?", 100, "cursor", "next_cursor").await;
    assert_paged_through(&pages_of_hosts, 100, hosts, "host_id");

    // One host with many stored reports, each a valid payload sampled a second apart.
    let host = register_host(&app, &provider, 1).await;
    let reports = 4100;
    let payload = serde_json::to_vec(&report(&host, 0)).unwrap();
    sqlx::query(
        "insert into host_reports (host_id, seq, sent_at, measured_at, payload, signature)
         select $1, i, now(), now() - make_interval(secs => $2 - i), $3, '\\x00'
         from generate_series(1, $2) as i",
    )
    .bind(host.host_id)
    .bind(reports as i64)
    .bind(&payload)
    .execute(&app.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/hosts/{}/reports?", host.host_id);
    let pages_of_reports = pages(&app, &provider.token, &path, 200, "cursor", "next_cursor").await;
    assert_paged_through(&pages_of_reports, 200, reports, "seq");

    let path = format!("/api/v1/hosts/{}/telemetry?", host.host_id);
    let mut since = (Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    let mut samples = Vec::new();
    loop {
        let url = format!("{path}limit=2000&since={}", since.replace('+', "%2B"));
        let page = app.get_json(&url, &provider.token).await;
        let got = page["gpus"][0]["samples"].as_array().cloned().unwrap_or_default();
        assert!(got.len() == 2000 || page["next_since"].is_null(), "a short page has no next_since");
        samples.extend(got.into_iter().map(|s| s["at"].to_string()));
        match page["next_since"].as_str() {
            Some(next) => since = next.to_string(),
            None => break,
        }
    }
    assert_eq!(samples.iter().collect::<HashSet<_>>().len(), reports);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn orders_trades_jobs_and_logs_page_through_every_row_at_their_maximum(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let buyer = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    let host = app.live_host(&provider, CLASS, 1).await;
    let gpu = format!("GPU-{}-0", host.simple());
    let n = 450;
    // n filled bids and asks, their trades and their (ended) leases, as the matcher writes them.
    sqlx::query(
        "with pairs as (
             select i, gen_random_uuid() as bid, gen_random_uuid() as ask, gen_random_uuid() as trade
             from generate_series(1, $4) as i
         ), bids as (
             insert into orders (order_id, class, side, owner_id, status, tif, gpus, gpus_remaining, price,
                                 max_hours, duration_ms, job)
             select bid, $5, 'bid', $1, 'filled', 'gtc', 1, 0, 2, 1, 3600000, '{\"command\": [\"true\"]}'
             from pairs returning order_id
         ), asks as (
             insert into orders (order_id, class, side, owner_id, status, tif, gpus, gpus_remaining, price,
                                 host_id, available_until)
             select ask, $5, 'ask', $2, 'filled', 'gtc', 1, 0, 2, $3, now() + interval '1 day'
             from pairs returning order_id
         ), trades as (
             insert into trades (trade_id, class, bid_id, ask_id, buyer_id, seller_id, host_id, gpus, price,
                                 max_hours, at)
             select trade, $5, bid, ask, $1, $2, $3, 1, 2, 1, now()
             from pairs where (select count(*) from bids) = $4 and (select count(*) from asks) = $4
             returning trade_id
         )
         insert into leases (lease_id, trade_id, host_id, gpu_uuids, price, buyer_id, provider_id, gpus,
                             max_hours, starts_at, max_end_at, job, state, ended_at)
         select gen_random_uuid(), trade_id, $3, array[$6], 2, $1, $2, 1, 1, now(), now() + interval '1 hour',
                '{\"command\": [\"true\"]}', 'exited', now()
         from trades",
    )
    .bind(buyer.user_id)
    .bind(provider.user_id)
    .bind(host)
    .bind(n as i32)
    .bind(CLASS)
    .bind(&gpu)
    .execute(&app.pool)
    .await
    .unwrap();

    let orders = pages(&app, &buyer.token, "/api/v1/orders?status=all", 200, "cursor", "next_cursor").await;
    assert_paged_through(&orders, 200, n, "order_id");
    let path = format!("/api/v1/markets/{CLASS}/trades?");
    let trades = pages(&app, &buyer.token, &path, 200, "cursor", "next_cursor").await;
    assert_paged_through(&trades, 200, n, "trade_id");
    let jobs = pages(&app, &buyer.token, "/api/v1/jobs?", 200, "cursor", "next_cursor").await;
    assert_paged_through(&jobs, 200, n, "job_id");

    let job_id = jobs[0][0]["job_id"].as_str().unwrap().to_string();
    let lines = 2300;
    sqlx::query(
        "insert into lease_logs (lease_id, seq, stream, text)
         select $1::uuid, i, 'stdout', 'line ' || i from generate_series(0, $2 - 1) as i",
    )
    .bind(&job_id)
    .bind(lines as i64)
    .execute(&app.pool)
    .await
    .unwrap();
    let mut after = -1;
    let mut seen = HashSet::new();
    loop {
        let page = app.get_json(&format!("/api/v1/jobs/{job_id}/logs?after={after}&limit=1000"), &buyer.token).await;
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        assert!(items.len() == 1000 || seen.len() + items.len() == lines, "{}", items.len());
        seen.extend(items.iter().map(|l| l["seq"].as_i64().unwrap()));
        after = page["next_after"].as_i64().unwrap();
    }
    assert_eq!(seen.len(), lines);
}
