//! A GPU's verification level, derived when read from what the server checked and when.
//!
//! `cc_attested` while verified confidential-computing evidence is younger than
//! `CAPEX_ATTESTATION_VALID_H`, else `challenged` while a passed proof-of-compute challenge
//! is younger than `CAPEX_CHALLENGE_VALID_H`, else the level of the probe that reports it:
//! `reported` for NVML (the host's word), `simulated` for the agent's simulated backend.
//! A failed challenge clears both deadlines, so the GPU falls to its probe's level at once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// SQL text value of the level of GPU `g` on host `h` (columns of `host_gpus` and `hosts`).
pub(crate) const GPU_LEVEL_SQL: &str = "(case when g.cc_attested_until > now() then 'cc_attested' \
     when g.challenged_until > now() then 'challenged' \
     when h.backend = 'simulated' then 'simulated' else 'reported' end)";

/// Ordered: each level promises everything the ones below it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Simulated,
    Reported,
    Challenged,
    CcAttested,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Simulated, Level::Reported, Level::Challenged, Level::CcAttested];

    /// The lowest of these levels as `GPU_LEVEL_SQL` wrote them (an ask's grade is its
    /// GPUs' lowest); `None` when there is none. A text that is no level is skipped.
    pub fn lowest<'a>(texts: impl IntoIterator<Item = &'a String>) -> Option<Level> {
        texts.into_iter().filter_map(|text| text.parse::<Level>().ok()).min()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Simulated => "simulated",
            Level::Reported => "reported",
            Level::Challenged => "challenged",
            Level::CcAttested => "cc_attested",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ();

    fn from_str(text: &str) -> Result<Level, ()> {
        Level::ALL.into_iter().find(|level| level.as_str() == text).ok_or(())
    }
}

/// The book's copy of the same order (the engine knows nothing of SQL or schemas).
impl From<Level> for capex_book::Verification {
    fn from(level: Level) -> capex_book::Verification {
        match level {
            Level::Simulated => capex_book::Verification::Simulated,
            Level::Reported => capex_book::Verification::Reported,
            Level::Challenged => capex_book::Verification::Challenged,
            Level::CcAttested => capex_book::Verification::CcAttested,
        }
    }
}

impl From<capex_book::Verification> for Level {
    fn from(level: capex_book::Verification) -> Level {
        match level {
            capex_book::Verification::Simulated => Level::Simulated,
            capex_book::Verification::Reported => Level::Reported,
            capex_book::Verification::Challenged => Level::Challenged,
            capex_book::Verification::CcAttested => Level::CcAttested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_round_trip() {
        assert!(Level::Simulated < Level::Reported && Level::Reported < Level::Challenged);
        assert!(Level::Challenged < Level::CcAttested);
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
            assert_eq!(serde_json::to_value(level).unwrap(), level.as_str());
        }
        assert!("attested".parse::<Level>().is_err());
    }
}
