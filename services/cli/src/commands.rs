use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{CliError, CliResult, Client};
use crate::table::{Table, cell};
use crate::{Cli, Command, OperatorCommand, PasswordArgs, credentials};

pub(crate) const DEFAULT_EXCHANGE: &str = "http://127.0.0.1:8080";
/// How often `--wait` and `--follow` poll the exchange.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest `bid --wait` waits for a job to start.
const WAIT_FOR_JOB_S: u64 = 3600;

fn password(args: &PasswordArgs) -> CliResult<String> {
    if let Some(password) = &args.password {
        return Ok(password.clone());
    }
    if args.password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    Err(CliError::Other(anyhow::anyhow!("give the password with --password-stdin or CAPEX_PASSWORD")))
}

/// The client for this invocation: flags and env first, then the saved login.
fn client(cli: &Cli, needs_login: bool) -> CliResult<Client> {
    let saved = credentials::load()?;
    let exchange = cli
        .exchange
        .clone()
        .or_else(|| saved.as_ref().map(|c| c.exchange.clone()))
        .unwrap_or_else(|| DEFAULT_EXCHANGE.to_string());
    let token = cli.token.clone().or_else(|| saved.map(|c| c.token));
    if needs_login && token.is_none() {
        return Err(CliError::Other(anyhow::anyhow!(
            "not logged in: run `capex login --email ...` or set CAPEX_TOKEN"
        )));
    }
    Ok(Client::new(&exchange, token))
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn items(value: &Value) -> &[Value] {
    value["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn print_table(value: &Value, headers: &[&str], columns: &[&str]) {
    let mut table = Table::new(headers);
    for item in items(value) {
        table.row(columns.iter().map(|c| cell(&item[*c])).collect());
    }
    print!("{}", table.render());
}

pub(crate) async fn run(cli: Cli) -> CliResult<()> {
    match &cli.command {
        Command::Register { email, password: pw, role } => {
            let api = client(&cli, false)?;
            let body = json!({"email": email, "password": password(pw)?, "roles": role});
            let user = api.post("/api/v1/auth/register", &body, None).await?;
            if cli.json {
                print_json(&user);
            } else {
                println!(
                    "registered {} ({}) as {}",
                    cell(&user["email"]),
                    cell(&user["user_id"]),
                    cell(&user["roles"])
                );
            }
        }
        Command::Login { email, password: pw } => {
            let api = client(&cli, false)?;
            let res = api.post("/api/v1/auth/login", &json!({"email": email, "password": password(pw)?}), None).await?;
            let token = res["token"].as_str().ok_or_else(|| anyhow::anyhow!("login answer has no token"))?;
            let path = credentials::save(&credentials::Credentials {
                exchange: api.base.clone(),
                token: token.to_string(),
                email: Some(email.clone()),
            })?;
            if cli.json {
                print_json(&json!({"user": res["user"], "expires_at": res["expires_at"], "saved_to": path}));
            } else {
                println!("logged in as {email} until {}; token saved to {}", cell(&res["expires_at"]), path.display());
            }
        }
        Command::Whoami => {
            let me = client(&cli, true)?.get("/api/v1/me").await?;
            if cli.json {
                print_json(&me);
            } else {
                println!("{} ({}) roles: {}", cell(&me["email"]), cell(&me["user_id"]), cell(&me["roles"]));
            }
        }
        Command::ApiKey { name } => {
            let key = client(&cli, true)?.post("/api/v1/auth/api-keys", &json!({"name": name}), None).await?;
            if cli.json {
                print_json(&key);
            } else {
                println!("{}", cell(&key["key"]));
                eprintln!("API key {} created; it is shown only once", cell(&key["api_key_id"]));
            }
        }
        Command::ApiKeys => {
            let keys = client(&cli, true)?.get("/api/v1/auth/api-keys").await?;
            if cli.json {
                print_json(&keys);
            } else {
                print_table(
                    &keys,
                    &["id", "name", "prefix", "created", "last used"],
                    &["api_key_id", "name", "prefix", "created_at", "last_used_at"],
                );
            }
        }
        Command::RevokeApiKey { api_key_id } => {
            client(&cli, true)?.delete(&format!("/api/v1/auth/api-keys/{api_key_id}")).await?;
            if cli.json {
                print_json(&json!({"api_key_id": api_key_id, "revoked": true}));
            } else {
                println!("API key {api_key_id} revoked");
            }
        }
        Command::Wallet => {
            let wallet = client(&cli, true)?.get("/api/v1/wallet").await?;
            if cli.json {
                print_json(&wallet);
            } else {
                let mut table = Table::new(&["available", "held", "total"]);
                table.row(vec![cell(&wallet["available"]), cell(&wallet["held"]), cell(&wallet["total"])]);
                print!("{}", table.render());
            }
        }
        Command::Ledger { limit, cursor } => {
            let mut path = format!("/api/v1/wallet/ledger?limit={limit}");
            if let Some(cursor) = cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = client(&cli, true)?.get(&path).await?;
            if cli.json {
                print_json(&page);
            } else {
                print_table(
                    &page,
                    &["at", "account", "direction", "amount", "kind", "memo"],
                    &["at", "account", "direction", "amount", "kind", "memo"],
                );
                if let Some(next) = page["next_cursor"].as_str() {
                    println!("more: capex ledger --cursor {next}");
                }
            }
        }
        Command::Transfer { to, amount, memo } => {
            let api = client(&cli, true)?;
            let key = uuid::Uuid::now_v7().to_string();
            let body = json!({"to_user": to, "amount": amount, "memo": memo});
            let transfer = api.post("/api/v1/transfers", &body, Some(&key)).await?;
            if cli.json {
                print_json(&transfer);
            } else {
                println!(
                    "sent {} credits to {} (transfer {})",
                    cell(&transfer["amount"]),
                    to,
                    cell(&transfer["transfer_id"])
                );
            }
        }
        Command::Markets => {
            let markets = client(&cli, false)?.get("/api/v1/markets").await?;
            if cli.json {
                print_json(&markets);
            } else {
                let mut table = Table::new(&[
                    "class",
                    "best bid",
                    "best ask",
                    "int. ask",
                    "int. GPUs",
                    "last",
                    "24h GPU-h",
                    "free GPUs",
                    "offered by level (sim/rep/chal/cc)",
                ]);
                for market in items(&markets) {
                    let offered = &market["offered_gpus_by_level"];
                    let by_level = ["simulated", "reported", "challenged", "cc_attested"]
                        .iter()
                        .map(|level| cell(&offered[*level]))
                        .collect::<Vec<_>>()
                        .join("/");
                    table.row(vec![
                        cell(&market["class"]),
                        cell(&market["best_bid"]),
                        cell(&market["best_ask"]),
                        cell(&market["best_interruptible_ask"]),
                        cell(&market["interruptible_gpus"]),
                        cell(&market["last_price"]),
                        cell(&market["volume_24h_gpu_hours"]),
                        cell(&market["free_gpus"]),
                        by_level,
                    ]);
                }
                print!("{}", table.render());
            }
        }
        Command::Book { class } => {
            let book = client(&cli, false)?.get(&format!("/api/v1/markets/{class}/book")).await?;
            if cli.json {
                print_json(&book);
            } else {
                print!("{}", render_ladder(&book));
            }
        }
        Command::Bid {
            class,
            gpus,
            hours,
            price,
            tif,
            env,
            wait,
            min_verification,
            min_uptime,
            restart,
            max_attempts,
            max_price,
            budget,
            interruptible,
            command,
        } => {
            let api = client(&cli, true)?;
            let env: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut job = json!({"command": command, "env": env});
            if !restart.is_empty() {
                let mut policy = json!({"on": restart});
                if let Some(n) = max_attempts {
                    policy["max_attempts"] = json!(n);
                }
                if let Some(p) = max_price {
                    policy["max_price"] = json!(p);
                }
                job["restart"] = policy;
            }
            if let Some(budget) = budget {
                job["budget"] = json!(budget);
            }
            let mut body = json!({
                "side": "bid", "gpus": gpus, "max_hours": hours, "price": price, "tif": tif, "job": job,
            });
            if let Some(level) = min_verification {
                body["min_verification"] = json!(level);
            }
            if let Some(uptime) = min_uptime {
                body["min_reliability"] = json!({"uptime_7d": uptime});
            }
            if *interruptible {
                body["priority"] = json!("interruptible");
            }
            let key = uuid::Uuid::now_v7().to_string();
            let order = api.post(&format!("/api/v1/markets/{class}/orders"), &body, Some(&key)).await?;
            if !cli.json {
                println!(
                    "bid {} placed: {} GPU(s) x {} h at <= {} per GPU-hour, escrow {}; status {}",
                    cell(&order["order_id"]),
                    gpus,
                    hours,
                    price,
                    cell(&order["escrow"]),
                    cell(&order["status"])
                );
            }
            if *wait {
                let job = wait_for_job(&api, &order).await?;
                if cli.json {
                    print_json(&json!({"order": order, "job": job}));
                } else {
                    println!(
                        "job {} is {} on host {}",
                        cell(&job["job_id"]),
                        cell(&job["state"]),
                        cell(&job["host_id"])
                    );
                }
            } else if cli.json {
                print_json(&order);
            }
        }
        Command::Ask { class, host, gpus, until, price, interruptible_price, tif } => {
            let api = client(&cli, true)?;
            let mut body = json!({"side": "ask", "host_id": host, "gpus": gpus, "available_until": until, "price": price, "tif": tif});
            if let Some(interruptible) = interruptible_price {
                body["interruptible_price"] = json!(interruptible);
            }
            let key = uuid::Uuid::now_v7().to_string();
            let order = api.post(&format!("/api/v1/markets/{class}/orders"), &body, Some(&key)).await?;
            if cli.json {
                print_json(&order);
            } else {
                println!(
                    "ask {} placed: {gpus} GPU(s) at {price}; status {}",
                    cell(&order["order_id"]),
                    cell(&order["status"])
                );
            }
        }
        Command::Orders { status } => {
            let orders = client(&cli, true)?.get(&format!("/api/v1/orders?status={status}")).await?;
            if cli.json {
                print_json(&orders);
            } else {
                print_table(
                    &orders,
                    &["order", "class", "side", "status", "gpus", "left", "price", "created"],
                    &["order_id", "class", "side", "status", "gpus", "gpus_remaining", "price", "created_at"],
                );
            }
        }
        Command::Cancel { order_id } => {
            let order = client(&cli, true)?.delete(&format!("/api/v1/orders/{order_id}")).await?;
            if cli.json {
                print_json(&order);
            } else {
                println!("order {order_id} {}", cell(&order["status"]));
            }
        }
        Command::Jobs => {
            let jobs = client(&cli, true)?.get("/api/v1/jobs").await?;
            if cli.json {
                print_json(&jobs);
            } else {
                print_table(
                    &jobs,
                    &["job", "state", "class", "gpus", "price", "cost", "escrow left", "exit"],
                    &["job_id", "state", "class", "gpus", "price", "cost_so_far", "escrow_left", "exit_code"],
                );
            }
        }
        Command::Job { job_id } => {
            let job = client(&cli, true)?.get(&format!("/api/v1/jobs/{job_id}")).await?;
            if cli.json {
                print_json(&job);
            } else {
                println!(
                    "job {}: {} (attempt {} {} on host {}), cost {}, escrow left {}, SLA credits {}",
                    cell(&job["job_id"]),
                    cell(&job["job_state"]),
                    cell(&job["attempt"]),
                    cell(&job["state"]),
                    cell(&job["host_id"]),
                    cell(&job["cost_so_far"]),
                    cell(&job["escrow_left"]),
                    cell(&job["sla_credits"])
                );
                if !job["end_reason"].is_null() {
                    println!("ended: {}", cell(&job["end_reason"]));
                }
                if !job["next_bid_id"].is_null() {
                    println!("next attempt's bid: {}", cell(&job["next_bid_id"]));
                }
                let attempts = json!({"items": job["attempts"]});
                print_table(
                    &attempts,
                    &[
                        "attempt",
                        "lease",
                        "host",
                        "state",
                        "started",
                        "ended",
                        "end reason",
                        "billed s",
                        "cost",
                        "sla credit",
                    ],
                    &[
                        "attempt",
                        "lease_id",
                        "host_id",
                        "state",
                        "started_at",
                        "ended_at",
                        "end_reason",
                        "billed",
                        "cost",
                        "sla_credit",
                    ],
                );
            }
        }
        Command::Logs { job_id, follow } => follow_logs(&client(&cli, true)?, job_id, *follow, cli.json).await?,
        Command::Hosts => {
            let hosts = client(&cli, true)?.get("/api/v1/hosts").await?;
            if cli.json {
                print_json(&hosts);
            } else {
                let mut table = Table::new(&["host", "name", "live", "gpus", "levels", "last report"]);
                for host in items(&hosts) {
                    let gpus = host["gpus"].as_array().cloned().unwrap_or_default();
                    let levels: Vec<String> = gpus.iter().map(|g| cell(&g["verification"]["level"])).collect();
                    let blocked = if host["challenge_blocked_at"].is_string() { " (blocked)" } else { "" };
                    table.row(vec![
                        cell(&host["host_id"]),
                        cell(&host["name"]),
                        cell(&host["live"]),
                        gpus.len().to_string(),
                        format!("{}{blocked}", levels.join(",")),
                        cell(&host["last_report_at"]),
                    ]);
                }
                print!("{}", table.render());
            }
        }
        Command::Verification { host_id } => {
            let view = client(&cli, false)?.get(&format!("/api/v1/hosts/{host_id}/verification")).await?;
            if cli.json {
                print_json(&view);
            } else {
                println!(
                    "backend {}   failed challenges in a row {}   blocked {}",
                    cell(&view["backend"]),
                    cell(&view["challenge_failures"]),
                    cell(&view["challenge_blocked_at"])
                );
                let mut gpus = Table::new(&["gpu", "class", "level", "challenged until", "cc attested until"]);
                for gpu in view["gpus"].as_array().into_iter().flatten() {
                    gpus.row(vec![
                        cell(&gpu["gpu_uuid"]),
                        cell(&gpu["class"]),
                        cell(&gpu["level"]),
                        cell(&gpu["challenged_until"]),
                        cell(&gpu["cc_attested_until"]),
                    ]);
                }
                print!("{}", gpus.render());
                let mut challenges = Table::new(&["challenge", "gpu", "reason", "n", "state", "failure", "issued"]);
                for c in view["challenges"].as_array().into_iter().flatten() {
                    challenges.row(vec![
                        cell(&c["challenge_id"]),
                        cell(&c["gpu_uuid"]),
                        cell(&c["reason"]),
                        cell(&c["n"]),
                        cell(&c["state"]),
                        cell(&c["failure_code"]),
                        cell(&c["issued_at"]),
                    ]);
                }
                print!("{}", challenges.render());
            }
        }
        Command::Operator { command } => operator(&cli, command).await?,
    }
    Ok(())
}

async fn operator(cli: &Cli, command: &OperatorCommand) -> CliResult<()> {
    let api = client(cli, true)?;
    match command {
        OperatorCommand::Mint { user, amount, key } => {
            let key = key.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            let minted =
                api.post("/api/v1/operator/mint", &json!({"user_id": user, "amount": amount}), Some(&key)).await?;
            if cli.json {
                print_json(&minted);
            } else {
                println!(
                    "minted {} credits to {user} (transfer {})",
                    cell(&minted["amount"]),
                    cell(&minted["transfer_id"])
                );
            }
        }
        OperatorCommand::Invariants => {
            let report = api.get("/api/v1/operator/invariants").await?;
            if cli.json {
                print_json(&report);
            } else {
                println!(
                    "ledger invariants: {} (total {}, {} accounts, {} violations)",
                    if report["ok"] == json!(true) { "ok" } else { "VIOLATED" },
                    cell(&report["total"]),
                    cell(&report["accounts_checked"]),
                    report["violations"].as_array().map(|v| v.len()).unwrap_or(0)
                );
            }
            if report["ok"] != json!(true) {
                return Err(CliError::Other(anyhow::anyhow!("ledger invariants are violated")));
            }
        }
        OperatorCommand::Users => {
            let users = api.get("/api/v1/operator/users").await?;
            if cli.json {
                print_json(&users);
            } else {
                print_table(
                    &users,
                    &["user", "email", "roles", "available", "held"],
                    &["user_id", "email", "roles", "available", "held"],
                );
            }
        }
    }
    Ok(())
}

/// The book as a ladder: asks above (best ask lowest), bids below.
fn render_ladder(book: &Value) -> String {
    let mut table = Table::new(&["side", "price", "gpus", "orders"]);
    let asks = book["asks"].as_array().cloned().unwrap_or_default();
    for level in asks.iter().rev() {
        table.row(vec!["ask".into(), cell(&level["price"]), cell(&level["gpus"]), cell(&level["orders"])]);
    }
    for level in book["bids"].as_array().cloned().unwrap_or_default() {
        table.row(vec!["bid".into(), cell(&level["price"]), cell(&level["gpus"]), cell(&level["orders"])]);
    }
    // The interruptible book: asks' idle GPUs at their interruptible price, and its bids.
    let interruptible_asks = book["interruptible_asks"].as_array().cloned().unwrap_or_default();
    for level in interruptible_asks.iter().rev() {
        table.row(vec!["ask (int.)".into(), cell(&level["price"]), cell(&level["gpus"]), cell(&level["orders"])]);
    }
    for level in book["interruptible_bids"].as_array().cloned().unwrap_or_default() {
        table.row(vec!["bid (int.)".into(), cell(&level["price"]), cell(&level["gpus"]), cell(&level["orders"])]);
    }
    table.render()
}

/// Polls the order until it trades, then the job until it runs; a spinner on stderr
/// shows it is alive when stderr is a terminal.
async fn wait_for_job(api: &Client, order: &Value) -> CliResult<Value> {
    let order_id = cell(&order["order_id"]);
    let spinner = ['|', '/', '-', '\\'];
    let interactive = std::io::stderr().is_terminal();
    let polls = WAIT_FOR_JOB_S * 1000 / POLL_INTERVAL.as_millis() as u64;
    for tick in 0..polls {
        let current = api.get(&format!("/api/v1/orders/{order_id}")).await?;
        let status = cell(&current["status"]);
        let lease = current["fills"].as_array().and_then(|f| f.first()).map(|f| cell(&f["lease_id"]));
        if let Some(lease_id) = lease {
            let job = api.get(&format!("/api/v1/jobs/{lease_id}")).await?;
            let state = cell(&job["state"]);
            if state != "pending" {
                if interactive {
                    eprintln!();
                }
                return Ok(job);
            }
            if interactive {
                eprint!("\r{} matched; waiting for the job to start ({state})   ", spinner[tick as usize % 4]);
            }
        } else if status == "cancelled" || status == "expired" {
            return Err(CliError::Other(anyhow::anyhow!("order {order_id} ended ({status}) without a trade")));
        } else if interactive {
            let reasons = current["unfilled_reasons"]
                .as_array()
                .map(|r| r.iter().map(|x| cell(&x["message"])).collect::<Vec<_>>().join("; "))
                .unwrap_or_default();
            eprint!("\r{} waiting for a match: {reasons}   ", spinner[tick as usize % 4]);
        }
        let _ = std::io::stderr().flush();
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Err(CliError::Other(anyhow::anyhow!("gave up waiting for order {order_id} after {WAIT_FOR_JOB_S} s")))
}

const FINAL_JOB_STATES: &[&str] = &["exited", "cancelled", "released", "host_lost", "max_duration", "failed"];

async fn follow_logs(api: &Client, job_id: &str, follow: bool, json_out: bool) -> CliResult<()> {
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/api/v1/jobs/{job_id}/logs?after={after}"),
            None => format!("/api/v1/jobs/{job_id}/logs"),
        };
        let page = api.get(&path).await?;
        for line in items(&page) {
            if json_out {
                println!("{line}");
            } else {
                print!("{}", line["text"].as_str().unwrap_or_default());
            }
        }
        let _ = std::io::stdout().flush();
        if let Some(next) = page.get("next_after").filter(|v| !v.is_null()) {
            after = Some(cell(next));
        }
        if !follow {
            return Ok(());
        }
        if items(&page).is_empty() {
            let job = api.get(&format!("/api/v1/jobs/{job_id}")).await?;
            if FINAL_JOB_STATES.contains(&cell(&job["state"]).as_str()) {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
