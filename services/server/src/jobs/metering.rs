//! The metering arithmetic, kept pure so it can be tested exhaustively.
//!
//! Rounding rule (all amounts in credits with 6 decimal places):
//! - The lease's running totals are recomputed from its total billed time, never summed
//!   from rounded pieces: `gross_total = floor6(price x gpus x billed_ms / 3_600_000)`,
//!   capped at what the lease escrow held (`cost so far + escrow left`).
//! - `fee_total = floor6(gross_total x fee_rate)`; the provider's total is
//!   `gross_total - fee_total`.
//! - Each billing step moves the differences of those totals: `gross = Δgross_total` out
//!   of the escrow, of which `fee = Δfee_total` to the fees account and `gross - fee` to
//!   the provider. So the parts always sum exactly, over the lease the buyer pays exactly
//!   `floor6(price x gpus x billed time)` (never more than the escrow), and rounding
//!   never favours anyone by more than one micro-credit per lease.
//! - `Δfee <= Δgross` holds whenever `fee_rate <= 1` (a floor difference of a value
//!   scaled by `rate <= 1`), so the provider's part is never negative.

use rust_decimal::{Decimal, RoundingStrategy};

/// Milliseconds in an hour: prices are per GPU-hour.
const MS_PER_HOUR: i64 = 3_600_000;

fn floor6(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(capex_core::credits::CREDITS_SCALE_MAX, RoundingStrategy::ToZero)
}

/// Running totals of a lease after `billed_ms` of billed time: (gross, fee).
/// `escrow_total` is everything the lease escrow ever held (cost so far + escrow left).
pub(crate) fn totals(
    price: Decimal,
    gpus: i32,
    billed_ms: i64,
    fee_rate: Decimal,
    escrow_total: Decimal,
) -> (Decimal, Decimal) {
    let exact = price
        .checked_mul(Decimal::from(gpus.max(0)))
        .and_then(|v| v.checked_mul(Decimal::from(billed_ms.max(0))))
        .and_then(|v| v.checked_div(Decimal::from(MS_PER_HOUR)))
        .unwrap_or(escrow_total);
    let gross = floor6(exact).min(escrow_total).max(Decimal::ZERO);
    let fee = floor6(gross * fee_rate.clamp(Decimal::ZERO, Decimal::ONE));
    (gross, fee)
}

/// One billing step: what moves now, given the totals before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Out of the lease escrow.
    pub(crate) gross: Decimal,
    /// To the fees account.
    pub(crate) fee: Decimal,
    /// To the provider's wallet.
    pub(crate) provider: Decimal,
}

pub(crate) fn step(before: (Decimal, Decimal), after: (Decimal, Decimal)) -> Step {
    let gross = (after.0 - before.0).max(Decimal::ZERO);
    let fee = (after.1 - before.1).clamp(Decimal::ZERO, gross);
    Step { gross, fee, provider: gross - fee }
}

/// How much of the time since `billed_until` a report may bill: never more than
/// `cap_ms` (two report intervals), so a silent gap is never billed.
pub(crate) fn billable_ms(since_ms: i64, cap_ms: i64) -> i64 {
    since_ms.clamp(0, cap_ms.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    #[test]
    fn one_gpu_hour_at_two_credits_with_a_two_percent_fee() {
        let t = totals(dec!(2), 1, 3_600_000, dec!(0.02), dec!(100));
        assert_eq!(t, (dec!(2), dec!(0.04)));
        let s = step((Decimal::ZERO, Decimal::ZERO), t);
        assert_eq!((s.gross, s.fee, s.provider), (dec!(2), dec!(0.04), dec!(1.96)));
    }

    #[test]
    fn rounds_down_and_never_passes_the_escrow() {
        // 1.5 credits/GPU-hour x 2 GPUs x 1 ms = 0.000000833.. -> 0
        assert_eq!(totals(dec!(1.5), 2, 1, dec!(0.02), dec!(1)).0, Decimal::ZERO);
        // 3 s at 1.234567 x 3 = 0.003086417.. -> 0.003086
        assert_eq!(totals(dec!(1.234567), 3, 3_000, dec!(0.02), dec!(1)).0, dec!(0.003086));
        assert_eq!(totals(dec!(10), 4, 3_600_000, dec!(0.02), dec!(5)).0, dec!(5));
    }

    #[test]
    fn the_gap_is_capped() {
        assert_eq!(billable_ms(10_000, 2_000), 2_000);
        assert_eq!(billable_ms(1_500, 2_000), 1_500);
        assert_eq!(billable_ms(-5, 2_000), 0);
    }

    proptest! {
        #[test]
        fn parts_sum_exactly_and_never_exceed_the_escrow(
            price_micro in 1i64..10_000_000_000,
            gpus in 1i32..=64,
            rate_bp in 0u32..=10_000,
            escrow_micro in 0i64..1_000_000_000_000,
            steps in proptest::collection::vec(0i64..7_200_000, 1..40),
        ) {
            let price = Decimal::new(price_micro, 6);
            let rate = Decimal::new(rate_bp as i64, 4);
            let escrow = Decimal::new(escrow_micro, 6);
            let mut billed_ms = 0i64;
            let mut before = (Decimal::ZERO, Decimal::ZERO);
            let (mut paid, mut fees, mut provider) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
            for ms in steps {
                billed_ms += ms;
                let after = totals(price, gpus, billed_ms, rate, escrow);
                let s = step(before, after);
                prop_assert_eq!(s.gross, s.fee + s.provider);
                prop_assert!(s.fee >= Decimal::ZERO && s.provider >= Decimal::ZERO);
                prop_assert!(s.gross.scale() <= 6 && s.fee.scale() <= 6);
                paid += s.gross;
                fees += s.fee;
                provider += s.provider;
                before = after;
            }
            prop_assert!(paid <= escrow);
            prop_assert_eq!(paid, fees + provider);
            let exact = floor6(price * Decimal::from(gpus) * Decimal::from(billed_ms) / dec!(3600000));
            prop_assert_eq!(paid, exact.min(escrow));
            prop_assert_eq!(fees, floor6(paid * rate));
        }
    }
}
