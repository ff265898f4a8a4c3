//! Placement end to end: the real server and real `capex-agent` processes on simulated
//! GPUs with the process runtime. A bid crosses an ask, the winning host's agent runs the
//! job with only the leased GPUs visible, reports bill it, and it is settled.

use std::path::Path;
use std::time::{Duration, Instant};

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, server_env};
use capex_e2e::{AgentProcess, ServerProcess, eventually, fresh_database_url};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

const CLASS: &str = "H100-80GB";

struct Setup {
    _server: ServerProcess,
    api: Api,
    operator: ApiUser,
    buyer: ApiUser,
    provider: ApiUser,
    host_id: String,
    agent: Option<AgentProcess>,
    _dir: tempfile::TempDir,
}

async fn setup(gpus: &str) -> anyhow::Result<Setup> {
    let database_url = fresh_database_url()?;
    let env = server_env(&database_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(&env).await?;
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await?;
    let buyer = api.funded_user(&operator, "1000").await?;
    let provider = api.funded_user(&operator, "1").await?;
    let key_user = capex_e2e::ApiUser {
        token: provider.token.clone(),
        base: server.base_url.clone(),
        client: reqwest::Client::new(),
    };
    let api_key = key_user.api_key().await?;
    let dir = tempfile::tempdir()?;
    let host_id = AgentProcess::setup(dir.path(), &server.base_url, &api_key, gpus).await?;
    let agent = AgentProcess::start(dir.path(), gpus, &server.base_url)?;
    let s = Setup { _server: server, api, operator, buyer, provider, host_id, agent: Some(agent), _dir: dir };
    s.api.wait_live(&s.provider, &s.host_id).await?;
    Ok(s)
}

impl Setup {
    async fn ask(&self, gpus: u32, price: &str) -> anyhow::Result<()> {
        let until = chrono::Utc::now() + chrono::Duration::hours(24);
        let body = json!({"side": "ask", "host_id": self.host_id, "gpus": gpus, "price": price, "tif": "gtc",
                          "available_until": until});
        let (status, view) = self.api.place(&self.provider, CLASS, &body).await?;
        anyhow::ensure!(status == 201, "ask: {status} {view}");
        Ok(())
    }

    /// Places a crossing bid; returns the job (lease) id.
    async fn bid(&self, gpus: u32, max_hours: &str, price: &str, script: &str) -> anyhow::Result<String> {
        let body = json!({"side": "bid", "gpus": gpus, "max_hours": max_hours, "price": price, "tif": "ioc",
                          "job": {"command": ["sh", "-c", script]}});
        let (status, view) = self.api.place(&self.buyer, CLASS, &body).await?;
        anyhow::ensure!(status == 201, "bid: {status} {view}");
        Ok(view["fills"][0]["lease_id"].as_str().ok_or_else(|| anyhow::anyhow!("bid did not trade: {view}"))?.into())
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        let (status, job) = self.api.get(&format!("/api/v1/jobs/{id}"), Some(&self.buyer)).await?;
        anyhow::ensure!(status == 200, "job: {status} {job}");
        Ok(job)
    }

    async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> anyhow::Result<Value> {
        eventually(timeout, &format!("job {state}"), || async {
            let job = self.job(id).await?;
            Ok((job["state"] == state).then_some(job))
        })
        .await
    }

    async fn logs(&self, id: &str) -> anyhow::Result<String> {
        let (_, logs) = self.api.get(&format!("/api/v1/jobs/{id}/logs"), Some(&self.buyer)).await?;
        Ok(logs["items"].as_array().into_iter().flatten().filter_map(|l| l["text"].as_str()).collect())
    }

    async fn available(&self, user: &ApiUser) -> anyhow::Result<Decimal> {
        let (_, wallet) = self.api.get("/api/v1/wallet", Some(user)).await?;
        Ok(wallet["available"].as_str().unwrap_or("0").parse()?)
    }

    async fn invariants_ok(&self) -> anyhow::Result<()> {
        let (_, report) = self.api.get("/api/v1/operator/invariants", Some(&self.operator)).await?;
        anyhow::ensure!(report["ok"] == true, "invariants: {report}");
        Ok(())
    }

    async fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        let res = self
            .api
            .client
            .post(format!("{}/api/v1/jobs/{id}/cancel", self.api.base_url))
            .bearer_auth(&self.buyer.token)
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "cancel: {}", res.status());
        Ok(res.json().await?)
    }
}

fn dec(v: &Value) -> Decimal {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a decimal: {v}"))
}

