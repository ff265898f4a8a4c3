//! Answers the exchange's confidential-computing evidence requests.
//!
//! The assignments long-poll lists `cc_requests` (a request id, a GPU and a 32-byte nonce).
//! [`CcResponder::answer`] answers each once, in the background so the poll loop never
//! waits on NVML: `POST /api/v1/hosts/{host_id}/attestations/{request_id}`, signed with the
//! host key like every host request, with body [`CcAnswer`] (`{"evidence": ...}` or
//! `{"unavailable": ...}`). A request whose answer did not reach the exchange (network,
//! 5xx) is tried again when the next poll lists it; one the exchange refused (4xx) is not.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use capex_attest::{CcAnswer, CcRequest, CcUnavailable};
use capex_core::report::{
    HOST_NONCE_HEADER, HOST_SIGNATURE_HEADER, HOST_TIME_HEADER, format_host_nonce, sign_host_request,
};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use uuid::Uuid;

use crate::gpu::cc::{SIMULATED_REASON, cc_evidence};

/// Request ids remembered as answered (older ones are forgotten; the exchange expires them).
const ANSWERED_REMEMBERED: usize = 1024;
/// Requests answered per poll at most; more wait for the next poll.
const REQUESTS_PER_POLL_MAX: usize = 64;

#[derive(Default)]
struct Ledger {
    answered: VecDeque<Uuid>,
    in_flight: HashSet<Uuid>,
}

impl Ledger {
    fn done(&mut self, id: Uuid) {
        self.in_flight.remove(&id);
        if self.answered.len() >= ANSWERED_REMEMBERED {
            self.answered.pop_front();
        }
        self.answered.push_back(id);
    }
}

/// Where evidence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcSource {
    /// NVML (initialised per batch of requests; NVML counts its inits).
    Nvml,
    /// The simulated backend: always unavailable.
    Simulated,
}

/// Answers CC evidence requests for one host.
#[derive(Clone)]
pub struct CcResponder {
    http: reqwest::Client,
    base: String,
    key: Arc<SigningKey>,
    host_id: Uuid,
    source: CcSource,
    ledger: Arc<Mutex<Ledger>>,
}

impl CcResponder {
    /// `simulated`: the host runs the simulated backend.
    pub fn new(http: reqwest::Client, base: String, key: Arc<SigningKey>, host_id: Uuid, simulated: bool) -> Self {
        let source = if simulated { CcSource::Simulated } else { CcSource::Nvml };
        CcResponder { http, base, key, host_id, source, ledger: Arc::default() }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts answering every listed request not answered or in flight yet; returns at once.
    pub fn answer(&self, requests: &[CcRequest]) {
        let fresh: Vec<CcRequest> = {
            let mut ledger = self.ledger();
            let fresh: Vec<CcRequest> = requests
                .iter()
                .filter(|r| !ledger.answered.contains(&r.request_id) && !ledger.in_flight.contains(&r.request_id))
                .take(REQUESTS_PER_POLL_MAX)
                .cloned()
                .collect();
            ledger.in_flight.extend(fresh.iter().map(|r| r.request_id));
            fresh
        };
        if fresh.is_empty() {
            return;
        }
        let responder = self.clone();
        tokio::spawn(async move {
            let source = responder.source;
            let batch = fresh.clone();
            let answers = tokio::task::spawn_blocking(move || collect(source, &batch)).await.unwrap_or_else(|_| {
                fresh.iter().map(|r| unavailable(r, "the evidence collector crashed".into())).collect::<Vec<_>>()
            });
            for (request, answer) in fresh.iter().zip(answers) {
                responder.send(request.request_id, &answer).await;
            }
        });
    }

    async fn send(&self, request_id: Uuid, answer: &CcAnswer) {
        let path = format!("/api/v1/hosts/{}/attestations/{request_id}", self.host_id);
        let body = match serde_json::to_vec(answer) {
            Ok(body) => body,
            Err(_) => return self.ledger().done(request_id),
        };
        let nonce = format_host_nonce(&rand::random());
        let (time, signature) =
            sign_host_request(&self.key, "POST", &path, self.host_id, Utc::now().timestamp(), &nonce, &body);
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .header(HOST_TIME_HEADER, time)
            .header(HOST_NONCE_HEADER, nonce)
            .header(HOST_SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let kind = match answer {
            CcAnswer::Evidence(_) => "evidence",
            CcAnswer::Unavailable(_) => "unavailable",
        };
        match sent {
            Ok(res) if res.status().is_success() => {
                tracing::info!(%request_id, gpu = answer.gpu_uuid(), kind, "CC attestation answered");
                self.ledger().done(request_id);
            }
            Ok(res) if res.status().is_client_error() => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                tracing::warn!(%request_id, %status, body = text, "the exchange refused the CC attestation answer");
                self.ledger().done(request_id);
            }
            Ok(res) => {
                tracing::warn!(%request_id, status = %res.status(), "CC attestation answer failed; retried when listed again");
                self.ledger().in_flight.remove(&request_id);
            }
            Err(err) => {
                tracing::warn!(%request_id, error = %err, "CC attestation answer failed; retried when listed again");
                self.ledger().in_flight.remove(&request_id);
            }
        }
    }
}

fn unavailable(request: &CcRequest, reason: String) -> CcAnswer {
    CcAnswer::Unavailable(CcUnavailable { gpu_uuid: request.gpu_uuid.clone(), reason })
}

/// The answers to `requests`, in order (blocking: NVML calls).
pub fn collect(source: CcSource, requests: &[CcRequest]) -> Vec<CcAnswer> {
    let nvml = match source {
        CcSource::Simulated => Err(SIMULATED_REASON.to_string()),
        CcSource::Nvml => nvml_wrapper::Nvml::init().map_err(|e| format!("NVML is not available: {e}")),
    };
    requests
        .iter()
        .map(|request| {
            let nvml = match &nvml {
                Ok(nvml) => nvml,
                Err(reason) => return unavailable(request, reason.clone()),
            };
            let Some(nonce) = capex_attest::parse_nonce(&request.nonce) else {
                return unavailable(request, "the exchange's nonce is not 64 hex characters".into());
            };
            match cc_evidence(nvml, &request.gpu_uuid, nonce) {
                Ok(evidence) => CcAnswer::Evidence(evidence),
                Err(why) => CcAnswer::Unavailable(why),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_backend_answers_unavailable() {
        let request = CcRequest { request_id: Uuid::nil(), gpu_uuid: "GPU-sim-0".into(), nonce: "00".repeat(32) };
        let answers = collect(CcSource::Simulated, std::slice::from_ref(&request));
        assert_eq!(
            answers,
            vec![CcAnswer::Unavailable(CcUnavailable {
                gpu_uuid: "GPU-sim-0".into(),
                reason: SIMULATED_REASON.into()
            })]
        );
        let json = serde_json::to_value(&answers[0]).unwrap();
        assert_eq!(json["unavailable"]["reason"], SIMULATED_REASON);
    }
}
