//! What a buyer may require of the supply behind an ask, and what an ask offers.
//!
//! The book does not verify GPUs or measure hosts: the server does, and tells the book an
//! ask's [`AskGrade`] when it places the ask and again ([`crate::Command::Regrade`])
//! whenever a GPU's level or the host's uptime changes. The book only compares, so that a
//! bid never trades with supply its buyer refused, and so that the rule lives in one place
//! that random command streams can test.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Parts per million in a whole: an uptime of `PPM_MAX` is 100%.
pub const PPM_MAX: u32 = 1_000_000;

/// How strongly the server has checked that a GPU is what its host says, weakest first.
///
/// The order is the order of trust: a bid that requires [`Verification::Reported`] also
/// takes [`Verification::Challenged`] and [`Verification::CcAttested`] supply.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// A simulated GPU (development and tests); nothing real backs it.
    Simulated,
    /// The host's signed reports name the GPU; nothing beyond the host's word.
    Reported,
    /// The GPU answered a proof-of-compute challenge only real hardware computes fast.
    Challenged,
    /// The GPU runs in confidential-computing mode with an attestation the server checked.
    CcAttested,
}

impl Verification {
    /// Every level, weakest first.
    pub const ALL: [Verification; 4] =
        [Verification::Simulated, Verification::Reported, Verification::Challenged, Verification::CcAttested];

    /// The level's name as serde writes it (`"cc_attested"`), for SQL and query strings.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verification::Simulated => "simulated",
            Verification::Reported => "reported",
            Verification::Challenged => "challenged",
            Verification::CcAttested => "cc_attested",
        }
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Verification`] level.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("verification is one of simulated, reported, challenged, cc_attested")]
pub struct VerificationError;

impl FromStr for Verification {
    type Err = VerificationError;

    /// The inverse of [`Verification::as_str`]; exact, lowercase names only.
    fn from_str(s: &str) -> Result<Verification, VerificationError> {
        Verification::ALL.into_iter().find(|level| level.as_str() == s).ok_or(VerificationError)
    }
}

/// What an ask's supply is, as the server last judged it.
///
/// `verification` is the weakest level among the GPUs bound to the ask (a bid takes GPUs
/// from the ask without choosing which, so every one must meet the bid's floor).
/// `uptime_7d_ppm` is the host's uptime over the last 7 days in parts per million
/// (`0..=PPM_MAX`): an integer so the book compares exactly and stays `Copy`; the server
/// converts its decimal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct AskGrade {
    pub verification: Verification,
    pub uptime_7d_ppm: u32,
}

impl AskGrade {
    /// A grade that meets every requirement except a [`Verification::Challenged`] or
    /// stronger floor: for callers that do not know an ask's grade yet.
    pub const UNGRADED: AskGrade = AskGrade { verification: Verification::Reported, uptime_7d_ppm: PPM_MAX };
}

/// What a bid requires of the ask it trades with; `Default` requires nothing.
///
/// Each `None` means no floor. A requirement narrows which asks a bid can take but never
/// changes price-time priority among those it can.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Requirements {
    /// The weakest verification the bid accepts for every GPU it gets.
    pub min_verification: Option<Verification>,
    /// The least 7-day uptime of the host, in parts per million (`0..=PPM_MAX`); an ask
    /// exactly at the floor meets it.
    pub min_uptime_7d_ppm: Option<u32>,
}

impl Requirements {
    /// No floor at all.
    pub const NONE: Requirements = Requirements { min_verification: None, min_uptime_7d_ppm: None };

    /// Whether an ask of this grade meets every floor (each inclusive).
    #[inline]
    pub fn admits(&self, grade: &AskGrade) -> bool {
        self.min_verification.is_none_or(|level| grade.verification >= level)
            && self.min_uptime_7d_ppm.is_none_or(|ppm| grade.uptime_7d_ppm >= ppm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_by_trust_and_round_trip_by_name() {
        assert!(Verification::Simulated < Verification::Reported);
        assert!(Verification::Reported < Verification::Challenged);
        assert!(Verification::Challenged < Verification::CcAttested);
        for level in Verification::ALL {
            assert_eq!(level.as_str().parse::<Verification>(), Ok(level));
            assert_eq!(serde_json::to_string(&level).expect("serialises"), format!("\"{}\"", level.as_str()));
        }
        assert_eq!("CC_ATTESTED".parse::<Verification>(), Err(VerificationError));
        assert_eq!("".parse::<Verification>(), Err(VerificationError));
    }

    #[test]
    fn floors_are_inclusive() {
        let grade = AskGrade { verification: Verification::Challenged, uptime_7d_ppm: 990_000 };
        assert!(Requirements::NONE.admits(&grade));
        let at = Requirements { min_verification: Some(Verification::Challenged), min_uptime_7d_ppm: Some(990_000) };
        assert!(at.admits(&grade));
        let above_level = Requirements { min_verification: Some(Verification::CcAttested), ..at };
        assert!(!above_level.admits(&grade));
        let above_uptime = Requirements { min_uptime_7d_ppm: Some(990_001), ..at };
        assert!(!above_uptime.admits(&grade));
        assert!(Requirements::default().admits(&AskGrade { verification: Verification::Simulated, uptime_7d_ppm: 0 }));
    }
}
