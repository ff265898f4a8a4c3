//! Keeps the demo market alive: demo providers offer their hosts' idle GPUs, demo buyers
//! bid for them with short jobs, and stale bids are cancelled. Talks to the exchange only
//! through its public HTTP API, like any other client.
//!
//! Buyers bid only in markets where some ask offers GPUs (a bid where there is no supply
//! would rest forever and make the demo look dead), and a market whose tape has been
//! quiet for [`QUIET_TAPE_S`] seconds gets a bid that lifts its best ask, sized to fit that ask: so
//! every market with supply trades in the first rounds after start and keeps trading.

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
    #[arg(long, default_value_t = 2)]
    round_s: u64,
    /// Stop after this many rounds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    rounds: u64,
}

/// Unfilled bids older than this are cancelled so the book keeps moving.
const BID_PATIENCE: Duration = Duration::from_secs(60);
/// A market whose last trade is older than this gets a bid that crosses its best ask.
const QUIET_TAPE_S: i64 = 10;
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
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
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

/// Logs every account in at once (each login is a password hash on the server; one after
/// another they delayed the first round by seconds).
async fn login_all(args: &Args, emails: &[String]) -> Vec<Session> {
    let logins = emails.iter().map(|email| {
        let (base, password) = (args.exchange.clone(), args.password.clone());
        let email = email.clone();
        tokio::spawn(async move { (Session::login(&base, &email, &password).await, email) })
    });
    let mut sessions = Vec::new();
    for login in logins.collect::<Vec<_>>() {
        match login.await {
            Ok((Ok(session), _)) => sessions.push(session),
            Ok((Err(err), email)) => eprintln!("demo-trader: cannot log in as {email}: {err}"),
            Err(err) => eprintln!("demo-trader: login task: {err}"),
        }
    }
    sessions
}

