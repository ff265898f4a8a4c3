//! Markets: placing, matching, cancelling, reading orders; escrow and GPU binding.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, ask_body, assert_problem, bid_body};

const CLASS: &str = "H100-80GB";

async fn escrow_balance(app: &TestApp, ref_id: Uuid) -> Decimal {
    sqlx::query_scalar("select balance from accounts where kind = 'escrow' and ref_id = $1")
        .bind(ref_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn id(value: &Value) -> Uuid {
    value.as_str().unwrap().parse().unwrap()
}

struct Market {
    app: TestApp,
    buyer: TestUser,
    provider: TestUser,
    host: Uuid,
}

/// A market with a funded buyer and a provider whose live host has `gpus` idle GPUs.
async fn market(pool: sqlx::PgPool, gpus: usize) -> Market {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    let provider = app.register(&["provider"]).await;
    app.mint(&op, &buyer, "1000").await;
    let host = app.live_host(&provider, CLASS, gpus).await;
    Market { app, buyer, provider, host }
}

async fn assert_ledger_ok(app: &TestApp) {
    let mut conn = app.pool.acquire().await.unwrap();
    let report = capex_ledger::check_invariants(&mut conn).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn crossing_bid_and_ask_trade_at_the_resting_price(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 4).await;
    let ask = app.ask(&provider, CLASS, host, 2, "2").await;
    assert_eq!(ask["status"], "open");
    assert_eq!(ask["escrow"], Value::Null);

    // Limit 3, resting ask at 2: trades at 2. Held 3 x 2 x 1.5 = 9; the lease needs 6.
    let bid = app.bid(&buyer, CLASS, 2, "1.5", "3").await;
    assert_eq!(bid["status"], "filled", "{bid}");
    assert_eq!(bid["gpus_remaining"], 0);
    assert_eq!(bid["escrow"], "0");
    let fills = bid["fills"].as_array().unwrap();
    assert_eq!(fills.len(), 1);
    assert_eq!(fills[0]["price"], "2");
    assert_eq!(fills[0]["gpus"], 2);
    let lease_id = id(&fills[0]["lease_id"]);

    assert_eq!(app.wallet(&buyer).await, ("994".into(), "6".into()));
    assert_eq!(escrow_balance(&app, lease_id).await, Decimal::from(6));
    assert_eq!(escrow_balance(&app, id(&bid["order_id"])).await, Decimal::ZERO);

    let ask_now = app.order(&provider, &ask["order_id"]).await;
    assert_eq!(ask_now["status"], "filled");
    assert_eq!(ask_now["gpus_remaining"], 0);
    assert_eq!(ask_now["fills"][0]["lease_id"], fills[0]["lease_id"]);

    // The lease holds exactly the ask's GPUs, which are now marked leased.
    let (gpu_uuids, state, job, price): (Vec<String>, String, Value, Decimal) =
        sqlx::query_as("select gpu_uuids, state, job, price from leases where lease_id = $1")
            .bind(lease_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "pending");
    assert_eq!(price, Decimal::from(2));
    assert_eq!(job["command"], json!(["python", "train.py"]));
    let bound: Vec<String> = sqlx::query_scalar(
        "select gpu_uuid from ask_gpus where order_id = $1 and state = 'leased' and lease_id = $2 order by gpu_uuid",
    )
    .bind(id(&ask["order_id"]))
    .bind(lease_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut sorted = gpu_uuids.clone();
    sorted.sort();
    assert_eq!(sorted, bound);
    assert_eq!(gpu_uuids.len(), 2);

    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &buyer.token).await;
    assert_eq!(book["bids"], json!([]));
    assert_eq!(book["asks"], json!([]));
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_failed_batch_changes_neither_the_book_nor_the_database(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 2).await;
    app.ask(&provider, CLASS, host, 2, "2").await;
    let journal = app.journal_rows().await;
    // Make the batch fail after the book matched: writing the trade raises.
    sqlx::raw_sql(
        "create function fail_trade() returns trigger language plpgsql as $$
         begin raise exception 'injected failure'; end $$;
         create trigger fail_trade before insert on trades for each row execute function fail_trade();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let res = app.place(&buyer, CLASS, &bid_body(2, "1", "3", "gtc")).await;
    assert_problem(res, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &buyer.token).await;
    assert_eq!(book["bids"], json!([]));
    assert_eq!(book["asks"], json!([{"price": "2", "gpus": 2, "orders": 1}]));
    assert_eq!(app.journal_rows().await, journal);
    assert_eq!(app.wallet(&buyer).await, ("1000".into(), "0".into()));

    // The rebuilt book still trades once the database accepts the batch.
    sqlx::raw_sql("drop trigger fail_trade on trades").execute(&app.pool).await.unwrap();
    let bid = app.bid(&buyer, CLASS, 2, "1", "3").await;
    assert_eq!(bid["status"], "filled");
    assert_eq!(bid["fills"][0]["price"], "2");
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn one_ask_is_filled_partly_by_two_bids(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 4).await;
    let ask = app.ask(&provider, CLASS, host, 4, "1.25").await;
    let first = app.bid(&buyer, CLASS, 1, "2", "1.25").await;
    let second = app.bid(&buyer, CLASS, 2, "1", "1.5").await;
    assert_eq!(first["status"], "filled");
    assert_eq!(second["status"], "filled");

    let ask_now = app.order(&provider, &ask["order_id"]).await;
    assert_eq!(ask_now["status"], "open");
    assert_eq!(ask_now["gpus_remaining"], 1);
    assert_eq!(ask_now["fills"].as_array().unwrap().len(), 2);

    // Two leases on distinct GPUs; one GPU still bound to the ask.
    let gpus: Vec<String> =
        sqlx::query_scalar("select unnest(gpu_uuids) from leases").fetch_all(&app.pool).await.unwrap();
    assert_eq!(gpus.len(), 3);
    let mut distinct = gpus.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    let still_bound: i64 =
        sqlx::query_scalar("select count(*) from ask_gpus where state = 'bound'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(still_bound, 1);
    // 1.25 x 1 x 2 + 1.25 x 2 x 1 = 5 in lease escrow; the second bid's excess came back.
    assert_eq!(app.wallet(&buyer).await, ("995".into(), "5".into()));
    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &buyer.token).await;
    assert_eq!(book["asks"], json!([{"price": "1.25", "gpus": 1, "orders": 1}]));
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn price_time_priority_and_small_asks_keep_their_place(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    app.mint(&op, &buyer, "1000").await;
    let mut providers = Vec::new();
    for _ in 0..5 {
        let provider = app.register(&["provider"]).await;
        let host = app.live_host(&provider, CLASS, 4).await;
        providers.push((provider, host));
    }
    // Same price: the earlier ask fills first.
    let early = app.ask(&providers[0].0, CLASS, providers[0].1, 1, "2").await;
    let late = app.ask(&providers[1].0, CLASS, providers[1].1, 1, "2").await;
    let bid = app.bid(&buyer, CLASS, 1, "1", "5").await;
    assert_eq!(
        bid["fills"][0]["trade_id"],
        app.order(&providers[0].0, &early["order_id"]).await["fills"][0]["trade_id"]
    );
    assert_eq!(app.order(&providers[1].0, &late["order_id"]).await["status"], "open");

    // A better price beats an earlier one: `late` (2) is earlier than `cheap` (1.5).
    let cheap = app.ask(&providers[2].0, CLASS, providers[2].1, 1, "1.5").await;
    let bid = app.bid(&buyer, CLASS, 1, "1", "5").await;
    assert_eq!(bid["fills"][0]["price"], "1.5");
    assert_eq!(app.order(&providers[2].0, &cheap["order_id"]).await["status"], "filled");
    assert_eq!(app.order(&providers[1].0, &late["order_id"]).await["status"], "open");

    // `late` (1 GPU) is too small for a 2-GPU bid: it is skipped for `big`, keeps its place,
    // and a later 1-GPU bid still takes it before `later` at the same price.
    let big = app.ask(&providers[3].0, CLASS, providers[3].1, 2, "2").await;
    let later = app.ask(&providers[4].0, CLASS, providers[4].1, 1, "2").await;
    let bid = app.bid(&buyer, CLASS, 2, "1", "5").await;
    assert_eq!(bid["status"], "filled");
    assert_eq!(app.order(&providers[3].0, &big["order_id"]).await["status"], "filled");
    assert_eq!(app.order(&providers[1].0, &late["order_id"]).await["status"], "open");
    let bid = app.bid(&buyer, CLASS, 1, "1", "5").await;
    assert_eq!(bid["status"], "filled");
    assert_eq!(app.order(&providers[1].0, &late["order_id"]).await["status"], "filled");
    assert_eq!(app.order(&providers[4].0, &later["order_id"]).await["status"], "open");
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn cancel_refunds_the_escrow_exactly_and_frees_gpus(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 2).await;
    // 1.234567 x 3 x 1.5 = 5.5555515 -> held 5.555552 (rounded up to the micro-credit).
    let bid = app.bid(&buyer, CLASS, 3, "1.5", "1.234567").await;
    assert_eq!(bid["status"], "open");
    assert_eq!(bid["escrow"], "5.555552");
    assert_eq!(app.wallet(&buyer).await, ("994.444448".into(), "5.555552".into()));
    assert_eq!(bid["unfilled_reasons"][0]["code"], "no_asks");

    let res = app.delete(&format!("/api/v1/orders/{}", bid["order_id"].as_str().unwrap()), &buyer.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["escrow"], "0");
    assert_eq!(app.wallet(&buyer).await, ("1000".into(), "0".into()));
    let res = app.delete(&format!("/api/v1/orders/{}", bid["order_id"].as_str().unwrap()), &buyer.token).await;
    assert_problem(res, StatusCode::CONFLICT, "order_not_open").await;

    // An ask's GPUs are bound until it is cancelled, then free for a new ask.
    let ask = app.ask(&provider, CLASS, host, 2, "3").await;
    let res = app.place(&provider, CLASS, &ask_body(host, 1, "3", "gtc")).await;
    assert_eq!(assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "not_enough_free_gpus").await["field"], "gpus");
    let res = app.delete(&format!("/api/v1/orders/{}", ask["order_id"].as_str().unwrap()), &provider.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.ask(&provider, CLASS, host, 2, "3").await;
    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &buyer.token).await;
    assert_eq!(book["asks"], json!([{"price": "3", "gpus": 2, "orders": 1}]));
    assert_ledger_ok(&app).await;
}

/// The matcher answers a cancel from its own copy of the order; that answer must be what
/// the database holds afterwards, fills of earlier batches included.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_cancel_answers_with_the_order_as_stored(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 4).await;
    let ask = app.ask(&provider, CLASS, host, 3, "1.25").await;
    let filled = app.bid(&buyer, CLASS, 1, "2", "1.25").await;
    assert_eq!(filled["status"], "filled");
    let resting = app.bid(&buyer, CLASS, 2, "1", "1").await;
    assert_eq!(resting["status"], "open");

    for (user, order) in [(&provider, &ask), (&buyer, &resting)] {
        let path = format!("/api/v1/orders/{}", order["order_id"].as_str().unwrap());
        let res = app.delete(&path, &user.token).await;
        assert_eq!(res.status(), StatusCode::OK);
        let answered: Value = res.json().await.unwrap();
        assert_eq!(answered["status"], "cancelled");
        assert_eq!(answered, app.order(user, &order["order_id"]).await);
    }
    let ask_now = app.order(&provider, &ask["order_id"]).await;
    assert_eq!(ask_now["gpus_remaining"], 2);
    assert_eq!(ask_now["fills"][0]["trade_id"], filled["fills"][0]["trade_id"]);
    assert_eq!(app.order(&buyer, &resting["order_id"]).await["escrow"], "0");
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn ioc_leaves_nothing_resting(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 2).await;
    let bid = app.place_ok(&buyer, CLASS, &bid_body(1, "1", "2", "ioc")).await;
    assert_eq!(bid["status"], "cancelled");
    assert_eq!(bid["escrow"], "0");
    assert_eq!(app.wallet(&buyer).await, ("1000".into(), "0".into()));
    let ask = app.place_ok(&provider, CLASS, &ask_body(host, 2, "2", "ioc")).await;
    assert_eq!(ask["status"], "cancelled");
    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &buyer.token).await;
    assert_eq!(book["bids"], json!([]));
    assert_eq!(book["asks"], json!([]));
    let bound: i64 =
        sqlx::query_scalar("select count(*) from ask_gpus where state = 'bound'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(bound, 0);
    // An IOC bid that can trade does.
    app.ask(&provider, CLASS, host, 2, "2").await;
    let bid = app.place_ok(&buyer, CLASS, &bid_body(2, "1", "2", "ioc")).await;
    assert_eq!(bid["status"], "filled");
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn others_cannot_read_or_cancel_my_orders(pool: sqlx::PgPool) {
    let Market { app, buyer, .. } = market(pool, 1).await;
    let mallory = app.register(&["buyer"]).await;
    let bid = app.bid(&buyer, CLASS, 1, "1", "2").await;
    let path = format!("/api/v1/orders/{}", bid["order_id"].as_str().unwrap());
    assert_problem(app.get(&path, Some(&mallory.token)).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(app.delete(&path, &mallory.token).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(
        app.get("/api/v1/orders/not-a-uuid", Some(&mallory.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let mine = app.get_json("/api/v1/orders?status=all", &mallory.token).await;
    assert_eq!(mine["items"], json!([]));
    let mine = app.order(&buyer, &bid["order_id"]).await;
    assert_eq!(mine["status"], "open");
    assert_eq!(
        mine["unfilled_reasons"],
        json!([{"code": "no_asks", "message": "no provider offers GPUs in this market"}])
    );
    assert_problem(app.get(&path, None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn invalid_orders_are_refused_with_their_code_and_nothing_is_written(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 2).await;
    let stranger = app.register(&["provider"]).await;
    let strangers_host = app.live_host(&stranger, CLASS, 2).await;
    let dead_host = app.live_host(&provider, CLASS, 2).await;
    sqlx::query("update hosts set last_report_at = now() - interval '1 hour' where host_id = $1")
        .bind(dead_host)
        .execute(&app.pool)
        .await
        .unwrap();
    let poor = app.register(&["buyer"]).await;
    let journal = app.journal_rows().await;

    let with = |mut body: Value, field: &str, value: Value| {
        body[field] = value;
        body
    };
    let bid = bid_body(1, "1", "2", "gtc");
    let ask = ask_body(host, 1, "2", "gtc");
    // (who, class, body, status, code, field)
    type Case<'a> = (&'a TestUser, &'a str, Value, StatusCode, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (&buyer, "NOPE-1GB", bid.clone(), StatusCode::NOT_FOUND, "unknown_market", Some("class")),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "gpus", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_gpus",
            Some("gpus"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "gpus", json!(-2)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_gpus",
            Some("gpus"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "gpus", json!(65)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_gpus",
            Some("gpus"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "price", json!("0")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
            Some("price"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "price", json!("-1")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_price",
            Some("price"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "price", json!("1.0000001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price_too_precise",
            Some("price"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "max_hours", json!("0")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_max_hours",
            Some("max_hours"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "max_hours", json!("-1")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_max_hours",
            Some("max_hours"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "max_hours", json!("168.5")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_hours_too_long",
            Some("max_hours"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "max_hours", json!("1.0001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_hours_too_precise",
            Some("max_hours"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "job", json!({"command": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_job",
            Some("job.command"),
        ),
        (
            &buyer,
            CLASS,
            with(bid.clone(), "host_id", json!(host)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_allowed",
            Some("host_id"),
        ),
        (&poor, CLASS, bid.clone(), StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds", Some("price")),
        (
            &provider,
            CLASS,
            with(ask.clone(), "host_id", json!(strangers_host)),
            StatusCode::NOT_FOUND,
            "unknown_host",
            Some("host_id"),
        ),
        (
            &provider,
            CLASS,
            with(ask.clone(), "host_id", json!(Uuid::now_v7())),
            StatusCode::NOT_FOUND,
            "unknown_host",
            Some("host_id"),
        ),
        (
            &provider,
            CLASS,
            with(ask.clone(), "host_id", json!(dead_host)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "host_not_live",
            Some("host_id"),
        ),
        (
            &provider,
            CLASS,
            with(ask.clone(), "gpus", json!(3)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_enough_free_gpus",
            Some("gpus"),
        ),
        (&provider, "A100-80GB", ask.clone(), StatusCode::UNPROCESSABLE_ENTITY, "not_enough_free_gpus", Some("gpus")),
        (
            &provider,
            CLASS,
            with(ask.clone(), "available_until", json!("2020-01-01T00:00:00Z")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_available_until",
            Some("available_until"),
        ),
        (
            &provider,
            CLASS,
            with(ask.clone(), "job", json!({"command": ["x"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_not_allowed",
            Some("job"),
        ),
        (&buyer, CLASS, ask.clone(), StatusCode::FORBIDDEN, "forbidden", None),
        (&provider, CLASS, bid.clone(), StatusCode::FORBIDDEN, "forbidden", None),
        (
            &buyer,
            CLASS,
            json!({"side": "bid", "gpus": 1, "price": "1", "job": {"command": ["x"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            Some("max_hours"),
        ),
    ];
    for (user, class, body, status, code, field) in cases {
        let res = app.place(user, class, &body).await;
        let problem = assert_problem(res, status, code).await;
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{code}: {problem}");
        }
    }
    let orders: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(&app.pool).await.unwrap();
    assert_eq!(orders, 0);
    assert_eq!(app.journal_rows().await, journal);
    let bound: i64 = sqlx::query_scalar("select count(*) from ask_gpus").fetch_one(&app.pool).await.unwrap();
    assert_eq!(bound, 0);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn idempotency_key_places_one_order(pool: sqlx::PgPool) {
    let Market { app, buyer, .. } = market(pool, 1).await;
    let path = format!("/api/v1/markets/{CLASS}/orders");
    let body = bid_body(1, "2", "3", "gtc");
    let first = app.post_with_key(&path, &buyer.token, "order-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = app.post_with_key(&path, &buyer.token, "order-1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["order_id"], again["order_id"]);
    assert_eq!(app.wallet(&buyer).await, ("994".into(), "6".into()));
    let other = app.post_with_key(&path, &buyer.token, "order-1", &bid_body(1, "2", "4", "gtc")).await;
    assert_problem(other, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn orders_list_pages_and_filters(pool: sqlx::PgPool) {
    let Market { app, buyer, .. } = market(pool, 1).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.bid(&buyer, CLASS, 1, "1", "1").await["order_id"].clone());
    }
    let res = app.delete(&format!("/api/v1/orders/{}", ids[0].as_str().unwrap()), &buyer.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let open = app.get_json("/api/v1/orders", &buyer.token).await;
    assert_eq!(open["items"].as_array().unwrap().len(), 4);
    let page = app.get_json("/api/v1/orders?status=all&limit=3", &buyer.token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["items"][0]["order_id"], ids[4]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app.get_json(&format!("/api/v1/orders?status=all&limit=3&cursor={cursor}"), &buyer.token).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest["items"][1]["order_id"], ids[0]);
    assert_eq!(rest["items"][1]["status"], "cancelled");
    assert_eq!(rest["next_cursor"], Value::Null);
    let res = app.get("/api/v1/orders?status=done", Some(&buyer.token)).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_status").await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn public_market_data(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 8).await;
    app.ask(&provider, CLASS, host, 2, "2.5").await;
    app.ask(&provider, CLASS, host, 2, "3").await;
    app.bid(&buyer, CLASS, 1, "2", "2.5").await;
    app.bid(&buyer, CLASS, 1, "1", "1").await;
    app.bid(&buyer, CLASS, 2, "1", "1").await;

    let markets: Value = app.client.get(app.url("/api/v1/markets")).send().await.unwrap().json().await.unwrap();
    let h100 = markets["items"].as_array().unwrap().iter().find(|m| m["class"] == CLASS).unwrap().clone();
    assert_eq!(h100["best_bid"], "1");
    assert_eq!(h100["best_ask"], "2.5");
    assert_eq!(h100["last_price"], "2.5");
    assert_eq!(h100["volume_24h_gpu_hours"], "2");
    assert_eq!(h100["free_gpus"], 4);

    let book: Value =
        app.client.get(app.url(&format!("/api/v1/markets/{CLASS}/book"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(book["bids"], json!([{"price": "1", "gpus": 3, "orders": 2}]));
    assert_eq!(book["asks"], json!([{"price": "2.5", "gpus": 1, "orders": 1}, {"price": "3", "gpus": 2, "orders": 1}]));

    let trades: Value =
        app.client.get(app.url(&format!("/api/v1/markets/{CLASS}/trades"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(trades["items"].as_array().unwrap().len(), 1);
    assert_eq!(trades["items"][0]["price"], "2.5");
    assert_eq!(trades["items"][0]["max_hours"], "2");

    for interval in ["1m", "1h"] {
        let candles: Value = app
            .client
            .get(app.url(&format!("/api/v1/markets/{CLASS}/candles?interval={interval}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = candles["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{candles}");
        assert_eq!(items[0]["open"], "2.5");
        assert_eq!(items[0]["volume"], "2");
    }
    let res = app.get(&format!("/api/v1/markets/{CLASS}/candles?interval=5m"), None).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_interval").await;
    let res = app.get("/api/v1/markets/NOPE/book", None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "unknown_market").await;

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("capex_orders_total"), "{metrics}");
    assert!(metrics.contains("capex_trades_total"));
    assert!(metrics.contains("capex_matcher_commit_seconds"));
    assert!(metrics.contains("capex_matcher_batch_size"));
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn asks_expire_and_release_their_gpus(pool: sqlx::PgPool) {
    let Market { app, provider, host, .. } = market(pool, 2).await;
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(600);
    let ask = app
        .place_ok(
            &provider,
            CLASS,
            &json!({"side": "ask", "host_id": host, "gpus": 2, "price": "1", "available_until": until}),
        )
        .await;
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.order(&provider, &ask["order_id"]).await["status"].as_str().unwrap().to_string();
        if status == "expired" {
            break;
        }
    }
    assert_eq!(status, "expired");
    let bound: i64 =
        sqlx::query_scalar("select count(*) from ask_gpus where state = 'bound'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(bound, 0);
}

/// Escrow the open bids and the leases should hold, computed independently of the matcher.
const RESERVED_SQL: &str = "select
    coalesce((select sum(ceil(price * gpus * max_hours * 1000000) / 1000000) from orders
              where side = 'bid' and status = 'open'), 0)
  + coalesce((select sum(ceil(price * gpus * max_hours * 1000000) / 1000000) from leases), 0)";

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn concurrent_clients_keep_the_ledger_and_escrow_consistent(pool: sqlx::PgPool) {
    let seconds: u64 = std::env::var("CAPEX_STRESS_S").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let app = std::sync::Arc::new(TestApp::spawn(pool).await);
    let op = app.operator().await;
    let mut clients = Vec::new();
    for i in 0..16 {
        let user = app.register(&["buyer", "provider"]).await;
        app.mint(&op, &user, "100000").await;
        let host = app.live_host(&user, CLASS, 8).await;
        clients.push((i, user, host));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, user, host) in clients {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
            let mut next = move |n: u64| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state % n
            };
            let mut open: Vec<String> = Vec::new();
            let mut placed = 0_u32;
            while std::time::Instant::now() < deadline {
                let roll = next(10);
                if roll < 3 && !open.is_empty() {
                    let id = open.swap_remove(next(open.len() as u64) as usize);
                    let res = app.delete(&format!("/api/v1/orders/{id}"), &user.token).await;
                    assert!(
                        res.status() == StatusCode::OK || res.status() == StatusCode::CONFLICT,
                        "cancel: {}",
                        res.status()
                    );
                    continue;
                }
                // At most 40 price levels, within the 100 the book view shows.
                let price = format!("{}.{}", 1 + next(4), next(10));
                let tif = if next(5) == 0 { "ioc" } else { "gtc" };
                let body = if roll < 7 {
                    bid_body(1 + next(3) as u32, &format!("{}.{}", next(3), 1 + next(9)), &price, tif)
                } else {
                    ask_body(host, 1 + next(3) as u32, &price, tif)
                };
                let res = app.place(&user, CLASS, &body).await;
                let status = res.status();
                let view: Value = res.json().await.unwrap();
                if status == StatusCode::CREATED {
                    placed += 1;
                    if view["status"] == "open" {
                        open.push(view["order_id"].as_str().unwrap().to_string());
                    }
                } else {
                    // The only refusal expected: the host's GPUs are all offered or leased.
                    assert_eq!(view["code"], "not_enough_free_gpus", "{view}");
                }
            }
            placed
        }));
    }
    let mut placed = 0;
    for task in tasks {
        placed += task.await.unwrap();
    }
    assert!(placed > 100, "only {placed} orders placed");
    assert_ledger_ok(&app).await;
    let escrow: Decimal = sqlx::query_scalar("select coalesce(sum(balance), 0) from accounts where kind = 'escrow'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let reserved: Decimal = sqlx::query_scalar(RESERVED_SQL).fetch_one(&app.pool).await.unwrap();
    assert_eq!(escrow, reserved);
    let trades: i64 = sqlx::query_scalar("select count(*) from trades").fetch_one(&app.pool).await.unwrap();
    assert!(trades > 0);
    // No GPU is both offered and leased, nor offered twice.
    let double: i64 = sqlx::query_scalar(
        "select count(*) from ask_gpus a join leases l on a.gpu_uuid = any(l.gpu_uuids) where a.state = 'bound'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(double, 0);
    // The book served equals the open orders in the database.
    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &op.token).await;
    let gpus_in_book: u64 = ["bids", "asks"]
        .iter()
        .flat_map(|side| book[side].as_array().unwrap().iter().map(|l| l["gpus"].as_u64().unwrap()))
        .sum();
    let gpus_open: i64 =
        sqlx::query_scalar("select coalesce(sum(gpus_remaining), 0)::bigint from orders where status = 'open'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(gpus_in_book as i64, gpus_open);
    eprintln!("stress: {placed} orders, {trades} trades in {seconds} s");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_same_key_in_two_markets_at_once_places_one_order(pool: sqlx::PgPool) {
    let Market { app, buyer, .. } = market(pool, 1).await;
    let body = bid_body(1, "2", "3", "gtc");
    let h100_path = format!("/api/v1/markets/{CLASS}/orders");
    // Two matchers (two markets) race for one key, several rounds so the requests overlap.
    for round in 0..8 {
        let key = format!("cross-market-{round}");
        let h100 = app.post_with_key(&h100_path, &buyer.token, &key, &body);
        let a100 = app.post_with_key("/api/v1/markets/A100-80GB/orders", &buyer.token, &key, &body);
        let (h100, a100) = tokio::join!(h100, a100);
        let statuses = [h100.status(), a100.status()];
        // One places the order; the other, a different request (its path names another
        // market) under a key now used, is refused as a reused key: never a 500, never a
        // second order.
        assert!(statuses.contains(&StatusCode::CREATED), "round {round}: {statuses:?}");
        assert!(statuses.iter().all(|s| !s.is_server_error()), "round {round}: {statuses:?}");
    }
    let placed: i64 = sqlx::query_scalar("select count(*) from orders where owner_id = $1")
        .bind(buyer.user_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(placed, 8, "one order per key");
    assert_eq!(app.wallet(&buyer).await, ("952".into(), "48".into()));
    let placeholders: i64 = sqlx::query_scalar("select count(*) from idempotency where response_status = 0")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(placeholders, 0);
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_matcher_whose_copy_differs_from_the_database_reloads_and_trades_what_it_holds(pool: sqlx::PgPool) {
    let Market { app, buyer, provider, host } = market(pool, 2).await;
    let ask = app.ask(&provider, CLASS, host, 2, "2").await;
    // Someone changed the ask behind the matcher's back: its copy says 2 GPUs remain.
    sqlx::query("update orders set gpus_remaining = 1 where order_id = $1")
        .bind(id(&ask["order_id"]))
        .execute(&app.pool)
        .await
        .unwrap();
    // The batch's write finds other rows than its copy assumed and writes nothing; the
    // market is reloaded from the database and the batch runs again, checked: it trades
    // what the database says remains, once, and the buyer never sees the conflict.
    let bid = app.bid(&buyer, CLASS, 1, "1", "3").await;
    assert_eq!(bid["status"], "filled");
    let ask = app.get_json(&format!("/api/v1/orders/{}", ask["order_id"].as_str().unwrap()), &provider.token).await;
    assert_eq!(ask["status"], "filled");
    assert_eq!(ask["gpus_remaining"], 0);
    let trades: i64 = sqlx::query_scalar("select count(*) from trades").fetch_one(&app.pool).await.unwrap();
    assert_eq!(trades, 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("capex_matcher_batch_reruns_total"), "{metrics}");
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn asks_of_a_host_that_stops_reporting_are_cancelled(pool: sqlx::PgPool) {
    let Market { app, provider, host, .. } = market(pool, 2).await;
    let ask = app.ask(&provider, CLASS, host, 2, "2").await;
    let path = format!("/api/v1/orders/{}", ask["order_id"].as_str().unwrap());
    // Its last report is now older than three report intervals: the host is not live.
    sqlx::query("update hosts set last_report_at = now() - interval '1 hour' where host_id = $1")
        .bind(host)
        .execute(&app.pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let order = app.get_json(&path, &provider.token).await;
        if order["status"] == "cancelled" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the ask stayed {}", order["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let book = app.get_json(&format!("/api/v1/markets/{CLASS}/book"), &provider.token).await;
    assert_eq!(book["asks"], json!([]));
    let bound: i64 = sqlx::query_scalar("select count(*) from ask_gpus where order_id = $1 and state = 'bound'")
        .bind(id(&ask["order_id"]))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(bound, 0);
    assert_ledger_ok(&app).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn copies_of_a_refused_request_under_one_key_are_all_refused(pool: sqlx::PgPool) {
    let Market { app, buyer, .. } = market(pool, 1).await;
    let path = format!("/api/v1/markets/{CLASS}/orders");
    // Escrow 2,000 credits from a wallet of 1,000: refused, so no response is stored.
    let body = bid_body(1, "1", "2000", "gtc");
    let copies = (0..8).map(|_| app.post_with_key(&path, &buyer.token, "retry-storm", &body));
    for res in futures::future::join_all(copies).await {
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds").await;
    }
    assert_eq!(app.wallet(&buyer).await, ("1000".into(), "0".into()));
    let stored: i64 = sqlx::query_scalar("select count(*) from idempotency where idempotency_key = 'retry-storm'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

/// A bid decided from the matcher's copy of a wallet that another market has spent since is
/// checked again before anything is written, and refused: no overdraft, no journal row.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_wallet_spent_in_another_market_is_checked_before_a_bid_holds_it(pool: sqlx::PgPool) {
    // A class no other test trades in, so that its retry counter is this test's.
    const OWN: &str = "L40S-48GB";
    let Market { app, buyer, provider, .. } = market(pool, 1).await;
    app.live_host(&provider, OWN, 1).await;
    // Holds 100; the matcher of OWN now knows the wallet at 900.
    let first = app.bid(&buyer, OWN, 1, "1", "100").await;
    assert_eq!(first["status"], "open");
    // The matcher of another market holds 850 of it.
    app.bid(&buyer, "A100-80GB", 1, "1", "850").await;
    assert_eq!(app.wallet(&buyer).await, ("50".into(), "950".into()));
    let journal = app.journal_rows().await;

    let res = app.place(&buyer, OWN, &bid_body(1, "1", "100", "gtc")).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds").await;
    assert_eq!(app.journal_rows().await, journal);
    assert_eq!(app.wallet(&buyer).await, ("50".into(), "950".into()));
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(&format!("capex_matcher_unchecked_retries_total{{class=\"{OWN}\"}}")), "{metrics}");

    // The checked batch refreshed the copy: what the wallet covers is placed.
    let third = app.bid(&buyer, OWN, 1, "1", "50").await;
    assert_eq!(third["status"], "open");
    assert_eq!(app.wallet(&buyer).await, ("0".into(), "1000".into()));
    assert_ledger_ok(&app).await;
}
