//! Runs the leases the exchange assigns to this host.
//!
//! A long-poll of `GET /api/v1/hosts/{id}/assignments` (signed with the host key) returns
//! every active lease of the host. New ones are started through `capex-runtime` with only
//! their GPUs visible and acknowledged at once; a running job that is no longer listed
//! (cancelled, lost, ended) is stopped (SIGTERM, then SIGKILL). An interruptible lease the
//! exchange lists as `preempting` is stopped with the exchange's notice: SIGTERM now,
//! SIGKILL at its `preempt_deadline`; a new lease on GPUs such a job still holds starts
//! the moment that job is gone. Each job's output goes
//! through a bounded [`LogBuffer`] (the tail is kept on floods) and is uploaded in chunks.
//! The reporter puts every job's state (running / exited with its code) in the signed
//! report's `leases` list.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capex_core::LeaseReport;
use capex_core::challenge::ChallengeOrder;
use capex_core::report::{
    HOST_NONCE_HEADER, HOST_SIGNATURE_HEADER, HOST_TIME_HEADER, format_host_nonce, sign_host_request,
};
use capex_runtime::{ExitReason, JobEvent, JobSpec, LogBuffer, OutputStream, RuntimeConfig, RuntimeKind};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use uuid::Uuid;

use crate::challenge::Challenger;
use crate::gpu::simulated::SimulatedControl;

/// Seconds one assignments poll may wait on the exchange.
pub const POLL_WAIT_S: u64 = 20;
/// Output kept per job between uploads; older text is dropped (a marker says so).
pub const LOG_BUFFER_BYTES: usize = 256 * 1024;
/// How often buffered output is uploaded.
pub const LOG_FLUSH: Duration = Duration::from_millis(300);
/// Chunks per upload request (the exchange takes at most 256).
const LOG_CHUNKS_PER_UPLOAD: usize = 200;
/// Finished jobs stay in reports this many times so the exchange surely sees the exit.
const EXITED_REPORTS: u32 = 5;

#[derive(Debug, Clone)]
struct Tracked {
    state: &'static str,
    pid: Option<u32>,
    exit_code: Option<i32>,
    reported: u32,
    /// The lease's GPUs while its job runs (empty once it has ended).
    gpu_uuids: Vec<String>,
}

/// Lease ids of finished jobs remembered so a lease the exchange still lists (its exit
/// report not yet delivered, e.g. after an outage) is never started twice.
const FINISHED_REMEMBERED: usize = 4096;

#[derive(Default)]
struct Jobs {
    tracked: HashMap<Uuid, Tracked>,
    finished: std::collections::VecDeque<Uuid>,
}

/// The jobs this agent runs, shared with the reporter.
#[derive(Clone, Default)]
pub struct JobTable(Arc<Mutex<Jobs>>, Arc<tokio::sync::Notify>);

