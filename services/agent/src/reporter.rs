//! `capex-agent register` and `capex-agent run`: registration with a signed inventory,
//! then a report every interval, spooled to disk and sent in sequence order.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use capex_core::report::encode_public_key;
use capex_core::{INVENTORY_DOMAIN, InventoryPayload, REPORT_DOMAIN, ReportPayload, SignedEnvelope};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::AgentConfig;
use crate::exchange::{Exchange, Registration, SendError};
use crate::gpu::{GpuProbe, open_probe};
use crate::key::load_key;
use crate::spool::Spool;

/// A signed report is re-signed (new `sent_at`, same `seq` and measurements) once it is
/// this old, so reports held in the spool through an outage stay inside the exchange's
/// clock-skew window (120 s by default) when they are finally sent.
pub const RESIGN_AFTER_S: u64 = 60;
/// First retry delay after a failed send; doubles per failure up to the configured max.
pub const BACKOFF_BASE_MS: u64 = 250;

/// Seed for simulated GPU UUIDs: the host's public key, so they are unique per host.
pub fn probe_seed(config: &AgentConfig) -> Vec<u8> {
    load_key(&config.key_path()).map(|k| k.verifying_key().to_bytes().to_vec()).unwrap_or_else(|_| b"capex".to_vec())
}

/// Registers this host with the exchange and saves the host id in the state directory.
pub async fn register(config: &AgentConfig, exchange_url: &str, api_key: &str) -> anyhow::Result<Registration> {
    let key = load_key(&config.key_path())?;
    let mut probe = open_probe(config.backend, &config.simulated_gpus, key.verifying_key().as_bytes())?;
    let inventory = probe.inventory()?;
    anyhow::ensure!(!inventory.gpus.is_empty(), "the {} backend sees no GPUs", probe.backend());
    let payload = InventoryPayload {
        public_key: encode_public_key(&key.verifying_key()),
        name: config.name.clone(),
        created_at: Utc::now(),
        interval_s: config.interval_s,
        backend: probe.backend(),
        driver_version: inventory.driver_version,
        cuda_version: inventory.cuda_version,
        gpus: inventory.gpus,
    };
    let envelope = SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &payload);
    let exchange = Exchange::new(exchange_url, Duration::from_secs(config.request_timeout_s))?;
    let host = exchange.register(api_key, &envelope).await.context("registering with the exchange")?;
    let host_id: Uuid =
        host["host_id"].as_str().and_then(|s| s.parse().ok()).context("the exchange answered without a host_id")?;
    let registration = Registration { host_id, exchange_url: exchange_url.trim_end_matches('/').to_string() };
    let path = config.host_path();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&registration)?)?;
    std::fs::rename(&tmp, &path)?;
    tracing::info!(%host_id, gpus = payload.gpus.len(), "host registered");
    Ok(registration)
}

pub fn load_registration(path: &Path) -> anyhow::Result<Registration> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run `capex-agent register` first)", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Reports until `shutdown` resolves. Everything not yet delivered stays in the spool.
pub async fn run(
    config: &AgentConfig,
    exchange_url: Option<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let key = load_key(&config.key_path())?;
    let registration = load_registration(&config.host_path())?;
    let probe = open_probe(config.backend, &config.simulated_gpus, key.verifying_key().as_bytes())?;
    let exchange_url = exchange_url.or(config.exchange_url.clone()).unwrap_or(registration.exchange_url.clone());
    run_with_probe(config, probe, key, registration.host_id, &exchange_url, shutdown).await
}

/// [`run`] with a probe chosen by the caller (the job runtime keeps the simulated
/// backend's control handle this way).
pub async fn run_with_probe(
    config: &AgentConfig,
    mut probe: Box<dyn GpuProbe>,
    key: SigningKey,
    host_id: Uuid,
    exchange_url: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let spool = Arc::new(Mutex::new(Spool::open(&config.state_dir, config.spool_reports_max)?));
    {
        let spool = spool.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(%host_id, exchange = exchange_url, backend = %probe.backend(), interval_s = config.interval_s,
            next_seq = spool.next_seq(), spooled = spool.len(), "capex-agent reporting");
    }
    let exchange = Exchange::new(exchange_url, Duration::from_secs(config.request_timeout_s))?;
    let wake = Arc::new(Notify::new());
    let energy = crate::energy::EnergyCounters::open(&config.state_dir);
    let table = crate::jobs::JobTable::default();
    let settings = crate::jobs::JobSettings {
        work_root: config.state_dir.join("jobs"),
        process_runtime: config.process_runtime,
        docker_available: crate::jobs::docker_available(),
        kill_grace: Duration::from_secs(config.kill_grace_s),
    };
    let challenger = crate::challenge::Challenger::new(
        crate::challenge::Engine::for_backend(probe.backend().as_str()),
        config.challenge_fault,
    );
    let runner = crate::jobs::run(
        exchange_url,
        key.clone(),
        host_id,
        settings,
        probe.simulated_control(),
        table.clone(),
        challenger,
    );
    let sampler = sample_loop(probe.as_mut(), energy, &spool, &wake, host_id, config.interval_s, &table);
    let sender = send_loop(&spool, &wake, &exchange, &key, host_id, Duration::from_secs(config.backoff_max_s));
    tokio::select! {
        result = sampler => result,
        result = sender => result,
        result = runner => result,
        () = shutdown => {
            let left = spool.lock().unwrap_or_else(|p| p.into_inner()).len();
            tracing::info!(spooled = left, "capex-agent stopping; undelivered reports stay spooled");
            Ok(())
        }
    }
}

