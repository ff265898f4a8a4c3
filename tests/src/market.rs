//! Market fixtures shared by the end-to-end tests and the load generator: a thin API
//! client, funded users, live fixture hosts and order bodies.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub const OPERATOR_EMAIL: &str = "operator@e2e.test";
pub const OPERATOR_PASSWORD: &str = "operator password e2e";
pub const USER_PASSWORD: &str = "correct horse battery";

/// Environment for `ServerProcess::start` that creates the operator these helpers log in as.
pub fn server_env(database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_string()),
        ("CAPEX_OPERATOR_EMAIL", OPERATOR_EMAIL.to_string()),
        ("CAPEX_OPERATOR_PASSWORD", OPERATOR_PASSWORD.to_string()),
    ]
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

    /// Waits (at most 20 s) until the provider's host is live: registered and reporting.
    pub async fn wait_live(&self, provider: &ApiUser, host_id: impl std::fmt::Display) -> anyhow::Result<()> {
        let path = format!("/api/v1/hosts/{host_id}");
        crate::eventually(std::time::Duration::from_secs(20), "host live", || async {
            let (_, view) = self.get(&path, Some(provider)).await?;
            Ok((view["live"] == true).then_some(()))
        })
        .await
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

/// Orders acknowledged (201) by the server, with the user who placed each.
pub type Acked = std::sync::Arc<tokio::sync::Mutex<Vec<(ApiUser, String)>>>;

/// Starts `clients` tasks placing bids and asks in `class` (every fourth an ask on the
/// client's host) until the server stops answering; records every acknowledged order.
pub fn spawn_order_load(
    api: &Api,
    users: &[(ApiUser, Uuid)],
    class: &'static str,
    clients: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, Acked) {
    let acked: Acked = Default::default();
    let tasks = (0..clients)
        .map(|c| {
            let api = api.clone();
            let (user, host) = users[c % users.len()].clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0..10_000_u32 {
                    let body = if (i as usize + c).is_multiple_of(4) {
                        ask_body(host, 1, &format!("4.{}", i % 9), "gtc")
                    } else {
                        bid_body(1, "1", &format!("1.{}", i % 9), "gtc")
                    };
                    match api.place(&user, class, &body).await {
                        Ok((201, view)) => {
                            let id = view["order_id"].as_str().unwrap_or_default().to_string();
                            acked.lock().await.push((user.clone(), id));
                        }
                        Ok(_) => {}
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    (tasks, acked)
}
