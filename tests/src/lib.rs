//! Harness for end-to-end tests: starts real processes against a real Postgres, and the
//! fixtures the tests and the load generator share.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Postgres the tests use unless DATABASE_URL says otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// How long a server may take to start answering.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
pub const OPERATOR_EMAIL: &str = "operator@e2e.test";
pub const OPERATOR_PASSWORD: &str = "operator password e2e";
pub const USER_PASSWORD: &str = "correct horse battery";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string())
}

/// Creates an empty database with a fresh name on the test Postgres; returns its URL.
pub async fn fresh_database(prefix: &str) -> anyhow::Result<String> {
    let admin = database_url();
    let pool = PgPool::connect(&admin).await?;
    let name = format!("{prefix}_{}", Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&pool).await?;
    let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin);
    Ok(format!("{base}/{name}"))
}

/// The `capex-server` binary of this build (target/<profile>/capex-server), built if
/// missing. `CAPEX_SERVER_BIN` overrides.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("CAPEX_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe.parent().and_then(|p| p.parent()).context("test binary has no target dir")?;
    let binary = profile_dir.join("capex-server");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", "capex-server", "--bin", "capex-server"]).status()?;
        if !status.success() {
            bail!("building capex-server failed");
        }
    }
    Ok(binary)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `capex-server` process.
pub struct ServerProcess {
    child: Child,
    pub base_url: String,
}

impl ServerProcess {
    /// Starts the server on `database_url` with a fixed operator account, and waits until
    /// `/healthz` answers.
    pub async fn start(database_url: &str) -> anyhow::Result<ServerProcess> {
        let port = free_port()?;
        let child = Command::new(server_binary()?)
            .env("DATABASE_URL", database_url)
            .env("CAPEX_BIND", format!("127.0.0.1:{port}"))
            .env("CAPEX_JWT_SECRET", "e2e-secret-e2e-secret-e2e-secret-e2e!")
            .env("CAPEX_OPERATOR_EMAIL", OPERATOR_EMAIL)
            .env("CAPEX_OPERATOR_PASSWORD", OPERATOR_PASSWORD)
            .env("RUST_LOG", std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .context("starting capex-server")?;
        let server = ServerProcess { child, base_url: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(res) = client.get(format!("{}/healthz", server.base_url)).send().await
                && res.status().is_success()
            {
                return Ok(server);
            }
            if started.elapsed() > SERVER_START_TIMEOUT {
                bail!("capex-server did not become healthy");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, no chance to flush anything.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A logged-in API user.
#[derive(Clone)]
pub struct ApiUser {
    pub user_id: Uuid,
    pub token: String,
}

/// A thin client over the HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(base_url: &str) -> Api {
        Api { base_url: base_url.to_string(), client: reqwest::Client::new() }
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<ApiUser> {
        let res = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base_url))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("login {email}: {}", res.status());
        }
        let body: Value = res.json().await?;
        Ok(ApiUser {
            user_id: body["user"]["user_id"].as_str().context("user_id")?.parse()?,
            token: body["token"].as_str().context("token")?.to_string(),
        })
    }

    /// Registers a buyer+provider and funds it from the operator.
    pub async fn funded_user(&self, operator: &ApiUser, credits: &str) -> anyhow::Result<ApiUser> {
        let email = format!("{}@e2e.test", Uuid::now_v7().simple());
        let res = self
            .client
            .post(format!("{}/api/v1/auth/register", self.base_url))
            .json(&json!({"email": email, "password": USER_PASSWORD, "roles": ["buyer", "provider"]}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("register: {}", res.status());
        }
        let user = self.login(&email, USER_PASSWORD).await?;
        let res = self
            .client
            .post(format!("{}/api/v1/operator/mint", self.base_url))
            .bearer_auth(&operator.token)
            .header("Idempotency-Key", Uuid::now_v7().to_string())
            .json(&json!({"user_id": user.user_id, "amount": credits}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("mint: {}", res.status());
        }
        Ok(user)
    }

    pub async fn place(&self, user: &ApiUser, class: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let res = self
            .client
            .post(format!("{}/api/v1/markets/{class}/orders", self.base_url))
            .bearer_auth(&user.token)
            .json(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await?))
    }

    pub async fn cancel(&self, user: &ApiUser, order_id: &str) -> anyhow::Result<u16> {
        let res = self
            .client
            .delete(format!("{}/api/v1/orders/{order_id}", self.base_url))
            .bearer_auth(&user.token)
            .send()
            .await?;
        Ok(res.status().as_u16())
    }

    pub async fn get(&self, path: &str, user: Option<&ApiUser>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.get(format!("{}{path}", self.base_url));
        if let Some(user) = user {
            req = req.bearer_auth(&user.token);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await?))
    }
}

/// Test fixture until host registration lands in this branch: a live host owned by
/// `owner` with `gpus` idle GPUs of `class`, written straight into `hosts`/`host_gpus`.
pub async fn live_host(pool: &PgPool, owner: Uuid, class: &str, gpus: usize) -> anyhow::Result<Uuid> {
    let host_id = Uuid::now_v7();
    sqlx::query(
        "insert into hosts (host_id, owner_id, name, public_key, status, report_interval_s, last_report_at)
         values ($1, $2, 'fixture-host', $3, 'active', 3600, now())",
    )
    .bind(host_id)
    .bind(owner)
    .bind(host_id.as_bytes().repeat(2))
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into host_gpus (gpu_uuid, host_id, gpu_index, name, class, memory_total_mib, last_seen_at)
         select 'GPU-' || $1::text || '-' || i, $1, i, 'Fixture GPU', $2, 81920, now()
         from generate_series(0, $3 - 1) as i",
    )
    .bind(host_id)
    .bind(class)
    .bind(gpus as i32)
    .execute(pool)
    .await?;
    Ok(host_id)
}

pub fn bid_body(gpus: u32, max_hours: &str, price: &str, tif: &str) -> Value {
    json!({"side": "bid", "gpus": gpus, "max_hours": max_hours, "price": price, "tif": tif,
           "job": {"command": ["python", "train.py"]}})
}

pub fn ask_body(host_id: Uuid, gpus: u32, price: &str, tif: &str) -> Value {
    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    json!({"side": "ask", "host_id": host_id, "gpus": gpus, "price": price, "tif": tif, "available_until": until})
}
