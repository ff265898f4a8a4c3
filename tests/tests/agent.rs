//! End to end: the real `capex-server` and `capex-agent` binaries, talking over HTTP,
//! each server on its own fresh database.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use capex_e2e::{
    AgentProcess as Agent, ApiUser, ServerProcess, agent_command, eventually, free_port, fresh_database_url,
};
use serde_json::{Value, json};

async fn capacity(base: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{base}/api/v1/capacity")).await?.json().await?)
}

#[tokio::test]
async fn two_agents_register_report_and_a_stopped_one_turns_not_live() -> anyhow::Result<()> {
    let database_url = fresh_database_url()?;
    let server = ServerProcess::start(&[("DATABASE_URL", &database_url)]).await?;
    let base = server.base_url.clone();
    let provider = ApiUser::provider(&base).await?;
    let api_key = provider.api_key().await?;
    let dir_a = tempfile::tempdir()?;
    let dir_b = tempfile::tempdir()?;
    let host_a = Agent::setup(dir_a.path(), &base, &api_key, "H100,H100").await?;
    let host_b = Agent::setup(dir_b.path(), &base, &api_key, "L4").await?;
    assert_ne!(host_a, host_b);
    let agent_a = Agent::start(dir_a.path(), "H100,H100", &base)?;
    let agent_b = Agent::start(dir_b.path(), "L4", &base)?;

    let expected = json!({"items": [
        {"class": "H100-80GB", "live_hosts": 1, "free_gpus": 2, "busy_gpus": 0},
        {"class": "L4-24GB", "live_hosts": 1, "free_gpus": 1, "busy_gpus": 0},
    ]});
    eventually(Duration::from_secs(20), "both hosts in capacity", || async {
        let now = capacity(&base).await?;
        Ok((now == expected).then_some(()))
    })
    .await?;

    // Reports keep flowing: sequence numbers grow, nothing is refused.
    eventually(Duration::from_secs(20), "three reports from host A", || async {
        let view = provider.get(&format!("/api/v1/hosts/{host_a}")).await?;
        Ok((view["reports_accepted"].as_i64().unwrap_or(0) >= 3).then_some(()))
    })
    .await?;
    let hosts = provider.get("/api/v1/hosts").await?;
    assert_eq!(hosts["items"].as_array().map(Vec::len), Some(2));
    for host in hosts["items"].as_array().unwrap() {
        assert_eq!(host["live"], true);
        assert_eq!(host["reports_refused"], json!({}), "{host}");
    }

    // Stop agent B: within three intervals (1 s each) its host is no longer live.
    let stopped_at = Instant::now();
    agent_b.kill().await?;
    eventually(Duration::from_secs(6), "host B not live", || async {
        let view = provider.get(&format!("/api/v1/hosts/{host_b}")).await?;
        Ok((view["live"] == false).then_some(()))
    })
    .await?;
    // 3 intervals, plus up to one interval of report phase and scheduling slack.
    assert!(stopped_at.elapsed() < Duration::from_millis(4_500), "took {:?}", stopped_at.elapsed());
    let now = capacity(&base).await?;
    assert_eq!(now, json!({"items": [{"class": "H100-80GB", "live_hosts": 1, "free_gpus": 2, "busy_gpus": 0}]}));
    let view = provider.get(&format!("/api/v1/hosts/{host_a}")).await?;
    assert_eq!(view["live"], true, "host A is still live");
    drop(agent_a);
    Ok(())
}