async fn sample_loop(
    probe: &mut dyn GpuProbe,
    mut energy: crate::energy::EnergyCounters,
    spool: &Mutex<Spool>,
    wake: &Notify,
    host_id: Uuid,
    interval_s: u32,
    jobs: &crate::jobs::JobTable,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs(u64::from(interval_s)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut gpus = match probe.sample() {
            Ok(gpus) => gpus,
            Err(err) => {
                tracing::error!(error = %err, "GPU sample failed; no report this interval");
                continue;
            }
        };
        crate::attribution::attribute(&mut gpus, &jobs.running_gpus(), crate::attribution::lease_in_environment);
        energy.apply(&mut gpus).context("saving energy counters")?;
        let measured_at = Utc::now();
        let leases = jobs.report();
        let leases = if leases.is_empty() { None } else { Some(leases) };
        let seq = spool.lock().unwrap_or_else(|p| p.into_inner()).push(|seq| ReportPayload {
            host_id,
            seq,
            sent_at: measured_at,
            measured_at,
            interval_s,
            backend: probe.backend(),
            gpus,
            leases,
        })?;
        tracing::debug!(seq, "report spooled");
        wake.notify_one();
    }
}

/// Delay before retry number `attempt` (0-based): exponential with "equal jitter", i.e. a
/// random point in the upper half, so agents that lost the exchange together do not all
/// come back in the same instant.
pub fn backoff_delay(attempt: u32, max: Duration) -> Duration {
    let ceiling_ms = BACKOFF_BASE_MS.saturating_mul(1u64 << attempt.min(20)).min(max.as_millis() as u64).max(1);
    Duration::from_millis(rand::random_range(ceiling_ms / 2..=ceiling_ms))
}

async fn send_loop(
    spool: &Mutex<Spool>,
    wake: &Notify,
    exchange: &Exchange,
    key: &SigningKey,
    host_id: Uuid,
    backoff_max: Duration,
) -> anyhow::Result<()> {
    let mut failures: u32 = 0;
    // The envelope last sent, reused for retries so a retry is the same bytes (a no-op if
    // the first attempt did land).
    let mut signed: Option<(u64, SignedEnvelope, Instant)> = None;
    loop {
        let next = spool.lock().unwrap_or_else(|p| p.into_inner()).oldest()?;
        let Some(mut report) = next else {
            wake.notified().await;
            continue;
        };
        let seq = report.seq;
        let envelope = match &signed {
            Some((s, envelope, at)) if *s == seq && at.elapsed() < Duration::from_secs(RESIGN_AFTER_S) => {
                envelope.clone()
            }
            _ => {
                report.sent_at = Utc::now();
                let envelope = SignedEnvelope::seal_json(REPORT_DOMAIN, key, &report);
                signed = Some((seq, envelope.clone(), Instant::now()));
                envelope
            }
        };
        match exchange.send_report(host_id, &envelope).await {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(seq, after_failures = failures, "exchange reachable again; sending the spool");
                }
                failures = 0;
                tracing::debug!(seq, "report delivered");
                spool.lock().unwrap_or_else(|p| p.into_inner()).remove(seq)?;
            }
            Err(SendError::Refused { code, .. }) if code == "replayed_sequence" => {
                // Only this host's key makes reports with this seq: the exchange has it.
                tracing::warn!(seq, "exchange already has this sequence number; dropping it from the spool");
                spool.lock().unwrap_or_else(|p| p.into_inner()).remove(seq)?;
            }
            Err(SendError::Refused { code, detail, .. }) if code == "sent_at_stale" || code == "sent_at_future" => {
                tracing::warn!(seq, code = %code, detail = %detail, "clock skew against the exchange; re-signing and retrying");
                signed = None;
                tokio::time::sleep(backoff_delay(failures, backoff_max)).await;
                failures = failures.saturating_add(1);
            }
            Err(SendError::Refused { status, code, detail }) => {
                tracing::error!(seq, status, code = %code, detail = %detail, "exchange refused the report; set aside in spool/rejected");
                spool.lock().unwrap_or_else(|p| p.into_inner()).reject(seq)?;
                failures = 0;
            }
            Err(SendError::Unavailable(reason)) => {
                let delay = backoff_delay(failures, backoff_max);
                let spooled = spool.lock().unwrap_or_else(|p| p.into_inner()).len();
                if failures == 0 {
                    tracing::warn!(seq, reason = %reason, spooled, "exchange unavailable; spooling and retrying");
                } else {
                    tracing::debug!(seq, reason = %reason, spooled, retry_in_ms = delay.as_millis() as u64, "retrying");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_max_with_jitter() {
        let max = Duration::from_secs(30);
        for attempt in 0..40 {
            let delay = backoff_delay(attempt, max);
            let ceiling = (BACKOFF_BASE_MS << attempt.min(20)).min(30_000);
            assert!(delay.as_millis() as u64 <= ceiling, "attempt {attempt}: {delay:?}");
            assert!(delay.as_millis() as u64 >= ceiling / 2, "attempt {attempt}: {delay:?}");
        }
    }
}
