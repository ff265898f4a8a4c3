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

    /// One HTTP request as a tiny exchange received it: (request line, headers, body).
    async fn accept_one(listener: &tokio::net::TcpListener, status: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, content_length) = loop {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while buf.len() < head_end + content_length {
            let n = socket.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8(buf[..head_end - 4].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
        socket.write_all(reply.as_bytes()).await.unwrap();
        (request_line, headers, buf[head_end..head_end + content_length].to_vec())
    }

    /// Waits until no answer is in flight (the responder has read the exchange's reply).
    async fn settled(responder: &CcResponder) {
        for _ in 0..500 {
            if responder.ledger().in_flight.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("an answer stayed in flight");
    }

    #[tokio::test]
    async fn answers_once_with_a_host_signed_post() {
        use base64::Engine;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let key = Arc::new(SigningKey::from_bytes(&[7; 32]));
        let host_id = Uuid::from_u128(42);
        let responder = CcResponder::new(reqwest::Client::new(), base, key.clone(), host_id, true);
        let first = CcRequest { request_id: Uuid::from_u128(1), gpu_uuid: "GPU-sim-0".into(), nonce: "ab".repeat(32) };
        let second = CcRequest { request_id: Uuid::from_u128(2), gpu_uuid: "GPU-sim-1".into(), nonce: "cd".repeat(32) };

        // The first answer fails on the exchange's side (503): it is sent again next time.
        responder.answer(std::slice::from_ref(&first));
        let (line, _, _) = accept_one(&listener, "503 Service Unavailable").await;
        assert!(line.starts_with("POST /api/v1/hosts/00000000-0000-0000-0000-00000000002a/attestations/"));
        settled(&responder).await;

        responder.answer(std::slice::from_ref(&first));
        let (line, headers, body) = accept_one(&listener, "200 OK").await;
        let path = line.split(' ').nth(1).unwrap().to_string();
        assert_eq!(path, format!("/api/v1/hosts/{host_id}/attestations/{}", first.request_id));
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
        let answer: CcAnswer = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer, unavailable(&first, SIMULATED_REASON.into()));
        let message = capex_core::report::host_request_message(
            "POST",
            &path,
            host_id,
            header(HOST_TIME_HEADER).parse().unwrap(),
            &header(HOST_NONCE_HEADER),
            &body,
        );
        let signature = base64::engine::general_purpose::STANDARD.decode(header(HOST_SIGNATURE_HEADER)).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        capex_core::report::verify_strict(
            capex_core::report::HOST_REQUEST_DOMAIN,
            &key.verifying_key(),
            &message,
            &signature,
        )
        .unwrap();
        settled(&responder).await;

        // Answered once: listed again, only the new request is sent.
        responder.answer(&[first.clone(), second.clone()]);
        let (line, _, _) = accept_one(&listener, "200 OK").await;
        assert!(line.contains(&second.request_id.to_string()), "{line}");
        settled(&responder).await;
        responder.answer(&[first, second]);
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept()).await;
        assert!(nothing.is_err(), "an answered request was sent again");
    }
}
