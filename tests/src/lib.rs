//! Harness for end-to-end tests: builds the real binaries once, gives each test its own
//! fresh database on the `DATABASE_URL` server, and starts `capex-server` and
//! `capex-agent` as processes on free ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const JWT_SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e!";

/// The folder that holds the workspace's binaries (target/debug), built once per run.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "capex-server", "-p", "capex-agent", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
        // This test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
    })
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A fresh, empty database; the server migrates it when it starts.
pub async fn fresh_database() -> anyhow::Result<String> {
    let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
    let name = format!("capex_e2e_{}", Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&mut conn).await?;
    let base = admin_url.rsplit_once('/').map(|(base, _)| base).context("DATABASE_URL has a database part")?;
    Ok(format!("{base}/{name}"))
}

/// A running `capex-server`. Killed when dropped.
pub struct Server {
    pub port: u16,
    pub database_url: String,
    child: Child,
}

impl Server {
    pub async fn start(database_url: &str, port: u16) -> anyhow::Result<Server> {
        let child = Command::new(bin("capex-server"))
            .env("DATABASE_URL", database_url)
            .env("CAPEX_BIND", format!("127.0.0.1:{port}"))
            .env("CAPEX_JWT_SECRET", JWT_SECRET)
            .env("CAPEX_WEB_DIR", "/nonexistent")
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting capex-server")?;
        let server = Server { port, database_url: database_url.to_string(), child };
        server.wait_healthy().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(res) = client.get(format!("{}/healthz", self.url())).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("capex-server did not become healthy on port {}", self.port)
    }

    /// Stops the server at once (SIGKILL), as a crash or network loss would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
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
        let email = format!("{}@example.test", Uuid::now_v7().simple());
        let password = "correct horse battery";
        let res = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "roles": ["provider"]}))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "register: {}", res.text().await?);
        let login: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().context("token")?.to_string();
        Ok(ApiUser { token, base: base.to_string(), client })
    }

    pub async fn api_key(&self) -> anyhow::Result<String> {
        let res: Value = self
            .client
            .post(format!("{}/api/v1/auth/api-keys", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"name": "agent"}))
            .send()
            .await?
            .json()
            .await?;
        Ok(res["key"].as_str().context("key")?.to_string())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        anyhow::ensure!(res.status().is_success(), "GET {path}: {}", res.status());
        Ok(res.json().await?)
    }
}

/// Runs `capex-agent` to completion with the given arguments.
pub async fn agent_command(state_dir: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(bin("capex-agent"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CAPEX_AGENT_CONFIG")
        .output()
        .await?)
}

/// A running `capex-agent run`. Killed when dropped.
pub struct Agent {
    pub state_dir: PathBuf,
    child: Child,
}

impl Agent {
    /// `init` + `register` on the simulated backend with these GPU models.
    pub async fn setup(state_dir: &Path, exchange: &str, api_key: &str, gpus: &str) -> anyhow::Result<String> {
        let out = agent_command(state_dir, &["init"]).await?;
        anyhow::ensure!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let out = agent_command(
            state_dir,
            &[
                "--backend",
                "simulated",
                "--sim-gpus",
                gpus,
                "--interval-s",
                "1",
                "register",
                "--exchange",
                exchange,
                "--api-key",
                api_key,
            ],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "register: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub fn start(state_dir: &Path, gpus: &str, exchange: &str) -> anyhow::Result<Agent> {
        let child = Command::new(bin("capex-agent"))
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--backend", "simulated", "--sim-gpus", gpus, "--interval-s", "1", "--backoff-max-s", "1"])
            .args(["--request-timeout-s", "2", "run", "--exchange", exchange])
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()))
            .env_remove("CAPEX_AGENT_CONFIG")
            .kill_on_drop(true)
            .spawn()
            .context("starting capex-agent")?;
        Ok(Agent { state_dir: state_dir.to_path_buf(), child })
    }

    /// Stops the agent at once (SIGKILL), as a crash or power loss would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Sequence numbers waiting in the spool.
    pub fn spooled(state_dir: &Path) -> Vec<u64> {
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

    /// The next sequence number the agent will use.
    pub fn next_seq(state_dir: &Path) -> u64 {
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