fn floor6(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(6, RoundingStrategy::ToZero)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// The pid a job printed as its first line (`echo $$; exec sleep ...`).
async fn job_pid(s: &Setup, id: &str) -> anyhow::Result<u32> {
    eventually(Duration::from_secs(10), "job pid in logs", || async {
        Ok(s.logs(id).await?.lines().next().and_then(|l| l.trim().parse().ok()))
    })
    .await
}

#[tokio::test]
async fn full_cycle_runs_on_the_leased_gpus_bills_and_refunds() -> anyhow::Result<()> {
    let s = setup("H100,H100").await?;
    s.ask(2, "36").await?;
    let id = s.bid(1, "1", "36", "echo $CUDA_VISIBLE_DEVICES; sleep 3; echo done").await?;
    let job = s.wait_state(&id, "exited", Duration::from_secs(30)).await?;
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["host_id"], s.host_id.as_str());
    let leased: Vec<&str> = job["gpu_uuids"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(leased.len(), 1);
    let logs = s.logs(&id).await?;
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines, vec![leased[0], "done"], "the job saw exactly its leased GPU");

    let billed = dec(&job["billed_seconds"]);
    assert!(billed >= Decimal::from(2) && billed <= Decimal::from(6), "billed {billed} s");
    let cost = dec(&job["cost_so_far"]);
    assert_eq!(cost, floor6(Decimal::from(36) * billed / Decimal::from(3600)), "price x G x billed time");
    let fee = floor6(cost * Decimal::new(2, 2));
    assert_eq!(dec(&job["escrow_left"]), Decimal::ZERO);
    assert_eq!(s.available(&s.buyer).await?, Decimal::from(1000) - cost, "the rest was refunded");
    assert_eq!(s.available(&s.provider).await? - Decimal::ONE, cost - fee, "provider got the cost less the fee");
    s.invariants_ok().await?;
    let (_, host) = s.api.get(&format!("/api/v1/hosts/{}", s.host_id), Some(&s.provider)).await?;
    assert_eq!(host["leases_completed"], 1);
    Ok(())
}

#[tokio::test]
async fn a_job_past_its_max_hours_is_killed_and_billed_to_the_cap() -> anyhow::Result<()> {
    let s = setup("H100").await?;
    s.ask(1, "3600").await?;
    // 0.001 h = 3.6 s at 1 credit per second.
    let id = s.bid(1, "0.001", "3600", "echo $$; exec sleep 60").await?;
    let pid = job_pid(&s, &id).await?;
    let job = s.wait_state(&id, "max_duration", Duration::from_secs(20)).await?;
    assert!(dec(&job["billed_seconds"]) <= Decimal::new(36, 1), "{job}");
    assert!(dec(&job["cost_so_far"]) <= Decimal::new(36, 1));
    eventually(Duration::from_secs(10), "job process killed", || async { Ok((!alive(pid)).then_some(())) }).await?;
    assert_eq!(s.available(&s.buyer).await?, Decimal::from(1000) - dec(&job["cost_so_far"]));
    s.invariants_ok().await?;
    Ok(())
}

#[tokio::test]
async fn buyer_cancel_kills_the_process_stops_billing_and_refunds() -> anyhow::Result<()> {
    let s = setup("H100").await?;
    s.ask(1, "360").await?;
    let id = s.bid(1, "1", "360", "echo $$; exec sleep 60").await?;
    let pid = job_pid(&s, &id).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = s.cancel(&id).await?;
    assert_eq!(job["state"], "cancelled");
    let cost = dec(&job["cost_so_far"]);
    eventually(Duration::from_secs(10), "job process killed", || async { Ok((!alive(pid)).then_some(())) }).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dec(&s.job(&id).await?["cost_so_far"]), cost, "billing stopped");
    assert_eq!(s.available(&s.buyer).await?, Decimal::from(1000) - cost);
    s.invariants_ok().await?;
    Ok(())
}

#[tokio::test]
async fn a_killed_agent_loses_the_lease_and_the_escrow_returns() -> anyhow::Result<()> {
    let mut s = setup("H100").await?;
    s.ask(1, "360").await?;
    let id = s.bid(1, "1", "360", "echo $$; exec sleep 30").await?;
    let pid = job_pid(&s, &id).await?;
    s.wait_state(&id, "running", Duration::from_secs(5)).await?;
    s.agent.take().unwrap().kill().await?;
    let job = s.wait_state(&id, "host_lost", Duration::from_secs(10)).await?;
    let cost = dec(&job["cost_so_far"]);
    assert_eq!(dec(&job["escrow_left"]), Decimal::ZERO);
    // The SLA credit: a tenth of what the lease billed, from the provider's wallet.
    let credit = dec(&job["sla_credits"]);
    assert_eq!(credit, floor6(cost / Decimal::from(10)));
    assert_eq!(s.available(&s.buyer).await?, Decimal::from(1000) - cost + credit, "unbilled escrow refunded");
    let (_, host) = s.api.get(&format!("/api/v1/hosts/{}", s.host_id), Some(&s.provider)).await?;
    assert_eq!(host["leases_lost"], 1);
    s.invariants_ok().await?;
    // The orphaned job (its agent died with SIGKILL) is cleaned up here.
    let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
    Ok(())
}

