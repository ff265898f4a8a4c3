use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_problem};

/// Reads the SSE stream until an event named `kind` arrives or the timeout passes.
async fn next_event(res: &mut reqwest::Response, kind: &str, timeout: Duration) -> Option<String> {
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = tokio::time::timeout_at(deadline, res.chunk()).await.ok()?.ok()??;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.lines().any(|l| l == format!("event: {kind}")) {
                return frame.lines().find_map(|l| l.strip_prefix("data: ").map(str::to_string));
            }
        }
    }
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn wallet_events_reach_only_their_owner(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let op = app.operator().await;
    let alice = app.register(&["buyer"]).await;
    let bob = app.register(&["buyer"]).await;
    let mut alice_stream = app.get(&format!("/api/v1/stream?token={}", alice.token), None).await;
    assert_eq!(alice_stream.status(), StatusCode::OK);
    assert_eq!(alice_stream.headers()["content-type"], "text/event-stream");
    let mut bob_stream = app.get(&format!("/api/v1/stream?token={}", bob.token), None).await;
    assert!(next_event(&mut alice_stream, "hello", Duration::from_secs(5)).await.is_some());
    assert!(next_event(&mut bob_stream, "hello", Duration::from_secs(5)).await.is_some());

    app.mint(&op, &alice, "5").await;
    let data = next_event(&mut alice_stream, "wallet", Duration::from_secs(5)).await.expect("alice sees her mint");
    assert!(data.contains("\"amount\":\"5\""), "{data}");
    assert!(next_event(&mut bob_stream, "wallet", Duration::from_millis(500)).await.is_none(), "bob must not see it");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_bad_stream_token_is_refused(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.get("/api/v1/stream?token=nonsense", None).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let public = app.get("/api/v1/stream", None).await;
    assert_eq!(public.status(), StatusCode::OK);
}
