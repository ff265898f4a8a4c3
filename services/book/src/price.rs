//! Prices as exact integers of micro-credits per GPU-hour.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places a price may have; more is refused, never rounded.
pub const PRICE_SCALE: u32 = 6;

/// Micro-credits in one credit.
const MICROS_PER_CREDIT: i64 = 1_000_000;

/// A price in credits per GPU-hour, held as whole micro-credits (10^-6 credit).
///
/// Never negative. Zero is representable (a parsed value may be zero) but the book rejects
/// orders priced at zero. Ordering is numeric. Serialised as a decimal string ("2.500000").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Price(i64);

/// Why a decimal could not become a [`Price`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PriceError {
    /// The value has more than [`PRICE_SCALE`] significant decimal places.
    #[error("a price has at most {PRICE_SCALE} decimal places")]
    TooPrecise,
    /// The value is below zero.
    #[error("a price must not be negative")]
    Negative,
    /// The value does not fit in 64-bit micro-credits (about 9.2e12 credits).
    #[error("price too large")]
    Overflow,
}

impl Price {
    /// Zero credits per GPU-hour.
    pub const ZERO: Price = Price(0);

    /// The price of `micros` micro-credits per GPU-hour; refuses negatives.
    pub const fn from_micros(micros: i64) -> Result<Price, PriceError> {
        if micros < 0 { Err(PriceError::Negative) } else { Ok(Price(micros)) }
    }

    /// Exact conversion from a decimal with at most six decimal places (trailing zeros do
    /// not count: `1.5000000` is accepted). Refuses negatives and values too large for
    /// 64-bit micro-credits.
    pub fn from_decimal(value: Decimal) -> Result<Price, PriceError> {
        let value = value.normalize();
        if value.is_sign_negative() && !value.is_zero() {
            return Err(PriceError::Negative);
        }
        let scale = value.scale();
        if scale > PRICE_SCALE {
            return Err(PriceError::TooPrecise);
        }
        let factor = 10_i128.pow(PRICE_SCALE - scale);
        let micros = value.mantissa().checked_mul(factor).ok_or(PriceError::Overflow)?;
        let micros = i64::try_from(micros).map_err(|_| PriceError::Overflow)?;
        Price::from_micros(micros)
    }

    /// The exact decimal value, with scale 6.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, PRICE_SCALE)
    }

    /// Whole micro-credits per GPU-hour.
    pub const fn micros(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_CREDIT;
        let frac = self.0 % MICROS_PER_CREDIT;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Serialize::serialize(&self.to_decimal(), serializer)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = <Decimal as Deserialize>::deserialize(deserializer)?;
        Price::from_decimal(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn decimal_round_trip_is_exact() {
        let price = Price::from_decimal(dec!(2.123456)).expect("valid");
        assert_eq!(price.micros(), 2_123_456);
        assert_eq!(price.to_decimal(), dec!(2.123456));
        assert_eq!(price.to_string(), "2.123456");
        assert_eq!(Price::from_micros(2_500_000).expect("valid").to_string(), "2.5");
        assert_eq!(Price::from_micros(3_000_000).expect("valid").to_string(), "3");
    }

    #[test]
    fn trailing_zeros_do_not_count_as_precision() {
        let price = Price::from_decimal(dec!(1.50000000)).expect("valid");
        assert_eq!(price.micros(), 1_500_000);
    }

    #[test]
    fn refuses_bad_values() {
        assert_eq!(Price::from_decimal(dec!(0.0000001)), Err(PriceError::TooPrecise));
        assert_eq!(Price::from_decimal(dec!(-1)), Err(PriceError::Negative));
        assert_eq!(Price::from_decimal(dec!(10000000000000)), Err(PriceError::Overflow));
        assert_eq!(Price::from_micros(-1), Err(PriceError::Negative));
        assert_eq!(Price::from_decimal(dec!(-0)), Ok(Price::ZERO));
    }

    #[test]
    fn serde_uses_decimal_strings() {
        let price = Price::from_micros(1_250_000).expect("valid");
        let json = serde_json::to_string(&price).expect("serialises");
        assert_eq!(json, "\"1.250000\"");
        let back: Price = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, price);
        assert!(serde_json::from_str::<Price>("\"1.0000001\"").is_err());
        assert!(serde_json::from_str::<Price>("\"-1\"").is_err());
    }
}
