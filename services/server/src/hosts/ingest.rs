//! The report ingester: the one writer of report state.
//!
//! Handlers only read the body and decode the envelope; they push a job onto a bounded
//! queue and wait on a oneshot for the verdict. Two tasks form a pipeline:
//! - the verifier takes whatever is queued (up to [`REPORT_BATCH_MAX`]), checks all the
//!   signatures in one batch (`verify_batch`, falling back to `verify_strict` one by one to
//!   find a bad one) on a blocking thread, and parses the verified bytes;
//! - the writer takes the verified reports and applies every other rule of DESIGN
//!   section 5 inside one transaction that locks the hosts concerned (`for update`, in
//!   host id order), so several server replicas stay correct, then writes the batch with
//!   a handful of `unnest` statements and answers each request after the commit.
//!
//! Cost sketch per report: one signature check (~1/2 of a `verify_strict` in a batch),
//! one `host_reports` row, one `hosts` row and one `host_gpus` row per GPU updated, but
//! only one statement of each kind per batch and one commit (one fsync) per batch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capex_core::ReportPayload;
use capex_core::report::{REPORT_DOMAIN, verify_many_strict};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::refusal::Refusal;
use crate::error::ApiError;
use crate::input::TextKind;

/// Most reports verified or written together.
pub const REPORT_BATCH_MAX: usize = 512;
/// Reports waiting for the verifier; a full queue makes handlers wait (backpressure).
pub const REPORT_QUEUE_MAX: usize = 8192;
/// Most GPUs one report (and one host) may carry.
pub const GPUS_PER_HOST_MAX: usize = 64;
/// Most leases one report may list.
pub const LEASES_PER_REPORT_MAX: usize = 256;
/// Most processes listed per GPU.
pub const PROCESSES_PER_GPU_MAX: usize = 1024;
/// Host public keys never change, so the verifier caches them; cleared when this full.
const HOST_KEY_CACHE_MAX: usize = 100_000;
/// Distinct (host, code) refusal counters held between database flushes.
const TALLY_KEYS_MAX: usize = 10_000;
/// How often an idle writer still flushes refusal counts.
const TALLY_FLUSH_IDLE_MS: u64 = 1000;

/// What happened to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Accepted {
        seq: u64,
    },
    /// The same bytes as the last accepted report: nothing changed.
    Duplicate {
        seq: u64,
    },
}

type Reply = oneshot::Sender<Result<ReportOutcome, ApiError>>;

struct ReportJob {
    host_id: Uuid,
    payload: Vec<u8>,
    signature: Signature,
    reply: Reply,
}

struct VerifiedReport {
    host_id: Uuid,
    payload: Vec<u8>,
    signature: Signature,
    sha256: [u8; 32],
    report: ReportPayload,
    reply: Reply,
}

/// What a count is kept under: the host and code, or no host for a refusal decided before
/// the host's signature verified. Such a report may come from anyone (no key, another
/// host's key, a forged signature), so it is counted by code alone in
/// `report_refusals_unattributed`, never on the host in the URL, whose owner would read it
/// as its own host's health.
type TallyKey = (Option<Uuid>, &'static str);

/// Report outcomes counted between flushes into `host_report_counts` and
/// `report_refusals_unattributed`.
#[derive(Default)]
struct RefusalTally(Mutex<HashMap<TallyKey, i64>>);

impl RefusalTally {
    fn add(&self, host_id: Option<Uuid>, code: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if counts.len() < TALLY_KEYS_MAX || counts.contains_key(&(host_id, code)) {
            *counts.entry((host_id, code)).or_insert(0) += 1;
        }
    }

    fn take(&self) -> HashMap<TallyKey, i64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn put_back(&self, counts: HashMap<TallyKey, i64>) {
        let mut held = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, n) in counts {
            *held.entry(key).or_insert(0) += n;
        }
    }
}

/// Handle to the ingester; cheap to clone. The tasks stop when the last handle drops.
#[derive(Clone)]
pub struct ReportIngest {
    jobs: mpsc::Sender<ReportJob>,
    tally: Arc<RefusalTally>,
}

