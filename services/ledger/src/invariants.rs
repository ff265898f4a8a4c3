use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::LedgerError;

/// The result of checking the ledger's invariants at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantReport {
    /// Sum of every account balance; zero when the books balance.
    pub total: Decimal,
    pub accounts_checked: i64,
    pub violations: Vec<InvariantViolation>,
}

impl InvariantReport {
    pub fn ok(&self) -> bool {
        self.total.is_zero() && self.violations.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvariantViolation {
    /// The stored balance differs from the sum of the account's journal lines.
    BalanceMismatch { account_id: Uuid, balance: Decimal, journal: Decimal },
    /// An account other than the treasury is below zero.
    Negative { account_id: Uuid, balance: Decimal },
}

/// Checks, in one consistent snapshot, that all balances sum to zero and that each
/// balance equals the sum of its journal lines. Run it in a REPEATABLE READ transaction
/// (or on an idle database) for a consistent answer while transfers are being posted.
pub async fn check_invariants(conn: &mut PgConnection) -> Result<InvariantReport, LedgerError> {
    let (total, accounts_checked): (Decimal, i64) =
        sqlx::query_as("select coalesce(sum(balance), 0), count(*) from accounts").fetch_one(&mut *conn).await?;
    let mismatches: Vec<(Uuid, Decimal, Decimal)> = sqlx::query_as(
        "with moves as (
             select credit_account as account_id, amount as delta from journal
             union all
             select debit_account, -amount from journal
         ), sums as (select account_id, sum(delta) as journal from moves group by account_id)
         select a.account_id, a.balance, coalesce(s.journal, 0)
         from accounts a left join sums s using (account_id)
         where a.balance <> coalesce(s.journal, 0)
         order by a.account_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let negatives: Vec<(Uuid, Decimal)> =
        sqlx::query_as("select account_id, balance from accounts where kind <> 'treasury' and balance < 0")
            .fetch_all(&mut *conn)
            .await?;
    let violations = mismatches
        .into_iter()
        .map(|(account_id, balance, journal)| InvariantViolation::BalanceMismatch { account_id, balance, journal })
        .chain(negatives.into_iter().map(|(account_id, balance)| InvariantViolation::Negative { account_id, balance }))
        .collect();
    Ok(InvariantReport { total, accounts_checked, violations })
}
