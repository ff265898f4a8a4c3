//! What the markets API returns.

use capex_book::UnfilledReason;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One trade of an order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FillView {
    pub trade_id: Uuid,
    pub lease_id: Uuid,
    #[schema(value_type = String)]
    pub price: Decimal,
    pub gpus: i32,
    pub at: DateTime<Utc>,
}

/// Why a resting bid has not traded yet.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnfilledReasonView {
    pub code: String,
    pub message: String,
}

impl UnfilledReasonView {
    pub(crate) fn from_book(reason: UnfilledReason) -> UnfilledReasonView {
        let (code, message) = match reason {
            UnfilledReason::NoAsks => ("no_asks", "no provider offers GPUs in this market".to_string()),
            UnfilledReason::OnlyOwnAsks => ("only_own_asks", "the only asks are your own".to_string()),
            UnfilledReason::OnlyExcludedHosts => {
                ("only_excluded_hosts", "the only asks are on hosts that failed this job before".to_string())
            }
            UnfilledReason::PriceBelowBestAsk { best_ask } => {
                ("price_below_best_ask", format!("your price is below the cheapest ask ({best_ask})"))
            }
            UnfilledReason::NoHostWithEnoughGpus { largest_free } => (
                "no_host_with_enough_gpus",
                format!("no host offers that many GPUs at once (the most is {largest_free})"),
            ),
            UnfilledReason::NoAskLongEnough { longest_available_ms } => (
                "no_ask_long_enough",
                format!(
                    "no ask is available for max_hours (the longest is {:.3} h)",
                    longest_available_ms as f64 / 3.6e6
                ),
            ),
            UnfilledReason::VerificationBelowRequired { best_available } => (
                "verification_below_required",
                format!("no ask's GPUs meet min_verification (the strongest offered is {best_available})"),
            ),
            UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm } => (
                "reliability_below_required",
                format!(
                    "no ask's host meets the minimum 7-day uptime (the best is {}%)",
                    Decimal::new(i64::from(best_uptime_7d_ppm), 4).normalize()
                ),
            ),
            UnfilledReason::NoInterruptibleAsks => {
                ("no_interruptible_asks", "no ask of another provider sells its idle GPUs for interruptible use".into())
            }
            UnfilledReason::NoSingleAskFits => (
                "no_single_ask_fits",
                "each of your limits is met by some ask, but no single ask meets them all".into(),
            ),
        };
        UnfilledReasonView { code: code.to_string(), message }
    }
}

#[cfg(test)]
mod tests {
    use capex_book::{UnfilledReason, Verification};

    use super::UnfilledReasonView;

    #[test]
    fn supply_reasons_name_the_level_and_the_uptime_in_percent() {
        let view = UnfilledReasonView::from_book(UnfilledReason::VerificationBelowRequired {
            best_available: Verification::CcAttested,
        });
        assert_eq!(view.code, "verification_below_required");
        assert!(view.message.ends_with("(the strongest offered is cc_attested)"), "{}", view.message);
        for (ppm, percent) in [(990_000, "99%"), (999_999, "99.9999%"), (1_000_000, "100%"), (0, "0%")] {
            let view =
                UnfilledReasonView::from_book(UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm: ppm });
            assert_eq!(view.code, "reliability_below_required");
            assert!(view.message.ends_with(&format!("(the best is {percent})")), "{}", view.message);
        }
    }
}

/// An order as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub class: String,
    /// "bid" or "ask".
    pub side: String,
    /// "open", "filled", "cancelled" or "expired".
    pub status: String,
    pub gpus: i32,
    pub gpus_remaining: i32,
    /// Limit price, credits per GPU-hour.
    #[schema(value_type = String)]
    pub price: Decimal,
    #[schema(value_type = Option<String>)]
    pub max_hours: Option<Decimal>,
    pub available_until: Option<DateTime<Utc>>,
    /// "gtc" or "ioc".
    pub tif: String,
    /// Credits held for the bid now (asks: null).
    #[schema(value_type = Option<String>)]
    pub escrow: Option<Decimal>,
    pub host_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// Bids: the lowest verification level the bid accepts (null: any).
    pub min_verification: Option<crate::verification::Level>,
    /// Asks: the lowest verification level of the ask's GPUs (what a bid's
    /// `min_verification` is compared with).
    pub verification: Option<crate::verification::Level>,
    /// Bids: the least reliability the bid requires of the ask's host (null: none).
    pub min_reliability: Option<MinReliabilityView>,
    /// Asks: the host's 7-day uptime, 0 to 1 with 6 decimals, as the ask's grade has it
    /// (what a bid's `min_reliability.uptime_7d` is compared with).
    #[schema(value_type = Option<String>)]
    pub host_uptime_7d: Option<Decimal>,
    /// Bids: `on_demand` or `interruptible` (asks: null).
    pub priority: Option<super::request::BidPriority>,
    /// Asks: the price for interruptible use of their idle GPUs (null: none offered).
    #[schema(value_type = Option<String>)]
    pub interruptible_price: Option<Decimal>,
    /// Asks: GPUs of `gpus_remaining` that interruptible leases use now (still offered on
    /// demand: an on-demand bid preempts them).
    pub gpus_interruptible: Option<i32>,
    pub fills: Vec<FillView>,
    /// For a resting bid, why it has not traded; empty otherwise.
    pub unfilled_reasons: Vec<UnfilledReasonView>,
}

