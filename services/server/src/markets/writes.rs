//! The last statement of a matcher batch: every write of the batch and its COMMIT in ONE
//! round trip (data-modifying CTEs fed by one JSON document).
//!
//! A row is written once, in its final state: a new ask's GPUs are inserted already leased
//! or released, a new bid's escrow account is inserted with its final balance. (One
//! statement cannot update a row it inserted.) Updates of resting rows are guarded by the
//! values the matcher's in-memory copy had (`old_*`, the order still open); wallets, which
//! other transactions also move, change by deltas that may not take them below zero. A
//! batch decided without the checks statement also proves the market's epoch and its new
//! asks' GPUs (`epoch`, `gpus_verified`). The statement compares how many rows each part
//! touched with what the batch meant; any difference raises, which fails the batch: it
//! rolls back and the market is reloaded from Postgres.
//!
//! Lock order: the statement is preceded, in the same round trip, by one that locks every
//! existing account whose balance the batch moves, in the ledger's one order (ascending
//! id, `for no key update`; see `capex_ledger::locking`). The statement's own updates then
//! wait for nobody on accounts: updates inside one statement take their row locks in plan
//! order, which is no order, and met the ledger's transfers and other markets' batches in
//! cycles.

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::capacity::{GPU_IDLE_SQL, GPU_UNTAKEN_SQL, HOST_LIVE_SQL, INTERRUPTIBLE_LIVE_SQL};
use super::literal;
use crate::error::ApiError;

#[derive(Debug, Serialize)]
pub(crate) struct NewAccount {
    pub(crate) account_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) ref_id: Uuid,
    pub(crate) balance: Decimal,
}

/// A balance the batch moves by `delta`. An account only the matcher writes (a bid's
/// escrow) is guarded by `old_balance`; a wallet, which other transactions also move, has
/// none, and the ledger's CHECK (no wallet below zero) refuses an overdraft.
#[derive(Debug, Serialize)]
pub(crate) struct BalanceChange {
    pub(crate) account_id: Uuid,
    pub(crate) old_balance: Option<Decimal>,
    pub(crate) delta: Decimal,
}

/// The market's owner epoch the batch was decided under; the write locks it (shared), as the
/// checks statement does, so a batch decided without checks still cannot commit once the
/// market has moved to another process.
#[derive(Debug, Serialize)]
pub(crate) struct EpochGuard {
    pub(crate) class: String,
    pub(crate) epoch: i64,
}