impl ReportIngest {
    /// Starts the verifier and writer tasks. `skew_s`: the clock-skew window for `sent_at`;
    /// `metering`: how accepted reports bill the host's running leases.
    pub fn start(pool: PgPool, skew_s: u64, metering: crate::jobs::Metering) -> ReportIngest {
        let (jobs, job_rx) = mpsc::channel(REPORT_QUEUE_MAX);
        let (verified, verified_rx) = mpsc::channel(REPORT_BATCH_MAX * 2);
        let tally = Arc::new(RefusalTally::default());
        tokio::spawn(verify_loop(pool.clone(), job_rx, verified, tally.clone()));
        tokio::spawn(write_loop(pool, verified_rx, tally.clone(), skew_s as i64, metering));
        ReportIngest { jobs, tally }
    }

    /// Queues a decoded report and waits for its verdict.
    pub(crate) async fn submit(
        &self,
        host_id: Uuid,
        payload: Vec<u8>,
        signature: Signature,
    ) -> Result<ReportOutcome, ApiError> {
        let (reply, verdict) = oneshot::channel();
        self.jobs
            .send(ReportJob { host_id, payload, signature, reply })
            .await
            .map_err(|_| ApiError::internal("report ingester stopped"))?;
        verdict.await.map_err(|_| ApiError::internal("report ingester dropped a report"))?
    }

    /// Counts a refusal decided before the host's signature verified (e.g. a bad
    /// envelope): by code only, not on the host the URL names.
    pub(crate) fn count_unattributed(&self, refusal: Refusal) {
        self.tally.add(None, refusal.code());
    }
}

