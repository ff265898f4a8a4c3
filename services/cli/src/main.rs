//! `capex`: the exchange from a terminal. Every read command takes `--json` for scripts;
//! errors print the API's code and field and exit non-zero (see `client::CliError`).

mod client;
mod commands;
mod credentials;
mod table;

use clap::{Args, Parser, Subcommand};

use crate::client::CliError;

#[derive(Debug, Parser)]
#[command(name = "capex", version, about = "Capex GPU exchange command line")]
pub(crate) struct Cli {
    /// Exchange base URL (default: the one saved by `capex login`, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "CAPEX_EXCHANGE")]
    pub(crate) exchange: Option<String>,
    /// API key or token to use instead of the saved login.
    #[arg(long, global = true, env = "CAPEX_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create an account (buyer and/or provider).
    Register {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Roles: buyer, provider (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_value = "buyer")]
        role: Vec<String>,
    },
    /// Log in and save the token (0600) for later commands.
    Login {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Show who is logged in.
    Whoami,
    /// Create an API key for scripts and agents (shown once).
    ApiKey {
        /// A label to recognise the key by.
        #[arg(long)]
        name: String,
    },
    /// My API keys (names and prefixes; the keys themselves are shown only when created).
    ApiKeys,
    /// Revoke one of my API keys: it stops working at once.
    RevokeApiKey { api_key_id: String },
    /// Available and held credits.
    Wallet,
    /// Ledger history of my accounts, newest first.
    Ledger {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Send credits to another user.
    Transfer {
        /// The receiving user's id.
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// Every market with best bid/ask, last price and volume.
    Markets,
    /// The order ladder of one market.
    Book { class: String },
    /// Bid for GPUs: `capex bid H100-80GB --gpus 2 --hours 1 --price 2.5 -- python train.py`.
    Bid {
        class: String,
        #[arg(long)]
        gpus: u32,
        #[arg(long)]
        hours: String,
        /// Limit price in credits per GPU-hour.
        #[arg(long)]
        price: String,
        /// gtc (rest until cancelled) or ioc (fill now or never).
        #[arg(long, default_value = "gtc")]
        tif: String,
        /// Environment for the job, KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Wait until the job starts (or the order ends), showing progress.
        #[arg(long)]
        wait: bool,
        /// Trade only with GPUs the exchange verified at least this far: reported,
        /// challenged or cc_attested.
        #[arg(long)]
        min_verification: Option<String>,
        /// Trade only with hosts whose attested uptime over the last 7 days is at least
        /// this fraction, 0 to 1 with at most 6 decimals (e.g. 0.99), as
        /// `GET /api/v1/hosts/{id}/reliability` computes it.
        #[arg(long)]
        min_uptime: Option<String>,
        /// Managed job: restart it when an attempt ends for this reason (host_lost, failed
        /// or preempted; repeatable or comma-separated).
        #[arg(long, value_delimiter = ',')]
        restart: Vec<String>,
        /// Attempts in all, the first included (with --restart; default 3).
        #[arg(long, requires = "restart")]
        max_attempts: Option<u32>,
        /// Limit price of the restart bids (with --restart; default: --price).
        #[arg(long, requires = "restart")]
        max_price: Option<String>,
        /// Credits the job may spend on child bids it places itself.
        #[arg(long)]
        budget: Option<String>,
        /// Interruptible: trade at asks' (lower) interruptible prices; the job is sent
        /// SIGTERM, and killed after the exchange's grace, when an on-demand buyer takes
        /// its GPUs.
        #[arg(long)]
        interruptible: bool,
        /// The job's command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Offer GPUs of one of my hosts.
    Ask {
        class: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        gpus: u32,
        /// RFC 3339 time until which the GPUs are offered.
        #[arg(long)]
        until: String,
        #[arg(long)]
        price: String,
        /// Also sell the idle GPUs for interruptible use at this price (below --price);
        /// they stay offered on demand and are preempted, with notice, when sold so.
        #[arg(long)]
        interruptible_price: Option<String>,
        #[arg(long, default_value = "gtc")]
        tif: String,
    },
    /// My orders.
    Orders {
        /// open or all
        #[arg(long, default_value = "open")]
        status: String,
    },
    /// Cancel one of my orders.
    Cancel { order_id: String },
    /// My jobs.
    Jobs,
    /// One job: its state, attempts and SLA credits (a job id or a lease id).
    Job { job_id: String },
    /// A job's output.
    Logs {
        job_id: String,
        /// Keep printing new output until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// My hosts.
    Hosts,
    /// What the exchange checked about a host's GPUs: levels, challenges, CC evidence.
    Verification { host_id: String },
    /// Operator commands.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Mint credits into a user's wallet.
    Mint {
        #[arg(long)]
        user: String,
        #[arg(long)]
        amount: String,
        /// Idempotency key; a retry with the same key mints once (default: a new random key).
        #[arg(long)]
        key: Option<String>,
    },
    /// Check the ledger's invariants.
    Invariants,
    /// Users with their balances.
    Users,
}

#[derive(Debug, Args)]
pub(crate) struct PasswordArgs {
    /// Password (visible in the process list; prefer --password-stdin or CAPEX_PASSWORD).
    #[arg(long, env = "CAPEX_PASSWORD", hide_env_values = true, conflicts_with = "password_stdin")]
    pub(crate) password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))?;
    if key.is_empty() {
        return Err("empty variable name".into());
    }
    Ok((key.to_string(), value.to_string()))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(()) => {}
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(err.exit_code());
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError::Other(err.into())
    }
}