/// A GPU a new ask binds, chosen without the checks statement: the write verifies it is
/// still the live host's owner's, attested idle and untaken.
#[derive(Debug, Serialize)]
pub(crate) struct GpuGuard {
    pub(crate) host_id: Uuid,
    pub(crate) owner_id: Uuid,
    pub(crate) class: String,
    pub(crate) gpu_uuid: String,
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

/// A resting ask's GPU that leaves `old_state` ('bound': the ask was open).
#[derive(Debug, Serialize)]
pub(crate) struct AskGpuChange {
    pub(crate) order_id: Uuid,
    pub(crate) gpu_uuid: String,
    pub(crate) old_state: &'static str,
    pub(crate) state: &'static str,
    pub(crate) lease_id: Option<Uuid>,
}

/// An interruptible lease an on-demand trade of the batch takes the GPUs of: from the
/// trade on it is no longer billed, and its job gets until `preempt_deadline` to stop.
#[derive(Debug, Serialize)]
pub(crate) struct Preemption {
    pub(crate) lease_id: Uuid,
    /// Locked, with the lease, before the batch's accounts: the order of the report writer.
    #[serde(skip)]
    pub(crate) host_id: Uuid,
    pub(crate) preempted_at: chrono::DateTime<chrono::Utc>,
    pub(crate) preempt_deadline: chrono::DateTime<chrono::Utc>,
    /// The on-demand lease that took its GPUs.
    pub(crate) preempted_by: Option<Uuid>,
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
    /// Set for a batch decided from the matcher's copies alone (no checks statement).
    pub(crate) epoch: Vec<EpochGuard>,
    pub(crate) gpus_verified: Vec<GpuGuard>,
    pub(crate) accounts_new: Vec<NewAccount>,
    pub(crate) balances: Vec<BalanceChange>,
    pub(crate) journal: Vec<JournalRow>,
    /// Full `orders` rows (JSON objects by column), in book order: that order gives `seq`.
    pub(crate) orders_new: Vec<Value>,
    pub(crate) orders_changed: Vec<OrderChange>,
    pub(crate) ask_gpus_new: Vec<AskGpu>,
    pub(crate) ask_gpus_changed: Vec<AskGpuChange>,
    /// Full `trades` and `leases` rows (JSON objects by column).
    pub(crate) trades: Vec<Value>,
    pub(crate) leases: Vec<Value>,
    pub(crate) preemptions: Vec<Preemption>,
    pub(crate) idempotency: Vec<IdempotencyRecord>,
    pub(crate) claims_dropped: Vec<ClaimDrop>,
}

impl BatchWrites {
    /// Rows each part means to write, in [`PARTS`] order.
    fn counts(&self) -> [usize; PARTS.len()] {
        [
            self.epoch.len(),
            self.gpus_verified.len(),
            self.accounts_new.len(),
            self.balances.len(),
            self.journal.len(),
            self.orders_new.len(),
            self.orders_changed.len(),
            self.ask_gpus_new.len(),
            self.ask_gpus_changed.len(),
            self.trades.len(),
            self.leases.len(),
            self.preemptions.len(),
            self.idempotency.len(),
            self.claims_dropped.len(),
        ]
    }

