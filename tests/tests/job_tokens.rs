//! A job steers itself end to end (issue 17, part 4): a real agent runs a job whose shell
//! script uses `curl` with `$CAPEX_JOB_TOKEN` against `$CAPEX_EXCHANGE` to read its own
//! state, place a child bid within its budget (it fills on a second real agent), be
//! refused one over the budget, be refused a transfer and another job, and release its
//! GPUs. Money is exact afterwards and the token is revoked.

use std::time::Duration;

use capex_e2e::market::{Api, ApiUser, OPERATOR_EMAIL, OPERATOR_PASSWORD, server_env};
use capex_e2e::{AgentProcess, ServerProcess, eventually, fresh_database_url};
use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const CLASS: &str = "H100-80GB";

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

async fn logs(api: &Api, buyer: &ApiUser, job_id: &str) -> anyhow::Result<String> {
    let (_, logs) = api.get(&format!("/api/v1/jobs/{job_id}/logs"), Some(buyer)).await?;
    Ok(logs["items"].as_array().into_iter().flatten().filter_map(|l| l["text"].as_str()).collect())
}

/// The job's script: every answer it gets is printed as `name=<HTTP status>` (and the
/// bodies it needs; `printf`, as dash's `echo` would turn a body's `\n` into a line
/// break), then it releases its own GPUs.
const SCRIPT: &str = r#"
H="Authorization: Bearer $CAPEX_JOB_TOKEN"
J="$CAPEX_EXCHANGE/api/v1/jobs/$CAPEX_JOB_ID"
echo "self=$(curl -s -o self.json -w '%{http_code}' -H "$H" "$J")"
printf 'self_body=%s\n' "$(cat self.json)"
CHILD='{"class":"H100-80GB","side":"bid","gpus":1,"max_hours":"1","price":"10","tif":"gtc","job":{"command":["sh","-c","echo child running; sleep 120"]}}'
echo "child=$(curl -s -o child.json -w '%{http_code}' -H "$H" -H 'content-type: application/json' -H 'idempotency-key: child-1' -d "$CHILD" "$J/children")"
printf 'child_body=%s\n' "$(cat child.json)"
CHILD_ID=$(sed -n 's/.*"order_id":"\([0-9a-f-]*\)".*/\1/p' child.json)
echo "over=$(curl -s -o over.json -w '%{http_code}' -H "$H" -H 'content-type: application/json' -H 'idempotency-key: child-2' -d "$CHILD" "$J/children")"
printf 'over_body=%s\n' "$(cat over.json)"
echo "transfer=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" -H 'content-type: application/json' -H 'idempotency-key: t-1' -d '{"to_email":"x@example.test","amount":"1"}' "$CAPEX_EXCHANGE/api/v1/transfers")"
echo "wallet=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "$CAPEX_EXCHANGE/api/v1/wallet")"
echo "other_job=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "$CAPEX_EXCHANGE/api/v1/jobs/$CHILD_ID")"
echo "estimate=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "$CAPEX_EXCHANGE/api/v1/markets/H100-80GB/estimate?gpus=1&price=10&max_hours=1")"
echo "steered"
sleep 2
curl -s -o /dev/null -X POST -H "$H" "$J/release"
sleep 120
"#;

fn field<'a>(logged: &'a str, name: &str) -> Option<&'a str> {
    logged.lines().find_map(|l| l.strip_prefix(&format!("{name}=")))
}