#[tokio::test]
async fn a_paused_agent_is_not_paid_for_the_gap() -> anyhow::Result<()> {
    let s = setup("H100").await?;
    s.ask(1, "3600").await?; // 1 credit per second
    let id = s.bid(1, "0.05", "3600", "echo $$; exec sleep 60").await?;
    let pid = job_pid(&s, &id).await?;
    s.wait_state(&id, "running", Duration::from_secs(5)).await?;
    let host_path = format!("/api/v1/hosts/{}", s.host_id);
    let last_seq = |s: &Setup| {
        let host_path = host_path.clone();
        let api = s.api.clone();
        let provider = s.provider.clone();
        async move { anyhow::Ok(api.get(&host_path, Some(&provider)).await?.1["last_seq"].as_i64().unwrap_or(-1)) }
    };
    // Pause right after a report lands, so the silence stays under the 3 intervals that
    // would lose the host.
    let seq = last_seq(&s).await?;
    eventually(Duration::from_secs(5), "a fresh report", || async { Ok((last_seq(&s).await? > seq).then_some(())) })
        .await?;
    let agent = s.agent.as_ref().unwrap();
    agent.signal("STOP")?;
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = dec(&s.job(&id).await?["billed_seconds"]);
    let paused_seq = last_seq(&s).await?;
    tokio::time::sleep(Duration::from_millis(2400)).await;
    agent.signal("CONT")?;
    eventually(Duration::from_secs(5), "a report after the pause", || async {
        Ok((last_seq(&s).await? > paused_seq).then_some(()))
    })
    .await?;
    let after = dec(&s.job(&id).await?["billed_seconds"]);
    let silent = stopped.elapsed();
    assert!(silent >= Duration::from_millis(2600));
    assert!(after - before <= Decimal::new(21, 1), "billed {} s of a {silent:?} silence", after - before);
    assert_eq!(s.job(&id).await?["state"], "running", "a short pause does not lose the host");
    // Billing resumes with the reports.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(dec(&s.job(&id).await?["billed_seconds"]) > after);
    s.cancel(&id).await?;
    eventually(Duration::from_secs(10), "job process killed", || async { Ok((!alive(pid)).then_some(())) }).await?;
    s.invariants_ok().await?;
    Ok(())
}

#[tokio::test]
async fn two_jobs_on_one_host_each_see_only_their_gpus() -> anyhow::Result<()> {
    let s = setup("H100,H100,H100,H100").await?;
    s.ask(4, "36").await?;
    let a = s.bid(2, "1", "36", "echo $CUDA_VISIBLE_DEVICES; sleep 1").await?;
    let b = s.bid(2, "1", "36", "echo $CUDA_VISIBLE_DEVICES; sleep 1").await?;
    let mut seen = Vec::new();
    for id in [&a, &b] {
        let job = s.wait_state(id, "exited", Duration::from_secs(20)).await?;
        let leased: Vec<String> =
            job["gpu_uuids"].as_array().unwrap().iter().filter_map(|g| g.as_str().map(String::from)).collect();
        let logs = s.logs(id).await?;
        assert_eq!(logs.trim(), leased.join(","), "job {id} saw exactly its GPUs");
        seen.extend(leased);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "the two jobs had disjoint GPUs");
    s.invariants_ok().await?;
    Ok(())
}

/// Placement latency: from the crossing bid's trade to the job's start on the agent
/// (the agent's acknowledgement), over many trades on loopback. Prints p50 and p99.
/// `cargo test -p capex-e2e --test placement -- --ignored --nocapture placement_latency`
#[tokio::test]
#[ignore]
async fn placement_latency() -> anyhow::Result<()> {
    let trades: usize = std::env::var("CAPEX_LATENCY_TRADES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let s = setup("H100,H100,H100,H100,H100,H100,H100,H100").await?;
    let mut latencies_ms = Vec::with_capacity(trades);
    let mut ids = Vec::new();
    let started = Instant::now();
    while ids.len() < trades && started.elapsed() < Duration::from_secs(240) {
        // An ask of one GPU, accepted once a GPU is free again.
        if s.ask(1, "36").await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        ids.push(s.bid(1, "1", "36", "true").await?);
    }
    for id in &ids {
        let job = eventually(Duration::from_secs(30), "job started", || async {
            let job = s.job(id).await?;
            Ok(job["started_at"].is_string().then_some(job))
        })
        .await?;
        let created: chrono::DateTime<chrono::Utc> = job["created_at"].as_str().unwrap().parse()?;
        let started: chrono::DateTime<chrono::Utc> = job["started_at"].as_str().unwrap().parse()?;
        latencies_ms.push((started - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    latencies_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies_ms[((latencies_ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "placement latency over {} trades: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies_ms.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