    /// Writes everything and commits, in one round trip; `begin` opens the transaction in
    /// the same round trip (a batch decided without the checks statement, which otherwise
    /// opened it). A statement that touched other rows than meant raises
    /// (`matcher_assert_written`), so the COMMIT sent behind it is skipped and the batch's
    /// transaction stays uncommitted.
    pub(crate) async fn execute_and_commit(
        &self,
        conn: &mut PgConnection,
        prepared: &mut WriteStatements,
        begin: bool,
    ) -> Result<(), ApiError> {
        let WriteStatement { prepare, execute } = self.statement_for(prepared)?;
        // A statement prepared in this round trip stays prepared whatever becomes of the
        // transaction; if the round trip fails the matcher drops the connection, and the
        // record of what it prepared with it.
        let begin = if begin { "begin; " } else { "" };
        let lock = self.lock_sql();
        let sql = match prepare {
            Some(prepare) => format!("{begin}{lock}{prepare}; {execute}; commit"),
            None => format!("{begin}{lock}{execute}; commit"),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map_err(batch_write_error)?;
        Ok(())
    }

    /// The statements (each with its `;`) that lock, first, the hosts and then the leases the
    /// batch preempts (the order of the report writer, which locks a host, its leases, then
    /// their accounts), and then the accounts the batch moves, in the ledger's order; empty
    /// when it moves and preempts nothing.
    fn lock_sql(&self) -> String {
        let mut sql = String::new();
        if !self.preemptions.is_empty() {
            let mut hosts: Vec<Uuid> = self.preemptions.iter().map(|p| p.host_id).collect();
            let mut leases: Vec<Uuid> = self.preemptions.iter().map(|p| p.lease_id).collect();
            for ids in [&mut hosts, &mut leases] {
                ids.sort_unstable();
                ids.dedup();
            }
            sql.push_str(&format!(
                "select count(*) from (select 1 from hosts where host_id = any({}) \
                 order by host_id for no key update) locked; \
                 select count(*) from (select 1 from leases where lease_id = any({}) \
                 order by lease_id for no key update) locked; ",
                literal::uuid_array(&hosts),
                literal::uuid_array(&leases)
            ));
        }
        let mut ids: Vec<Uuid> = self.balances.iter().map(|b| b.account_id).collect();
        if ids.is_empty() {
            return sql;
        }
        ids.sort_unstable();
        ids.dedup();
        sql.push_str(&format!(
            "select count(*) from (select 1 from accounts where account_id = any({}) \
             order by account_id for no key update) locked; ",
            literal::uuid_array(&ids)
        ));
        sql
    }

    /// The statement that writes this batch, and its PREPARE if the connection has not
    /// prepared it yet (recorded in `prepared` as prepared from now on).
    pub(crate) fn statement_for(&self, prepared: &mut WriteStatements) -> Result<WriteStatement, ApiError> {
        let counts = self.counts();
        let parts = Parts::of(&counts);
        let expected: Vec<i64> = counts.iter().filter(|&&n| n > 0).map(|&n| n as i64).collect();
        Ok(WriteStatement {
            prepare: prepared.0.insert(parts).then(|| prepare_sql(parts)),
            execute: format!(
                "execute {}({}, {})",
                parts.statement_name(),
                literal::jsonb(self).map_err(ApiError::internal)?,
                literal::bigint_array(&expected)
            ),
        })
    }
}

/// The code of a batch write that found the database other than its batch assumed: a
/// deadlock or serialization failure, a wallet spent by another transaction since the
/// batch read it (the balance CHECK), or rows that differ from the matcher's copies
/// (`matcher_assert_written`). Nothing was written; the matcher reloads the market and runs
/// the batch again, checked.
pub(crate) const BATCH_CONFLICT: &str = "batch_conflict";

fn batch_write_error(err: sqlx::Error) -> ApiError {
    let moved = match &err {
        sqlx::Error::Database(db) => {
            capex_ledger::lost_race(&err)
                || db.constraint() == Some("accounts_balance_nonnegative")
                || db.code().as_deref() == Some("P0001") && db.message().contains("the matcher's copy")
        }
        _ => false,
    };
    if moved {
        tracing::info!(error = %err, "batch write met concurrent changes");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            BATCH_CONFLICT,
            "the market met concurrent changes; retry",
        )
    } else {
        err.into()
    }
}

/// One batch's write statement, as SQL text.
pub(crate) struct WriteStatement {
    pub(crate) prepare: Option<String>,
    pub(crate) execute: String,
}

/// Which parts of [`PARTS`] a batch writes, one bit each.
///
/// Each batch runs a statement with only the parts it writes: every part in the statement
/// costs its executor setup (opening the table and its indexes, building its constraint
/// checks) even when it writes nothing, and a typical batch writes 5 of the 11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Parts(u16);

impl Parts {
    #[cfg(test)]
    pub(crate) const ALL: Parts = Parts((1 << PARTS.len()) - 1);

    fn of(counts: &[usize; PARTS.len()]) -> Parts {
        Parts(counts.iter().enumerate().filter(|(_, n)| **n > 0).fold(0, |bits, (i, _)| bits | 1 << i))
    }

    fn has(self, part: usize) -> bool {
        self.0 & (1 << part) != 0
    }