#[tokio::test]
async fn a_job_reads_itself_places_a_child_within_its_budget_and_releases_its_gpus() -> anyhow::Result<()> {
    let curl = std::process::Command::new("curl").arg("--version").output();
    if !curl.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no curl on this machine for the job's script");
        return Ok(());
    }
    let database_url = fresh_database_url()?;
    let env = server_env(&database_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(&env).await?;
    let api = Api::new(&server.base_url);
    let operator = api.login(OPERATOR_EMAIL, OPERATOR_PASSWORD).await?;
    let buyer = api.funded_user(&operator, "100").await?;
    let provider = api.funded_user(&operator, "1").await?;
    let key_user = capex_e2e::ApiUser {
        token: provider.token.clone(),
        base: server.base_url.clone(),
        client: reqwest::Client::new(),
    };
    let api_key = key_user.api_key().await?;
    let mut agents = Vec::new();
    let mut hosts = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let host_id = AgentProcess::setup(dir.path(), &server.base_url, &api_key, "H100").await?;
        agents.push(AgentProcess::start(dir.path(), "H100", &server.base_url)?);
        api.wait_live(&provider, &host_id).await?;
        hosts.push(host_id);
        dirs.push(dir);
    }
    // The parent runs on host 0 (at 5); host 1's ask (at 10) waits for the child.
    ask(&api, &provider, &hosts[1], "10").await?;
    ask(&api, &provider, &hosts[0], "5").await?;
    let body = json!({"side": "bid", "gpus": 1, "max_hours": "1", "price": "5", "tif": "ioc",
                      "job": {"command": ["sh", "-c", SCRIPT], "budget": "15"}});
    let (status, bid) = api.place(&buyer, CLASS, &body).await?;
    anyhow::ensure!(status == 201 && bid["status"] == "filled", "bid: {status} {bid}");
    let job_id = bid["order_id"].as_str().unwrap().to_string();

    let logged = eventually(Duration::from_secs(30), "the job steered itself", || async {
        let logged = logs(&api, &buyer, &job_id).await?;
        Ok(logged.contains("steered").then_some(logged))
    })
    .await?;
    eprintln!("job output:\n{logged}");
    assert_eq!(field(&logged, "self"), Some("200"), "{logged}");
    let own: Value = serde_json::from_str(field(&logged, "self_body").unwrap())?;
    assert_eq!(own["job_id"], job_id.as_str());
    // The job may read itself before the agent's start acknowledgement lands.
    assert!(own["state"] == "running" || own["state"] == "pending", "{own}");
    assert_eq!(own["job_state"], "running");
    assert_eq!(own["budget"], "15");
    assert_eq!(field(&logged, "child"), Some("201"), "{logged}");
    let child: Value = serde_json::from_str(field(&logged, "child_body").unwrap())?;
    assert_eq!(child["status"], "filled", "{child}");
    let child_id = child["order_id"].as_str().unwrap().to_string();
    assert_eq!(field(&logged, "over"), Some("422"), "{logged}");
    assert!(field(&logged, "over_body").unwrap().contains("budget_exceeded"), "{logged}");
    assert_eq!(field(&logged, "transfer"), Some("403"), "{logged}");
    assert_eq!(field(&logged, "wallet"), Some("403"), "{logged}");
    assert_eq!(field(&logged, "other_job"), Some("404"), "{logged}");
    assert_eq!(field(&logged, "estimate"), Some("200"), "{logged}");

    // The child runs on host 1 as the owner's job, listed under the parent.
    let child_job = eventually(Duration::from_secs(20), "the child running", || async {
        let (_, j) = api.get(&format!("/api/v1/jobs/{child_id}"), Some(&buyer)).await?;
        Ok((j["state"] == "running").then_some(j))
    })
    .await?;
    assert_eq!(child_job["parent_job_id"], job_id.as_str());
    assert_eq!(child_job["host_id"], hosts[1].as_str());
    // The parent released itself: ended, nothing restarted, its escrow back.
    let parent = eventually(Duration::from_secs(20), "the parent released", || async {
        let (_, j) = api.get(&format!("/api/v1/jobs/{job_id}"), Some(&buyer)).await?;
        Ok((j["state"] == "released").then_some(j))
    })
    .await?;
    assert_eq!(parent["job_state"], "ended");
    assert_eq!(dec(&parent["escrow_left"]), Decimal::ZERO);
    assert_eq!(parent["children"][0]["job_id"], child_id.as_str());
    // The owner cancels the child; then only billed time is paid.
    let res = api
        .client
        .delete(format!("{}/api/v1/jobs/{job_id}/children/{child_id}", api.base_url))
        .bearer_auth(&buyer.token)
        .send()
        .await?;
    anyhow::ensure!(res.status() == 200, "cancel child: {}", res.status());
    let (_, child_job) = api.get(&format!("/api/v1/jobs/{child_id}"), Some(&buyer)).await?;
    assert_eq!(child_job["state"], "cancelled");
    let (_, wallet) = api.get("/api/v1/wallet", Some(&buyer)).await?;
    let paid = dec(&parent["cost_so_far"]) + dec(&child_job["cost_so_far"]);
    assert_eq!(dec(&wallet["available"]), Decimal::from(100) - paid, "{wallet}");
    assert_eq!(dec(&wallet["held"]), Decimal::ZERO);
    let (_, report) = api.get("/api/v1/operator/invariants", Some(&operator)).await?;
    assert_eq!(report["ok"], true, "invariants: {report}");
    for agent in agents {
        agent.kill().await?;
    }
    Ok(())
}
