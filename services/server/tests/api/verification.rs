//! Verified supply: simulated inventories refused outside demo mode, the proof-of-compute
//! challenge end to end over HTTP (honest pass, every refusal code, the block after
//! failures and its clearing), CC evidence (NVIDIA's sample Hopper evidence, wrong nonce,
//! a relayed chip), and bids that require a level.

use base64::Engine;
use capex_core::GpuBackend;
use capex_core::challenge::{
    ChallengeOrder, ChallengeRows, ChallengeSpec, MerkleTree, RowOpening, compute_c_cpu, open_leaf,
};
use capex_core::report::{format_host_nonce, sign_host_request};
use capex_server::Config;
use chrono::Utc;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, ask_body, assert_problem, bid_body};
use crate::hosts::{TestHost, h100s, register_host, register_host_with, report, seal, send, send_ok};

const CLASS: &str = "H100-80GB";

/// Demo mode (simulated GPUs are challenged there, at the simulated bound) with
/// challenges on; the background scheduler runs too, the tests also call its round.
fn demo_config() -> Config {
    Config { demo: true, challenges: true, ..Config::for_tests() }
}

async fn signed(app: &TestApp, host: &TestHost, method: &str, path: &str, body: Vec<u8>) -> Response {
    let nonce = format_host_nonce(&rand::random());
    let (time, signature) =
        sign_host_request(&host.key, method, path, host.host_id, Utc::now().timestamp(), &nonce, &body);
    let url = app.url(path);
    let req = if method == "GET" { app.client.get(url) } else { app.client.post(url) };
    req.header("x-capex-host-time", time)
        .header("x-capex-host-nonce", nonce)
        .header("x-capex-host-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn assignments(app: &TestApp, host: &TestHost) -> Value {
    let path = format!("/api/v1/hosts/{}/assignments", host.host_id);
    let res = signed(app, host, "GET", &path, Vec::new()).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// A live simulated host (its first report accepted).
async fn simulated_host(app: &TestApp, provider: &TestUser, gpus: usize) -> TestHost {
    let host = register_host_with(app, provider, h100s(gpus), GpuBackend::Simulated).await;
    let mut first = report(&host, 0, 1_000);
    first.backend = GpuBackend::Simulated;
    send_ok(app, &host, &first).await;
    host
}

/// Runs the scheduler's round and returns the host's open challenges from its poll.
async fn challenges_of(app: &TestApp, host: &TestHost) -> Vec<ChallengeOrder> {
    capex_server::verification::scheduler::round(&app.state).await.unwrap();
    let work = assignments(app, host).await;
    serde_json::from_value(work["challenges"].clone()).unwrap()
}

async fn commit(app: &TestApp, host: &TestHost, challenge: &ChallengeOrder, root: [u8; 32]) -> Response {
    let path = format!("/api/v1/hosts/{}/challenges/{}/commitment", host.host_id, challenge.challenge_id);
    signed(app, host, "POST", &path, serde_json::to_vec(&json!({"root": hex::encode(root)})).unwrap()).await
}

async fn answer(app: &TestApp, host: &TestHost, challenge: &ChallengeOrder, rows: Vec<RowOpening>) -> Response {
    let path = format!("/api/v1/hosts/{}/challenges/{}/answer", host.host_id, challenge.challenge_id);
    signed(app, host, "POST", &path, serde_json::to_vec(&json!({"rows": rows})).unwrap()).await
}

fn solve(challenge: &ChallengeOrder) -> (Vec<i32>, MerkleTree) {
    let seed: [u8; 32] = hex::decode(&challenge.seed).unwrap().try_into().unwrap();
    let c = compute_c_cpu(&ChallengeSpec::new(seed, challenge.n).unwrap());
    let tree = MerkleTree::build(&c);
    (c, tree)
}

/// Answers a challenge as an honest agent does; returns the verdict.
async fn pass(app: &TestApp, host: &TestHost, challenge: &ChallengeOrder) -> Value {
    let (c, tree) = solve(challenge);
    let res = commit(app, host, challenge, tree.root()).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let rows: ChallengeRows = res.json().await.unwrap();
    assert_eq!(rows.rows.len(), capex_core::challenge::bound_for("simulated").unwrap().k as usize);
    let openings = rows.rows.iter().map(|&i| open_leaf(&tree, &c, i)).collect();
    let res = answer(app, host, challenge, openings).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// Commits to a C with every value off by one, so any named leaf is wrong.
async fn fail_wrong_row(app: &TestApp, host: &TestHost, challenge: &ChallengeOrder) -> Value {
    let (mut c, _) = solve(challenge);
    c.iter_mut().for_each(|v| *v = v.wrapping_add(1));
    let tree = MerkleTree::build(&c);
    let res = commit(app, host, challenge, tree.root()).await;
    let rows: ChallengeRows = res.json().await.unwrap();
    let openings = rows.rows.iter().map(|&i| open_leaf(&tree, &c, i)).collect();
    assert_problem(
        answer(app, host, challenge, openings).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "challenge_wrong_row",
    )
    .await
}

async fn verification(app: &TestApp, host: &TestHost) -> Value {
    let res = app.get(&format!("/api/v1/hosts/{}/verification", host.host_id), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn simulated_inventories_are_refused_outside_demo_mode(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let provider = app.register(&["provider"]).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let envelope = crate::hosts::inventory_with(&key, &h100s(1), GpuBackend::Simulated);
    let res = app.post("/api/v1/hosts", Some(&provider.token), &json!(envelope)).await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "simulated_gpus_refused").await;
    assert_eq!(problem["field"], "payload.backend");
    let hosts: i64 = sqlx::query_scalar("select count(*) from hosts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(hosts, 0, "nothing stored");

    // An NVML host may not send reports that name the simulated backend.
    let host = register_host(&app, &provider, h100s(1)).await;
    let mut fake = report(&host, 0, 1_000);
    fake.backend = GpuBackend::Simulated;
    assert_problem(
        send(&app, host.host_id, &seal(&host.key, &fake)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "backend_mismatch",
    )
    .await;
    let view = verification(&app, &host).await;
    assert_eq!(view["backend"], "nvml");
    assert_eq!(view["gpus"][0]["level"], "reported");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn the_operator_may_allow_simulated_gpus_which_stay_simulated(pool: sqlx::PgPool) {
    let config = Config { allow_simulated: true, challenges: true, ..Config::for_tests() };
    let app = TestApp::spawn_with(pool, config).await;
    let provider = app.register(&["provider"]).await;
    let host = simulated_host(&app, &provider, 1).await;
    assert!(challenges_of(&app, &host).await.is_empty(), "simulated GPUs are challenged only in demo mode");
    let view = app.get_json(&format!("/api/v1/hosts/{}", host.host_id), &provider.token).await;
    assert_eq!(view["backend"], "simulated");
    assert_eq!(view["gpus"][0]["verification"]["level"], "simulated");
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn an_honest_answer_makes_the_gpu_challenged_and_replays_are_refused(pool: sqlx::PgPool) {
    let app = TestApp::spawn_with(pool, demo_config()).await;
    let provider = app.register(&["provider"]).await;
    let host = simulated_host(&app, &provider, 2).await;
    let mut challenges = challenges_of(&app, &host).await;
    assert_eq!(challenges.len(), 1, "one GPU of a host at a time, before the host's first ask");
    // Under challenge, a GPU is not offered.
    let res = app.place(&provider, CLASS, &ask_body(host.host_id, 2, "2", "gtc")).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "not_enough_free_gpus").await;

    let verdict = pass(&app, &host, &challenges[0]).await;
    // Then the host's next GPU gets its turn.
    challenges.extend(challenges_of(&app, &host).await);
    assert_eq!(challenges.len(), 2);
    assert_ne!(challenges[0].gpu_uuid, challenges[1].gpu_uuid);
    assert_eq!(verdict["outcome"], "passed");
    assert_eq!(verdict["level"], "challenged");
    let reliability = app.get_json(&format!("/api/v1/hosts/{}/reliability", host.host_id), &provider.token).await;
    assert_eq!(reliability["challenges_passed_30d"], 1, "the host's reliability shows challenge results");
    let view = verification(&app, &host).await;
    let gpu =
        view["gpus"].as_array().unwrap().iter().find(|g| g["gpu_uuid"] == challenges[0].gpu_uuid.as_str()).unwrap();
    assert_eq!(gpu["level"], "challenged");
    assert!(gpu["challenged_until"].is_string());
    let record = &view["challenges"].as_array().unwrap().iter().find(|c| c["state"] == "passed").unwrap();
    assert_eq!(record["seed"], challenges[0].seed.as_str(), "a decided challenge shows its seed");
    assert!(record["verify_us"].as_i64().unwrap() > 0);
    let open = view["challenges"].as_array().unwrap().iter().find(|c| c["state"] == "issued").unwrap();
    assert!(open["seed"].is_null(), "an open challenge's seed is never shown");

    // The same commitment or answer again: challenge_replayed, and the level stays.
    assert_problem(commit(&app, &host, &challenges[0], [0; 32]).await, StatusCode::CONFLICT, "challenge_replayed")
        .await;
    assert_problem(answer(&app, &host, &challenges[0], Vec::new()).await, StatusCode::CONFLICT, "challenge_replayed")
        .await;
    // An answer before any commitment is refused too: rows are named only after it.
    assert_problem(answer(&app, &host, &challenges[1], Vec::new()).await, StatusCode::CONFLICT, "challenge_replayed")
        .await;
    // Another host's, or no, challenge: challenge_unknown.
    let other = simulated_host(&app, &provider, 1).await;
    assert_problem(commit(&app, &other, &challenges[1], [0; 32]).await, StatusCode::NOT_FOUND, "challenge_unknown")
        .await;
    let mut made_up = challenges[1].clone();
    made_up.challenge_id = Uuid::now_v7();
    assert_problem(commit(&app, &host, &made_up, [0; 32]).await, StatusCode::NOT_FOUND, "challenge_unknown").await;
    assert_eq!(verification(&app, &host).await["challenge_failures"], 0);
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn wrong_rows_bad_proofs_and_late_commitments_fail_and_block_the_host(pool: sqlx::PgPool) {
    let app = TestApp::spawn_with(pool, demo_config()).await;
    let provider = app.register(&["provider"]).await;
    let operator = app.operator().await;
    let host = simulated_host(&app, &provider, 3).await;
    let mut challenges = challenges_of(&app, &host).await;

    // 1. A committed C with wrong values.
    fail_wrong_row(&app, &host, &challenges[0]).await;

    // 2. Honest values, a tampered proof.
    challenges.extend(challenges_of(&app, &host).await);
    let (c, tree) = solve(&challenges[1]);
    let rows: ChallengeRows = commit(&app, &host, &challenges[1], tree.root()).await.json().await.unwrap();
    let mut openings: Vec<RowOpening> = rows.rows.iter().map(|&i| open_leaf(&tree, &c, i)).collect();
    openings[0].proof[0] = hex::encode([0xAB; 32]);
    assert_problem(
        answer(&app, &host, &challenges[1], openings).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "challenge_bad_proof",
    )
    .await;

    // 3. A commitment after commit_by.
    challenges.extend(challenges_of(&app, &host).await);
    assert_eq!(challenges.len(), 3, "each GPU once in the round");
    sqlx::query("update gpu_challenges set commit_by = now() - interval '1 second' where challenge_id = $1")
        .bind(challenges[2].challenge_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, tree) = solve(&challenges[2]);
    let res = commit(&app, &host, &challenges[2], tree.root()).await;
    // Either the commitment finds it late, or the scheduler's sweep (every 200 ms here)
    // failed it first and the commitment comes after the verdict.
    if res.status() == StatusCode::CONFLICT {
        assert_problem(res, StatusCode::CONFLICT, "challenge_replayed").await;
    } else {
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "challenge_late").await;
    }
    // A commitment to a challenge that failed before any commitment: replayed, not a 500.
    assert_problem(commit(&app, &host, &challenges[2], tree.root()).await, StatusCode::CONFLICT, "challenge_replayed")
        .await;

    let view = verification(&app, &host).await;
    assert_eq!(view["challenge_failures"], 3);
    assert!(view["challenge_blocked_at"].is_string(), "3 failures in a row (CAPEX_CHALLENGE_FAILURES_MAX) block");
    for code in ["challenge_wrong_row", "challenge_bad_proof", "challenge_late"] {
        assert_eq!(view["refusals"][code], 1, "{code} counted on the host");
    }
    assert!(view["gpus"].as_array().unwrap().iter().all(|g| g["level"] == "simulated"));
    let reliability = app.get_json(&format!("/api/v1/hosts/{}/reliability", host.host_id), &provider.token).await;
    assert_eq!(reliability["challenges_failed_30d"], 3);
    assert_eq!(reliability["challenges_passed_30d"], 0);

    // Blocked: no asks, although the GPUs are free again.
    let res = app.place(&provider, CLASS, &ask_body(host.host_id, 1, "2", "gtc")).await;
    assert_problem(res, StatusCode::CONFLICT, "host_challenge_blocked").await;
    // Only an operator clears it.
    let path = format!("/api/v1/operator/hosts/{}/clear-challenge-block", host.host_id);
    assert_eq!(app.post(&path, Some(&provider.token), &json!({})).await.status(), StatusCode::FORBIDDEN);
    let res = app.post(&path, Some(&operator.token), &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cleared: Value = res.json().await.unwrap();
    assert_eq!(cleared["challenge_failures"], 0);
    assert!(cleared["challenge_blocked_at"].is_null());
    send_ok(&app, &host, &{
        let mut r = report(&host, 1, 2_000);
        r.backend = GpuBackend::Simulated;
        r
    })
    .await;
    app.place_ok(&provider, CLASS, &ask_body(host.host_id, 1, "2", "gtc")).await;
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn a_bid_requiring_challenged_gpus_trades_only_with_them(pool: sqlx::PgPool) {
    let app = TestApp::spawn_with(pool, demo_config()).await;
    let provider = app.register(&["provider"]).await;
    let buyer = app.register(&["buyer"]).await;
    let operator = app.operator().await;
    app.mint(&operator, &buyer, "100").await;
    let honest = simulated_host(&app, &provider, 1).await;
    let cheat = simulated_host(&app, &provider, 1).await;
    let honest_challenge = challenges_of(&app, &honest).await.remove(0);
    let cheat_challenge = challenges_of(&app, &cheat).await.remove(0);
    pass(&app, &honest, &honest_challenge).await;
    fail_wrong_row(&app, &cheat, &cheat_challenge).await;

    // The failed host asks less; the challenged one more.
    let cheap = app.place_ok(&provider, CLASS, &ask_body(cheat.host_id, 1, "1", "gtc")).await;
    let dear = app.place_ok(&provider, CLASS, &ask_body(honest.host_id, 1, "3", "gtc")).await;
    assert_eq!(dear["verification"], "challenged");
    assert_eq!(cheap["verification"], "simulated");
    let markets = app.get_json("/api/v1/markets", &buyer.token).await;
    let market = markets["items"].as_array().unwrap().iter().find(|m| m["class"] == CLASS).unwrap().clone();
    assert_eq!(
        market["offered_gpus_by_level"],
        json!({"simulated": 1, "reported": 0, "challenged": 1, "cc_attested": 0})
    );

    let mut body = bid_body(1, "1", "5", "gtc");
    body["min_verification"] = json!("challenged");
    let bid = app.place_ok(&buyer, CLASS, &body).await;
    assert_eq!(bid["status"], "filled", "{bid}");
    assert_eq!(bid["fills"][0]["price"], "3", "took the challenged ask, not the cheaper one");
    assert_eq!(bid["min_verification"], "challenged");

    // Nothing challenged is left: a second such bid rests, and says why.
    let waiting = app.place_ok(&buyer, CLASS, &body).await;
    assert_eq!(waiting["status"], "open");
    let order = app.order(&buyer, &waiting["order_id"]).await;
    let reasons = order["unfilled_reasons"].to_string();
    assert!(reasons.contains("verification_below_required"), "{reasons}");

    // A challenged ask whose challenge runs out while it rests is regraded down: a bid
    // requiring challenged no longer takes it.
    let honest_gpu = honest.gpus[0].0.clone();
    let res = app.delete(&format!("/api/v1/orders/{}", waiting["order_id"].as_str().unwrap()), &buyer.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let next = challenges_of(&app, &honest).await;
    assert!(next.is_empty(), "the honest host's GPU is leased, nothing to challenge");
    let second = simulated_host(&app, &provider, 1).await;
    let challenge = challenges_of(&app, &second).await.remove(0);
    pass(&app, &second, &challenge).await;
    let resting = app.place_ok(&provider, CLASS, &ask_body(second.host_id, 1, "4", "gtc")).await;
    assert_eq!(resting["verification"], "challenged");
    sqlx::query("update host_gpus set challenged_until = now() - interval '1 second' where gpu_uuid = $1")
        .bind(&second.gpus[0].0)
        .execute(&app.pool)
        .await
        .unwrap();
    // Fresh reports keep the host live while the matcher's next check (every 2 s) runs.
    for seq in 1..=3 {
        let mut r = report(&second, seq, 1_000 + seq * 1_000);
        r.backend = GpuBackend::Simulated;
        send_ok(&app, &second, &r).await;
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }
    let late = app.place_ok(&buyer, CLASS, &body).await;
    assert_eq!(late["status"], "open", "the expired ask was regraded: {late}");
    let ask_now = app.order(&provider, &resting["order_id"]).await;
    assert_eq!(ask_now["status"], "open", "the ask still rests, untraded");
    assert_eq!(ask_now["verification"], "simulated");
    assert_ne!(honest_gpu, second.gpus[0].0);

    // `simulated` is not a requirement; an ask may not state one.
    let mut bad = bid_body(1, "1", "5", "gtc");
    bad["min_verification"] = json!("simulated");
    let problem = assert_problem(
        app.place(&buyer, CLASS, &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_min_verification",
    )
    .await;
    assert_eq!(problem["field"], "min_verification");
    let mut bad_ask = ask_body(cheat.host_id, 1, "1", "gtc");
    bad_ask["min_verification"] = json!("reported");
    let problem = assert_problem(
        app.place(&provider, CLASS, &bad_ask).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "field_not_allowed",
    )
    .await;
    assert_eq!(problem["field"], "min_verification");
}

fn sample_evidence(gpu_uuid: &str) -> (Value, [u8; 32]) {
    let report = hex::decode(include_str!("../../../attest/tests/fixtures/nvtrust-hopper-report.hex").trim()).unwrap();
    let chain = include_str!("../../../attest/tests/fixtures/nvtrust-hopper-chain.pem");
    let nonce: [u8; 32] = report[4..36].try_into().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let evidence = json!({"evidence": {
        "gpu_uuid": gpu_uuid, "nonce": hex::encode(nonce),
        "attestation_report": b64.encode(&report), "certificate_chain": b64.encode(chain),
    }});
    (evidence, nonce)
}

/// Asks the host for evidence (as the operator) and returns the request id of its GPU.
async fn cc_request(app: &TestApp, operator: &TestUser, host: &TestHost) -> String {
    let res =
        app.post(&format!("/api/v1/operator/hosts/{}/attest", host.host_id), Some(&operator.token), &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let work = assignments(app, host).await;
    work["cc_requests"][0]["request_id"].as_str().unwrap().to_string()
}

/// The sample report was signed by a real H100 for its own nonce; no GPU here can sign
/// ours, so the test makes that nonce the one the server issued for `request`.
async fn issue_nonce(app: &TestApp, request: &str, nonce: &[u8; 32]) {
    sqlx::query("update gpu_attestations set nonce = $2 where request_id = $1::uuid")
        .bind(request)
        .bind(nonce.as_slice())
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn post_evidence(app: &TestApp, host: &TestHost, request_id: &str, body: &Value) -> Response {
    let path = format!("/api/v1/hosts/{}/attestations/{request_id}", host.host_id);
    signed(app, host, "POST", &path, serde_json::to_vec(body).unwrap()).await
}

#[sqlx::test(migrator = "capex_server::MIGRATOR")]
async fn nvidia_cc_evidence_makes_a_gpu_cc_attested_once_per_chip(pool: sqlx::PgPool) {
    let app = TestApp::spawn(pool).await;
    let provider = app.register(&["provider"]).await;
    let operator = app.operator().await;
    let host = register_host(&app, &provider, h100s(1)).await;
    let gpu = host.gpus[0].0.clone();
    let (evidence, nonce) = sample_evidence(&gpu);

    // Evidence for another nonce than the one issued: refused, level unchanged.
    let request = cc_request(&app, &operator, &host).await;
    let res = post_evidence(&app, &host, &request, &evidence).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "cc_wrong_nonce").await;
    assert_eq!(verification(&app, &host).await["gpus"][0]["level"], "reported");

    // The sample report was signed by a real H100 for its own nonce; no GPU here can sign
    // ours, so the test issues that nonce (the server's side is what is under test).
    let request = cc_request(&app, &operator, &host).await;
    issue_nonce(&app, &request, &nonce).await;
    let res = post_evidence(&app, &host, &request, &evidence).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let view = verification(&app, &host).await;
    assert_eq!(view["gpus"][0]["level"], "cc_attested");
    assert_eq!(view["gpus"][0]["cc_measurements_checked"], false, "no reference values configured");
    assert!(view["attestations"][0]["verified"]["device_id"].is_string());
    // Answered once.
    let res = post_evidence(&app, &host, &request, &evidence).await;
    assert_problem(res, StatusCode::CONFLICT, "attestation_replayed").await;

    // The same chip's evidence for a GPU of another host: a relay, refused.
    let other = register_host(&app, &provider, h100s(1)).await;
    let (relayed, _) = sample_evidence(&other.gpus[0].0);
    let request = cc_request(&app, &operator, &other).await;
    issue_nonce(&app, &request, &nonce).await;
    assert_problem(
        post_evidence(&app, &other, &request, &relayed).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "cc_wrong_device",
    )
    .await;
    assert_eq!(verification(&app, &other).await["gpus"][0]["level"], "reported");

    // A host without CC says so; the GPU keeps its level and the reason is recorded.
    let request = cc_request(&app, &operator, &other).await;
    let body = json!({"unavailable": {"gpu_uuid": other.gpus[0].0, "reason": "CC mode is off"}});
    let res = post_evidence(&app, &other, &request, &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    let view = verification(&app, &other).await;
    assert_eq!(view["attestations"][0]["state"], "unavailable");
    assert_eq!(view["attestations"][0]["detail"], "CC mode is off");
}
