//! Configuration from flags and environment variables (each documented in the README).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "capex-server", about = "Capex compute-credit exchange server", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CAPEX_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Postgres connection string. Without it a private cluster is started under the data dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Where the private Postgres cluster (and other local state) lives.
    #[arg(long, env = "CAPEX_DATA_DIR", default_value = ".capex")]
    pub data_dir: PathBuf,

    /// HMAC secret for login tokens, at least 32 bytes. Required outside demo mode.
    #[arg(long, env = "CAPEX_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of a login token in seconds.
    #[arg(long, env = "CAPEX_JWT_TTL_S", default_value_t = 3600)]
    pub jwt_ttl_s: u64,

    /// Demo mode: generated secrets, seeded operator and funded demo users.
    #[arg(long, env = "CAPEX_DEMO", default_value_t = false)]
    pub demo: bool,

    /// Creates (or keeps) an operator account with this email at start.
    #[arg(long, env = "CAPEX_OPERATOR_EMAIL")]
    pub operator_email: Option<String>,

    /// Password of the operator created from CAPEX_OPERATOR_EMAIL.
    #[arg(long, env = "CAPEX_OPERATOR_PASSWORD", hide_env_values = true)]
    pub operator_password: Option<String>,

    /// Folder with the built web UI served at `/`.
    #[arg(long, env = "CAPEX_WEB_DIR", default_value = "web/dist")]
    pub web_dir: PathBuf,

    /// Log output format.
    #[arg(long, env = "CAPEX_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// URL other capex-server processes use to reach this one (market owners receive
    /// forwarded orders here). Default: http://<bound address>.
    #[arg(long, env = "CAPEX_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Largest number of Postgres connections the server opens.
    #[arg(long, env = "CAPEX_DB_POOL_MAX", default_value_t = 32)]
    pub db_pool_max: u32,

    /// Longest a bid may hold GPUs, in hours (bids' `max_hours` cap).
    #[arg(long, env = "CAPEX_MAX_HOURS", default_value_t = 168)]
    pub max_hours: u32,

    /// GPU classes that have a market even before any host registers such a GPU
    /// (comma-separated). A class is also known once some registered GPU has it.
    #[arg(
        long,
        env = "CAPEX_MARKET_CLASSES",
        value_delimiter = ',',
        default_value = "H100-80GB,H200-141GB,A100-80GB,A100-40GB,L40S-48GB,RTX4090-24GB"
    )]
    pub market_classes: Vec<String>,

    /// Most commands one matcher applies and commits in one Postgres transaction.
    #[arg(long, env = "CAPEX_MATCHER_BATCH_MAX", default_value_t = 512)]
    pub matcher_batch_max: usize,

    /// Commands waiting for a market's matcher before new orders are refused (503).
    #[arg(long, env = "CAPEX_MATCHER_QUEUE_MAX", default_value_t = 8192)]
    pub matcher_queue_max: usize,

    /// How often each matcher lets time pass in its book (expiring asks), in ms.
    #[arg(long, env = "CAPEX_MATCHER_TICK_MS", default_value_t = 1000)]
    pub matcher_tick_ms: u64,
    /// How often each matcher recomputes its ask hosts' 7-day uptime and regrades asks
    /// whose host fell below their grade, in seconds (each host costs a scan of its week
    /// of reports; see docs/reliability.md).
    #[arg(long, env = "CAPEX_UPTIME_REGRADE_S", default_value_t = 60)]
    pub uptime_regrade_s: u64,
    /// Clock-skew window in seconds: a report's `sent_at` (and an inventory's
    /// `created_at`) may differ from the server clock by at most this much.
    #[arg(long, env = "CAPEX_REPORT_SKEW_S", default_value_t = 120)]
    pub report_skew_s: u64,

    /// The operator's fee: this fraction of every billed amount goes to the fees account.
    #[arg(long, env = "CAPEX_FEE_RATE", default_value = "0.02")]
    pub fee_rate: rust_decimal::Decimal,

    /// SLA credit: this fraction of what a lease lost to a silent host had billed goes back
    /// to the buyer, from the provider's wallet as far as it covers.
    #[arg(long, env = "CAPEX_SLA_CREDIT_RATE", default_value = "0.1")]
    pub sla_credit_rate: rust_decimal::Decimal,

    /// Notice an interruptible job gets when an on-demand buyer takes its GPUs: seconds
    /// between SIGTERM and SIGKILL (not billed).
    #[arg(long, env = "CAPEX_PREEMPT_GRACE_S", default_value_t = 30)]
    pub preempt_grace_s: u64,

    /// How often the sweeper closes leases past their max end or on silent hosts, in ms.
    #[arg(long, env = "CAPEX_SWEEP_MS", default_value_t = 1000)]
    pub sweep_ms: u64,

    /// Accept hosts whose GPUs come from the agent's simulated backend outside demo mode
    /// (they trade at level `simulated`, and are never challenged outside demo mode).
    #[arg(long, env = "CAPEX_ALLOW_SIMULATED", default_value_t = false)]
    pub allow_simulated: bool,

    /// Issue proof-of-compute challenges (at registration, at random times, on demand).
    #[arg(long, env = "CAPEX_CHALLENGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub challenges: bool,

    /// How long a passed challenge keeps a GPU at level `challenged`, in hours.
    #[arg(long, env = "CAPEX_CHALLENGE_VALID_H", default_value_t = 24)]
    pub challenge_valid_h: u32,

    /// Mean time between a host's scheduled challenges, in hours (exponentially
    /// distributed, so a host cannot predict the next one).
    #[arg(long, env = "CAPEX_CHALLENGE_MEAN_INTERVAL_H", default_value = "6")]
    pub challenge_mean_interval_h: rust_decimal::Decimal,

    /// Failed challenges in a row after which a host may not place asks until an
    /// operator clears it.
    #[arg(long, env = "CAPEX_CHALLENGE_FAILURES_MAX", default_value_t = 3)]
    pub challenge_failures_max: u32,

    /// Ask NVML-backed hosts for confidential-computing evidence at registration.
    #[arg(long, env = "CAPEX_ATTESTATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub attestations: bool,

    /// How long verified CC evidence keeps a GPU at level `cc_attested`, in hours.
    #[arg(long, env = "CAPEX_ATTESTATION_VALID_H", default_value_t = 24)]
    pub attestation_valid_h: u32,

    /// PEM file of the trusted root(s) of NVIDIA's device identity chain. Default: the
    /// root shipped with the server.
    #[arg(long, env = "CAPEX_CC_ROOT_PEM")]
    pub cc_root_pem: Option<PathBuf>,

    /// Folder of reference measurement values; without it evidence is recorded with
    /// "measurements not checked".
    #[arg(long, env = "CAPEX_CC_RIM_DIR")]
    pub cc_rim_dir: Option<PathBuf>,
}

