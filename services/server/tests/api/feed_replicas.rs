//! The live feed across replicas: two servers on one database, each with its own
//! subscribers, see each other's events through Postgres, each event once, private ones
//! only by their owner.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const CLASS: &str = "H100-80GB";

/// An open SSE stream and what has been read of it.
struct Stream {
    res: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, token: Option<&str>) -> Stream {
        let path = match token {
            Some(token) => format!("/api/v1/stream?token={token}"),
            None => "/api/v1/stream".to_string(),
        };
        let res = app.get(&path, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut stream = Stream { res, buffer: String::new() };
        assert!(stream.next_of("hello", Duration::from_secs(5)).await.is_some(), "no hello");
        stream
    }

    /// Every event (name, data) that arrives within `window`.
    async fn events_within(&mut self, window: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + window;
        let mut events = Vec::new();
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let name = frame.lines().find_map(|l| l.strip_prefix("event: "));
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(name), Some(data)) = (name, data) {
                    events.push((name.to_string(), serde_json::from_str(data).unwrap_or(Value::Null)));
                }
            }
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return events,
            }
        }
    }

    /// The data of the next event named `kind`, skipping others, within `timeout`.
    async fn next_of(&mut self, kind: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if frame.lines().any(|l| l == format!("event: {kind}")) {
                    let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
                    return Some(serde_json::from_str(data).unwrap_or(Value::Null));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn named<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|(name, _)| name == kind).map(|(_, data)| data).collect()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_trade_on_one_replica_reaches_every_replicas_subscribers_once(pool: sqlx::PgPool) {
    let a = TestApp::spawn(pool.clone()).await;
    let b = TestApp::spawn(pool.clone()).await;
    let op = a.operator().await;
    let buyer = a.register(&["buyer"]).await;
    let provider = a.register(&["provider"]).await;
    let stranger = a.register(&["buyer", "provider"]).await;
    a.mint(&op, &buyer, "100").await;
    let host = a.live_host(&provider, CLASS, 2).await;

    let mut public_b = Stream::open(&b, None).await;
    let mut buyer_b = Stream::open(&b, Some(&buyer.token)).await;
    let mut provider_b = Stream::open(&b, Some(&provider.token)).await;
    let mut stranger_b = Stream::open(&b, Some(&stranger.token)).await;
    let mut public_a = Stream::open(&a, None).await;

    // The first order of a market makes the process that received it the owner: A.
    a.ask(&provider, CLASS, host, 1, "2").await;
    let bid = a.bid(&buyer, CLASS, 1, "1", "3").await;
    let owner: String = sqlx::query_scalar("select owner_url from market_owners where class = $1")
        .bind(CLASS)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owner, a.address, "A owns the market");

    let window = Duration::from_secs(2);
    let (on_b, on_a) = tokio::join!(public_b.events_within(window), public_a.events_within(window));
    for (replica, events) in [("B", &on_b), ("A", &on_a)] {
        let trades = named(events, "trade");
        assert_eq!(trades.len(), 1, "replica {replica} sees the trade exactly once: {events:?}");
        assert_eq!(trades[0]["trade_id"], bid["fills"][0]["trade_id"], "{bid}");
        assert_eq!(trades[0]["class"], CLASS);
        assert!(named(events, "job").is_empty() && named(events, "order").is_empty(), "private events stay private");
    }

    let (buyer_events, provider_events, stranger_events) =
        tokio::join!(buyer_b.events_within(window), provider_b.events_within(window), stranger_b.events_within(window));
    let jobs = named(&buyer_events, "job");
    assert_eq!(jobs.len(), 1, "the buyer sees its new job on B once: {buyer_events:?}");
    assert_eq!(jobs[0]["host_id"], json!(host));
    assert_eq!(named(&provider_events, "job").len(), 1, "the provider sees the job on B: {provider_events:?}");
    assert!(named(&buyer_events, "order").iter().any(|o| o["order_id"] == bid["order_id"]), "the buyer's order event");
    assert!(
        named(&stranger_events, "job").is_empty() && named(&stranger_events, "order").is_empty(),
        "nobody else sees them: {stranger_events:?}"
    );
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_wallet_event_made_on_one_replica_reaches_only_its_owner_on_another(pool: sqlx::PgPool) {
    let a = TestApp::spawn(pool.clone()).await;
    let b = TestApp::spawn(pool.clone()).await;
    let op = a.operator().await;
    let alice = a.register(&["buyer"]).await;
    let bob = a.register(&["buyer"]).await;
    let mut alice_b = Stream::open(&b, Some(&alice.token)).await;
    let mut bob_b = Stream::open(&b, Some(&bob.token)).await;

    a.mint(&op, &alice, "5").await;
    let data = alice_b.next_of("wallet", Duration::from_secs(5)).await.expect("alice sees her mint on B");
    assert_eq!(data["amount"], "5", "{data}");
    let bob_events = bob_b.events_within(Duration::from_millis(700)).await;
    assert!(named(&bob_events, "wallet").is_empty(), "bob must not see it: {bob_events:?}");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn an_event_too_large_for_a_notification_still_crosses(pool: sqlx::PgPool) {
    let a = TestApp::spawn(pool.clone()).await;
    let b = TestApp::spawn(pool.clone()).await;
    let alice = a.register(&["buyer"]).await;
    let mut alice_b = Stream::open(&b, Some(&alice.token)).await;

    // An order filled by dozens of asks carries as many fills; this one is 20 kB.
    let fills: Vec<Value> = (0..100).map(|i| json!({"trade_id": i, "note": "x".repeat(180)})).collect();
    a.state.feed.private("order", alice.user_id, json!({"fills": fills}));
    a.state.feed.private("order", alice.user_id, json!({"after": "small"}));
    let large = alice_b.next_of("order", Duration::from_secs(5)).await.expect("the large event arrives on B");
    assert_eq!(large["fills"].as_array().map(Vec::len), Some(100));
    assert_eq!(large["fills"][99]["note"].as_str().map(str::len), Some(180));
    let small = alice_b.next_of("order", Duration::from_secs(5)).await.expect("then the small one, in order");
    assert_eq!(small["after"], "small");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_lost_listen_connection_tells_subscribers_to_resync(pool: sqlx::PgPool) {
    let a = TestApp::spawn(pool.clone()).await;
    let b = TestApp::spawn(pool.clone()).await;
    let op = a.operator().await;
    let alice = a.register(&["buyer"]).await;
    let mut alice_b = Stream::open(&b, Some(&alice.token)).await;

    // As a Postgres restart would: every listen connection of this database is cut.
    let cut: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(cut, [true, true], "both replicas listen");
    let resync = alice_b.next_of("resync", Duration::from_secs(5)).await.expect("B's subscriber is told to resync");
    assert!(resync["reason"].is_string(), "{resync}");

    // B listens again: A's next event reaches it.
    a.mint(&op, &alice, "7").await;
    let data = alice_b.next_of("wallet", Duration::from_secs(5)).await.expect("events cross again");
    assert_eq!(data["amount"], "7", "{data}");
}
