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
        let app = Application::build_with_pool(Config::for_tests(), pool.clone()).await.expect("app builds");
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

    pub async fn journal_rows(&self) -> i64 {
        sqlx::query_scalar("select count(*) from journal").fetch_one(&self.pool).await.unwrap()
    }
}

/// Asserts a problem+json response with this status and code; returns the body.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    let content_type = res.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}
