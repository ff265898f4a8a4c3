//! Agent configuration: a TOML file, overridden by environment variables, overridden by
//! flags. Every setting has a safe default.
//!
//! | key (TOML)           | env                        | flag              | default                |
//! |----------------------|----------------------------|-------------------|------------------------|
//! | (file itself)        | CAPEX_AGENT_CONFIG         | --config          | /etc/capex/agent.toml if present |
//! | state_dir            | CAPEX_AGENT_STATE_DIR      | --state-dir       | /var/lib/capex-agent   |
//! | exchange_url         | CAPEX_AGENT_EXCHANGE       | --exchange        | (from `register`)      |
//! | interval_s           | CAPEX_AGENT_INTERVAL_S     | --interval-s      | 10                     |
//! | backend              | CAPEX_AGENT_BACKEND        | --backend         | auto                   |
//! | simulated_gpus       | CAPEX_AGENT_SIM_GPUS (a,b) | --sim-gpus        | ["RTX4090"]            |
//! | name                 | CAPEX_AGENT_NAME           | --name            | the hostname           |
//! | request_timeout_s    | CAPEX_AGENT_REQUEST_TIMEOUT_S | --request-timeout-s | 10              |
//! | spool_reports_max    | CAPEX_AGENT_SPOOL_MAX      | --spool-max       | 100000                 |
//! | backoff_max_s        | CAPEX_AGENT_BACKOFF_MAX_S  | --backoff-max-s   | 30                     |
//! | log_format           | CAPEX_AGENT_LOG_FORMAT     | --log-format      | pretty                 |
//! | (register only)      | CAPEX_AGENT_API_KEY        | --api-key         | none                   |
//! | (test only, hidden)  | CAPEX_AGENT_CHALLENGE_FAULT | --challenge-fault (corrupt-row, late) | none |

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::challenge::ChallengeFault;
use crate::gpu::BackendKind;
use crate::spool::SPOOL_REPORTS_MAX;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/capex/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/capex-agent";
pub const DEFAULT_INTERVAL_S: u32 = 10;
pub const DEFAULT_REQUEST_TIMEOUT_S: u64 = 10;
pub const DEFAULT_BACKOFF_MAX_S: u64 = 30;
pub const DEFAULT_KILL_GRACE_S: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub exchange_url: Option<String>,
    pub interval_s: Option<u32>,
    pub backend: Option<BackendKind>,
    pub simulated_gpus: Option<Vec<String>>,
    pub name: Option<String>,
    pub request_timeout_s: Option<u64>,
    pub spool_reports_max: Option<usize>,
    pub backoff_max_s: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub process_runtime: Option<bool>,
    pub kill_grace_s: Option<u64>,
}

/// Settings given as flags or environment variables (clap reads both; flags win).
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, global = true, env = "CAPEX_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the host key, host id, sequence and spool live.
    #[arg(long, global = true, env = "CAPEX_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// GPU backend.
    #[arg(long, global = true, env = "CAPEX_AGENT_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// Simulated GPU models, comma separated (H100, H200, A100, A100-80GB, L40S, L4, A10, RTX4090, RTX3090).
    #[arg(long, global = true, env = "CAPEX_AGENT_SIM_GPUS", value_delimiter = ',')]
    pub sim_gpus: Option<Vec<String>>,
    /// Seconds between reports.
    #[arg(long, global = true, env = "CAPEX_AGENT_INTERVAL_S")]
    pub interval_s: Option<u32>,
    /// Host name shown on the exchange.
    #[arg(long, global = true, env = "CAPEX_AGENT_NAME")]
    pub name: Option<String>,
    /// Timeout of one HTTP request to the exchange, in seconds.
    #[arg(long, global = true, env = "CAPEX_AGENT_REQUEST_TIMEOUT_S")]
    pub request_timeout_s: Option<u64>,
    /// Most reports kept in the spool.
    #[arg(long, global = true, env = "CAPEX_AGENT_SPOOL_MAX")]
    pub spool_max: Option<usize>,
    /// Longest wait between retries, in seconds.
    #[arg(long, global = true, env = "CAPEX_AGENT_BACKOFF_MAX_S")]
    pub backoff_max_s: Option<u64>,
    /// Log output format.
    #[arg(long, global = true, env = "CAPEX_AGENT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Allow jobs to run as plain processes (CUDA_VISIBLE_DEVICES = the leased GPUs) when
    /// the bid names no image. Off by default: without it jobs need Docker.
    #[arg(long, global = true, env = "CAPEX_AGENT_PROCESS_RUNTIME")]
    pub process_runtime: Option<bool>,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, global = true, env = "CAPEX_AGENT_KILL_GRACE_S")]
    pub kill_grace_s: Option<u64>,
    /// Test only: answer proof-of-compute challenges wrongly (`corrupt-row`) or late (`late`).
    #[arg(long, global = true, hide = true, env = "CAPEX_AGENT_CHALLENGE_FAULT", value_enum)]
    pub challenge_fault: Option<ChallengeFault>,
}

