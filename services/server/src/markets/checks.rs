//! The first statement of a matcher batch: everything the book cannot know, read (and
//! locked) in ONE round trip, which also opens the batch's transaction.
//!
//! - the market's owner epoch, row-locked until the batch ends (fencing, see
//!   [`super::ownership`]);
//! - the wallets of everyone whose bid or cancel is in the batch, with their balances, read
//!   and NOT locked: the write statement locks every account the batch moves in one step,
//!   in the ledger's order, and moves wallets by deltas that the balance CHECK keeps at or
//!   above zero. (Locking the bidders' wallets here and the other accounts later locked
//!   accounts in two steps, out of the one order; a wallet spent meanwhile fails the write,
//!   and the batch runs again checked.)
//! - the batch's Idempotency-Keys, claimed by inserting placeholder records: a key another
//!   transaction holds makes this one wait for it, so the same key sent to two markets at
//!   once places one order, never two and never a failed batch. The write statement fills
//!   in the response or drops the claim of a refused request;
//! - for the batch's asks, their hosts' owners and liveness, and the hosts' free attested
//!   GPUs in this class.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::capacity::{GPU_IDLE_SQL, GPU_UNTAKEN_SQL, HOST_LIVE_SQL};
use super::literal;
use crate::error::ApiError;
use crate::verification::level::{GPU_LEVEL_SQL, Level};

/// An Idempotency-Key of a request in the batch.
pub(crate) struct KeyClaim {
    pub(crate) user_id: Uuid,
    pub(crate) key: String,
    pub(crate) request_hash: String,
}

/// What the batch asks about.
#[derive(Default)]
pub(crate) struct CheckInput {
    /// Owners of the batch's bids and cancels.
    pub(crate) wallet_owners: Vec<Uuid>,
    pub(crate) keys: Vec<KeyClaim>,
    /// Hosts of the batch's asks.
    pub(crate) ask_hosts: Vec<Uuid>,
}

/// A locked wallet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wallet {
    pub(crate) account_id: Uuid,
    pub(crate) balance: Decimal,
}

pub(crate) struct Checked {
    pub(crate) epoch: Option<i64>,
    pub(crate) wallets: HashMap<Uuid, Wallet>,
    /// Keys this batch now holds: (user, key).
    pub(crate) claimed: HashSet<(Uuid, String)>,
    /// Free GPUs of this class per ask host, in GPU index order.
    pub(crate) free_gpus: HashMap<Uuid, Vec<String>>,
    /// The verification level of each free GPU: an ask's grade is its GPUs' lowest.
    pub(crate) gpu_levels: HashMap<String, Level>,
    /// The ask hosts that exist, by id.
    pub(crate) hosts: HashMap<Uuid, AskHost>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct AskHost {
    pub(crate) owner_id: Uuid,
    pub(crate) live: bool,
}

#[derive(Deserialize)]
struct HostRow {
    host_id: Uuid,
    #[serde(flatten)]
    host: AskHost,
}

#[derive(Deserialize)]
struct WalletRow {
    user_id: Uuid,
    account_id: Uuid,
    balance: String,
}

#[derive(Deserialize)]
struct ClaimRow {
    user_id: Uuid,
    key: String,
}

#[derive(Deserialize)]
struct GpuRow {
    host_id: Uuid,
    gpu_uuid: String,
    level: Level,
}

#[derive(Deserialize)]
struct CheckDoc {
    epoch: Option<i64>,
    wallets: Vec<WalletRow>,
    claimed: Vec<ClaimRow>,
    free: Vec<GpuRow>,
    hosts: Vec<HostRow>,
}

/// The checks statement, prepared once on the matcher's connection. `$1` is one JSON
/// document: `{class, owners: [user_id], keys: [{user_id, key, request_hash}], ask_hosts: [host_id]}`.
pub(crate) fn prepare_sql() -> String {
    let ask_hosts = "any(array(select jsonb_array_elements_text($1->'ask_hosts')::uuid))";
    format!(
        "prepare matcher_checks (jsonb) as
         with owner as (
             select epoch from market_owners where class = $1->>'class' for share
         ), wallets as (
             select user_id, account_id, balance from accounts
             where kind = 'wallet' and user_id = any(array(select jsonb_array_elements_text($1->'owners')::uuid))
         ), claimed as (
             insert into idempotency (user_id, idempotency_key, request_hash, response_status, response_body)
             select (k.doc->>'user_id')::uuid, k.doc->>'key', k.doc->>'request_hash', 0, 'null'::jsonb
             from jsonb_array_elements($1->'keys') with ordinality as k(doc, n)
             order by k.n
             on conflict do nothing
             returning user_id, idempotency_key
         ), free as (
             select g.host_id, g.gpu_uuid, g.gpu_index, {GPU_LEVEL_SQL} as level from host_gpus g join hosts h using (host_id)
             where g.host_id = {ask_hosts} and h.host_id = {ask_hosts} and g.class = $1->>'class'
                 and {HOST_LIVE_SQL} and {GPU_IDLE_SQL} and {GPU_UNTAKEN_SQL}
         )
         select jsonb_build_object(
             'epoch', (select epoch from owner),
             'wallets', (select coalesce(jsonb_agg(jsonb_build_object(
                  'user_id', user_id, 'account_id', account_id, 'balance', balance::text)), '[]') from wallets),
             'claimed', (select coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'key', idempotency_key)), '[]')
                  from claimed),
             'free', (select coalesce(jsonb_agg(jsonb_build_object('host_id', host_id, 'gpu_uuid', gpu_uuid, 'level', level)
                  order by host_id, gpu_index), '[]') from free),
             'hosts', (select coalesce(jsonb_agg(jsonb_build_object(
                  'host_id', h.host_id, 'owner_id', h.owner_id, 'live', {HOST_LIVE_SQL})), '[]')
                  from hosts h where h.host_id = {ask_hosts}))"
    )
}

