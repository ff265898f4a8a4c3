//! When the exchange checks hosts. A host's first round starts as soon as it is live
//! (before it can offer anything: its GPUs are not offered while under challenge); later
//! rounds start at random times with mean `CAPEX_CHALLENGE_MEAN_INTERVAL_H` (exponential
//! gaps, so no host can predict the next one and keep a real GPU around only for it). In a
//! round each idle GPU is challenged once, one GPU of the host at a time. Late challenges
//! fail here. Attestation requests follow the same rhythm.

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

/// Hosts looked at per round, so one round stays short with many hosts due.
const HOSTS_PER_ROUND: i64 = 50;

/// The gap to a host's next round: random, with the configured mean.
fn gap_to_next_round(state: &AppState) -> Duration {
    next_gap(state.config.challenge_mean_interval_h.to_f64().unwrap_or(6.0))
}

/// A random gap with mean `mean_h` hours, exponentially distributed, at least a minute.
pub fn next_gap(mean_h: f64) -> Duration {
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

/// Starts a new round of challenges on the host now (the operator's "challenge now"), and
/// issues its first challenge.
pub(crate) async fn start_round(state: &AppState, host_id: Uuid, reason: Reason) -> Result<Vec<Uuid>, ApiError> {
    let updated = sqlx::query("update hosts set challenge_round_at = now(), next_challenge_at = $2 where host_id = $1")
        .bind(host_id)
        .bind(Utc::now() + gap_to_next_round(state))
        .execute(&state.pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("host"));
    }
    challenges::issue(state, host_id, reason).await
}

/// One tick: fail what is late, start the rounds that are due, give the next GPU of each
/// round in progress its turn, and ask for CC evidence where it is due.
pub async fn round(state: &AppState) -> Result<(), ApiError> {
    challenges::expire_late(state).await?;
    attestations::expire_late(state).await?;
    if state.config.challenges {
        let backends: &[&str] = if state.config.demo { &["nvml", "simulated"] } else { &["nvml"] };
        let sql = format!(
            "select h.host_id, h.challenge_round_at is null,
                    h.next_challenge_at is not null and h.next_challenge_at <= now()
             from hosts h
             where {LIVE_SQL} and h.backend = any($1)
                 and not exists (select 1 from gpu_challenges c
                                 where c.host_id = h.host_id and c.state in ('issued', 'committed'))
                 and ((h.next_challenge_at is not null and h.next_challenge_at <= now())
                      or exists (select 1 from host_gpus g where g.host_id = h.host_id
                                 and not exists (select 1 from gpu_challenges c where c.gpu_uuid = g.gpu_uuid
                                     and c.issued_at >= coalesce(h.challenge_round_at, '-infinity'))))
             order by h.next_challenge_at nulls first limit {HOSTS_PER_ROUND}"
        );
        let due: Vec<(Uuid, bool, bool)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(backends).fetch_all(&state.pool).await?;
        for (host_id, first_round, new_round) in due {
            if new_round {
                start_round(state, host_id, Reason::Scheduled).await?;
            } else {
                let reason = if first_round { Reason::Registration } else { Reason::Scheduled };
                if first_round {
                    // The first round's end sets the first random time.
                    sqlx::query(
                        "update hosts set next_challenge_at = coalesce(next_challenge_at, $2) where host_id = $1",
                    )
                    .bind(host_id)
                    .bind(Utc::now() + gap_to_next_round(state))
                    .execute(&state.pool)
                    .await?;
                }
                challenges::issue(state, host_id, reason).await?;
            }
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