/// Shortest JWT secret accepted: HS256 wants a key at least as long as its hash.
pub const JWT_SECRET_BYTES_MIN: usize = 32;

impl Config {
    /// A configuration for in-process tests: demo secrets off, a fixed test secret.
    pub fn for_tests() -> Config {
        Config {
            bind: "127.0.0.1:0".parse().expect("valid address"),
            database_url: None,
            data_dir: PathBuf::from(".capex"),
            jwt_secret: Some("test-secret-test-secret-test-secret!".into()),
            jwt_ttl_s: 3600,
            demo: false,
            operator_email: None,
            operator_password: None,
            web_dir: PathBuf::from("web/dist"),
            log_format: LogFormat::Pretty,
            db_pool_max: 8,
            advertise_url: None,
            max_hours: 168,
            market_classes: vec!["H100-80GB".into(), "A100-80GB".into(), "RTX4090-24GB".into()],
            matcher_batch_max: 512,
            matcher_queue_max: 8192,
            matcher_tick_ms: 200,
            uptime_regrade_s: 1,
            report_skew_s: 120,
            fee_rate: rust_decimal::Decimal::new(2, 2),
            sla_credit_rate: rust_decimal::Decimal::new(1, 1),
            preempt_grace_s: 30,
            sweep_ms: 200,
            allow_simulated: false,
            // API tests that are not about verification register hosts and sell at once;
            // the verification tests turn these on.
            challenges: false,
            challenge_valid_h: 24,
            challenge_mean_interval_h: rust_decimal::Decimal::new(6, 0),
            challenge_failures_max: 3,
            attestations: false,
            attestation_valid_h: 24,
            cc_root_pem: None,
            cc_rim_dir: None,
        }
    }
}