/// Providers offer every idle GPU of their live hosts (not offered, leased, challenged or
/// running a foreign process: the host view's `state`).
async fn offer(provider: &Session, dice: &mut Dice) -> anyhow::Result<()> {
    let hosts = provider.get("/api/v1/hosts").await?;
    let until = (chrono::Utc::now() + chrono::Duration::hours(ASK_WINDOW_HOURS)).to_rfc3339();
    for host in hosts["items"].as_array().into_iter().flatten() {
        if host["live"] != json!(true) {
            continue;
        }
        let mut free_by_class: HashMap<String, u64> = HashMap::new();
        for gpu in host["gpus"].as_array().into_iter().flatten() {
            let idle = match gpu["state"].as_str() {
                Some(state) => state == "idle",
                None => gpu["busy"] != json!(true),
            };
            if idle {
                *free_by_class.entry(gpu["class"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            }
        }
        for (class, free) in free_by_class {
            let price = dice.price_near(reference_price(&class));
            // Idle GPUs also sell for interruptible use at 60 % of the price.
            let interruptible = (price * Decimal::new(6, 1)).round_dp(2).max(Decimal::new(1, 2));
            let body = json!({"side": "ask", "host_id": host["host_id"], "gpus": free, "available_until": until,
                "price": price.to_string(), "interruptible_price": interruptible.to_string(), "tif": "gtc"});
            // Refusals (GPUs already bound to an ask, host gone) are normal in a live market.
            let _ = provider.post(&format!("/api/v1/markets/{class}/orders"), &body).await;
        }
    }
    Ok(())
}

/// A market where some ask offers GPUs: its best ask and whether its tape is quiet.
struct Supplied {
    class: String,
    best_ask: Decimal,
    /// GPUs of the best ask (a bid is never split, so a crossing bid wants at most this).
    best_ask_gpus: u64,
    /// The cheapest interruptible price of an ask with idle GPUs.
    best_interruptible_ask: Option<Decimal>,
    quiet: bool,
}

/// The markets with supply now, from the public market data.
async fn supplied_markets(session: &Session) -> anyhow::Result<Vec<Supplied>> {
    let markets = session.get("/api/v1/markets").await?;
    let mut out = Vec::new();
    for market in markets["items"].as_array().into_iter().flatten() {
        let offered: i64 = market["offered_gpus_by_level"]
            .as_object()
            .map(|levels| levels.values().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        let Some(class) = market["class"].as_str().filter(|_| offered > 0) else { continue };
        let top = session.get(&format!("/api/v1/markets/{class}/top")).await?;
        let Some(ask) = top["asks"].as_array().and_then(|asks| asks.first()) else { continue };
        let Some(best_ask) = ask["price"].as_str().and_then(|p| p.parse::<Decimal>().ok()) else { continue };
        let trades = session.get(&format!("/api/v1/markets/{class}/trades?limit=1")).await?;
        let last_at = trades["items"][0]["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let quiet = last_at.is_none_or(|at| chrono::Utc::now().signed_duration_since(at).num_seconds() > QUIET_TAPE_S);
        out.push(Supplied {
            class: class.to_string(),
            best_ask,
            best_ask_gpus: ask["gpus"].as_u64().unwrap_or(1),
            best_interruptible_ask: market["best_interruptible_ask"].as_str().and_then(|p| p.parse().ok()),
            quiet,
        });
    }
    Ok(out)
}

/// One bid in a supplied market, with a short job: one that lifts the best ask (always
/// when the tape is quiet, else one time in three), or one resting a little below it.
async fn bid(buyer: &Session, market: &Supplied, dice: &mut Dice) -> anyhow::Result<()> {
    let class = &market.class;
    // One bid in four is interruptible, at the best interruptible price: the demo shows
    // cheap jobs that on-demand bids preempt.
    if let Some(interruptible) = market.best_interruptible_ask.filter(|_| !market.quiet && dice.below(4) == 0) {
        let script = "trap 'echo preempted: checkpointing; exit 0' TERM; echo \"interruptible job on GPUs $CUDA_VISIBLE_DEVICES\"; for i in $(seq 1 30); do echo \"step $i\"; sleep 2; done";
        let body = json!({
            "side": "bid", "gpus": 1, "max_hours": "0.05", "price": interruptible.to_string(), "tif": "ioc",
            "priority": "interruptible", "job": {"command": ["sh", "-c", script], "env": {"DEMO": "1"}},
        });
        buyer.post(&format!("/api/v1/markets/{class}/orders"), &body).await?;
        return Ok(());
    }
    let crossing = market.quiet || dice.below(3) == 0;
    let (gpus, price) = if crossing {
        (1 + dice.below(market.best_ask_gpus.clamp(1, 2)), market.best_ask)
    } else {
        // 1 % to 8 % below the best ask: depth on the bid side, no trade yet.
        let below = Decimal::new(1 + dice.below(8) as i64, 2);
        (1 + dice.below(2), (market.best_ask * (Decimal::ONE - below)).round_dp(2).max(Decimal::new(1, 2)))
    };
    let steps = 3 + dice.below(6);
    let script = format!(
        "echo \"job on GPUs $CUDA_VISIBLE_DEVICES\"; for i in $(seq 1 {steps}); do echo \"step $i/{steps}: loss $((100 / i))\"; sleep 2; done; echo done"
    );
    let body = json!({
        "side": "bid", "gpus": gpus, "max_hours": "0.05", "price": price.to_string(),
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
        if let Some(first) = buyers.first() {
            match supplied_markets(first).await {
                Ok(markets) => {
                    for market in &markets {
                        // A quiet market always gets a bid; a lively one two rounds in three.
                        if !market.quiet && dice.below(3) == 0 {
                            continue;
                        }
                        let buyer = &buyers[dice.below(buyers.len() as u64) as usize];
                        if let Err(err) = bid(buyer, market, &mut dice).await {
                            eprintln!("demo-trader: bid in {}: {err}", market.class);
                        }
                    }
                }
                Err(err) => eprintln!("demo-trader: markets: {err}"),
            }
        }
        for buyer in &buyers {
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