/// The merged configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    /// From the file only here; `register`/`run` also take `--exchange`.
    pub exchange_url: Option<String>,
    pub interval_s: u32,
    pub backend: BackendKind,
    pub simulated_gpus: Vec<String>,
    pub name: String,
    pub request_timeout_s: u64,
    pub spool_reports_max: usize,
    pub backoff_max_s: u64,
    pub log_format: LogFormat,
    /// Jobs without an image may run as plain processes.
    pub process_runtime: bool,
    pub kill_grace_s: u64,
    /// Test only (flag or env, never the file): see [`ChallengeFault`].
    pub challenge_fault: Option<ChallengeFault>,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "capex-host".to_string())
}

impl AgentConfig {
    pub fn load(overrides: &Overrides) -> anyhow::Result<AgentConfig> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => read_file(Path::new(DEFAULT_CONFIG_PATH))?,
            None => FileConfig::default(),
        };
        let interval_s = overrides.interval_s.or(file.interval_s).unwrap_or(DEFAULT_INTERVAL_S);
        anyhow::ensure!((1..=3600).contains(&interval_s), "interval_s must be 1 to 3600 seconds");
        Ok(AgentConfig {
            state_dir: overrides.state_dir.clone().or(file.state_dir).unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            exchange_url: file.exchange_url,
            interval_s,
            backend: overrides.backend.or(file.backend).unwrap_or(BackendKind::Auto),
            simulated_gpus: overrides.sim_gpus.clone().or(file.simulated_gpus).unwrap_or_default(),
            name: overrides.name.clone().or(file.name).unwrap_or_else(hostname),
            request_timeout_s: overrides
                .request_timeout_s
                .or(file.request_timeout_s)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_S),
            spool_reports_max: overrides.spool_max.or(file.spool_reports_max).unwrap_or(SPOOL_REPORTS_MAX),
            backoff_max_s: overrides.backoff_max_s.or(file.backoff_max_s).unwrap_or(DEFAULT_BACKOFF_MAX_S).max(1),
            log_format: overrides.log_format.or(file.log_format).unwrap_or(LogFormat::Pretty),
            process_runtime: overrides.process_runtime.or(file.process_runtime).unwrap_or(false),
            kill_grace_s: overrides.kill_grace_s.or(file.kill_grace_s).unwrap_or(DEFAULT_KILL_GRACE_S),
            challenge_fault: overrides.challenge_fault,
        })
    }

    pub fn key_path(&self) -> PathBuf {
        self.state_dir.join(crate::key::KEY_FILE)
    }

    pub fn host_path(&self) -> PathBuf {
        self.state_dir.join("host.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "state_dir = \"/tmp/x\"\ninterval_s = 5\nbackend = \"simulated\"\nsimulated_gpus = [\"H100\", \"L4\"]\n",
        )
        .unwrap();
        let overrides = Overrides { config: Some(path.clone()), interval_s: Some(2), ..Overrides::default() };
        let config = AgentConfig::load(&overrides).unwrap();
        assert_eq!(config.interval_s, 2);
        assert_eq!(config.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.backend, BackendKind::Simulated);
        assert_eq!(config.simulated_gpus, ["H100", "L4"]);
        assert_eq!(config.request_timeout_s, DEFAULT_REQUEST_TIMEOUT_S);

        std::fs::write(&path, "intervall_s = 5\n").unwrap();
        assert!(AgentConfig::load(&overrides).is_err(), "unknown keys are refused");
    }
}
