//! Keeps the demo market alive: demo providers offer their hosts' free GPUs, demo buyers
//! bid for them with short jobs, and stale bids are cancelled. Talks to the exchange only
//! through its public HTTP API, like any other client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use rust_decimal::Decimal;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "capex-demo-trader", about = "Places realistic demo bids and asks")]
struct Args {
    #[arg(long, env = "CAPEX_EXCHANGE", default_value = "http://127.0.0.1:8080")]
    exchange: String,
    #[arg(long, env = "CAPEX_DEMO_PASSWORD", default_value = "capex-demo")]
    password: String,
    #[arg(long, value_delimiter = ',', default_value = "alice@capex.demo,bob@capex.demo")]
    buyers: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "carol@capex.demo,dave@capex.demo,erin@capex.demo")]
    providers: Vec<String>,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 4)]
    round_s: u64,
    /// Stop after this many rounds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    rounds: u64,
}

/// Unfilled bids older than this are cancelled so the book keeps moving.
const BID_PATIENCE: Duration = Duration::from_secs(90);
/// Asks offer GPUs for this long.
const ASK_WINDOW_HOURS: i64 = 2;

/// A typical price per GPU-hour for a class, so demo prices look like a real market.
fn reference_price(class: &str) -> Decimal {
    let cents: i64 = match class {
        c if c.starts_with("H200") => 380,
        c if c.starts_with("H100") => 250,
        c if c.starts_with("A100-80") => 180,
        c if c.starts_with("A100") => 120,
        c if c.starts_with("L40S") => 95,
        c if c.starts_with("RTX4090") => 45,
        c if c.starts_with("RTX3090") => 25,
        c if c.starts_with("L4") => 35,
        _ => 100,
    };
    Decimal::new(cents, 2)
}

/// splitmix64: enough randomness for prices and sizes, no dependency.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// The reference price moved by -8 % .. +8 %, in cents of a percent.
    fn price_near(&mut self, reference: Decimal) -> Decimal {
        let basis_points = self.below(1601) as i64 - 800;
        (reference * (Decimal::ONE + Decimal::new(basis_points, 4))).round_dp(2)
    }
}

struct Session {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Session {
    async fn login(base: &str, email: &str, password: &str) -> anyhow::Result<Session> {
        let http = reqwest::Client::new();
        let res = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        let body: Value = res.error_for_status()?.json().await?;
        let token = body["token"].as_str().ok_or_else(|| anyhow::anyhow!("no token"))?.to_string();
        Ok(Session { http, base: base.to_string(), token })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        Ok(res.error_for_status()?.json().await?)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
            .json(body)
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{} {}", body["code"].as_str().unwrap_or("error"), body["detail"].as_str().unwrap_or(""));
        }
        Ok(body)
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.http.delete(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?.error_for_status()?;
        Ok(())
    }
}

async fn login_all(args: &Args, emails: &[String]) -> Vec<Session> {
    let mut sessions = Vec::new();
    for email in emails {
        match Session::login(&args.exchange, email, &args.password).await {
            Ok(session) => sessions.push(session),
            Err(err) => eprintln!("demo-trader: cannot log in as {email}: {err}"),
        }
    }
    sessions
}

/// Providers offer every free GPU of their live hosts.
async fn offer(provider: &Session, dice: &mut Dice) -> anyhow::Result<()> {
    let hosts = provider.get("/api/v1/hosts").await?;
    let until = (chrono::Utc::now() + chrono::Duration::hours(ASK_WINDOW_HOURS)).to_rfc3339();
    for host in hosts["items"].as_array().into_iter().flatten() {
        if host["live"] != json!(true) {
            continue;
        }
        let mut free_by_class: HashMap<String, u64> = HashMap::new();
        for gpu in host["gpus"].as_array().into_iter().flatten() {
            if gpu["busy"] != json!(true) {
                *free_by_class.entry(gpu["class"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            }
        }
        for (class, free) in free_by_class {
            let price = dice.price_near(reference_price(&class));
            let body = json!({"side": "ask", "host_id": host["host_id"], "gpus": free, "available_until": until,
                "price": price.to_string(), "tif": "gtc"});
            // Refusals (GPUs already bound to an ask, host gone) are normal in a live market.
            let _ = provider.post(&format!("/api/v1/markets/{class}/orders"), &body).await;
        }
    }
    Ok(())
}

/// Buyers bid for one or two GPUs in a random market, with a short job.
async fn bid(buyer: &Session, dice: &mut Dice) -> anyhow::Result<()> {
    let markets = buyer.get("/api/v1/markets").await?;
    let classes: Vec<String> = markets["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["class"].as_str().map(str::to_string))
        .collect();
    if classes.is_empty() {
        return Ok(());
    }
    let class = &classes[dice.below(classes.len() as u64) as usize];
    let gpus = 1 + dice.below(2);
    let steps = 3 + dice.below(6);
    let script = format!(
        "echo \"job on GPUs $CUDA_VISIBLE_DEVICES\"; for i in $(seq 1 {steps}); do echo \"step $i/{steps}: loss $((100 / i))\"; sleep 2; done; echo done"
    );
    let body = json!({
        "side": "bid", "gpus": gpus, "max_hours": "0.05", "price": dice.price_near(reference_price(class)).to_string(),
        "tif": "gtc", "job": {"command": ["sh", "-c", script], "env": {"DEMO": "1"}},
    });
    buyer.post(&format!("/api/v1/markets/{class}/orders"), &body).await?;
    Ok(())
}

async fn cancel_stale(buyer: &Session, placed: &mut HashMap<String, Instant>) -> anyhow::Result<()> {
    let orders = buyer.get("/api/v1/orders?status=open").await?;
    for order in orders["items"].as_array().into_iter().flatten() {
        if order["side"] != json!("bid") {
            continue;
        }
        let id = order["order_id"].as_str().unwrap_or_default().to_string();
        let first_seen = *placed.entry(id.clone()).or_insert_with(Instant::now);
        if first_seen.elapsed() > BID_PATIENCE {
            buyer.delete(&format!("/api/v1/orders/{id}")).await?;
            placed.remove(&id);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let buyers = login_all(&args, &args.buyers).await;
    let providers = login_all(&args, &args.providers).await;
    let mut dice = Dice(std::process::id() as u64 ^ 0x5EED);
    let mut placed: HashMap<String, Instant> = HashMap::new();
    println!("demo-trader: {} buyers, {} providers trading on {}", buyers.len(), providers.len(), args.exchange);
    let mut round = 0u64;
    loop {
        round += 1;
        for provider in &providers {
            if let Err(err) = offer(provider, &mut dice).await {
                eprintln!("demo-trader: offer: {err}");
            }
        }
        for buyer in &buyers {
            if dice.below(3) > 0
                && let Err(err) = bid(buyer, &mut dice).await
            {
                eprintln!("demo-trader: bid: {err}");
            }
            if let Err(err) = cancel_stale(buyer, &mut placed).await {
                eprintln!("demo-trader: cancel: {err}");
            }
        }
        if args.rounds > 0 && round >= args.rounds {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.round_s)).await;
    }
}
