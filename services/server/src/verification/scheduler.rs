//! When the exchange checks hosts: a host's first challenge as soon as it is live (before
//! it can offer anything: its GPUs are not offered while under challenge), then at random
//! times with mean `CAPEX_CHALLENGE_MEAN_INTERVAL_H` (exponential gaps, so no host can
//! predict the next one and keep a real GPU around only for it). Late challenges fail
//! here. Attestation requests follow the same rhythm.

use std::time::Duration;

use chrono::Utc;
use rust_decimal::prelude::ToPrimitive;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::attestations;
use super::challenges::{self, Reason};
use crate::error::ApiError;
use crate::hosts::capacity::LIVE_SQL;
use crate::state::AppState;

/// Hosts challenged per round, so one round stays short with many hosts due.
const HOSTS_PER_ROUND: i64 = 50;

/// A random gap with mean `mean_h` hours, exponentially distributed, at least a minute.
pub(crate) fn next_gap(mean_h: f64) -> Duration {
    let uniform: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
    let seconds = (-uniform.ln() * mean_h * 3600.0).clamp(60.0, 30.0 * 24.0 * 3600.0);
    Duration::from_secs_f64(seconds)
}

pub fn start(state: AppState, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(err) = round(&state).await {
                tracing::warn!(error = %err, "verification round failed; retrying next tick");
            }
        }
    })
}

/// One round: fail what is late, then challenge and attest the hosts that are due.
pub(crate) async fn round(state: &AppState) -> Result<(), ApiError> {
    challenges::expire_late(state).await?;
    attestations::expire_late(state).await?;
    if state.config.challenges {
        let backends: &[&str] = if state.config.demo { &["nvml", "simulated"] } else { &["nvml"] };
        let sql = format!(
            "select h.host_id, not exists (select 1 from gpu_challenges c where c.host_id = h.host_id) from hosts h
             where {LIVE_SQL} and h.backend = any($1) and (h.next_challenge_at is null or h.next_challenge_at <= now())
                 and not exists (select 1 from gpu_challenges c
                                 where c.host_id = h.host_id and c.state in ('issued', 'committed'))
             order by h.next_challenge_at nulls first limit {HOSTS_PER_ROUND}"
        );
        let due: Vec<(Uuid, bool)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(backends).fetch_all(&state.pool).await?;
        let mean_h = state.config.challenge_mean_interval_h.to_f64().unwrap_or(6.0);
        for (host_id, first) in due {
            let reason = if first { Reason::Registration } else { Reason::Scheduled };
            let issued = challenges::issue(state, host_id, reason).await?;
            // A host with no idle GPU now is due again soon after its first time, else at
            // its next random time.
            let gap = if issued.is_empty() && first { Duration::from_secs(30) } else { next_gap(mean_h) };
            sqlx::query("update hosts set next_challenge_at = $2 where host_id = $1")
                .bind(host_id)
                .bind(Utc::now() + gap)
                .execute(&state.pool)
                .await?;
        }
    }
    if state.config.attestations {
        attestations::request_due(state).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_average_the_mean_and_stay_in_bounds() {
        let gaps: Vec<f64> = (0..20_000).map(|_| next_gap(6.0).as_secs_f64()).collect();
        let mean_h = gaps.iter().sum::<f64>() / gaps.len() as f64 / 3600.0;
        assert!((5.5..6.5).contains(&mean_h), "mean gap {mean_h} h");
        assert!(gaps.iter().all(|&g| (60.0..=30.0 * 24.0 * 3600.0).contains(&g)));
    }
}
