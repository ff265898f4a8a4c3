//! Managed jobs end to end (issue 17): two real agents on simulated GPUs. The agent
//! running attempt 1 of a job is `kill -9`ed; the exchange notices the silence, pays the
//! buyer the SLA credit, and places attempt 2, which runs on the other host under the same
//! job id with `CAPEX_JOB_ID` and `CAPEX_ATTEMPT` set. Repeated with the roles swapped to
//! measure the re-placement time: from the lost host's last accepted report to attempt 2
//! started on the other host, against the target of 3 report intervals + 1 s.

use std::time::Duration;

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, server_env};
use capex_e2e::{AgentProcess, ServerProcess, eventually, fresh_database_url};
use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

const CLASS: &str = "H100-80GB";
/// Kills (rounds) measured; each takes about 6 s.
const ROUNDS: usize = 5;
/// The agents' report interval.
const INTERVAL_S: f64 = 1.0;

struct Agent {
    dir: tempfile::TempDir,
    host_id: String,
    process: Option<AgentProcess>,
}

fn dec(v: &Value) -> Decimal {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a decimal: {v}"))
}

async fn ask(api: &Api, provider: &ApiUser, host_id: &str, price: &str) -> anyhow::Result<()> {
    let until = Utc::now() + chrono::Duration::hours(24);
    let body = json!({"side": "ask", "host_id": host_id, "gpus": 1, "price": price, "tif": "gtc",
                      "available_until": until});
    let (status, view) = api.place(provider, CLASS, &body).await?;
    anyhow::ensure!(status == 201, "ask: {status} {view}");
    Ok(())
}