impl JobTable {
    /// Resolves once a job has ended since the last call (a stored permit if it already has).
    async fn ended(&self) {
        self.1.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `leases` list of the next report; finished jobs are dropped after a few reports.
    pub fn report(&self) -> Vec<LeaseReport> {
        let mut jobs = self.lock();
        let out = jobs
            .tracked
            .iter_mut()
            .map(|(id, t)| {
                if t.state != "running" {
                    t.reported += 1;
                }
                LeaseReport { lease_id: *id, state: t.state.into(), pid: t.pid, exit_code: t.exit_code }
            })
            .collect();
        jobs.tracked.retain(|_, t| t.state == "running" || t.reported < EXITED_REPORTS);
        out
    }

    fn start(&self, id: Uuid, pid: u32, gpu_uuids: Vec<String>) {
        let running = Tracked { state: "running", pid: Some(pid), exit_code: None, reported: 0, gpu_uuids };
        self.lock().tracked.insert(id, running);
    }

    fn set(&self, id: Uuid, state: &'static str, pid: Option<u32>, exit_code: Option<i32>) {
        if state != "running" {
            self.1.notify_one();
        }
        let mut jobs = self.lock();
        jobs.tracked.insert(id, Tracked { state, pid, exit_code, reported: 0, gpu_uuids: Vec::new() });
        if state != "running" {
            if jobs.finished.len() >= FINISHED_REMEMBERED {
                jobs.finished.pop_front();
            }
            jobs.finished.push_back(id);
        }
    }

    fn known(&self, id: &Uuid) -> bool {
        let jobs = self.lock();
        jobs.tracked.contains_key(id) || jobs.finished.contains(id)
    }

    fn running(&self) -> Vec<Uuid> {
        self.lock().tracked.iter().filter(|(_, t)| t.state == "running").map(|(id, _)| *id).collect()
    }

    /// Each running lease's GPUs, for telling its processes from foreign ones.
    pub fn running_gpus(&self) -> HashMap<Uuid, Vec<String>> {
        let jobs = self.lock();
        jobs.tracked.iter().filter(|(_, t)| t.state == "running").map(|(id, t)| (*id, t.gpu_uuids.clone())).collect()
    }
}

#[derive(Debug, Deserialize)]
struct Assignments {
    items: Vec<Assignment>,
    /// Confidential-computing evidence requests, answered by [`crate::attestation`].
    #[serde(default)]
    cc_requests: Vec<capex_attest::CcRequest>,
    /// Proof-of-compute challenges for this host's idle GPUs (absent from older exchanges).
    #[serde(default)]
    challenges: Vec<ChallengeOrder>,
}

#[derive(Debug, Deserialize)]
struct Assignment {
    lease_id: Uuid,
    /// pending, running, or preempting (stop the job by `preempt_deadline`).
    #[serde(default)]
    state: String,
    #[serde(default)]
    preempt_deadline: Option<DateTime<Utc>>,
    gpu_uuids: Vec<String>,
    job: AssignedJob,
    max_end_at: DateTime<Utc>,
    #[serde(default)]
    job_id: Option<Uuid>,
    #[serde(default)]
    attempt: Option<i32>,
    /// The attempt's job token (absent from older exchanges).
    #[serde(default)]
    job_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssignedJob {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    image: Option<String>,
}

/// Signed HTTP to the exchange's host routes.
#[derive(Clone)]
pub(crate) struct HostClient {
    client: reqwest::Client,
    base: String,
    key: Arc<SigningKey>,
    pub(crate) host_id: Uuid,
}

impl HostClient {
    fn request(&self, method: reqwest::Method, path: &str, query: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        // A fresh nonce per request: the exchange refuses one it has seen (replay).
        let nonce = format_host_nonce(&rand::random());
        let (time, signature) =
            sign_host_request(&self.key, method.as_str(), path, self.host_id, Utc::now().timestamp(), &nonce, &body);
        self.client
            .request(method, format!("{}{path}{query}", self.base))
            .header(HOST_TIME_HEADER, time)
            .header(HOST_NONCE_HEADER, nonce)
            .header(HOST_SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
    }

    /// POSTs `body` as JSON (host-signed) and parses the JSON answer; a non-2xx answer is an
    /// error carrying the status and body (problem+json with its `code`).
    pub(crate) async fn post_json<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        let bytes = serde_json::to_vec(body)?;
        let res = self.request(reqwest::Method::POST, path, "", bytes).send().await?;
        let status = res.status();
        if !status.is_success() {
            anyhow::bail!("{status}: {}", res.text().await.unwrap_or_default());
        }
        Ok(res.json().await?)
    }

    /// `have`: leases running here; `challenges`: challenge ids already taken (the exchange
    /// may list them until settled, and need not wake the poll for them).
    async fn assignments(&self, have: &[Uuid], challenges: &[Uuid], wait_s: u64) -> anyhow::Result<Assignments> {
        let path = format!("/api/v1/hosts/{}/assignments", self.host_id);
        let have: Vec<String> = have.iter().map(Uuid::to_string).collect();
        let challenges: Vec<String> = challenges.iter().map(Uuid::to_string).collect();
        let query = format!("?wait={wait_s}&have={}&challenges={}", have.join(","), challenges.join(","));
        let res = self.request(reqwest::Method::GET, &path, &query, Vec::new()).send().await?;
        let status = res.status();
        anyhow::ensure!(status.is_success(), "assignments: {status} {}", res.text().await.unwrap_or_default());
        Ok(res.json().await?)
    }

    async fn ack(&self, lease_id: Uuid) -> anyhow::Result<String> {
        let path = format!("/api/v1/hosts/{}/leases/{lease_id}/ack", self.host_id);
        let res = self.request(reqwest::Method::POST, &path, "", Vec::new()).send().await?;
        let status = res.status();
        anyhow::ensure!(status.is_success(), "ack: {status}");
        let body: serde_json::Value = res.json().await?;
        Ok(body["state"].as_str().unwrap_or_default().to_string())
    }

    async fn upload(&self, lease_id: Uuid, chunks: &[(OutputStream, String)]) -> anyhow::Result<()> {
        let path = format!("/api/v1/hosts/{}/leases/{lease_id}/logs", self.host_id);
        for part in chunks.chunks(LOG_CHUNKS_PER_UPLOAD) {
            let items: Vec<serde_json::Value> = part
                .iter()
                .map(|(stream, text)| {
                    let stream = match stream {
                        OutputStream::Stdout => "stdout",
                        OutputStream::Stderr => "stderr",
                    };
                    serde_json::json!({"stream": stream, "text": text})
                })
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({ "chunks": items }))?;
            let res = self.request(reqwest::Method::POST, &path, "", body).send().await?;
            anyhow::ensure!(res.status().is_success(), "log upload: {}", res.status());
        }
        Ok(())
    }
}

/// How jobs run on this host.
#[derive(Clone)]
pub struct JobSettings {
    pub work_root: PathBuf,
    pub process_runtime: bool,
    pub docker_available: bool,
    pub kill_grace: Duration,
}

impl JobSettings {
    fn runtime_for(&self, image: Option<&str>) -> Option<RuntimeConfig> {
        let mut config = RuntimeConfig::process(self.work_root.clone());
        config.kill_grace = self.kill_grace;
        if image.is_none() && self.process_runtime {
            return Some(config);
        }
        if self.docker_available {
            config.kind = RuntimeKind::Docker;
            return Some(config);
        }
        None
    }
}

/// Whether a `docker` binary is on the PATH.
pub fn docker_available() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("docker").is_file()))
}

