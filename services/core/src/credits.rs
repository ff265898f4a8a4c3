//! Compute credits: exact decimals, never floats.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Digits kept after the decimal point. More precision in input is refused, never rounded.
pub const CREDITS_SCALE_MAX: u32 = 6;

/// Largest amount a single value may hold (one quadrillion credits). Anything bigger is a
/// typo or an attack, and would overflow `NUMERIC(38,6)` sums long before it made sense.
pub const CREDITS_MAX: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 1e15

/// A non-negative amount of credits with at most six decimal places.
///
/// Serialised as a JSON string ("12.5") so no client ever meets a float; parsed from a
/// string or a JSON number, where a number whose shortest decimal form has more than six
/// decimals is refused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(Decimal);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditsError {
    #[error("not a decimal number")]
    NotANumber,
    #[error("must not be negative")]
    Negative,
    #[error("must be greater than zero")]
    Zero,
    #[error("at most {CREDITS_SCALE_MAX} decimal places are allowed")]
    TooPrecise,
    #[error("must not exceed 1000000000000000")]
    TooLarge,
}

impl CreditsError {
    /// Stable machine-readable code used in API problems.
    pub fn code(&self) -> &'static str {
        match self {
            CreditsError::NotANumber => "invalid_amount",
            CreditsError::Negative => "negative_amount",
            CreditsError::Zero => "zero_amount",
            CreditsError::TooPrecise => "amount_too_precise",
            CreditsError::TooLarge => "amount_too_large",
        }
    }
}

impl Credits {
    pub const ZERO: Credits = Credits(Decimal::ZERO);

    /// Accepts any decimal in `[0, CREDITS_MAX]` with at most six decimal places.
    pub fn new(value: Decimal) -> Result<Self, CreditsError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(CreditsError::Negative);
        }
        if value.normalize().scale() > CREDITS_SCALE_MAX {
            return Err(CreditsError::TooPrecise);
        }
        if value > CREDITS_MAX {
            return Err(CreditsError::TooLarge);
        }
        Ok(Credits(value.normalize()))
    }

    /// Like [`Credits::new`] but also refuses zero: the amount of a transfer or an order.
    pub fn positive(value: Decimal) -> Result<Self, CreditsError> {
        let credits = Self::new(value)?;
        if credits.is_zero() {
            return Err(CreditsError::Zero);
        }
        Ok(credits)
    }

    /// Wraps a value already known to be valid (read from the database, whose column type
    /// and checks give the same guarantees).
    pub fn from_db(value: Decimal) -> Self {
        debug_assert!(value.scale() <= CREDITS_SCALE_MAX || value.normalize().scale() <= CREDITS_SCALE_MAX);
        Credits(value.normalize())
    }

    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).and_then(|v| Credits::new(v).ok())
    }

    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).and_then(|v| Credits::new(v).ok())
    }
}

impl FromStr for Credits {
    type Err = CreditsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let unsigned = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits_only = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
            return Err(CreditsError::NotANumber);
        }
        // Syntax is known good here, so a value Decimal cannot hold is too big or too fine.
        let value = Decimal::from_str_exact(trimmed).map_err(|_| {
            if whole.trim_start_matches('0').len() > 16 { CreditsError::TooLarge } else { CreditsError::TooPrecise }
        })?;
        Credits::new(value)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credits({})", self.0)
    }
}

impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CreditsVisitor)
    }
}

struct CreditsVisitor;

impl Visitor<'_> for CreditsVisitor {
    type Value = Credits;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal amount such as \"12.5\" with at most 6 decimal places")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Credits, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Credits, E> {
        Credits::new(Decimal::from(v)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Credits, E> {
        Credits::new(Decimal::from(v)).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Credits, E> {
        if !v.is_finite() {
            return Err(E::custom(CreditsError::NotANumber));
        }
        // The shortest round-trip form of the float is what the client wrote, so
        // "1.0000001" keeps its seventh decimal and is refused rather than rounded.
        let text = format!("{v}");
        if text.contains(['e', 'E']) {
            return Err(E::custom(if v.abs() > 1.0 { CreditsError::TooLarge } else { CreditsError::TooPrecise }));
        }
        text.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("12.5".parse::<Credits>().unwrap().as_decimal(), dec!(12.5));
        assert_eq!("0.000001".parse::<Credits>().unwrap().as_decimal(), dec!(0.000001));
        assert_eq!("1.0000001".parse::<Credits>(), Err(CreditsError::TooPrecise));
        assert_eq!("1.5000000".parse::<Credits>().unwrap().as_decimal(), dec!(1.5));
        assert_eq!("-1".parse::<Credits>(), Err(CreditsError::Negative));
        assert_eq!("abc".parse::<Credits>(), Err(CreditsError::NotANumber));
        assert_eq!("1e3".parse::<Credits>(), Err(CreditsError::NotANumber));
        assert_eq!("".parse::<Credits>(), Err(CreditsError::NotANumber));
        assert_eq!(".5".parse::<Credits>(), Err(CreditsError::NotANumber));
        assert_eq!("1.2.3".parse::<Credits>(), Err(CreditsError::NotANumber));
        assert_eq!("99999999999999999999999999999999999".parse::<Credits>(), Err(CreditsError::TooLarge));
        assert_eq!("1.00000000000000000000000000000001".parse::<Credits>(), Err(CreditsError::TooPrecise));
        assert_eq!("1000000000000001".parse::<Credits>(), Err(CreditsError::TooLarge));
        assert_eq!(Credits::positive(dec!(0)), Err(CreditsError::Zero));
        assert_eq!(CREDITS_MAX, dec!(1000000000000000));
    }

    #[test]
    fn json_round_trip_uses_strings() {
        let c: Credits = serde_json::from_str("\"7.25\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"7.25\"");
        let n: Credits = serde_json::from_str("7.25").unwrap();
        assert_eq!(n, c);
        assert!(serde_json::from_str::<Credits>("1.0000001").is_err());
        assert!(serde_json::from_str::<Credits>("1e300").is_err());
        assert!(serde_json::from_str::<Credits>("-3").is_err());
        assert!(serde_json::from_str::<Credits>("true").is_err());
    }

    proptest::proptest! {
        #[test]
        fn display_parse_round_trip(units in 0i64..1_000_000_000_000, scale in 0u32..=6) {
            let value = Decimal::new(units, scale);
            let credits = Credits::new(value).unwrap();
            let back: Credits = credits.to_string().parse().unwrap();
            proptest::prop_assert_eq!(back, credits);
        }
    }
}