    fn statement_name(self) -> String {
        format!("matcher_writes_{}", self.0)
    }
}

/// The write statements prepared on one matcher connection.
#[derive(Debug, Default)]
pub(crate) struct WriteStatements(HashSet<Parts>);

/// The parts of a batch's writes: a name and its data-modifying CTE, fed by the part of the
/// same name of the batch's JSON document (`$1`). Rows go in by ordinality: journal entries
/// and orders get their ids/seq in batch order.
const PARTS: [(&str, &str); 14] = [
    (
        "epoch",
        "select 1 from market_owners m, jsonb_to_recordset($1->'epoch') as r(class text, epoch bigint)
         where m.class = r.class and m.epoch = r.epoch
         for share of m",
    ),
    (
        "gpus_verified",
        // The same conditions as the checks statement's free GPUs (capacity's constants).
        // All parts see the database as it was before the statement, so the GPUs this
        // statement binds do not count as taken here; two batches binding one GPU collide
        // on the unique index of bound GPUs instead.
        "select 1 from jsonb_to_recordset($1->'gpus_verified')
                 as r(host_id uuid, owner_id uuid, class text, gpu_uuid text)
             join host_gpus g on g.host_id = r.host_id and g.gpu_uuid = r.gpu_uuid and g.class = r.class
             join hosts h on h.host_id = g.host_id and h.owner_id = r.owner_id
         where HOST_LIVE and GPU_IDLE and GPU_UNTAKEN",
    ),
    (
        "accounts_new",
        "insert into accounts (account_id, kind, user_id, ref_id, balance)
         select r.account_id, 'escrow', r.user_id, r.ref_id, r.balance
         from jsonb_to_recordset($1->'accounts_new') as r(account_id uuid, user_id uuid, ref_id uuid, balance numeric)
         returning 1",
    ),
    (
        "balances",
        "update accounts a set balance = a.balance + r.delta
         from jsonb_to_recordset($1->'balances') as r(account_id uuid, old_balance numeric, delta numeric)
         where a.account_id = r.account_id and (r.old_balance is null or a.balance = r.old_balance)
         returning 1",
    ),
    (
        "journal",
        "insert into journal (transfer_id, debit_account, credit_account, amount, kind, memo)
         select r.transfer_id, r.debit_account, r.credit_account, r.amount, r.kind, r.memo
         from jsonb_populate_recordset(null::journal, $1->'journal') with ordinality as r
         order by r.ordinality
         returning 1",
    ),
    (
        "orders_new",
        "insert into orders (order_id, class, side, owner_id, status, tif, gpus, gpus_remaining, price, max_hours,
                             duration_ms, job, host_id, available_until, created_at, closed_at, min_verification,
                             min_uptime_7d_ppm, priority, interruptible_price)
         select order_id, class, side, owner_id, status, tif, gpus, gpus_remaining, price, max_hours,
                duration_ms, job, host_id, available_until, created_at, closed_at, min_verification,
                min_uptime_7d_ppm, priority, interruptible_price
         from jsonb_populate_recordset(null::orders, $1->'orders_new') with ordinality as r
         order by r.ordinality
         returning 1",
    ),
    (
        "orders_changed",
        // `old_status` (always 'open') comes from the document, not the text: written as a
        // literal it matches the partial index of open orders, which stale statistics make
        // look empty, and the update scanned every open order of the market.
        "update orders o set status = r.status, gpus_remaining = r.gpus_remaining, closed_at = r.closed_at
         from jsonb_to_recordset($1->'orders_changed')
             as r(order_id uuid, old_status text, old_remaining int, status text, gpus_remaining int,
                  closed_at timestamptz)
         where o.order_id = r.order_id and o.status = r.old_status and o.gpus_remaining = r.old_remaining
         returning 1",
    ),
    (
        "ask_gpus_new",
        "insert into ask_gpus (order_id, gpu_uuid, state, lease_id)
         select r.order_id, r.gpu_uuid, r.state, r.lease_id
         from jsonb_populate_recordset(null::ask_gpus, $1->'ask_gpus_new') as r
         returning 1",
    ),
    (
        "ask_gpus_changed",
        // `old_state` from the document for the same reason as `old_status` above: the
        // literal 'bound' matches the partial index of bound GPUs, and the update read
        // every bound GPU of the exchange.
        "update ask_gpus a set state = r.state, lease_id = r.lease_id
         from jsonb_to_recordset($1->'ask_gpus_changed')
             as r(order_id uuid, gpu_uuid text, old_state text, state text, lease_id uuid)
         where a.order_id = r.order_id and a.gpu_uuid = r.gpu_uuid and a.state = r.old_state
         returning 1",
    ),
    (
        "trades",
        "insert into trades (trade_id, class, bid_id, ask_id, buyer_id, seller_id, host_id, gpus, price, max_hours, at)
         select trade_id, class, bid_id, ask_id, buyer_id, seller_id, host_id, gpus, price, max_hours, at
         from jsonb_populate_recordset(null::trades, $1->'trades') with ordinality as r
         order by r.ordinality
         returning 1",
    ),
    (
        "leases",
        "insert into leases (lease_id, trade_id, host_id, gpu_uuids, price, buyer_id, provider_id, gpus, max_hours,
                             starts_at, max_end_at, job, state, priority, book_seq, preempted_at, preempt_deadline,
                             preempted_by)
         select lease_id, trade_id, host_id, gpu_uuids, price, buyer_id, provider_id, gpus, max_hours,
                starts_at, max_end_at, job, state, priority, book_seq, preempted_at, preempt_deadline, preempted_by
         from jsonb_populate_recordset(null::leases, $1->'leases') as r
         returning 1",
    ),
    (
        "preemptions",
        // Only a live interruptible lease: one that ended since the matcher's copy was made
        // (its job exited) touches no row, the batch fails and runs again on a reloaded book.
        "update leases l set state = 'preempting', preempted_at = r.preempted_at,
                             preempt_deadline = r.preempt_deadline, preempted_by = r.preempted_by
         from jsonb_to_recordset($1->'preemptions')
             as r(lease_id uuid, preempted_at timestamptz, preempt_deadline timestamptz, preempted_by uuid)
         where l.lease_id = r.lease_id and INTERRUPTIBLE_LIVE
         returning 1",
    ),
    (
        "idempotency",
        "update idempotency i set response_status = r.response_status, response_body = r.response_body
         from jsonb_to_recordset($1->'idempotency')
             as r(user_id uuid, idempotency_key text, response_status smallint, response_body jsonb)
         where i.user_id = r.user_id and i.idempotency_key = r.idempotency_key and i.response_status = 0
         returning 1",
    ),
    (
        "claims_dropped",
        "delete from idempotency i
         using jsonb_to_recordset($1->'claims_dropped') as r(user_id uuid, idempotency_key text)
         where i.user_id = r.user_id and i.idempotency_key = r.idempotency_key and i.response_status = 0
         returning 1",
    ),
];

