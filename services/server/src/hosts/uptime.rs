//! A host's attested uptime: one definition, the SQL function `host_uptime_ppm` (migration
//! `20261204000100_reliability_bids.sql`), which every reader calls: the reliability
//! endpoint, the handler that grades an ask, the book's load and the matcher's regrade.
//!
//! Over a window that ends now and starts its length before (or when the host registered,
//! if later), the time between consecutive accepted reports counts as up when the gap is at
//! most [`UP_GAP_INTERVALS`] report intervals, as down otherwise; the time since the last
//! report counts the same way up to now. Measured on the reports' signed `measured_at`, in
//! parts per million, rounded down.
//!
//! Cost: one range scan of the index `host_reports_host_measured` over the window, with a
//! window function over its rows. For a host reporting every 10 s, 7 days are ~60k rows:
//! 30-45 ms on the 2-core development machine (EXPLAIN ANALYZE in `docs/reliability.md`),
//! 30 days about 4x that. So callers compute it once per host per read, and never inside a
//! matcher batch's transaction.

use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::ApiError;

/// A gap between reports longer than this many intervals counts as down.
pub const UP_GAP_INTERVALS: i64 = 2;

/// Seconds in the windows the API shows.
pub const WINDOW_24H_S: i64 = 86_400;
pub const WINDOW_7D_S: i64 = 7 * WINDOW_24H_S;
pub const WINDOW_30D_S: i64 = 30 * WINDOW_24H_S;

/// SQL: the 7-day uptime in ppm of the host whose id is the column or expression
/// `host_id` where this is used (an integer; null for no such host).
pub(crate) const UPTIME_7D_PPM_SQL: &str = "host_uptime_ppm(host_id, 604800)";

/// An uptime as a fraction 0 to 1 with at most 6 decimals, in parts per million.
pub(crate) fn ppm_of_fraction(value: Decimal) -> Option<u32> {
    let value = value.normalize();
    if value < Decimal::ZERO || value > Decimal::ONE || value.scale() > 6 {
        return None;
    }
    u32::try_from((value * Decimal::from(capex_book::PPM_MAX)).trunc()).ok()
}

/// The fraction 0 to 1 a ppm count stands for, as the API shows it (`"0.99"`).
pub(crate) fn fraction_of_ppm(ppm: u32) -> Decimal {
    Decimal::new(i64::from(ppm.min(capex_book::PPM_MAX)), 6).normalize()
}

/// The uptime in ppm of each of these hosts over the last `window_s` seconds, computed
/// once per distinct host; hosts that do not exist are left out.
pub(crate) async fn uptime_ppm(
    executor: impl PgExecutor<'_>,
    host_ids: &[Uuid],
    window_s: i64,
) -> Result<Vec<(Uuid, u32)>, ApiError> {
    let rows: Vec<(Uuid, Option<i32>)> = sqlx::query_as(
        "select host_id, host_uptime_ppm(host_id, $2) from (select distinct unnest($1::uuid[]) as host_id) h",
    )
    .bind(host_ids)
    .bind(window_s as f64)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(host_id, ppm)| Some((host_id, u32::try_from(ppm?).ok()?.min(capex_book::PPM_MAX))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_window_is_seven_days() {
        assert!(UPTIME_7D_PPM_SQL.contains(&WINDOW_7D_S.to_string()));
    }

    #[test]
    fn fractions_and_ppm_round_trip_within_six_decimals() {
        for (text, ppm) in [("0", 0), ("0.99", 990_000), ("0.999999", 999_999), ("1", 1_000_000), ("1.000", 1_000_000)]
        {
            let value: Decimal = text.parse().unwrap();
            assert_eq!(ppm_of_fraction(value), Some(ppm), "{text}");
            assert_eq!(fraction_of_ppm(ppm), value.normalize());
        }
        for bad in ["-0.1", "1.000001", "0.9999999", "2"] {
            assert_eq!(ppm_of_fraction(bad.parse().unwrap()), None, "{bad}");
        }
    }
}