/// Polls for assignments and runs them until the future is dropped.
pub async fn run(
    exchange_url: &str,
    key: SigningKey,
    host_id: Uuid,
    settings: JobSettings,
    control: Option<SimulatedControl>,
    table: JobTable,
    challenger: Challenger,
) -> anyhow::Result<()> {
    let client = HostClient {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(POLL_WAIT_S + 10))
            .connect_timeout(Duration::from_secs(10))
            .build()?,
        base: exchange_url.trim_end_matches('/').to_string(),
        key: Arc::new(key),
        host_id,
    };
    let cc = crate::attestation::CcResponder::new(
        client.client.clone(),
        client.base.clone(),
        client.key.clone(),
        host_id,
        control.is_some(),
    );
    let mut cancels: HashMap<Uuid, tokio::sync::oneshot::Sender<Option<Duration>>> = HashMap::new();
    let mut failures = 0u32;
    // Preempting leases as last listed: the exchange lists them until the report that says
    // their job is gone, so they belong to the set the long-poll compares.
    let mut preempting: Vec<Uuid> = Vec::new();
    // A new lease waits for a preempted job still on its GPUs.
    let mut waiting = false;
    loop {
        if waiting {
            let _ = tokio::time::timeout(Duration::from_millis(500), table.ended()).await;
        }
        cancels.retain(|_, c| !c.is_closed());
        let mut have = table.running();
        have.extend(preempting.iter().filter(|id| !have.contains(id)).copied().collect::<Vec<_>>());
        let wait_s = if waiting { 0 } else { POLL_WAIT_S };
        let assignments = match client.assignments(&have, &challenger.taken(), wait_s).await {
            Ok(a) => {
                failures = 0;
                a
            }
            Err(err) => {
                tracing::warn!(error = %err, "assignments poll failed; retrying");
                tokio::time::sleep(crate::reporter::backoff_delay(failures, Duration::from_secs(10))).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        cc.answer(&assignments.cc_requests);
        challenger.dispatch(&client, &table, assignments.challenges);
        let listed: Vec<Uuid> = assignments.items.iter().map(|a| a.lease_id).collect();
        for id in have.iter().filter(|id| !listed.contains(id)) {
            if let Some(cancel) = cancels.remove(id) {
                tracing::info!(lease_id = %id, "lease no longer assigned; stopping its job");
                let _ = cancel.send(None);
            }
        }
        preempting = assignments.items.iter().filter(|a| a.state == "preempting").map(|a| a.lease_id).collect();
        waiting = false;
        for assignment in assignments.items {
            if assignment.state == "preempting" {
                if let Some(cancel) = cancels.remove(&assignment.lease_id) {
                    let deadline = assignment.preempt_deadline.unwrap_or_else(Utc::now);
                    let grace = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    tracing::info!(lease_id = %assignment.lease_id, grace_s = grace.as_secs_f64(),
                        "lease preempted by an on-demand buyer: SIGTERM now, SIGKILL at the deadline");
                    let _ = cancel.send(Some(grace));
                }
                // Never started: a preempted lease is not started any more.
                continue;
            }
            if table.known(&assignment.lease_id) {
                continue;
            }
            let busy = table.running_gpus();
            if busy.values().flatten().any(|gpu| assignment.gpu_uuids.contains(gpu)) {
                // A preempted job still holds these GPUs: start when it is gone.
                waiting = true;
                continue;
            }
            if let Some(cancel) = start_job(&client, &settings, control.clone(), &table, assignment).await {
                cancels.insert(cancel.0, cancel.1);
            }
        }
    }
}

async fn start_job(
    client: &HostClient,
    settings: &JobSettings,
    control: Option<SimulatedControl>,
    table: &JobTable,
    assignment: Assignment,
) -> Option<(Uuid, tokio::sync::oneshot::Sender<Option<Duration>>)> {
    let lease_id = assignment.lease_id;
    let max_duration = (assignment.max_end_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    let mut env = assignment.job.env;
    // The job's identity, set after the buyer's variables so they cannot be spoofed.
    env.insert("CAPEX_LEASE_ID".into(), lease_id.to_string());
    env.insert("CAPEX_JOB_ID".into(), assignment.job_id.unwrap_or(lease_id).to_string());
    env.insert("CAPEX_ATTEMPT".into(), assignment.attempt.unwrap_or(1).to_string());
    // Where and how the job may steer itself: the exchange as this agent reaches it, and
    // the attempt's token (valid only while this lease runs).
    env.insert("CAPEX_EXCHANGE".into(), client.base.clone());
    match assignment.job_token {
        Some(token) => env.insert("CAPEX_JOB_TOKEN".into(), token),
        None => env.remove("CAPEX_JOB_TOKEN"),
    };
    let spec = JobSpec {
        lease_id,
        command: assignment.job.command,
        env,
        image: assignment.job.image,
        gpu_uuids: assignment.gpu_uuids.clone(),
        max_duration,
    };
    let Some(runtime) = settings.runtime_for(spec.image.as_deref()) else {
        tracing::error!(%lease_id, "no runtime for this job: it names no image and the process runtime is off, or Docker is missing");
        table.set(lease_id, "exited", None, Some(127));
        let _ = client.ack(lease_id).await;
        let note = "capex-agent: this host cannot run the job (no Docker, process runtime disabled)\n".to_string();
        let _ = client.upload(lease_id, &[(OutputStream::Stderr, note)]).await;
        return None;
    };
    let mut handle = match capex_runtime::start(&spec, &runtime) {
        Ok(handle) => handle,
        Err(err) => {
            tracing::error!(%lease_id, error = %err, "job failed to start");
            table.set(lease_id, "exited", None, Some(127));
            let _ = client.ack(lease_id).await;
            let _ = client.upload(lease_id, &[(OutputStream::Stderr, format!("capex-agent: {err}\n"))]).await;
            return None;
        }
    };
    let pid = handle.pid;
    table.start(lease_id, pid, assignment.gpu_uuids.clone());
    if let Some(control) = &control {
        for gpu in &assignment.gpu_uuids {
            control.assign_uuid(gpu, pid, Some(lease_id));
        }
    }
    tracing::info!(%lease_id, pid, gpus = ?assignment.gpu_uuids, "job started");
    match client.ack(lease_id).await {
        Ok(state) if state != "running" => {
            tracing::info!(%lease_id, state, "lease already ended; stopping the job");
            handle.cancel();
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%lease_id, error = %err, "ack failed; the next report says it runs"),
    }
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(supervise(client.clone(), control, table.clone(), lease_id, handle, cancel_rx));
    Some((lease_id, cancel_tx))
}

async fn supervise(
    client: HostClient,
    control: Option<SimulatedControl>,
    table: JobTable,
    lease_id: Uuid,
    mut handle: capex_runtime::JobHandle,
    mut cancel: tokio::sync::oneshot::Receiver<Option<Duration>>,
) {
    let pid = handle.pid;
    let mut logs = LogBuffer::new(LOG_BUFFER_BYTES);
    let mut flush = tokio::time::interval(LOG_FLUSH);
    let mut cancelled = false;
    let exit = loop {
        tokio::select! {
            event = handle.events.recv() => match event {
                Some(JobEvent::Output { stream, text }) => logs.push(stream, &text),
                Some(JobEvent::Started { .. }) => {}
                Some(JobEvent::Exited { exit_code, reason }) => break (exit_code, reason),
                None => break (None, ExitReason::Exited),
            },
            _ = flush.tick() => upload(&client, lease_id, &mut logs).await,
            stop = &mut cancel, if !cancelled => {
                cancelled = true;
                match stop {
                    Ok(Some(grace)) => handle.stop_within(grace),
                    // Told to stop, or the loop that could tell it is gone.
                    _ => handle.cancel(),
                }
            }
        }
    };
    upload(&client, lease_id, &mut logs).await;
    if let Some(control) = &control {
        control.release(pid);
    }
    let (code, reason) = exit;
    let state = match reason {
        ExitReason::Exited => "exited",
        ExitReason::MaxDuration => "max_duration",
        ExitReason::Cancelled => "cancelled",
    };
    // A job killed by a signal has no exit code; report 128 + nothing known as -1.
    table.set(lease_id, state, None, Some(code.unwrap_or(-1)));
    tracing::info!(%lease_id, state, exit_code = ?code, "job ended");
}

async fn upload(client: &HostClient, lease_id: Uuid, logs: &mut LogBuffer) {
    if logs.is_empty() {
        return;
    }
    let chunks: Vec<(OutputStream, String)> = logs.take().into_iter().map(|c| (c.stream, c.text)).collect();
    if let Err(err) = client.upload(lease_id, &chunks).await {
        tracing::warn!(%lease_id, error = %err, "log upload failed; these lines are lost");
    }
}