async fn logs(api: &Api, buyer: &ApiUser, job_id: &str, attempt: u32) -> anyhow::Result<String> {
    let (_, logs) = api.get(&format!("/api/v1/jobs/{job_id}/logs?attempt={attempt}"), Some(buyer)).await?;
    Ok(logs["items"].as_array().into_iter().flatten().filter_map(|l| l["text"].as_str()).collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn a_killed_agent_s_job_moves_to_the_other_host_under_the_same_job_id() -> anyhow::Result<()> {
    let database_url = fresh_database_url()?;
    let mut env = server_env(&database_url);
    env.push(("CAPEX_SWEEP_MS", "100".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(&env).await?;
    let api = Api::new(&server.base_url);
    let pool = sqlx::PgPool::connect(&database_url).await?;
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await?;
    let buyer = api.funded_user(&operator, "1000").await?;
    let provider = api.funded_user(&operator, "1").await?;
    let key_user = capex_e2e::ApiUser {
        token: provider.token.clone(),
        base: server.base_url.clone(),
        client: reqwest::Client::new(),
    };
    let api_key = key_user.api_key().await?;
    let mut agents = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let host_id = AgentProcess::setup(dir.path(), &server.base_url, &api_key, "H100").await?;
        let process = Some(AgentProcess::start(dir.path(), "H100", &server.base_url)?);
        agents.push(Agent { dir, host_id, process });
    }
    for agent in &agents {
        api.wait_live(&provider, &agent.host_id).await?;
    }

    let mut replacement_s = Vec::new();
    let (mut paid, mut credits) = (Decimal::ZERO, Decimal::ZERO);
    for round in 0..ROUNDS {
        let (lost, other) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        // Only the host to be lost offers its GPU, so attempt 1 runs there.
        ask(&api, &provider, &agents[lost].host_id, "36").await?;
        // The job prints its identity, then lives as long as its agent does.
        let script =
            "echo attempt $CAPEX_ATTEMPT of $CAPEX_JOB_ID; while kill -0 $PPID 2>/dev/null; do sleep 0.2; done";
        let body = json!({"side": "bid", "gpus": 1, "max_hours": "1", "price": "36", "tif": "ioc",
                          "job": {"command": ["sh", "-c", script],
                                  "restart": {"on": ["host_lost"], "max_attempts": 2}}});
        let (status, bid) = api.place(&buyer, CLASS, &body).await?;
        anyhow::ensure!(status == 201, "bid: {status} {bid}");
        let job_id = bid["order_id"].as_str().unwrap().to_string();
        let job = |api: Api, buyer: ApiUser, job_id: String| async move {
            let (status, job) = api.get(&format!("/api/v1/jobs/{job_id}"), Some(&buyer)).await?;
            anyhow::ensure!(status == 200, "job: {status} {job}");
            anyhow::Ok(job)
        };
        eventually(Duration::from_secs(15), "attempt 1 running and logged", || async {
            let j = job(api.clone(), buyer.clone(), job_id.clone()).await?;
            let logged = logs(&api, &buyer, &job_id, 1).await?;
            Ok((j["state"] == "running" && logged.contains(&format!("attempt 1 of {job_id}"))).then_some(j))
        })
        .await?;
        // Billed for at least one report, so the SLA credit is not zero.
        eventually(Duration::from_secs(10), "attempt 1 billed", || async {
            let j = job(api.clone(), buyer.clone(), job_id.clone()).await?;
            Ok((dec(&j["cost_so_far"]) > Decimal::ZERO).then_some(()))
        })
        .await?;
        ask(&api, &provider, &agents[other].host_id, "30").await?;
        let killed = agents[lost].process.take().expect("running");
        killed.signal("KILL")?;
        let moved = eventually(Duration::from_secs(20), "attempt 2 running on the other host", || async {
            let j = job(api.clone(), buyer.clone(), job_id.clone()).await?;
            Ok((j["attempt"] == 2 && j["state"] == "running").then_some(j))
        })
        .await?;
        assert_eq!(moved["job_id"], job_id.as_str());
        assert_eq!(moved["host_id"], agents[other].host_id.as_str());
        let attempts = moved["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["end_reason"], "host_lost");
        assert_eq!(attempts[0]["host_id"], agents[lost].host_id.as_str());
        let cost1 = dec(&attempts[0]["cost"]);
        let credit = dec(&attempts[0]["sla_credit"]);
        assert_eq!(credit, (cost1 / Decimal::from(10)).round_dp_with_strategy(6, RoundingStrategy::ToZero));
        // From the lost host's last accepted report to attempt 2 started elsewhere.
        let host_uuid: uuid::Uuid = agents[lost].host_id.parse()?;
        let (last_report, started): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "select h.last_report_at, l.started_at from hosts h, leases l
             where h.host_id = $1 and l.job_id = $2 and l.attempt = 2",
        )
        .bind(host_uuid)
        .bind(job_id.parse::<uuid::Uuid>()?)
        .fetch_one(&pool)
        .await?;
        let seconds = (started - last_report).num_milliseconds() as f64 / 1000.0;
        eprintln!(
            "round {round}: attempt 2 of job {job_id} started {seconds:.3} s after host {} stopped",
            agents[lost].host_id
        );
        replacement_s.push(seconds);
        eventually(Duration::from_secs(10), "attempt 2 logged", || async {
            Ok(logs(&api, &buyer, &job_id, 2).await?.contains(&format!("attempt 2 of {job_id}")).then_some(()))
        })
        .await?;
        assert!(logs(&api, &buyer, &job_id, 1).await?.contains(&format!("attempt 1 of {job_id}")));
        // Done with this job: cancel it (attempt 2 stops, the rest comes back).
        let res = api
            .client
            .post(format!("{}/api/v1/jobs/{job_id}/cancel", api.base_url))
            .bearer_auth(&buyer.token)
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "cancel: {}", res.status());
        let ended: Value = res.json().await?;
        assert_eq!(ended["job_state"], "ended");
        paid += ended["attempts"].as_array().unwrap().iter().map(|a| dec(&a["cost"])).sum::<Decimal>();
        credits += credit;
        // The lost host's agent comes back for the next round (its lease stays lost).
        agents[lost].process = Some(AgentProcess::start(agents[lost].dir.path(), "H100", &server.base_url)?);
        api.wait_live(&provider, &agents[lost].host_id).await?;
    }

    // Money is exact: only attested time billed, the SLA credits moved, the rest refunded.
    let (_, wallet) = api.get("/api/v1/wallet", Some(&buyer)).await?;
    assert_eq!(dec(&wallet["available"]), Decimal::from(1000) - paid + credits, "{wallet}");
    assert_eq!(dec(&wallet["held"]), Decimal::ZERO);
    let (_, report) = api.get("/api/v1/operator/invariants", Some(&operator)).await?;
    assert_eq!(report["ok"], true, "invariants: {report}");
    // The failed hosts' records show their losses.
    let mut lost_total = 0;
    for agent in &agents {
        let (_, host) = api.get(&format!("/api/v1/hosts/{}", agent.host_id), Some(&provider)).await?;
        lost_total += host["leases_lost"].as_i64().unwrap_or(0);
    }
    assert_eq!(lost_total, ROUNDS as i64);

    replacement_s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let target = 3.0 * INTERVAL_S + 1.0;
    let (p50, p99) = (percentile(&replacement_s, 50.0), percentile(&replacement_s, 99.0));
    println!(
        "re-placement after host loss over {ROUNDS} kills: p50 {p50:.3} s, p99 {p99:.3} s, max {:.3} s \
         (target p99 <= {target:.1} s = 3 intervals of {INTERVAL_S} s + 1 s)",
        replacement_s.last().unwrap()
    );
    eprintln!("re-placement samples: {replacement_s:?}");
    // A loaded CI machine gets 50 % slack over the target before this fails.
    assert!(p99 <= target * 1.5, "p99 {p99:.3} s is far above the {target} s target");
    Ok(())
}
