//! capex-loadgen: places orders over HTTP from many concurrent clients and prints the
//! acknowledged orders per second and the p50/p99 latency of placing one.
//!
//! Usage: capex-loadgen --url http://127.0.0.1:8080 --database-url postgres://... \
//!            [--clients 16] [--seconds 20] [--markets 1]
//! `--markets N` spreads the clients over N markets (client i trades in market i mod N),
//! each with its own matcher; 1 puts all the load on one book.
//! The operator account (CAPEX_OPERATOR_EMAIL/PASSWORD of the server, or --operator-email
//! and --operator-password) funds the clients; each client gets a fixture host (written to
//! the database, as host registration is not in this branch yet) for its asks.
//! Mix per client: 75% GTC bids, 10% asks, 15% cancels of its own open orders; prices
//! overlap a little so some orders trade.

use std::time::{Duration, Instant};

use anyhow::Context;
use capex_e2e::market::{Api, OPERATOR_EMAIL, OPERATOR_PASSWORD, ask_body, bid_body, live_host};

struct Args {
    url: String,
    database_url: String,
    clients: usize,
    seconds: u64,
    markets: usize,
    operator_email: String,
    operator_password: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: "http://127.0.0.1:8080".into(),
        database_url: capex_e2e::admin_database_url(),
        clients: 16,
        seconds: 20,
        markets: 1,
        operator_email: OPERATOR_EMAIL.into(),
        operator_password: OPERATOR_PASSWORD.into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => args.url = value,
            "--database-url" => args.database_url = value,
            "--clients" => args.clients = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--markets" => args.markets = value.parse::<usize>()?.clamp(1, MARKET_CLASSES.len()),
            "--operator-email" => args.operator_email = value,
            "--operator-password" => args.operator_password = value,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Markets the load spreads over, in order (all known to a default server configuration).
const MARKET_CLASSES: [&str; 6] = ["H100-80GB", "H200-141GB", "A100-80GB", "A100-40GB", "L40S-48GB", "RTX4090-24GB"];

/// xorshift: enough randomness for a load mix, no dependency.
fn next(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let api = Api::new(&args.url);
    let pool = sqlx::PgPool::connect(&args.database_url).await?;
    let operator = api.login(&args.operator_email, &args.operator_password).await?;
    let mut clients = Vec::new();
    for index in 0..args.clients {
        let class = MARKET_CLASSES[index % args.markets];
        let user = api.funded_user(&operator, "100000000").await?;
        let host = live_host(&pool, user.user_id, class, 64).await?;
        clients.push((user, host, class));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (index, (user, host, class)) in clients.into_iter().enumerate() {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (index as u64 + 1);
            let mut latencies_us: Vec<u64> = Vec::new();
            let mut refused = 0_u64;
            let mut cancels = 0_u64;
            let mut open: Vec<String> = Vec::new();
            while Instant::now() < deadline {
                let roll = next(&mut state, 100);
                if roll < 15 && !open.is_empty() {
                    let id = open.swap_remove(next(&mut state, open.len() as u64) as usize);
                    if api.cancel(&user, &id).await.is_ok() {
                        cancels += 1;
                    }
                    continue;
                }
                let body = if roll < 25 {
                    ask_body(host, 1 + next(&mut state, 2) as u32, &format!("2.{:02}", next(&mut state, 100)), "gtc")
                } else {
                    let price = format!("1.{:02}", 50 + next(&mut state, 52));
                    bid_body(1 + next(&mut state, 2) as u32, "1", &price, "gtc")
                };
                let sent = Instant::now();
                match api.place(&user, class, &body).await {
                    Ok((201, view)) => {
                        latencies_us.push(sent.elapsed().as_micros() as u64);
                        if view["status"] == "open"
                            && let Some(id) = view["order_id"].as_str()
                        {
                            open.push(id.to_string());
                        }
                    }
                    _ => refused += 1,
                }
            }
            (latencies_us, refused, cancels)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut refused = 0;
    let mut cancels = 0;
    for task in tasks {
        let (l, r, c) = task.await?;
        latencies_us.extend(l);
        refused += r;
        cancels += c;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((latencies_us.len() as f64 - 1.0) * p).round() as usize;
        latencies_us[i] as f64 / 1000.0
    };
    let trades: i64 = sqlx::query_scalar("select count(*) from trades").fetch_one(&pool).await?;
    println!(
        "loadgen: clients={} markets={} seconds={:.1} acknowledged_orders={} orders_per_s={:.0} p50_ms={:.2} p99_ms={:.2} \
         refused={} cancels={} trades_total={}",
        args.clients,
        args.markets,
        elapsed_s,
        latencies_us.len(),
        latencies_us.len() as f64 / elapsed_s,
        pct(0.50),
        pct(0.99),
        refused,
        cancels,
        trades
    );
    Ok(())
}
