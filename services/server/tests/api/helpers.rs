use capex_core::Role;
use capex_server::{AppState, Application, Config};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub state: AppState,
    pub pool: PgPool,
}

pub struct TestUser {
    pub user_id: Uuid,
    pub email: String,
    pub token: String,
}

pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    pub async fn spawn(pool: PgPool) -> TestApp {
        TestApp::spawn_with(pool, Config::for_tests()).await
    }

    pub async fn spawn_with(pool: PgPool, config: Config) -> TestApp {
        // Server errors (an internal error's cause is only logged) show in a failing test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
        let app = Application::build_with_pool(config, pool.clone()).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state.clone();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        TestApp { address, client: Client::new(), state, pool }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post_with_key(&self, path: &str, token: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let res = self.get(path, Some(token)).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.expect("json body")
    }

    pub async fn register(&self, roles: &[&str]) -> TestUser {
        let email = format!("{}@example.test", Uuid::now_v7().simple());
        let res = self
            .post("/api/v1/auth/register", None, &json!({"email": email, "password": PASSWORD, "roles": roles}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "register: {}", res.text().await.unwrap_or_default());
        self.login(&email).await
    }

    pub async fn login(&self, email: &str) -> TestUser {
        let res = self.post("/api/v1/auth/login", None, &json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        TestUser {
            user_id: body["user"]["user_id"].as_str().unwrap().parse().unwrap(),
            email: email.to_string(),
            token: body["token"].as_str().unwrap().to_string(),
        }
    }

    /// Operators cannot self-register; tests create them the way configuration does.
    pub async fn operator(&self) -> TestUser {
        let email = format!("op-{}@example.test", Uuid::now_v7().simple());
        let mut tx = self.pool.begin().await.unwrap();
        capex_server::auth::create_user(&mut tx, &email, PASSWORD.into(), &[Role::Operator]).await.unwrap();
        tx.commit().await.unwrap();
        self.login(&email).await
    }

    pub async fn mint(&self, operator: &TestUser, user: &TestUser, amount: &str) {
        let res = self
            .post_with_key(
                "/api/v1/operator/mint",
                &operator.token,
                &Uuid::now_v7().to_string(),
                &json!({"user_id": user.user_id, "amount": amount}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "mint: {}", res.text().await.unwrap_or_default());
    }

    pub async fn wallet(&self, user: &TestUser) -> (String, String) {
        let body = self.get_json("/api/v1/wallet", &user.token).await;
        (body["available"].as_str().unwrap().to_string(), body["held"].as_str().unwrap().to_string())
    }

    /// Test fixture: a live host of `owner` with `gpus` idle GPUs of `class`, written
    /// straight into `hosts`/`host_gpus` (as the report ingester would after a valid report).
    pub async fn live_host(&self, owner: &TestUser, class: &str, gpus: usize) -> Uuid {
        let host_id = Uuid::now_v7();
        sqlx::query(
            "insert into hosts (host_id, owner_id, name, public_key, status, report_interval_s, last_report_at)
             values ($1, $2, 'test-host', $3, 'active', 10, now())",
        )
        .bind(host_id)
        .bind(owner.user_id)
        .bind(host_id.as_bytes().repeat(2))
        .execute(&self.pool)
        .await
        .unwrap();
        for index in 0..gpus {
            sqlx::query(
                "insert into host_gpus (gpu_uuid, host_id, gpu_index, name, class, memory_total_mib, last_seen_at)
                 values ($1, $2, $3, 'Test GPU', $4, 81920, now())",
            )
            .bind(format!("GPU-{}-{index}", host_id.simple()))
            .bind(host_id)
            .bind(index as i32)
            .bind(class)
            .execute(&self.pool)
            .await
            .unwrap();
        }
        host_id
    }

    /// Places an order; returns the response.
    pub async fn place(&self, user: &TestUser, class: &str, body: &Value) -> Response {
        self.post(&format!("/api/v1/markets/{class}/orders"), Some(&user.token), body).await
    }

    /// Places an order that must be accepted; returns its view.
    pub async fn place_ok(&self, user: &TestUser, class: &str, body: &Value) -> Value {
        let res = self.place(user, class, body).await;
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "place {body}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn bid(&self, user: &TestUser, class: &str, gpus: u32, max_hours: &str, price: &str) -> Value {
        self.place_ok(user, class, &bid_body(gpus, max_hours, price, "gtc")).await
    }

    pub async fn ask(&self, user: &TestUser, class: &str, host_id: Uuid, gpus: u32, price: &str) -> Value {
        self.place_ok(user, class, &ask_body(host_id, gpus, price, "gtc")).await
    }

    pub async fn order(&self, user: &TestUser, order_id: &Value) -> Value {
        self.get_json(&format!("/api/v1/orders/{}", order_id.as_str().unwrap()), &user.token).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client.delete(self.url(path)).bearer_auth(token).send().await.expect("request sent")
    }

    pub async fn journal_rows(&self) -> i64 {
        sqlx::query_scalar("select count(*) from journal").fetch_one(&self.pool).await.unwrap()
    }
}

/// Asserts a problem+json response with this status and code; returns the body.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    if res.status() != status {
        let got = res.status();
        panic!("expected {status} {code}, got {got}: {}", res.text().await.unwrap_or_default());
    }
    let content_type = res.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

pub fn bid_body(gpus: u32, max_hours: &str, price: &str, tif: &str) -> Value {
    json!({"side": "bid", "gpus": gpus, "max_hours": max_hours, "price": price, "tif": tif,
           "job": {"command": ["python", "train.py"], "env": {"EPOCHS": "3"}}})
}

pub fn ask_body(host_id: Uuid, gpus: u32, price: &str, tif: &str) -> Value {
    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    json!({"side": "ask", "host_id": host_id, "gpus": gpus, "price": price, "tif": tif, "available_until": until})
}
