//! The double-entry credit ledger.
//!
//! Every movement of credits is a transfer from one account to another, written to an
//! append-only journal in the caller's transaction. Account balances are kept beside the
//! journal. Every transaction that moves credits locks all the accounts it will touch in one
//! step, in the one global order ([`locking`]), and is run again when it loses a deadlock
//! anyway ([`retry`]), so concurrent transfers never lose an update and a caller never sees
//! a deadlock. Only the treasury may go below zero.
//!
//! The crate knows accounts and transfers, nothing of orders or leases: an escrow account
//! is identified by the id of whatever it holds credits for.

mod accounts;
mod error;
mod history;
mod invariants;
pub mod locking;
pub mod retry;
mod transfer;

pub use accounts::{
    AccountKind, FEES_ACCOUNT, TREASURY_ACCOUNT, WalletSummary, account_balance, escrow_account, open_escrow,
    wallet_account, wallet_summary,
};
pub use error::LedgerError;
pub use history::{HISTORY_PAGE_MAX, HistoryCursor, HistoryPage, LedgerLine, history};
pub use invariants::{InvariantReport, InvariantViolation, check_invariants};
pub use locking::{AccountSet, LockedAccounts, lock_accounts};
pub use retry::{Retryable, lost_race, retrying};
pub use transfer::{Transfer, TransferSpec, apply_to_balances, capture, hold, post_transfer, post_transfers, release};

/// Migrations of the whole exchange. They live at the workspace root because the
/// ledger's tables are only part of the schema; every crate that needs a database runs
/// this same set.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
