use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::LedgerError;

/// Most lines one page of history returns.
pub const HISTORY_PAGE_MAX: i64 = 200;

/// One side of a journal entry as seen from one of the user's accounts.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerLine {
    pub entry_id: i64,
    pub transfer_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub account_id: Uuid,
    /// "wallet" or "escrow".
    pub account_kind: String,
    /// "credit" when money arrived in the account, "debit" when it left.
    pub direction: String,
    pub amount: Decimal,
    pub kind: String,
    pub memo: String,
}

/// Position of a line in the history: its entry id and direction. A transfer between two
/// of the user's own accounts shows as two lines with the same entry id, so the entry id
/// alone cannot mark where a page ended.
pub type HistoryCursor = (i64, String);

/// One page of a user's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub lines: Vec<LedgerLine>,
    /// More lines follow the last one (read on with its cursor).
    pub more: bool,
}

/// The user's journal lines, newest first, after the `before` cursor (the last line of
/// the previous page): at most `limit` (clamped to 1 to [`HISTORY_PAGE_MAX`]) of them,
/// and whether more follow.
pub async fn history(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: Option<HistoryCursor>,
    limit: i64,
) -> Result<HistoryPage, LedgerError> {
    let (before_entry, before_direction) = before.unwrap_or((i64::MAX, "~".to_string()));
    let limit = limit.clamp(1, HISTORY_PAGE_MAX);
    // One line past the page tells whether another page exists, also for a full-size page.
    let mut lines: Vec<LedgerLine> = sqlx::query_as(
        "with mine as (select account_id, kind from accounts where user_id = $1)
         select * from (
             select j.entry_id, j.transfer_id, j.created_at, m.account_id, m.kind as account_kind,
                    'credit' as direction, j.amount, j.kind, j.memo
             from journal j join mine m on m.account_id = j.credit_account
             where j.entry_id <= $2
             union all
             select j.entry_id, j.transfer_id, j.created_at, m.account_id, m.kind as account_kind,
                    'debit' as direction, j.amount, j.kind, j.memo
             from journal j join mine m on m.account_id = j.debit_account
             where j.entry_id <= $2
         ) lines
         where (entry_id, direction) < ($2, $3)
         order by entry_id desc, direction desc
         limit $4",
    )
    .bind(user_id)
    .bind(before_entry)
    .bind(before_direction)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let more = lines.len() as i64 > limit;
    lines.truncate(limit as usize);
    Ok(HistoryPage { lines, more })
}
