//! HTTP calls to the exchange, with API problems turned into errors that keep their code.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A failure the CLI reports; its exit code is what scripts check.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The exchange refused the request (4xx): code, field, detail.
    Api { status: StatusCode, code: String, field: Option<String>, detail: String },
    /// The exchange failed (5xx).
    Server { status: StatusCode, detail: String },
    /// The exchange could not be reached.
    Connection(String),
    /// Anything else: bad local state, unreadable answer.
    Other(anyhow::Error),
}

/// Exit codes: 0 success, 1 refused by the exchange, 2 bad usage (clap), 3 exchange
/// unreachable, 4 exchange error, 5 other local failure.
impl CliError {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { .. } => 1,
            CliError::Connection(_) => 3,
            CliError::Server { .. } => 4,
            CliError::Other(_) => 5,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api { status, code, field: Some(field), detail } => {
                write!(f, "error: {detail} [code: {code}, field: {field}, HTTP {}]", status.as_u16())
            }
            CliError::Api { status, code, field: None, detail } => {
                write!(f, "error: {detail} [code: {code}, HTTP {}]", status.as_u16())
            }
            CliError::Server { status, detail } => write!(f, "error: the exchange failed (HTTP {status}): {detail}"),
            CliError::Connection(detail) => write!(f, "error: cannot reach the exchange: {detail}"),
            CliError::Other(err) => write!(f, "error: {err:#}"),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(err: anyhow::Error) -> Self {
        CliError::Other(err)
    }
}

pub(crate) type CliResult<T> = Result<T, CliError>;

pub(crate) struct Client {
    http: reqwest::Client,
    pub(crate) base: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(base: &str, token: Option<String>) -> Client {
        Client { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_string(), token }
    }

    pub(crate) async fn get(&self, path: &str) -> CliResult<Value> {
        self.send(Method::GET, path, None, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> CliResult<Value> {
        self.send(Method::POST, path, Some(body), idempotency_key).await
    }

    pub(crate) async fn delete(&self, path: &str) -> CliResult<Value> {
        self.send(Method::DELETE, path, None, None).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>, key: Option<&str>) -> CliResult<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let res = req.send().await.map_err(|err| CliError::Connection(format!("{}: {err}", self.base)))?;
        let status = res.status();
        let text = res.text().await.map_err(|err| CliError::Connection(err.to_string()))?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok(value);
        }
        let detail = value["detail"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        if status.is_server_error() {
            return Err(CliError::Server { status, detail });
        }
        Err(CliError::Api {
            status,
            code: value["code"].as_str().unwrap_or("unknown").to_string(),
            field: value["field"].as_str().map(str::to_string),
            detail,
        })
    }
}
