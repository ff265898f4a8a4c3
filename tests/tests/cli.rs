//! The `capex` CLI against a real server: commands, `--json` output, exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use capex_e2e::{ServerProcess, binary, fresh_database_url};
use serde_json::Value;

struct Cli<'a> {
    exchange: &'a str,
    config_dir: &'a Path,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("capex"))
            .args(args)
            .env("CAPEX_EXCHANGE", self.exchange)
            .env("CAPEX_CONFIG_DIR", self.config_dir)
            .env_remove("CAPEX_TOKEN")
            .env_remove("CAPEX_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .expect("capex runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "capex {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        // First, so it never lands after a `--` that starts a job's command.
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.ok(&with_json);
        serde_json::from_str(&out).unwrap_or_else(|err| panic!("capex {args:?} --json printed {out:?}: {err}"))
    }
}

#[tokio::test]
async fn cli_register_login_wallet_transfer_ledger_and_errors() {
    let db = fresh_database_url().unwrap();
    let server = ServerProcess::start(&[
        ("DATABASE_URL", db.as_str()),
        ("CAPEX_OPERATOR_EMAIL", "ops@example.test"),
        ("CAPEX_OPERATOR_PASSWORD", "operator-password"),
    ])
    .await
    .unwrap();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let ops_dir = tempfile::tempdir().unwrap();
    let alice = Cli { exchange: &server.base_url, config_dir: alice_dir.path() };
    let bob = Cli { exchange: &server.base_url, config_dir: bob_dir.path() };
    let ops = Cli { exchange: &server.base_url, config_dir: ops_dir.path() };

    let alice_user = alice.json(&["register", "--email", "alice@example.test", "--password", "alice-password"]);
    let bob_user = bob.json(&[
        "register",
        "--email",
        "bob@example.test",
        "--password",
        "bob-password",
        "--role",
        "buyer,provider",
    ]);
    assert_eq!(bob_user["roles"], serde_json::json!(["buyer", "provider"]));
    alice.ok(&["login", "--email", "alice@example.test", "--password", "alice-password"]);
    bob.ok(&["login", "--email", "bob@example.test", "--password", "bob-password"]);
    ops.ok(&["login", "--email", "ops@example.test", "--password", "operator-password"]);

    // Saved credentials are private to the user.
    let mode = std::fs::metadata(alice_dir.path().join("credentials.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let alice_id = alice_user["user_id"].as_str().unwrap();
    let minted = ops.json(&["operator", "mint", "--user", alice_id, "--amount", "100", "--key", "cli-mint-1"]);
    assert_eq!(minted["amount"], "100");
    // Same key again: replayed, not minted twice.
    ops.json(&["operator", "mint", "--user", alice_id, "--amount", "100", "--key", "cli-mint-1"]);
    assert_eq!(alice.json(&["wallet"])["available"], "100");

    let bob_id = bob_user["user_id"].as_str().unwrap();
    alice.ok(&["transfer", "--to", bob_id, "--amount", "12.5", "--memo", "thanks"]);
    assert_eq!(alice.json(&["wallet"])["available"], "87.5");
    let ledger = bob.json(&["ledger"]);
    assert_eq!(ledger["items"][0]["amount"], "12.5");
    assert_eq!(ledger["items"][0]["memo"], "thanks");
    assert!(alice.ok(&["wallet"]).contains("87.5"), "human table shows the balance");

    let invariants = ops.json(&["operator", "invariants"]);
    assert_eq!(invariants["ok"], true);

    // API error: overdraft -> code and field printed, exit code 1, nothing moved.
    let out = alice.run(&["transfer", "--to", bob_id, "--amount", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("insufficient_funds") && stderr.contains("field: amount"), "{stderr}");
    assert_eq!(alice.json(&["wallet"])["available"], "87.5");

    // Over-precise amount: refused by the exchange with its code.
    let out = alice.run(&["transfer", "--to", bob_id, "--amount", "0.0000001"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("amount_too_precise"));

    // Bad flag: clap's usage error, exit code 2.
    let out = alice.run(&["wallet", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));

    // Not an operator.
    let out = alice.run(&["operator", "users"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));

    // Unreachable exchange: exit code 3.
    let nowhere = Cli { exchange: "http://127.0.0.1:9", config_dir: alice_dir.path() };
    let out = nowhere.run(&["wallet"]);
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn cli_trades_asks_bids_orders_book_and_cancel() {
    let db = fresh_database_url().unwrap();
    let server = ServerProcess::start(&[
        ("DATABASE_URL", db.as_str()),
        ("CAPEX_OPERATOR_EMAIL", "ops@example.test"),
        ("CAPEX_OPERATOR_PASSWORD", "operator-password"),
    ])
    .await
    .unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let buyer = Cli { exchange: &server.base_url, config_dir: dirs[0].path() };
    let provider = Cli { exchange: &server.base_url, config_dir: dirs[1].path() };
    let ops = Cli { exchange: &server.base_url, config_dir: dirs[2].path() };

    let buyer_user = buyer.json(&["register", "--email", "buyer@example.test", "--password", "buyer-password"]);
    provider.json(&["register", "--email", "gpu@example.test", "--password", "gpu-password", "--role", "provider"]);
    buyer.ok(&["login", "--email", "buyer@example.test", "--password", "buyer-password"]);
    provider.ok(&["login", "--email", "gpu@example.test", "--password", "gpu-password"]);
    ops.ok(&["login", "--email", "ops@example.test", "--password", "operator-password"]);
    ops.json(&["operator", "mint", "--user", buyer_user["user_id"].as_str().unwrap(), "--amount", "1000"]);

    // A real simulated agent, registered with an API key made by the CLI.
    let api_key = provider.ok(&["api-key", "--name", "test agent"]).trim().to_string();
    let agent_dir = dirs[3].path();
    let host_id = capex_e2e::AgentProcess::setup(agent_dir, &server.base_url, &api_key, "H100,H100").await.unwrap();
    let _agent = capex_e2e::AgentProcess::start(agent_dir, "H100,H100", &server.base_url).unwrap();
    capex_e2e::eventually(std::time::Duration::from_secs(20), "host live", || async {
        let hosts = provider.json(&["hosts"]);
        let live =
            hosts["items"].as_array().unwrap().iter().any(|h| h["host_id"] == host_id.as_str() && h["live"] == true);
        Ok(live.then_some(()))
    })
    .await
    .unwrap();

    let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let ask =
        provider.json(&["ask", "H100-80GB", "--host", &host_id, "--gpus", "2", "--until", &until, "--price", "2.5"]);
    assert_eq!(ask["status"], "open");
    let book = buyer.json(&["book", "H100-80GB"]);
    assert_eq!(book["asks"][0]["gpus"], 2);
    assert!(buyer.ok(&["book", "H100-80GB"]).contains("ask"), "ladder table");
    let markets = buyer.json(&["markets"]);
    assert!(markets["items"].as_array().unwrap().iter().any(|m| m["class"] == "H100-80GB"));

    // A bid below the ask rests; cancelling it refunds the escrow exactly.
    let low =
        buyer.json(&["bid", "H100-80GB", "--gpus", "1", "--hours", "2", "--price", "1.5", "--", "sh", "-c", "true"]);
    assert_eq!(low["status"], "open");
    assert_eq!(buyer.json(&["wallet"])["held"], "3");
    let open = buyer.json(&["orders"]);
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
    let low_id = low["order_id"].as_str().unwrap();
    let cancelled = buyer.json(&["cancel", low_id]);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(buyer.json(&["wallet"])["available"], "1000");

    // Another user's order cannot be cancelled; its owner can.
    let foreign = buyer.run(&["cancel", ask["order_id"].as_str().unwrap()]);
    assert_eq!(foreign.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&foreign.stderr).contains("HTTP 404"));
    let own = provider.json(&["cancel", ask["order_id"].as_str().unwrap()]);
    assert_eq!(own["status"], "cancelled");

    // A bid that requires challenged GPUs does not take the ask of this simulated host
    // (allowed, never challenged outside demo mode), and says why.
    let ask2 =
        provider.json(&["ask", "H100-80GB", "--host", &host_id, "--gpus", "1", "--until", &until, "--price", "2.5"]);
    assert_eq!(ask2["verification"], "simulated");
    let strict = buyer.json(&[
        "bid",
        "H100-80GB",
        "--gpus",
        "1",
        "--hours",
        "1",
        "--price",
        "3",
        "--min-verification",
        "challenged",
        "--",
        "true",
    ]);
    assert_eq!(strict["status"], "open", "{strict}");
    assert_eq!(strict["min_verification"], "challenged");
    assert!(strict["unfilled_reasons"].to_string().contains("verification_below_required"), "{strict}");
    buyer.json(&["cancel", strict["order_id"].as_str().unwrap()]);
    // Nor does a bid requiring 100 % uptime: the host's first report came after it
    // registered, so some of its short life was not attested.
    let reliable = buyer.json(&[
        "bid",
        "H100-80GB",
        "--gpus",
        "1",
        "--hours",
        "1",
        "--price",
        "3",
        "--min-uptime",
        "1",
        "--",
        "true",
    ]);
    assert_eq!(reliable["status"], "open", "{reliable}");
    assert_eq!(reliable["min_reliability"]["uptime_7d"], "1");
    assert!(reliable["unfilled_reasons"].to_string().contains("reliability_below_required"), "{reliable}");
    buyer.json(&["cancel", reliable["order_id"].as_str().unwrap()]);
    let out = buyer.run(&[
        "bid",
        "H100-80GB",
        "--gpus",
        "1",
        "--hours",
        "1",
        "--price",
        "3",
        "--min-uptime",
        "1.5",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("field: min_reliability.uptime_7d"), "{stderr}");
    provider.json(&["cancel", ask2["order_id"].as_str().unwrap()]);
    let hosts = provider.ok(&["hosts"]);
    assert!(hosts.contains("simulated,simulated"), "levels column: {hosts}");
    let levels = provider.json(&["verification", &host_id]);
    assert_eq!(levels["gpus"][0]["level"], "simulated");

    // A bid with a bad price is refused with its code and field.
    let out = buyer.run(&["bid", "H100-80GB", "--gpus", "1", "--hours", "1", "--price", "1.1234567", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("field: price"), "{stderr}");
}

/// `capex bid --restart ... --max-attempts ... --budget ...` sends a managed job: the
/// exchange takes it, and refuses a bad policy naming its field; `capex job` shows a job or
/// says why not.
#[tokio::test]
async fn cli_bids_a_managed_job() {
    let db = fresh_database_url().unwrap();
    let server = ServerProcess::start(&[
        ("DATABASE_URL", db.as_str()),
        ("CAPEX_OPERATOR_EMAIL", "ops@example.test"),
        ("CAPEX_OPERATOR_PASSWORD", "operator-password"),
    ])
    .await
    .unwrap();
    let alice_dir = tempfile::tempdir().unwrap();
    let ops_dir = tempfile::tempdir().unwrap();
    let alice = Cli { exchange: &server.base_url, config_dir: alice_dir.path() };
    let ops = Cli { exchange: &server.base_url, config_dir: ops_dir.path() };
    let user = alice.json(&["register", "--email", "alice@example.test", "--password", "alice-password"]);
    alice.ok(&["login", "--email", "alice@example.test", "--password", "alice-password"]);
    ops.ok(&["login", "--email", "ops@example.test", "--password", "operator-password"]);
    ops.json(&["operator", "mint", "--user", user["user_id"].as_str().unwrap(), "--amount", "100", "--key", "m1"]);

    let bid = |extra: &[&str]| {
        let mut args = vec!["bid", "H100-80GB", "--gpus", "1", "--hours", "1", "--price", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "1"]);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = bid(&["--restart", "host_lost,failed", "--max-attempts", "3", "--budget", "50"]);
    let order = alice.json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(order["status"], "open");
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let job: Value = sqlx::query_scalar("select job from orders where order_id = $1::uuid")
        .bind(order["order_id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(job["restart"]["on"], serde_json::json!(["host_lost", "failed"]));
    assert_eq!(job["restart"]["max_attempts"], 3);
    assert_eq!(job["budget"], "50");
    assert_eq!(job["job_id"], order["order_id"]);

    let args = bid(&["--restart", "host_lost", "--max-attempts", "9"]);
    let out = alice.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_restart") && stderr.contains("job.restart.max_attempts"), "{stderr}");
    // No attempt has run yet: no job to show.
    let out = alice.run(&["job", order["order_id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}
