//! Escrow arithmetic. Amounts are rounded up to the micro-credit, so an escrow always
//! covers what it reserves; the bid's escrow is always emptied exactly (lease escrow plus
//! refund equals what was held).

use capex_core::Credits;
use rust_decimal::{Decimal, RoundingStrategy};

/// Ms in one hour: `max_hours` (at most 3 decimals) times this is a whole number of ms.
pub(crate) const MS_PER_HOUR: i64 = 3_600_000;

/// `price` per GPU-hour x `gpus` x `hours`, rounded up to 6 decimals; `None` if it does not
/// fit in [`Credits`].
pub(crate) fn reserve(price: Decimal, gpus: u32, hours: Decimal) -> Option<Credits> {
    let exact = price.checked_mul(Decimal::from(gpus))?.checked_mul(hours)?;
    Credits::new(exact.round_dp_with_strategy(capex_core::credits::CREDITS_SCALE_MAX, RoundingStrategy::AwayFromZero))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn reserve_rounds_up_to_the_micro_credit() {
        assert_eq!(reserve(dec!(1.234567), 1, dec!(1.5)).map(|c| c.as_decimal()), Some(dec!(1.851851)));
        assert_eq!(reserve(dec!(2), 4, dec!(0.5)).map(|c| c.as_decimal()), Some(dec!(4)));
        assert_eq!(reserve(dec!(0.000001), 1, dec!(0.001)).map(|c| c.as_decimal()), Some(dec!(0.000001)));
    }
}
