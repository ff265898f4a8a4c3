//! Verified supply end to end, with real `capex-agent` processes on the simulated backend:
//! outside demo mode a simulated host cannot even register; in demo mode an honest agent's
//! GPUs reach `challenged` through the real challenge protocol (the agent computes C,
//! commits, opens the named leaves), an agent started with the test-only fault flag
//! `corrupt-row` fails and stays `simulated`, and a bid requiring `challenged` trades with
//! the honest host only, although the other asks less.

use std::time::Duration;

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, server_env};
use capex_e2e::{AgentProcess, ServerProcess, agent_command, eventually, fresh_database_url};
use serde_json::{Value, json};

const CLASS: &str = "H100-80GB";

async fn api_key(server: &ServerProcess, user: &ApiUser) -> anyhow::Result<String> {
    capex_e2e::ApiUser { token: user.token.clone(), base: server.base_url.clone(), client: reqwest::Client::new() }
        .api_key()
        .await
}

async fn verification(api: &Api, host_id: &str) -> anyhow::Result<Value> {
    let (status, view) = api.get(&format!("/api/v1/hosts/{host_id}/verification"), None).await?;
    anyhow::ensure!(status == 200, "verification: {status} {view}");
    Ok(view)
}

async fn ask(api: &Api, provider: &ApiUser, host_id: &str, price: &str) -> anyhow::Result<Value> {
    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    let body = json!({"side": "ask", "host_id": host_id, "gpus": 1, "price": price, "tif": "gtc",
                      "available_until": until});
    let (status, view) = api.place(provider, CLASS, &body).await?;
    anyhow::ensure!(status == 201, "ask: {status} {view}");
    Ok(view)
}

#[tokio::test]
async fn a_simulated_host_cannot_register_outside_demo_mode() -> anyhow::Result<()> {
    let database_url = fresh_database_url()?;
    let mut env = server_env(&database_url);
    env.push(("CAPEX_ALLOW_SIMULATED", "false".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(&env).await?;
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await?;
    let provider = api.funded_user(&operator, "1").await?;
    let key = api_key(&server, &provider).await?;
    let dir = tempfile::tempdir()?;
    let out = agent_command(dir.path(), &["init"]).await?;
    anyhow::ensure!(out.status.success());
    let args =
        ["--backend", "simulated", "--sim-gpus", "H100", "register", "--exchange", &server.base_url, "--api-key", &key];
    let out = agent_command(dir.path(), &args).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "registration must fail");
    assert!(stderr.contains("simulated_gpus_refused"), "{stderr}");
    let (_, hosts) = api.get("/api/v1/hosts", Some(&provider)).await?;
    assert_eq!(hosts["items"].as_array().map(Vec::len), Some(0), "{hosts}");
    Ok(())
}

#[tokio::test]
async fn honest_agents_reach_challenged_and_a_faulty_one_does_not_trade_with_a_challenged_bid() -> anyhow::Result<()> {
    let database_url = fresh_database_url()?;
    let mut env = server_env(&database_url);
    env.push(("CAPEX_DEMO", "true".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(&env).await?;
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await?;
    let buyer = api.funded_user(&operator, "1000").await?;
    let provider = api.funded_user(&operator, "1").await?;
    let key = api_key(&server, &provider).await?;

    let honest_dir = tempfile::tempdir()?;
    let honest = AgentProcess::setup(honest_dir.path(), &server.base_url, &key, "H100,H100").await?;
    let _honest_agent = AgentProcess::start(honest_dir.path(), "H100,H100", &server.base_url)?;
    let faulty_dir = tempfile::tempdir()?;
    let faulty = AgentProcess::setup(faulty_dir.path(), &server.base_url, &key, "H100").await?;
    let _faulty_agent = AgentProcess::start_with_env(
        faulty_dir.path(),
        "H100",
        &server.base_url,
        &[("CAPEX_AGENT_CHALLENGE_FAULT", "corrupt-row")],
    )?;

    // Both GPUs of the honest host pass, one after the other.
    let view = eventually(Duration::from_secs(60), "honest GPUs challenged", || async {
        let view = verification(&api, &honest).await?;
        let all = view["gpus"].as_array().is_some_and(|g| g.len() == 2 && g.iter().all(|g| g["level"] == "challenged"));
        Ok(all.then_some(view))
    })
    .await?;
    let passed: Vec<&Value> =
        view["challenges"].as_array().unwrap().iter().filter(|c| c["state"] == "passed").collect();
    assert_eq!(passed.len(), 2, "{view}");
    assert!(passed.iter().all(|c| c["reason"] == "registration" && c["n"] == 256 && c["k"] == 20));

    // The faulty agent commits to a wrong C: challenge_wrong_row, and it stays simulated.
    let view = eventually(Duration::from_secs(60), "faulty challenge failed", || async {
        let view = verification(&api, &faulty).await?;
        Ok((view["challenge_failures"].as_i64() >= Some(1)).then_some(view))
    })
    .await?;
    assert_eq!(view["challenges"][0]["state"], "failed", "{view}");
    assert_eq!(view["challenges"][0]["failure_code"], "challenge_wrong_row");
    assert_eq!(view["refusals"]["challenge_wrong_row"], 1);
    assert_eq!(view["gpus"][0]["level"], "simulated");

    // The faulty host asks less than the honest one.
    let cheap = ask(&api, &provider, &faulty, "1").await?;
    assert_eq!(cheap["verification"], "simulated");
    let dear = ask(&api, &provider, &honest, "3").await?;
    assert_eq!(dear["verification"], "challenged");

    let bid = json!({"side": "bid", "gpus": 1, "max_hours": "1", "price": "5", "tif": "ioc",
                     "min_verification": "challenged", "job": {"command": ["sh", "-c", "sleep 30"]}});
    let (status, filled) = api.place(&buyer, CLASS, &bid).await?;
    assert_eq!(status, 201, "{filled}");
    assert_eq!(filled["status"], "filled", "{filled}");
    assert_eq!(filled["fills"][0]["price"], "3", "traded with the challenged host: {filled}");
    let lease = filled["fills"][0]["lease_id"].as_str().unwrap();
    let (_, job) = api.get(&format!("/api/v1/jobs/{lease}"), Some(&buyer)).await?;
    assert_eq!(job["host_id"], honest.as_str(), "{job}");

    // A bid without the requirement takes the cheaper faulty host.
    let mut plain = bid.clone();
    plain.as_object_mut().unwrap().remove("min_verification");
    let (_, any) = api.place(&buyer, CLASS, &plain).await?;
    assert_eq!(any["fills"][0]["price"], "1", "{any}");
    Ok(())
}
