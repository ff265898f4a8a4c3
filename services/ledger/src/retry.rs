//! Running a whole transaction again when it lost a race.
//!
//! Postgres aborts a transaction that closed a cycle of lock waits (`40P01`, deadlock
//! detected) or that cannot be serialized (`40001`). Either says nothing about the request:
//! run again from its first statement, it succeeds. [`retrying`] does that, a bounded
//! number of times with a short random pause, so a caller sees the failure only when the
//! same transaction lost [`TRANSACTION_ATTEMPTS_MAX`] times in a row.

use std::future::Future;
use std::time::Duration;

/// Most times one transaction is run before its failure is passed on.
pub const TRANSACTION_ATTEMPTS_MAX: u32 = 5;
/// The pause before the second attempt; it doubles with each attempt after, plus up to as
/// much again at random, so two losers do not meet again in lockstep.
pub const RETRY_PAUSE_FIRST_MS: u64 = 5;

/// An error that may say "this transaction lost a race; run it again".
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// A deadlock or serialization failure: the transaction was rolled back and may simply be
/// run again.
pub fn lost_race(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

impl Retryable for sqlx::Error {
    fn is_retryable(&self) -> bool {
        lost_race(self)
    }
}

impl Retryable for crate::LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, crate::LedgerError::Database(db) if lost_race(db))
    }
}

/// Runs `attempt` (which begins, does and commits one whole transaction) until it succeeds,
/// fails for another reason, or has lost [`TRANSACTION_ATTEMPTS_MAX`] races. `what` names
/// the transaction in logs and in the `capex_transaction_retries_total` metric.
pub async fn retrying<T, E, F, Fut>(what: &'static str, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable + std::fmt::Display,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(err) if err.is_retryable() && attempts < TRANSACTION_ATTEMPTS_MAX => {
                tracing::info!(transaction = what, attempt = attempts, error = %err, "transaction lost a race; running it again");
                metrics::counter!("capex_transaction_retries_total", "transaction" => what).increment(1);
                tokio::time::sleep(pause(attempts)).await;
                attempts += 1;
            }
            Err(err) => {
                if err.is_retryable() {
                    metrics::counter!("capex_transaction_retries_exhausted_total", "transaction" => what).increment(1);
                }
                return Err(err);
            }
            Ok(value) => return Ok(value),
        }
    }
}

/// The pause after the `attempt`-th loss.
pub fn pause(attempt: u32) -> Duration {
    let base = RETRY_PAUSE_FIRST_MS << attempt.saturating_sub(1).min(6);
    // The low bits of a random UUID are random enough to spread two losers apart.
    let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (base + 1);
    Duration::from_millis(base + jitter)
}
