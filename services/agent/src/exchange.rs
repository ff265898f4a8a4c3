//! The exchange's HTTP API as the agent uses it.

use std::time::Duration;

use capex_core::SignedEnvelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the agent keeps after `register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub host_id: Uuid,
    pub exchange_url: String,
}

/// Why a send did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The exchange answered with a refusal that retrying the same report will not fix.
    #[error("refused with {status} {code}: {detail}")]
    Refused { status: u16, code: String, detail: String },
    /// Not reachable, timed out, overloaded or failing: try again later.
    #[error("exchange unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Exchange {
    client: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct ProblemBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
}

impl Exchange {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Exchange> {
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
        Ok(Exchange { client, base: base.trim_end_matches('/').to_string() })
    }

    async fn answer(response: reqwest::Response) -> Result<serde_json::Value, SendError> {
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|err| SendError::Unavailable(err.to_string()));
        }
        let retry = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
        let body = response.text().await.unwrap_or_default();
        if retry {
            return Err(SendError::Unavailable(format!("{status}: {body}")));
        }
        let problem: ProblemBody =
            serde_json::from_str(&body).unwrap_or(ProblemBody { code: String::new(), detail: body });
        Err(SendError::Refused { status: status.as_u16(), code: problem.code, detail: problem.detail })
    }

    /// `POST /api/v1/hosts` with the signed inventory; returns the host view.
    pub async fn register(&self, api_key: &str, inventory: &SignedEnvelope) -> Result<serde_json::Value, SendError> {
        let response = self
            .client
            .post(format!("{}/api/v1/hosts", self.base))
            .bearer_auth(api_key)
            .json(inventory)
            .send()
            .await
            .map_err(|err| SendError::Unavailable(err.to_string()))?;
        Self::answer(response).await
    }

    /// `POST /api/v1/hosts/{id}/reports`.
    pub async fn send_report(&self, host_id: Uuid, report: &SignedEnvelope) -> Result<serde_json::Value, SendError> {
        let response = self
            .client
            .post(format!("{}/api/v1/hosts/{host_id}/reports", self.base))
            .json(report)
            .send()
            .await
            .map_err(|err| SendError::Unavailable(err.to_string()))?;
        Self::answer(response).await
    }
}
