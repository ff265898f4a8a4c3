//! The second statement of a matcher batch: every write of the batch and its COMMIT in ONE
//! round trip (data-modifying CTEs fed by one JSON document).
//!
//! A row is written once, in its final state: a new ask's GPUs are inserted already leased
//! or released, a new bid's escrow account is inserted with its final balance. (One
//! statement cannot update a row it inserted.) Updates of resting rows are guarded by the
//! values the matcher's in-memory copy had (`old_*`, the order still open), and the
//! statement compares how many rows each part touched with what the batch meant; any
//! difference raises, which fails the batch: it rolls back and the market is reloaded from
//! Postgres.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::literal;
use crate::error::ApiError;

#[derive(Debug, Serialize)]
pub(crate) struct NewAccount {
    pub(crate) account_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) ref_id: Uuid,
    pub(crate) balance: Decimal,
}

#[derive(Debug, Serialize)]
pub(crate) struct BalanceChange {
    pub(crate) account_id: Uuid,
    pub(crate) old_balance: Decimal,
    pub(crate) balance: Decimal,
}

#[derive(Debug, Serialize)]
pub(crate) struct JournalRow {
    pub(crate) transfer_id: Uuid,
    pub(crate) debit_account: Uuid,
    pub(crate) credit_account: Uuid,
    pub(crate) amount: Decimal,
    pub(crate) kind: String,
    pub(crate) memo: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct OrderChange {
    pub(crate) order_id: Uuid,
    pub(crate) old_status: &'static str,
    pub(crate) old_remaining: i32,
    pub(crate) status: &'static str,
    pub(crate) gpus_remaining: i32,
    pub(crate) closed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AskGpu {
    pub(crate) order_id: Uuid,
    pub(crate) gpu_uuid: String,
    pub(crate) state: &'static str,
    pub(crate) lease_id: Option<Uuid>,
}

#[derive(Debug, Serialize)]
pub(crate) struct IdempotencyRecord {
    pub(crate) user_id: Uuid,
    pub(crate) idempotency_key: String,
    pub(crate) response_status: u16,
    pub(crate) response_body: Value,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClaimDrop {
    pub(crate) user_id: Uuid,
    pub(crate) idempotency_key: String,
}

/// All writes of one batch.
#[derive(Debug, Default, Serialize)]
pub(crate) struct BatchWrites {
    pub(crate) accounts_new: Vec<NewAccount>,
    pub(crate) balances: Vec<BalanceChange>,
    pub(crate) journal: Vec<JournalRow>,
    /// Full `orders` rows (JSON objects by column), in book order: that order gives `seq`.
    pub(crate) orders_new: Vec<Value>,
    pub(crate) orders_changed: Vec<OrderChange>,
    pub(crate) ask_gpus_new: Vec<AskGpu>,
    pub(crate) ask_gpus_changed: Vec<AskGpu>,
    /// Full `trades` and `leases` rows (JSON objects by column).
    pub(crate) trades: Vec<Value>,
    pub(crate) leases: Vec<Value>,
    pub(crate) idempotency: Vec<IdempotencyRecord>,
    pub(crate) claims_dropped: Vec<ClaimDrop>,
}

const ORDER_COLUMNS: &str = "order_id, class, side, owner_id, status, tif, gpus, gpus_remaining, price, max_hours, \
                             duration_ms, job, host_id, available_until, created_at, closed_at";
const TRADE_COLUMNS: &str = "trade_id, class, bid_id, ask_id, buyer_id, seller_id, host_id, gpus, price, max_hours, at";
const LEASE_COLUMNS: &str = "lease_id, trade_id, host_id, gpu_uuids, price, buyer_id, provider_id, gpus, max_hours, \
                             starts_at, max_end_at, job, state";

impl BatchWrites {
    fn expected(&self) -> [i64; 11] {
        [
            self.accounts_new.len(),
            self.balances.len(),
            self.journal.len(),
            self.orders_new.len(),
            self.orders_changed.len(),
            self.ask_gpus_new.len(),
            self.ask_gpus_changed.len(),
            self.trades.len(),
            self.leases.len(),
            self.idempotency.len(),
            self.claims_dropped.len(),
        ]
        .map(|n| n as i64)
    }

    /// Writes everything and commits, in one round trip. A statement that touched other
    /// rows than meant raises (`matcher_assert_written`), so the COMMIT sent behind it is
    /// skipped and the batch's transaction stays uncommitted.
    pub(crate) async fn execute_and_commit(&self, conn: &mut PgConnection) -> Result<(), ApiError> {
        let sql = format!(
            "execute matcher_writes({}, {}); commit",
            literal::jsonb(self).map_err(ApiError::internal)?,
            literal::bigint_array(&self.expected())
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
        Ok(())
    }
}

/// The write statement, prepared once on the matcher's connection: `$1` is the batch's
/// [`BatchWrites`] as JSON, `$2` the row counts it means to touch.
pub(crate) fn prepare_sql() -> String {
    // Rows go in by ordinality: journal entries and orders get their ids/seq in batch order.
    format!(
        "prepare matcher_writes (jsonb, bigint[]) as
             with accounts_new as (
                 insert into accounts (account_id, kind, user_id, ref_id, balance)
                 select r.account_id, 'escrow', r.user_id, r.ref_id, r.balance
                 from jsonb_to_recordset($1->'accounts_new') as r(account_id uuid, user_id uuid, ref_id uuid, balance numeric)
                 returning 1
             ), balances as (
                 update accounts a set balance = r.balance
                 from jsonb_to_recordset($1->'balances') as r(account_id uuid, old_balance numeric, balance numeric)
                 where a.account_id = r.account_id and a.balance = r.old_balance
                 returning 1
             ), journal_new as (
                 insert into journal (transfer_id, debit_account, credit_account, amount, kind, memo)
                 select r.transfer_id, r.debit_account, r.credit_account, r.amount, r.kind, r.memo
                 from jsonb_populate_recordset(null::journal, $1->'journal') with ordinality as r
                 order by r.ordinality
                 returning 1
             ), orders_new as (
                 insert into orders ({ORDER_COLUMNS}) select {ORDER_COLUMNS}
                 from jsonb_populate_recordset(null::orders, $1->'orders_new') with ordinality as r
                 order by r.ordinality
                 returning 1
             ), orders_changed as (
                 update orders o set status = r.status, gpus_remaining = r.gpus_remaining, closed_at = r.closed_at
                 from jsonb_to_recordset($1->'orders_changed')
                     as r(order_id uuid, old_status text, old_remaining int, status text, gpus_remaining int,
                          closed_at timestamptz)
                 -- `old_status` (always 'open') comes from the document, not the text: written as a
                 -- literal it matches the partial index of open orders, which stale statistics
                 -- make look empty, and the update scanned every open order of the market.
                 where o.order_id = r.order_id and o.status = r.old_status and o.gpus_remaining = r.old_remaining
                 returning 1
             ), ask_gpus_new as (
                 insert into ask_gpus (order_id, gpu_uuid, state, lease_id)
                 select r.order_id, r.gpu_uuid, r.state, r.lease_id
                 from jsonb_populate_recordset(null::ask_gpus, $1->'ask_gpus_new') as r
                 returning 1
             ), ask_gpus_changed as (
                 update ask_gpus a set state = r.state, lease_id = r.lease_id
                 from jsonb_to_recordset($1->'ask_gpus_changed') as r(order_id uuid, gpu_uuid text, state text, lease_id uuid)
                 where a.order_id = r.order_id and a.gpu_uuid = r.gpu_uuid and a.state = 'bound'
                 returning 1
             ), trades_new as (
                 insert into trades ({TRADE_COLUMNS}) select {TRADE_COLUMNS}
                 from jsonb_populate_recordset(null::trades, $1->'trades') with ordinality as r
                 order by r.ordinality
                 returning 1
             ), leases_new as (
                 insert into leases ({LEASE_COLUMNS}) select {LEASE_COLUMNS}
                 from jsonb_populate_recordset(null::leases, $1->'leases') as r
                 returning 1
             ), idempotency_filled as (
                 update idempotency i set response_status = r.response_status, response_body = r.response_body
                 from jsonb_to_recordset($1->'idempotency')
                     as r(user_id uuid, idempotency_key text, response_status smallint, response_body jsonb)
                 where i.user_id = r.user_id and i.idempotency_key = r.idempotency_key and i.response_status = 0
                 returning 1
             ), claims_dropped as (
                 delete from idempotency i
                 using jsonb_to_recordset($1->'claims_dropped') as r(user_id uuid, idempotency_key text)
                 where i.user_id = r.user_id and i.idempotency_key = r.idempotency_key and i.response_status = 0
                 returning 1
             )
             select matcher_assert_written(array[(select count(*) from accounts_new), (select count(*) from balances),
                 (select count(*) from journal_new), (select count(*) from orders_new),
                 (select count(*) from orders_changed), (select count(*) from ask_gpus_new),
                 (select count(*) from ask_gpus_changed), (select count(*) from trades_new),
                 (select count(*) from leases_new), (select count(*) from idempotency_filled),
                 (select count(*) from claims_dropped)], $2)"
    )
}
