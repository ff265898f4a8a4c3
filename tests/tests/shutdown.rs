//! SIGTERM while clients place orders: the server drains what is in flight, exits cleanly,
//! and every order it acknowledged is there after it starts again.

use std::time::Duration;

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, live_host, server_env, spawn_order_load};
use capex_e2e::{ServerProcess, fresh_database_url};
use sqlx::PgPool;

const CLASS: &str = "H100-80GB";

#[tokio::test]
async fn sigterm_during_order_load_loses_no_acknowledged_order() {
    let database_url = fresh_database_url().unwrap();
    let env = server_env(&database_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = ServerProcess::start(&env).await.unwrap();
    let pool = PgPool::connect(&database_url).await.unwrap();
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await.unwrap();
    let mut users: Vec<(ApiUser, uuid::Uuid)> = Vec::new();
    for _ in 0..4 {
        let user = api.funded_user(&operator, "10000").await.unwrap();
        let host = live_host(&pool, user.user_id, CLASS, 16).await.unwrap();
        users.push((user, host));
    }

    let (tasks, acked) = spawn_order_load(&api, &users, CLASS, 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = server.terminate().unwrap();
    assert!(status.success(), "a graceful shutdown exits 0, got {status}");
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 10, "only {} orders acknowledged before SIGTERM", acked.len());

    let server = ServerProcess::start(&env).await.unwrap();
    let api = Api::new(&server.base_url);
    for (user, order_id) in &acked {
        let (status, view) = api.get(&format!("/api/v1/orders/{order_id}"), Some(user)).await.unwrap();
        assert_eq!(status, 200, "acknowledged order {order_id} missing after SIGTERM: {view}");
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(&pool).await.unwrap();
    assert!(stored as usize >= acked.len());
    eprintln!("shutdown: {} orders acknowledged before SIGTERM, all present", acked.len());
}

/// A host with a real key (the fixture's is not one), so the test can sign its polls.
async fn host_with_key(pool: &PgPool, owner: uuid::Uuid) -> (uuid::Uuid, ed25519_dalek::SigningKey) {
    let host_id = live_host(pool, owner, CLASS, 1).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    sqlx::query("update hosts set public_key = $2 where host_id = $1")
        .bind(host_id)
        .bind(key.verifying_key().as_bytes().to_vec())
        .execute(pool)
        .await
        .unwrap();
    (host_id, key)
}

/// Before: an open feed stream or agent long-poll held a SIGTERM'd server for as long as
/// the client stayed (3-5 s for agents, forever for a browser tab). Now they answer at
/// once, the ordinary request in flight still gets its answer, and the process exits
/// within 2 s.
#[tokio::test]
async fn sigterm_ends_long_polls_and_streams_and_exits_within_two_seconds() {
    let database_url = fresh_database_url().unwrap();
    let env = server_env(&database_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = ServerProcess::start(&env).await.unwrap();
    let pool = PgPool::connect(&database_url).await.unwrap();
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await.unwrap();
    let alice = api.funded_user(&operator, "100").await.unwrap();
    let bob = api.funded_user(&operator, "100").await.unwrap();
    let (host_id, key) = host_with_key(&pool, alice.user_id).await;

    // A browser's feed stream.
    let mut stream =
        api.client.get(format!("{}/api/v1/stream?token={}", server.base_url, alice.token)).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream says hello");
    // An agent's long-poll: it has every lease there is (none), so it waits up to 30 s.
    let path = format!("/api/v1/hosts/{host_id}/assignments");
    let nonce = capex_core::report::format_host_nonce(&uuid::Uuid::new_v4().into_bytes());
    let (time, signature) =
        capex_core::report::sign_host_request(&key, "GET", &path, host_id, chrono::Utc::now().timestamp(), &nonce, b"");
    let poll = api
        .client
        .get(format!("{}{path}?wait=30&have=", server.base_url))
        .header(capex_core::report::HOST_TIME_HEADER, time)
        .header(capex_core::report::HOST_SIGNATURE_HEADER, signature)
        .header(capex_core::report::HOST_NONCE_HEADER, nonce)
        .send();
    let poll = tokio::spawn(poll);
    // An ordinary request in flight: a transfer waiting for alice's wallet row, which the
    // test holds locked until after the SIGTERM.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("select 1 from accounts where user_id = $1 and kind = 'wallet' for update")
        .bind(alice.user_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let transfer = api
        .client
        .post(format!("{}/api/v1/transfers", server.base_url))
        .bearer_auth(&alice.token)
        .json(&serde_json::json!({"to_user": bob.user_id, "amount": "3", "memo": "in flight"}))
        .send();
    let transfer = tokio::spawn(transfer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished() && !transfer.is_finished(), "the poll waits and the transfer is blocked");

    let signalled = std::time::Instant::now();
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let poll =
        tokio::time::timeout(Duration::from_secs(2), poll).await.expect("the long-poll answers at once").unwrap();
    let poll_answered = signalled.elapsed();
    assert_eq!(poll.unwrap().status(), 200, "the long-poll gets an ordinary answer");
    let ended =
        tokio::time::timeout(Duration::from_secs(2), async { while let Ok(Some(_)) = stream.chunk().await {} }).await;
    assert!(ended.is_ok(), "the feed stream ends at once");
    let stream_ended = signalled.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    let transfer = transfer.await.unwrap().expect("the in-flight transfer is answered");
    assert_eq!(transfer.status(), 201, "the in-flight transfer completes");
    let exited = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break (status, signalled.elapsed());
        }
        assert!(signalled.elapsed() < Duration::from_secs(10), "no exit within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "shutdown: long-poll answered after {poll_answered:?}, stream ended after {stream_ended:?}, exited after {:?}",
        exited.1
    );
    assert!(exited.0.success(), "a graceful shutdown exits 0, got {}", exited.0);
    assert!(exited.1 < Duration::from_millis(2500), "exit took {:?}", exited.1);
    let moved: i64 = sqlx::query_scalar("select count(*) from journal where memo = 'in flight'")
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
    assert_eq!(moved, 1, "the transfer is committed");
}
