//! Hostile and concurrent use that must never reach the database's error path: made-up
//! markets claim nothing, and money moved from many sides at once never answers 500.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, ask_body, assert_problem, bid_body};

async fn connections(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from pg_stat_activity where datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn market_owner_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from market_owners").fetch_one(pool).await.unwrap()
}

/// Anyone, logged in or not, asking about made-up markets gets 404 `unknown_market`, and
/// no market is claimed: no owner row, no matcher, no Postgres connection held.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn made_up_markets_claim_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let buyer = app.register(&["buyer"]).await;
    let owners_before = market_owner_rows(&pool).await;
    let connections_before = connections(&pool).await;
    for i in 0..20 {
        let class = format!("MADE-UP-{i}");
        let res = app.get(&format!("/api/v1/markets/{class}/book"), None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "unknown_market").await;
        let res = app.get(&format!("/api/v1/markets/{class}/trades"), None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "unknown_market").await;
        let res = app.place(&buyer, &class, &bid_body(1, "1", "1", "gtc")).await;
        assert_problem(res, StatusCode::NOT_FOUND, "unknown_market").await;
    }
    assert_eq!(market_owner_rows(&pool).await, owners_before, "no market was claimed");
    let connections_after = connections(&pool).await;
    assert!(
        connections_after <= connections_before + 2,
        "made-up markets held connections: {connections_before} before, {connections_after} after"
    );
    // A known market still opens on first use.
    let res = app.get("/api/v1/markets/H100-80GB/book", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(market_owner_rows(&pool).await, owners_before + 1);
}

/// Owner rows of classes that are no market, left by the old claim-before-check, are
/// dropped at start instead of being claimed again.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn leftover_claims_of_made_up_markets_are_dropped_at_start(pool: PgPool) {
    sqlx::query("insert into market_owners (class, owner_url) values ('MADE-UP', 'http://gone')")
        .execute(&pool)
        .await
        .unwrap();
    let _app = TestApp::spawn(pool.clone()).await;
    let left: i64 = sqlx::query_scalar("select count(*) from market_owners where class = 'MADE-UP'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// Transfers between a few wallets in both directions, bids and cancels of the same
/// wallets' owners in two markets, and trades against asks, all at once: the ledger's lock
/// order and its retries keep every answer a 2xx or a 4xx the request earned. Before them,
/// such a mix answered some transfers and whole matcher batches with 500 (deadlocks).
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn money_moved_from_many_sides_at_once_never_answers_500(pool: PgPool) {
    let app = std::sync::Arc::new(TestApp::spawn(pool.clone()).await);
    let operator = app.operator().await;
    let mut buyers = Vec::new();
    for _ in 0..6 {
        let buyer = app.register(&["buyer"]).await;
        app.mint(&operator, &buyer, "100000").await;
        buyers.push(buyer);
    }
    let provider = app.register(&["provider"]).await;
    let classes = ["H100-80GB", "A100-80GB"];
    let mut hosts = Vec::new();
    for class in classes {
        hosts.push((class, app.live_host(&provider, class, 64).await));
    }
    let buyers = std::sync::Arc::new(buyers);
    let provider = std::sync::Arc::new(provider);
    let mut tasks = Vec::new();
    for worker in 0..12usize {
        let (app, buyers, provider, hosts) = (app.clone(), buyers.clone(), provider.clone(), hosts.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..15usize {
                let me = &buyers[(worker + round) % buyers.len()];
                let other = &buyers[(worker + round + 1 + round % 3) % buyers.len()];
                let res = match (worker + round) % 4 {
                    0 | 1 => {
                        app.post(
                            "/api/v1/transfers",
                            Some(&me.token),
                            &json!({"to_user": other.user_id, "amount": "0.25", "memo": "load"}),
                        )
                        .await
                    }
                    2 => {
                        let (class, _) = hosts[round % 2];
                        let res = app.place(me, class, &bid_body(1, "1", "0.5", "gtc")).await;
                        if res.status() == StatusCode::CREATED {
                            let order: serde_json::Value = res.json().await.unwrap();
                            let id = order["order_id"].as_str().unwrap().to_string();
                            app.delete(&format!("/api/v1/orders/{id}"), &me.token).await
                        } else {
                            res
                        }
                    }
                    _ => {
                        let (class, host) = hosts[worker % 2];
                        let _ = app.place(&provider, class, &ask_body(host, 1, "0.4", "gtc")).await;
                        app.place(me, class, &bid_body(1, "1", "0.6", "ioc")).await
                    }
                };
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                statuses.push((status, body));
            }
            statuses
        }));
    }
    let mut server_errors = Vec::new();
    for task in tasks {
        for (status, body) in task.await.unwrap() {
            if status.is_server_error() {
                server_errors.push(format!("{status}: {body}"));
            }
        }
    }
    assert!(server_errors.is_empty(), "{} answers were 5xx: {server_errors:?}", server_errors.len());
    let invariants = app.get_json("/api/v1/operator/invariants", &operator.token).await;
    assert_eq!(invariants["ok"], true, "{invariants}");
}

/// Records, for every event, whether a `matcher_batch` span was in its scope.
#[derive(Clone, Default)]
struct MatcherSpanWitness {
    /// Events outside the matcher that carried its batch span anyway.
    leaked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    deepest: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<S> tracing_subscriber::Layer<S> for MatcherSpanWitness
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        use std::sync::atomic::Ordering;
        let names: Vec<&'static str> =
            ctx.event_scope(event).map(|s| s.map(|span| span.name()).collect()).unwrap_or_default();
        self.deepest.fetch_max(names.len(), Ordering::Relaxed);
        if names.contains(&"matcher_batch") && event.metadata().target().starts_with("api") {
            self.leaked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A matcher batch's span covers the batch's own work only. While a batch awaits
/// Postgres, other tasks on the same thread log too; entered across those awaits, the span
/// was their parent as well, and unrelated log lines carried up to 132 nested spans.
#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_matcher_batch_span_is_not_the_parent_of_other_tasks_logs(pool: PgPool) {
    use std::sync::atomic::Ordering;
    use tracing_subscriber::layer::SubscriberExt;
    let witness = MatcherSpanWitness::default();
    let subscriber = tracing_subscriber::registry().with(witness.clone());
    // The test's runtime has one thread: server, matcher and this test share it.
    let _default = tracing::subscriber::set_default(subscriber);
    let app = std::sync::Arc::new(TestApp::spawn(pool.clone()).await);
    let operator = app.operator().await;
    let buyer = app.register(&["buyer"]).await;
    app.mint(&operator, &buyer, "1000").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tracing::info!("probe from a task that is not the matcher");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut orders = Vec::new();
    for _ in 0..40 {
        let (app, token) = (app.clone(), buyer.token.clone());
        orders.push(tokio::spawn(async move {
            app.post("/api/v1/markets/H100-80GB/orders", Some(&token), &bid_body(1, "1", "0.5", "ioc")).await.status()
        }));
    }
    for order in orders {
        assert!(order.await.unwrap().is_success());
    }
    stop.store(true, Ordering::Relaxed);
    probe.await.unwrap();
    assert_eq!(witness.leaked.load(Ordering::Relaxed), 0, "other tasks' events carried the matcher_batch span");
    assert!(
        witness.deepest.load(Ordering::Relaxed) < 8,
        "events nested {} spans deep",
        witness.deepest.load(Ordering::Relaxed)
    );
}