async fn verify_loop(
    pool: PgPool,
    mut jobs: mpsc::Receiver<ReportJob>,
    verified: mpsc::Sender<VerifiedReport>,
    tally: Arc<RefusalTally>,
) {
    let mut keys: HashMap<Uuid, VerifyingKey> = HashMap::new();
    let mut batch = Vec::with_capacity(REPORT_BATCH_MAX);
    while jobs.recv_many(&mut batch, REPORT_BATCH_MAX).await > 0 {
        let pending = std::mem::take(&mut batch);
        let missing: Vec<Uuid> = {
            let mut ids: Vec<Uuid> = pending.iter().map(|j| j.host_id).filter(|id| !keys.contains_key(id)).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        if !missing.is_empty() {
            if keys.len() + missing.len() > HOST_KEY_CACHE_MAX {
                keys.clear();
            }
            match load_keys(&pool, &missing).await {
                Ok(found) => keys.extend(found),
                Err(err) => {
                    let error = ApiError::internal(err);
                    for job in pending {
                        let _ = job.reply.send(Err(error.clone()));
                    }
                    continue;
                }
            }
        }
        let mut known = Vec::with_capacity(pending.len());
        for job in pending {
            match keys.get(&job.host_id) {
                Some(key) => known.push((*key, job)),
                None => {
                    tally.add(None, Refusal::UnknownHost.code());
                    let detail = format!("no host {} is registered", job.host_id);
                    let _ = job.reply.send(Err(Refusal::UnknownHost.into_error(detail)));
                }
            }
        }
        if known.is_empty() {
            continue;
        }
        let checked = tokio::task::spawn_blocking(move || {
            let items: Vec<(&VerifyingKey, &[u8], &Signature)> =
                known.iter().map(|(key, job)| (key, job.payload.as_slice(), &job.signature)).collect();
            let verdicts = verify_many_strict(REPORT_DOMAIN, &items);
            known
                .into_iter()
                .zip(verdicts)
                .map(|((_, job), ok)| {
                    let parsed = if ok { Some(parse_report(&job.payload)) } else { None };
                    (job, parsed)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let checked = match checked {
            Ok(checked) => checked,
            Err(err) => {
                tracing::error!(error = %err, "signature verification task failed");
                continue;
            }
        };
        for (job, parsed) in checked {
            match parsed {
                None => {
                    // Not the host's (or not provably): counted by code only.
                    tally.add(None, Refusal::InvalidSignature.code());
                    let detail = "the signature does not verify under this host's key";
                    let _ = job.reply.send(Err(Refusal::InvalidSignature.into_error(detail)));
                }
                Some(Err(detail)) => {
                    // Signed by the host's key: the host's own refusal.
                    tally.add(Some(job.host_id), Refusal::InvalidPayload.code());
                    let _ = job.reply.send(Err(Refusal::InvalidPayload.into_error(detail)));
                }
                Some(Ok(report)) => {
                    let sha256: [u8; 32] = Sha256::digest(&job.payload).into();
                    let report = VerifiedReport {
                        host_id: job.host_id,
                        payload: job.payload,
                        signature: job.signature,
                        sha256,
                        report,
                        reply: job.reply,
                    };
                    if verified.send(report).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn load_keys(pool: &PgPool, host_ids: &[Uuid]) -> Result<Vec<(Uuid, VerifyingKey)>, sqlx::Error> {
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as("select host_id, public_key from hosts where host_id = any($1)")
        .bind(host_ids)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, bytes)| {
            let bytes: [u8; 32] = bytes.try_into().ok()?;
            VerifyingKey::from_bytes(&bytes).ok().map(|key| (id, key))
        })
        .collect())
}

/// Longest text in a report (a GPU's uuid or name, a lease's state), in characters.
pub const REPORT_TEXT_CHARS_MAX: usize = 128;

/// Every text field of a report: the input rules apply to each of them.
fn report_text(report: &ReportPayload) -> impl Iterator<Item = (String, &str)> {
    let gpus = report.gpus.iter().enumerate().flat_map(|(i, gpu)| {
        [(format!("gpus[{i}].uuid"), gpu.uuid.as_str()), (format!("gpus[{i}].name"), gpu.name.as_str())]
    });
    let leases =
        report.leases.iter().flatten().enumerate().map(|(i, l)| (format!("leases[{i}].state"), l.state.as_str()));
    gpus.chain(leases)
}

/// Parses verified bytes and checks the payload's own shape (bounds, duplicates, text and
/// times by the input rules: one bad report must never fail the batch it is written in).
fn parse_report(payload: &[u8]) -> Result<ReportPayload, String> {
    let report: ReportPayload = serde_json::from_slice(payload).map_err(|err| format!("payload: {err}"))?;
    for (field, time) in [("sent_at", report.sent_at), ("measured_at", report.measured_at)] {
        crate::input::time_rules(time).map_err(|err| format!("{field}: {err}"))?;
    }
    if report.seq > i64::MAX as u64 {
        return Err("seq is out of range".into());
    }
    if !(1..=3600).contains(&report.interval_s) {
        return Err("interval_s must be 1 to 3600".into());
    }
    if report.gpus.len() > GPUS_PER_HOST_MAX {
        return Err(format!("a report carries at most {GPUS_PER_HOST_MAX} GPUs"));
    }
    if report.leases.as_ref().is_some_and(|l| l.len() > LEASES_PER_REPORT_MAX) {
        return Err(format!("a report lists at most {LEASES_PER_REPORT_MAX} leases"));
    }
    let mut seen = HashSet::new();
    for (i, gpu) in report.gpus.iter().enumerate() {
        if !seen.insert(gpu.uuid.as_str()) {
            return Err(format!("gpus[{i}].uuid appears twice"));
        }
        if gpu.utilization_pct > 100 {
            return Err(format!("gpus[{i}].utilization_pct is over 100"));
        }
        let too_big = [gpu.energy_mj, gpu.power_mw, gpu.memory_used_mib, gpu.memory_total_mib];
        if too_big.iter().any(|v| *v > i64::MAX as u64) {
            return Err(format!("gpus[{i}] has a counter out of range"));
        }
        if gpu.processes.len() > PROCESSES_PER_GPU_MAX {
            return Err(format!("gpus[{i}] lists more than {PROCESSES_PER_GPU_MAX} processes"));
        }
    }
    for (field, text) in report_text(&report) {
        crate::input::text_rules(text, TextKind::Line, REPORT_TEXT_CHARS_MAX)
            .map_err(|err| format!("{field}: {err}"))?;
    }
    Ok(report)
}

async fn write_loop(
    pool: PgPool,
    mut reports: mpsc::Receiver<VerifiedReport>,
    tally: Arc<RefusalTally>,
    skew_s: i64,
    metering: crate::jobs::Metering,
) {
    let mut batch = Vec::with_capacity(REPORT_BATCH_MAX);
    loop {
        let received = tokio::time::timeout(
            Duration::from_millis(TALLY_FLUSH_IDLE_MS),
            reports.recv_many(&mut batch, REPORT_BATCH_MAX),
        )
        .await;
        match received {
            Ok(0) => break,
            Ok(_) => {
                let pending = std::mem::take(&mut batch);
                write_batch(&pool, pending, &tally, skew_s, &metering).await;
            }
            Err(_) => flush_tally(&pool, &tally).await,
        }
    }
    flush_tally(&pool, &tally).await;
}

async fn flush_tally(pool: &PgPool, tally: &RefusalTally) {
    let counts = tally.take();
    if counts.is_empty() {
        return;
    }
    let result = async {
        let mut conn = pool.acquire().await?;
        upsert_counts(&mut conn, &counts).await
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "could not store report refusal counts; will retry");
        tally.put_back(counts);
    }
}

/// Per-host state the rules need, loaded under lock at the start of the batch and kept
/// current as the batch's reports are applied in order.
struct HostState {
    active: bool,
    /// The probe the host registered with; every report must name the same one.
    backend: String,
    last_seq: i64,
    last_sha256: Option<Vec<u8>>,
    /// Registered GPUs and their last energy counter.
    energy_mj: HashMap<String, Option<i64>>,
    /// Set when a report of this batch was accepted.
    accepted_interval_s: Option<i32>,
}

async fn write_batch(
    pool: &PgPool,
    reports: Vec<VerifiedReport>,
    tally: &RefusalTally,
    skew_s: i64,
    metering: &crate::jobs::Metering,
) {
    let counts = tally.take();
    let started = std::time::Instant::now();
    let batch = || apply_batch(pool, &reports, counts.clone(), skew_s, metering);
    match capex_ledger::retrying("report_batch", batch).await {
        Ok((verdicts, outbox)) => {
            if let Some(feed) = &metering.feed {
                outbox.publish(feed);
            }
            let accepted = verdicts.iter().filter(|v| matches!(v, Ok(ReportOutcome::Accepted { .. }))).count();
            metrics::counter!("capex_reports_total", "outcome" => "accepted").increment(accepted as u64);
            metrics::histogram!("capex_report_batch_seconds").record(started.elapsed().as_secs_f64());
            tracing::debug!(reports = reports.len(), accepted, "report batch committed");
            for (report, verdict) in reports.into_iter().zip(verdicts) {
                let _ = report.reply.send(verdict);
            }
        }
        Err(err) => {
            tally.put_back(counts);
            tracing::warn!(error = %err, reports = reports.len(), "report batch failed");
            for report in reports {
                let _ = report.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A host's id, status, last seq, last payload digest and backend, as the ingester locks it.
type HostStateRow = (Uuid, String, i64, Option<Vec<u8>>, String);

async fn apply_batch(
    pool: &PgPool,
    reports: &[VerifiedReport],
    mut counts: HashMap<TallyKey, i64>,
    skew_s: i64,
    metering: &crate::jobs::Metering,
) -> Result<(Vec<Result<ReportOutcome, ApiError>>, crate::jobs::settle::Outbox), ApiError> {
    let mut outbox = crate::jobs::settle::Outbox::default();
    let mut host_ids: Vec<Uuid> = reports.iter().map(|r| r.host_id).collect();
    host_ids.sort_unstable();
    host_ids.dedup();

    let mut tx = pool.begin().await?;
    let rows: Vec<HostStateRow> = sqlx::query_as(
        "select host_id, status, last_seq, last_payload_sha256, backend from hosts
         where host_id = any($1) order by host_id for no key update",
    )
    .bind(&host_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut hosts: HashMap<Uuid, HostState> = rows
        .into_iter()
        .map(|(id, status, last_seq, last_sha256, backend)| {
            let state = HostState {
                active: status == "active",
                backend,
                last_seq,
                last_sha256,
                energy_mj: HashMap::new(),
                accepted_interval_s: None,
            };
            (id, state)
        })
        .collect();
    let gpus: Vec<(String, Uuid, Option<i64>)> =
        sqlx::query_as("select gpu_uuid, host_id, energy_mj from host_gpus where host_id = any($1)")
            .bind(&host_ids)
            .fetch_all(&mut *tx)
            .await?;
    for (uuid, host_id, energy) in gpus {
        if let Some(host) = hosts.get_mut(&host_id) {
            host.energy_mj.insert(uuid, energy);
        }
    }

    let now = Utc::now();
    let mut verdicts = Vec::with_capacity(reports.len());
    let mut accepted: Vec<&VerifiedReport> = Vec::new();
    for report in reports {
        let verdict = judge(&mut hosts, report, now, skew_s);
        let code = match &verdict {
            Ok(ReportOutcome::Accepted { .. }) => {
                accepted.push(report);
                "accepted"
            }
            Ok(ReportOutcome::Duplicate { .. }) => "duplicate",
            Err((refusal, _)) => refusal.code(),
        };
        *counts.entry((Some(report.host_id), code)).or_insert(0) += 1;
        verdicts.push(verdict.map_err(|(refusal, detail)| refusal.into_error(detail)));
    }

    if !accepted.is_empty() {
        insert_reports(&mut tx, &accepted).await?;
        update_hosts(&mut tx, &hosts, &accepted).await?;
        update_gpus(&mut tx, &accepted).await?;
        // Metering in the same transaction: a lease is billed exactly when its report is
        // stored, and billed_until keeps an interval from being billed twice. The leases and
        // every account they may move are locked once, before the first bill.
        let mut metered_hosts: Vec<Uuid> = accepted.iter().map(|r| r.host_id).collect();
        metered_hosts.sort_unstable();
        metered_hosts.dedup();
        let mut leases = crate::jobs::settle::lock_active_leases(&mut tx, &metered_hosts).await?;
        for report in &accepted {
            let metered = crate::jobs::settle::ReportForMetering {
                host_id: report.host_id,
                interval_s: report.report.interval_s,
                gpus: report.report.gpus.iter().map(|g| g.uuid.as_str()).collect(),
                leases: report.report.leases.as_deref().unwrap_or(&[]),
            };
            crate::jobs::settle::meter_report(&mut tx, &metered, &mut leases, now, metering.fee_rate, &mut outbox)
                .await?;
        }
    }
    upsert_counts(&mut tx, &counts).await?;
    tx.commit().await?;
    Ok((verdicts, outbox))
}

/// Applies the rules of DESIGN section 5 that need the host's state, in order.
fn judge(
    hosts: &mut HashMap<Uuid, HostState>,
    verified: &VerifiedReport,
    now: DateTime<Utc>,
    skew_s: i64,
) -> Result<ReportOutcome, (Refusal, String)> {
    let Some(host) = hosts.get_mut(&verified.host_id) else {
        return Err((Refusal::UnknownHost, format!("no host {} is registered", verified.host_id)));
    };
    if !host.active {
        return Err((Refusal::HostInactive, "this host is disabled".into()));
    }
    let report = &verified.report;
    if report.host_id != verified.host_id {
        return Err((Refusal::HostMismatch, format!("the report is for host {}, not this one", report.host_id)));
    }
    if report.backend.as_str() != host.backend {
        return Err((
            Refusal::BackendMismatch,
            format!(
                "the report was made by the {} backend; this host registered with {}",
                report.backend, host.backend
            ),
        ));
    }
    if host.last_sha256.as_deref() == Some(verified.sha256.as_slice()) {
        return Ok(ReportOutcome::Duplicate { seq: report.seq });
    }
    let seq = report.seq as i64; // checked <= i64::MAX when parsed
    if seq <= host.last_seq {
        return Err((
            Refusal::ReplayedSequence,
            format!("seq {seq} is not above the last accepted seq {}", host.last_seq),
        ));
    }
    let ahead_s = (report.sent_at - now).num_seconds();
    if ahead_s > skew_s {
        return Err((
            Refusal::SentAtFuture,
            format!("sent_at is {ahead_s} s ahead of the server clock (window {skew_s} s)"),
        ));
    }
    if -ahead_s > skew_s {
        return Err((Refusal::SentAtStale, format!("sent_at is {} s old (window {skew_s} s)", -ahead_s)));
    }
    for (i, gpu) in report.gpus.iter().enumerate() {
        let Some(previous) = host.energy_mj.get(&gpu.uuid) else {
            return Err((Refusal::ForeignGpu, format!("gpus[{i}] {} is not registered to this host", gpu.uuid)));
        };
        if let Some(previous) = previous
            && (gpu.energy_mj as i64) < *previous
        {
            return Err((
                Refusal::EnergyWentBackwards,
                format!("gpus[{i}].energy_mj {} is below the last reported {previous}", gpu.energy_mj),
            ));
        }
    }
    // Every rule passed: from here the report is accepted.
    for gpu in &report.gpus {
        host.energy_mj.insert(gpu.uuid.clone(), Some(gpu.energy_mj as i64));
    }
    host.last_seq = seq;
    host.last_sha256 = Some(verified.sha256.to_vec());
    host.accepted_interval_s = Some(report.interval_s as i32);
    Ok(ReportOutcome::Accepted { seq: report.seq })
}

async fn insert_reports(conn: &mut sqlx::PgConnection, accepted: &[&VerifiedReport]) -> Result<(), sqlx::Error> {
    let host_ids: Vec<Uuid> = accepted.iter().map(|r| r.host_id).collect();
    let seqs: Vec<i64> = accepted.iter().map(|r| r.report.seq as i64).collect();
    let sent_at: Vec<DateTime<Utc>> = accepted.iter().map(|r| r.report.sent_at).collect();
    let measured_at: Vec<DateTime<Utc>> = accepted.iter().map(|r| r.report.measured_at).collect();
    let payloads: Vec<Vec<u8>> = accepted.iter().map(|r| r.payload.clone()).collect();
    let signatures: Vec<Vec<u8>> = accepted.iter().map(|r| r.signature.to_bytes().to_vec()).collect();
    sqlx::query(
        "insert into host_reports (host_id, seq, sent_at, measured_at, payload, signature)
         select * from unnest($1::uuid[], $2::int8[], $3::timestamptz[], $4::timestamptz[], $5::bytea[], $6::bytea[])",
    )
    .bind(host_ids)
    .bind(seqs)
    .bind(sent_at)
    .bind(measured_at)
    .bind(payloads)
    .bind(signatures)
    .execute(conn)
    .await?;
    Ok(())
}

async fn update_hosts(
    conn: &mut sqlx::PgConnection,
    hosts: &HashMap<Uuid, HostState>,
    accepted: &[&VerifiedReport],
) -> Result<(), sqlx::Error> {
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    let mut shas = Vec::new();
    let mut intervals = Vec::new();
    let touched: HashSet<Uuid> = accepted.iter().map(|r| r.host_id).collect();
    for id in touched {
        let Some(host) = hosts.get(&id) else { continue };
        let (Some(interval_s), Some(sha)) = (host.accepted_interval_s, host.last_sha256.clone()) else { continue };
        ids.push(id);
        seqs.push(host.last_seq);
        shas.push(sha);
        intervals.push(interval_s);
    }
    sqlx::query(
        "update hosts h set last_seq = u.seq, last_payload_sha256 = u.sha, report_interval_s = u.interval_s,
                last_report_at = now()
         from unnest($1::uuid[], $2::int8[], $3::bytea[], $4::int4[]) as u(host_id, seq, sha, interval_s)
         where h.host_id = u.host_id",
    )
    .bind(ids)
    .bind(seqs)
    .bind(shas)
    .bind(intervals)
    .execute(conn)
    .await?;
    Ok(())
}

async fn update_gpus(conn: &mut sqlx::PgConnection, accepted: &[&VerifiedReport]) -> Result<(), sqlx::Error> {
    // Later reports of a host in this batch overwrite earlier ones: keep the last sample.
    let mut latest: HashMap<&str, &capex_core::GpuSample> = HashMap::new();
    for report in accepted {
        for gpu in &report.report.gpus {
            latest.insert(gpu.uuid.as_str(), gpu);
        }
    }
    let mut uuids = Vec::with_capacity(latest.len());
    let mut utilization = Vec::with_capacity(latest.len());
    let mut memory_used = Vec::with_capacity(latest.len());
    let mut power = Vec::with_capacity(latest.len());
    let mut energy = Vec::with_capacity(latest.len());
    let mut temperature = Vec::with_capacity(latest.len());
    let mut foreign = Vec::with_capacity(latest.len());
    let mut processes = Vec::with_capacity(latest.len());
    for (uuid, gpu) in latest {
        uuids.push(uuid.to_string());
        utilization.push(gpu.utilization_pct as i32);
        memory_used.push(gpu.memory_used_mib as i64);
        power.push(gpu.power_mw as i64);
        energy.push(gpu.energy_mj as i64);
        temperature.push(gpu.temperature_c);
        foreign.push(gpu.processes.iter().filter(|p| p.lease_id.is_none()).count() as i32);
        processes.push(gpu.processes.len() as i32);
    }
    sqlx::query(
        "update host_gpus g set utilization_pct = u.utilization_pct, memory_used_mib = u.memory_used_mib,
                power_mw = u.power_mw, energy_mj = u.energy_mj, temperature_c = u.temperature_c,
                foreign_processes = u.foreign_processes, processes = u.processes, last_seen_at = now()
         from unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int4[], $7::int4[], $8::int4[])
              as u(gpu_uuid, utilization_pct, memory_used_mib, power_mw, energy_mj, temperature_c,
                   foreign_processes, processes)
         where g.gpu_uuid = u.gpu_uuid",
    )
    .bind(uuids)
    .bind(utilization)
    .bind(memory_used)
    .bind(power)
    .bind(energy)
    .bind(temperature)
    .bind(foreign)
    .bind(processes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds to `host_report_counts` (counts for hosts that do not exist are dropped) and to
/// `report_refusals_unattributed`.
async fn upsert_counts(conn: &mut sqlx::PgConnection, counts: &HashMap<TallyKey, i64>) -> Result<(), sqlx::Error> {
    upsert_unattributed(&mut *conn, counts).await?;
    let mut entries: Vec<(Uuid, &str, i64)> =
        counts.iter().filter_map(|((id, code), n)| id.map(|id| (id, *code, *n))).collect();
    if entries.is_empty() {
        return Ok(());
    }
    // A fixed order keeps concurrent upserts from deadlocking on each other.
    entries.sort_unstable();
    let ids: Vec<Uuid> = entries.iter().map(|e| e.0).collect();
    let codes: Vec<String> = entries.iter().map(|e| e.1.to_string()).collect();
    let ns: Vec<i64> = entries.iter().map(|e| e.2).collect();
    sqlx::query(
        "insert into host_report_counts (host_id, code, count)
         select u.host_id, u.code, u.n from unnest($1::uuid[], $2::text[], $3::int8[]) as u(host_id, code, n)
         where exists (select 1 from hosts h where h.host_id = u.host_id)
         order by u.host_id, u.code
         on conflict (host_id, code) do update
         set count = host_report_counts.count + excluded.count, last_at = now()",
    )
    .bind(ids)
    .bind(codes)
    .bind(ns)
    .execute(conn)
    .await?;
    Ok(())
}

async fn upsert_unattributed(
    conn: &mut sqlx::PgConnection,
    counts: &HashMap<TallyKey, i64>,
) -> Result<(), sqlx::Error> {
    let mut entries: Vec<(&str, i64)> =
        counts.iter().filter(|((id, _), _)| id.is_none()).map(|((_, code), n)| (*code, *n)).collect();
    if entries.is_empty() {
        return Ok(());
    }
    // A fixed order keeps concurrent upserts from deadlocking on each other.
    entries.sort_unstable();
    let codes: Vec<String> = entries.iter().map(|e| e.0.to_string()).collect();
    let ns: Vec<i64> = entries.iter().map(|e| e.1).collect();
    sqlx::query(
        "insert into report_refusals_unattributed (code, count)
         select u.code, u.n from unnest($1::text[], $2::int8[]) as u(code, n)
         order by u.code
         on conflict (code) do update
         set count = report_refusals_unattributed.count + excluded.count, last_at = now()",
    )
    .bind(codes)
    .bind(ns)
    .execute(conn)
    .await?;
    Ok(())
}