/// Opens the batch's transaction and runs its checks, in one round trip.
pub(crate) async fn begin_and_run(
    conn: &mut PgConnection,
    class: &str,
    input: &CheckInput,
) -> Result<Checked, ApiError> {
    let mut owners = input.wallet_owners.clone();
    owners.sort_unstable();
    owners.dedup();
    let keys: Vec<serde_json::Value> = input
        .keys
        .iter()
        .map(|k| json!({"user_id": k.user_id, "key": k.key, "request_hash": k.request_hash}))
        .collect();
    let document = json!({"class": class, "owners": owners, "keys": keys, "ask_hosts": input.ask_hosts});
    let sql = format!("begin; execute matcher_checks({})", literal::jsonb(&document).map_err(ApiError::internal)?);
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *conn).await?;
    let row = rows.last().ok_or_else(|| ApiError::internal("the checks statement returned no row"))?;
    let Json(CheckDoc { epoch, wallets, claimed, free, hosts }) = row.try_get(0)?;
    let mut wallet_map = HashMap::with_capacity(wallets.len());
    for row in wallets {
        let balance: Decimal = row
            .balance
            .parse()
            .map_err(|err| ApiError::internal(format!("wallet balance {:?}: {err}", row.balance)))?;
        wallet_map.insert(row.user_id, Wallet { account_id: row.account_id, balance });
    }
    let mut free_gpus: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut gpu_levels = HashMap::with_capacity(free.len());
    for row in free {
        gpu_levels.insert(row.gpu_uuid.clone(), row.level);
        free_gpus.entry(row.host_id).or_default().push(row.gpu_uuid);
    }
    Ok(Checked {
        epoch,
        wallets: wallet_map,
        claimed: claimed.into_iter().map(|c| (c.user_id, c.key)).collect(),
        free_gpus,
        gpu_levels,
        hosts: hosts.into_iter().map(|row| (row.host_id, row.host)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both batch statements prepare against the schema (the writes with every part), and
    /// empty batches' checks and writes run: the transaction the checks open is committed by
    /// the writes, and a write statement is prepared once per connection.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn the_batch_statements_prepare_and_run_empty(pool: sqlx::PgPool) {
        use super::super::writes::{self, BatchWrites, Parts, WriteStatements};
        let mut conn = pool.acquire().await.unwrap();
        for statement in [prepare_sql(), writes::prepare_sql(Parts::ALL)] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await.unwrap();
        }
        let mut prepared = WriteStatements::default();
        for _ in 0..2 {
            let checked = begin_and_run(&mut conn, "H100-80GB", &CheckInput::default()).await.unwrap();
            assert_eq!(checked.epoch, None);
            assert!(checked.wallets.is_empty() && checked.free_gpus.is_empty() && checked.hosts.is_empty());
            // A savepoint can be set only inside a transaction block.
            sqlx::raw_sql("savepoint inside").execute(&mut *conn).await.expect("the checks opened a transaction");
            BatchWrites::default().execute_and_commit(&mut conn, &mut prepared, false).await.unwrap();
            let outside = sqlx::raw_sql("savepoint outside").execute(&mut *conn).await;
            assert!(outside.is_err(), "the writes committed the checks' transaction");
        }
    }
}