/// A bid's floor on its ask's host's reliability.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MinReliabilityView {
    /// The least 7-day uptime, 0 to 1 with at most 6 decimals.
    #[schema(value_type = String)]
    pub uptime_7d: Decimal,
}

impl MinReliabilityView {
    pub(crate) fn of_ppm(ppm: Option<u32>) -> Option<MinReliabilityView> {
        ppm.map(|ppm| MinReliabilityView { uptime_7d: crate::hosts::uptime::fraction_of_ppm(ppm) })
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

/// All resting orders of one side at one price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LevelView {
    #[schema(value_type = String)]
    pub price: Decimal,
    pub gpus: u64,
    pub orders: u32,
}

/// A market's aggregated book, each side best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BookView {
    pub class: String,
    /// On-demand bids.
    pub bids: Vec<LevelView>,
    /// Asks at their on-demand price: every unsold GPU, those in interruptible use included.
    pub asks: Vec<LevelView>,
    /// Interruptible bids.
    #[serde(default)]
    pub interruptible_bids: Vec<LevelView>,
    /// Asks' idle GPUs at their interruptible price.
    #[serde(default)]
    pub interruptible_asks: Vec<LevelView>,
    /// GPUs of resting asks that interruptible leases use now.
    #[serde(default)]
    pub interruptible_gpus_in_use: u64,
    /// GPUs the asks offer whose host's 7-day uptime (as the ask's grade has it) is at
    /// least each of 0.9, 0.99 and 0.999: what a bid's `min_reliability` can buy.
    #[serde(default)]
    pub ask_gpus_by_min_uptime_7d: std::collections::BTreeMap<String, u64>,
}

/// The uptime floors [`BookView::ask_gpus_by_min_uptime_7d`] counts, in ppm.
pub(crate) const BOOK_UPTIME_FLOORS_PPM: [u32; 3] = [900_000, 990_000, 999_000];

impl BookView {
    /// A book with no orders.
    pub(crate) fn empty(class: String) -> BookView {
        BookView::with_asks(class, Vec::new(), Vec::new(), std::iter::empty())
    }

    /// The view, counting the offered GPUs by uptime floor from `(remaining GPUs, host
    /// uptime ppm)` per ask.
    pub(crate) fn with_asks(
        class: String,
        bids: Vec<LevelView>,
        asks: Vec<LevelView>,
        offers: impl Iterator<Item = (u32, u32)>,
    ) -> BookView {
        let mut counts = [0u64; BOOK_UPTIME_FLOORS_PPM.len()];
        for (gpus, ppm) in offers {
            for (count, floor) in counts.iter_mut().zip(BOOK_UPTIME_FLOORS_PPM) {
                if ppm >= floor {
                    *count += u64::from(gpus);
                }
            }
        }
        let ask_gpus_by_min_uptime_7d = BOOK_UPTIME_FLOORS_PPM
            .into_iter()
            .zip(counts)
            .map(|(floor, count)| (crate::hosts::uptime::fraction_of_ppm(floor).to_string(), count))
            .collect();
        BookView {
            class,
            bids,
            asks,
            interruptible_bids: Vec::new(),
            interruptible_asks: Vec::new(),
            interruptible_gpus_in_use: 0,
            ask_gpus_by_min_uptime_7d,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MarketView {
    pub class: String,
    #[schema(value_type = Option<String>)]
    pub best_bid: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub best_ask: Option<Decimal>,
    /// Highest interruptible bid (`best_bid` is the on-demand side).
    #[schema(value_type = Option<String>)]
    pub best_interruptible_bid: Option<Decimal>,
    /// Lowest interruptible price of an open ask.
    #[schema(value_type = Option<String>)]
    pub best_interruptible_ask: Option<Decimal>,
    /// GPUs that interruptible leases use now (on open asks or not).
    pub interruptible_gpus: i64,
    #[schema(value_type = Option<String>)]
    pub last_price: Option<Decimal>,
    /// GPUs x max_hours traded in the last 24 hours.
    #[schema(value_type = String)]
    pub volume_24h_gpu_hours: Decimal,
    /// Attested idle GPUs of live hosts that no ask offers and no lease uses.
    pub free_gpus: i64,
    /// `free_gpus` by verification level (simulated, reported, challenged, cc_attested).
    pub free_gpus_by_level: std::collections::BTreeMap<crate::verification::Level, i64>,
    /// GPUs that open asks offer now, by their verification level: what a bid with
    /// `min_verification` can buy.
    pub offered_gpus_by_level: std::collections::BTreeMap<crate::verification::Level, i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MarketList {
    pub items: Vec<MarketView>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TradeView {
    pub trade_id: Uuid,
    #[schema(value_type = String)]
    pub price: Decimal,
    pub gpus: i32,
    #[schema(value_type = String)]
    pub max_hours: Decimal,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TradePage {
    pub items: Vec<TradeView>,
    pub next_cursor: Option<String>,
}

/// One candle: `t` is the start of the interval in unix seconds; volume in GPU-hours.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandleView {
    pub t: i64,
    #[schema(value_type = String)]
    pub open: Decimal,
    #[schema(value_type = String)]
    pub high: Decimal,
    #[schema(value_type = String)]
    pub low: Decimal,
    #[schema(value_type = String)]
    pub close: Decimal,
    #[schema(value_type = String)]
    pub volume: Decimal,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandleList {
    pub items: Vec<CandleView>,
}
