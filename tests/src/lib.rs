//! Harness for end-to-end tests: starts the real binaries as processes against a real
//! Postgres, each test with its own database and ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

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
