//! Harness for end-to-end tests: starts the real binaries as processes against a real
//! Postgres, each test with its own database and ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod jepsen;
pub mod market;

/// Where cargo put the workspace's binaries (`target/debug`), found from the test binary
/// itself (`target/debug/deps/<test>`), so a custom CARGO_TARGET_DIR works too.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").to_path_buf()
}

/// Path of a workspace binary; run `cargo build --workspace --bins` before the tests.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The server that `DATABASE_URL` points at (the tests' Postgres).
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database for one test and returns its URL.
pub fn fresh_database_url() -> anyhow::Result<String> {
    let admin = admin_database_url();
    let name = format!("capex_e2e_{}", uuid::Uuid::now_v7().simple());
    let status = Command::new("psql")
        .arg(&admin)
        .args(["-qtAc", &format!("create database {name}")])
        .status()
        .context("running psql")?;
    if !status.success() {
        bail!("could not create database {name}");
    }
    let base = admin.rsplit_once('/').map(|(base, _)| base.to_string()).unwrap_or(admin);
    Ok(format!("{base}/{name}"))
}

/// A running `capex-server`, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub base_url: String,
    pub port: u16,
}

pub const JWT_SECRET_FOR_TESTS: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl ServerProcess {
    /// Starts the server on a free port with the given environment; waits for /healthz.
    pub async fn start(env: &[(&str, &str)]) -> anyhow::Result<ServerProcess> {
        let port = free_port();
        Self::start_on(port, env).await
    }

    pub async fn start_on(port: u16, env: &[(&str, &str)]) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(binary("capex-server"));
        cmd.env_remove("DATABASE_URL")
            .env("CAPEX_BIND", format!("127.0.0.1:{port}"))
            .env("CAPEX_JWT_SECRET", JWT_SECRET_FOR_TESTS)
            // The agents of these tests run the simulated backend (no GPUs here).
            .env("CAPEX_ALLOW_SIMULATED", "true")
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            cmd.stdout(Stdio::null());
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().context("starting capex-server")?;
        let mut server = ServerProcess { child, base_url: format!("http://127.0.0.1:{port}"), port };
        server.wait_healthy(SERVER_READY_TIMEOUT).await?;
        Ok(server)
    }

    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("capex-server exited early with {status}");
            }
            if let Ok(res) = client.get(format!("{}/healthz", self.base_url)).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("capex-server did not become healthy within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client for one user.
pub struct ApiUser {
    pub token: String,
    pub base: String,
    pub client: reqwest::Client,
}

impl ApiUser {
    /// Registers a provider and logs in.
    pub async fn provider(base: &str) -> anyhow::Result<ApiUser> {
        let client = reqwest::Client::new();
        let email = format!("{}@example.test", uuid::Uuid::now_v7().simple());
        let password = "correct horse battery";
        let res = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&serde_json::json!({"email": email, "password": password, "roles": ["provider"]}))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "register: {}", res.text().await?);
        let login: serde_json::Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().context("token")?.to_string();
        Ok(ApiUser { token, base: base.to_string(), client })
    }

    pub async fn api_key(&self) -> anyhow::Result<String> {
        let res: serde_json::Value = self
            .client
            .post(format!("{}/api/v1/auth/api-keys", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"name": "agent"}))
            .send()
            .await?
            .json()
            .await?;
        Ok(res["key"].as_str().context("key")?.to_string())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let res = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        anyhow::ensure!(res.status().is_success(), "GET {path}: {}", res.status());
        Ok(res.json().await?)
    }
}

fn agent_log_filter() -> String {
    std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into())
}

/// Runs `capex-agent --state-dir DIR ARGS...` to completion.
pub async fn agent_command(state_dir: &std::path::Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(tokio::process::Command::new(binary("capex-agent"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .env("RUST_LOG", agent_log_filter())
        .env_remove("CAPEX_AGENT_CONFIG")
        .output()
        .await?)
}

/// A running `capex-agent run` on the simulated backend, 1 s interval. Killed when dropped.
pub struct AgentProcess {
    child: tokio::process::Child,
}

impl AgentProcess {
    /// `init` + `register` on the simulated backend with these GPU models; returns the host id.
    pub async fn setup(
        state_dir: &std::path::Path,
        exchange: &str,
        api_key: &str,
        gpus: &str,
    ) -> anyhow::Result<String> {
        let out = agent_command(state_dir, &["init"]).await?;
        anyhow::ensure!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let args = ["--backend", "simulated", "--sim-gpus", gpus, "--interval-s", "1", "register"];
        let out =
            agent_command(state_dir, &[&args[..], &["--exchange", exchange, "--api-key", api_key]].concat()).await?;
        anyhow::ensure!(out.status.success(), "register: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub fn start(state_dir: &std::path::Path, gpus: &str, exchange: &str) -> anyhow::Result<AgentProcess> {
        Self::start_with_env(state_dir, gpus, exchange, &[])
    }

    /// [`AgentProcess::start`] with extra environment (e.g. a test-only fault flag).
    pub fn start_with_env(
        state_dir: &std::path::Path,
        gpus: &str,
        exchange: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let child = tokio::process::Command::new(binary("capex-agent"))
            .envs(env.iter().copied())
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--backend", "simulated", "--sim-gpus", gpus, "--interval-s", "1", "--backoff-max-s", "1"])
            .args(["--request-timeout-s", "2", "run", "--exchange", exchange])
            .env("RUST_LOG", agent_log_filter())
            // Tests run jobs as plain processes (the simulated GPUs have no Docker).
            .env("CAPEX_AGENT_PROCESS_RUNTIME", "true")
            .env("CAPEX_AGENT_KILL_GRACE_S", "2")
            .env_remove("CAPEX_AGENT_CONFIG")
            .kill_on_drop(true)
            .spawn()
            .context("starting capex-agent")?;
        Ok(AgentProcess { child })
    }

    /// The agent's process id (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT", "KILL") to the agent with `kill(1)`.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("agent already exited")?;
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Stops the agent at once (SIGKILL), as a crash or power loss would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Sequence numbers waiting in the spool of the agent at `state_dir`.
    pub fn spooled(state_dir: &std::path::Path) -> Vec<u64> {
        let mut seqs: Vec<u64> = std::fs::read_dir(state_dir.join("spool"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        seqs.sort_unstable();
        seqs
    }

    /// The next sequence number the agent at `state_dir` will use.
    pub fn next_seq(state_dir: &std::path::Path) -> u64 {
        std::fs::read_to_string(state_dir.join("seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