#[tokio::test]
async fn spooled_reports_all_arrive_in_order_after_an_outage_and_a_restart() -> anyhow::Result<()> {
    let database_url = fresh_database_url()?;
    let port = free_port();
    let mut server = ServerProcess::start_on(port, &[("DATABASE_URL", &database_url)]).await?;
    let base = server.base_url.clone();
    let provider = ApiUser::provider(&base).await?;
    let api_key = provider.api_key().await?;
    let dir = tempfile::tempdir()?;
    let host = Agent::setup(dir.path(), &base, &api_key, "A100").await?;
    let agent = Agent::start(dir.path(), "A100", &base)?;
    eventually(Duration::from_secs(20), "first reports", || async {
        let view = provider.get(&format!("/api/v1/hosts/{host}")).await?;
        Ok((view["last_seq"].as_i64().unwrap_or(-1) >= 1).then_some(()))
    })
    .await?;

    // The exchange goes away; the agent keeps measuring and spools.
    server.kill();
    eventually(Duration::from_secs(20), "reports piling up in the spool", || async {
        Ok((Agent::spooled(dir.path()).len() >= 3).then_some(()))
    })
    .await?;
    // The agent crashes too, and comes back: sequence and spool resume from disk.
    agent.kill().await?;
    let seq_before_restart = Agent::next_seq(dir.path());
    let agent = Agent::start(dir.path(), "A100", &base)?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let produced_offline = Agent::next_seq(dir.path());
    assert!(produced_offline > seq_before_restart, "the restarted agent continues the sequence");

    // The exchange comes back on the same address and database.
    let _server = ServerProcess::start_on(port, &[("DATABASE_URL", &database_url)]).await?;
    eventually(Duration::from_secs(30), "the spool to drain", || async {
        let view = provider.get(&format!("/api/v1/hosts/{host}")).await?;
        let delivered = view["last_seq"].as_i64().unwrap_or(-1);
        Ok((delivered >= produced_offline as i64).then_some(()))
    })
    .await?;
    agent.kill().await?;

    // Every report the agent made is in the database or (made in the last instant) still
    // spooled; the database holds an unbroken prefix, received in sequence order.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url).await?;
    let rows: Vec<(i64,)> =
        sqlx::query_as("select seq from host_reports order by received_at, seq").fetch_all(&mut conn).await?;
    let delivered: Vec<u64> = rows.iter().map(|r| r.0 as u64).collect();
    let expected: Vec<u64> = (0..delivered.len() as u64).collect();
    assert_eq!(delivered, expected, "delivered in order, none lost or duplicated");
    let spooled = Agent::spooled(dir.path());
    let next = Agent::next_seq(dir.path());
    let all: Vec<u64> = delivered.iter().chain(&spooled).copied().collect();
    assert_eq!(all, (0..next).collect::<Vec<u64>>(), "every report made is delivered or still spooled");
    assert!(delivered.len() as u64 > produced_offline, "the outage's reports arrived");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("select code, count from host_report_counts order by code").fetch_all(&mut conn).await?;
    assert!(counts.iter().all(|(code, _)| code == "accepted" || code == "duplicate"), "{counts:?}");
    Ok(())
}

#[tokio::test]
async fn init_makes_a_private_key_and_never_overwrites_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = agent_command(dir.path(), &["init"]).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public_key = String::from_utf8(out.stdout)?.trim().to_string();
    assert_eq!(public_key.len(), 44, "base64 of 32 bytes: {public_key}");
    let key_path = dir.path().join("host.key");
    let mode = std::fs::metadata(&key_path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key_path)?;

    let out = agent_command(dir.path(), &["init"]).await?;
    assert!(!out.status.success(), "a second init must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&key_path)?, before, "the key is unchanged");
    Ok(())
}

#[tokio::test]
async fn probe_prints_the_simulated_gpus_and_nvml_without_a_driver_fails_clearly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out =
        agent_command(dir.path(), &["--backend", "simulated", "--sim-gpus", "H100,RTX4090", "probe", "--json"]).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let probe: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(probe["backend"], "simulated");
    assert_eq!(probe["inventory"]["gpus"][1]["name"], "NVIDIA GeForce RTX 4090");
    let table = agent_command(dir.path(), &["--backend", "simulated", "--sim-gpus", "H100", "probe"]).await?;
    assert!(String::from_utf8_lossy(&table.stdout).contains("H100-80GB"));

    let out = agent_command(dir.path(), &["--backend", "nvml", "probe"]).await?;
    if out.status.success() {
        // A GPU host: NVML loaded, so the table lists real GPUs instead.
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NVML is not available"), "{stderr}");
    assert!(stderr.contains("--backend simulated"), "{stderr}");

    // `auto` falls back to the simulated backend when NVML does not load.
    let out = agent_command(dir.path(), &["--backend", "auto", "probe", "--json"]).await?;
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout)?["backend"], "simulated");
    Ok(())
}