/// The write statement of the batches that write `parts`: `$1` is the batch's
/// [`BatchWrites`] as JSON, `$2` the rows each of those parts means to write, in order.
pub(crate) fn prepare_sql(parts: Parts) -> String {
    let (ctes, written): (Vec<String>, Vec<String>) = PARTS
        .iter()
        .enumerate()
        .filter(|(i, _)| parts.has(*i))
        .map(|(_, (name, cte))| {
            let cte = cte
                .replace("HOST_LIVE", HOST_LIVE_SQL)
                .replace("GPU_IDLE", GPU_IDLE_SQL)
                .replace("GPU_UNTAKEN", GPU_UNTAKEN_SQL)
                .replace("INTERRUPTIBLE_LIVE", INTERRUPTIBLE_LIVE_SQL);
            (format!("w_{name} as ({cte})"), format!("(select count(*) from w_{name})"))
        })
        .unzip();
    let with = if ctes.is_empty() { String::new() } else { format!("with {}\n", ctes.join(",\n")) };
    format!(
        "prepare {} (jsonb, bigint[]) as {with}select matcher_assert_written(array[{}]::bigint[], $2)",
        parts.statement_name(),
        written.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_s_parts_are_those_it_writes() {
        let mut counts = [0; PARTS.len()];
        assert_eq!(Parts::of(&counts), Parts(0));
        counts[2] = 2;
        counts[6] = 1;
        let parts = Parts::of(&counts);
        assert!(parts.has(2) && parts.has(6) && !parts.has(3));
        assert_eq!(parts.statement_name(), "matcher_writes_68");
        let sql = prepare_sql(parts);
        assert!(sql.contains("w_accounts_new as (") && sql.contains("w_orders_changed as ("));
        assert!(!sql.contains("w_balances") && !sql.contains("w_trades"));
        assert!(sql.ends_with(
            "array[(select count(*) from w_accounts_new), (select count(*) from w_orders_changed)]::bigint[], $2)"
        ));
    }

    /// Every part alone prepares against the schema, and each statement's name is its own.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn each_part_s_statement_prepares(pool: sqlx::PgPool) {
        let mut conn = pool.acquire().await.unwrap();
        for part in 0..PARTS.len() {
            let sql = prepare_sql(Parts(1 << part));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.unwrap();
        }
        let names: i64 =
            sqlx::query_scalar("select count(*) from pg_prepared_statements where name like 'matcher_writes_%'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(names, PARTS.len() as i64);
    }

    /// A batch whose counts differ from the rows its statement touched fails, also in a
    /// statement that has only that batch's parts, and never commits.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_part_that_touches_fewer_rows_than_meant_raises(pool: sqlx::PgPool) {
        let mut conn = pool.acquire().await.unwrap();
        let writes = BatchWrites {
            balances: vec![BalanceChange {
                account_id: Uuid::now_v7(),
                old_balance: Some(Decimal::ONE),
                delta: Decimal::ONE,
            }],
            ..BatchWrites::default()
        };
        sqlx::raw_sql("begin").execute(&mut *conn).await.unwrap();
        writes.execute_and_commit(&mut conn, &mut WriteStatements::default(), false).await.unwrap_err();
        // The COMMIT behind the statement was skipped: the transaction is still open, aborted.
        let after = sqlx::raw_sql("select 1").execute(&mut *conn).await.unwrap_err();
        assert!(after.to_string().contains("current transaction is aborted"), "{after}");
    }

    /// A batch decided without the checks statement commits only if what it assumed still
    /// holds: the market's epoch, and each GPU it binds free on its owner's live host.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_batch_decided_from_copies_proves_its_epoch_and_gpus(pool: sqlx::PgPool) {
        use super::super::matcher::matcher_connection;
        use super::super::plans::{CLASS, ask_binding_all_gpus, live_host};
        let mut setup = pool.acquire().await.unwrap();
        let user = |email: &'static str| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.acquire().await.unwrap();
                crate::auth::create_user(&mut conn, email, "password password".into(), &[capex_core::Role::Provider])
                    .await
                    .unwrap()
                    .user_id
            }
        };
        let (owner, stranger) = (user("owner@example.test").await, user("stranger@example.test").await);
        let free_host = live_host(&mut setup, owner).await;
        let offered_host = live_host(&mut setup, owner).await;
        ask_binding_all_gpus(&mut setup, owner, offered_host).await;
        sqlx::query("insert into market_owners (class, owner_url, epoch) values ($1, 'test', 7)")
            .bind(CLASS)
            .execute(&mut *setup)
            .await
            .unwrap();
        let batch = |epoch: i64, host_id: Uuid, owner_id: Uuid| BatchWrites {
            epoch: vec![EpochGuard { class: CLASS.into(), epoch }],
            gpus_verified: vec![GpuGuard { host_id, owner_id, class: CLASS.into(), gpu_uuid: format!("{host_id}-0") }],
            ..BatchWrites::default()
        };
        let conn = &mut matcher_connection(&pool).await.unwrap();
        let mut prepared = WriteStatements::default();
        batch(7, free_host, owner).execute_and_commit(conn, &mut prepared, true).await.expect("all holds");
        let refused = [
            ("another epoch", batch(8, free_host, owner)),
            ("a GPU an open ask offers", batch(7, offered_host, owner)),
            ("someone else's host", batch(7, free_host, stranger)),
        ];
        for (what, writes) in refused {
            let conn = &mut matcher_connection(&pool).await.unwrap();
            let err = writes.execute_and_commit(conn, &mut WriteStatements::default(), true).await;
            assert!(err.is_err(), "{what} was not refused");
        }
        sqlx::query("update hosts set last_report_at = now() - interval '1 day' where host_id = $1")
            .bind(free_host)
            .execute(&mut *setup)
            .await
            .unwrap();
        let conn = &mut matcher_connection(&pool).await.unwrap();
        let err = batch(7, free_host, owner).execute_and_commit(conn, &mut WriteStatements::default(), true).await;
        assert!(err.is_err(), "a host that stopped reporting was not refused");
    }
}
