//! The first statement of a matcher batch: everything the book cannot know, read (and
//! locked) in ONE round trip.
//!
//! - the market's owner epoch, row-locked until the batch ends (fencing, see
//!   [`super::ownership`]);
//! - the wallets of everyone whose bid or cancel is in the batch, locked in ascending
//!   account id order (the ledger's lock order), with their balances;
//! - the batch's Idempotency-Keys, claimed by inserting placeholder records: a key another
//!   transaction holds makes this one wait for it, so the same key sent to two markets at
//!   once places one order, never two and never a failed batch. The write statement fills
//!   in the response or drops the claim of a refused request;
//! - for the batch's asks, their hosts' owners and liveness, and the hosts' free attested
//!   GPUs in this class.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::capacity::{GPU_IDLE_SQL, GPU_TAKEN_SQL, HOST_LIVE_SQL};
use crate::error::ApiError;

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
}

type CheckRow = (Option<i64>, Json<Vec<WalletRow>>, Json<Vec<ClaimRow>>, Json<Vec<GpuRow>>, Json<Vec<HostRow>>);

/// Runs the checks of a batch of `class` inside the batch's transaction.
pub(crate) async fn run(conn: &mut PgConnection, class: &str, input: &CheckInput) -> Result<Checked, ApiError> {
    let mut owners = input.wallet_owners.clone();
    owners.sort_unstable();
    owners.dedup();
    let key_users: Vec<Uuid> = input.keys.iter().map(|k| k.user_id).collect();
    let keys: Vec<&str> = input.keys.iter().map(|k| k.key.as_str()).collect();
    let hashes: Vec<&str> = input.keys.iter().map(|k| k.request_hash.as_str()).collect();
    // The claims cross-join the locked wallets so the wallets are always locked first: the
    // same order as every other transaction that writes both.
    let sql = format!(
        "with owner as (
             select epoch from market_owners where class = $1 for share
         ), wallets as (
             select user_id, account_id, balance from accounts
             where kind = 'wallet' and user_id = any($2) order by account_id for update
         ), locked as (
             select count(*) as n from wallets
         ), claimed as (
             insert into idempotency (user_id, idempotency_key, request_hash, response_status, response_body)
             select k.user_id, k.idempotency_key, k.request_hash, 0, 'null'::jsonb
             from unnest($3::uuid[], $4::text[], $5::text[]) with ordinality as k(user_id, idempotency_key, request_hash, n)
                 cross join locked
             order by k.n
             on conflict do nothing
             returning user_id, idempotency_key
         ), free as (
             select g.host_id, g.gpu_uuid, g.gpu_index from host_gpus g join hosts h using (host_id)
             where g.host_id = any($6) and g.class = $1 and {HOST_LIVE_SQL} and {GPU_IDLE_SQL}
                 and not ({GPU_TAKEN_SQL})
         )
         select (select epoch from owner),
             (select coalesce(jsonb_agg(jsonb_build_object(
                  'user_id', user_id, 'account_id', account_id, 'balance', balance::text)), '[]') from wallets),
             (select coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'key', idempotency_key)), '[]')
                  from claimed),
             (select coalesce(jsonb_agg(jsonb_build_object('host_id', host_id, 'gpu_uuid', gpu_uuid)
                  order by host_id, gpu_index), '[]') from free),
             (select coalesce(jsonb_agg(jsonb_build_object(
                  'host_id', h.host_id, 'owner_id', h.owner_id, 'live', {HOST_LIVE_SQL})), '[]')
                  from hosts h where h.host_id = any($6))"
    );
    let (epoch, Json(wallets), Json(claimed), Json(free), Json(hosts)): CheckRow =
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(class)
            .bind(&owners)
            .bind(&key_users)
            .bind(&keys)
            .bind(&hashes)
            .bind(&input.ask_hosts)
            .fetch_one(&mut *conn)
            .await?;
    let mut wallet_map = HashMap::with_capacity(wallets.len());
    for row in wallets {
        let balance: Decimal = row
            .balance
            .parse()
            .map_err(|err| ApiError::internal(format!("wallet balance {:?}: {err}", row.balance)))?;
        wallet_map.insert(row.user_id, Wallet { account_id: row.account_id, balance });
    }
    let mut free_gpus: HashMap<Uuid, Vec<String>> = HashMap::new();
    for row in free {
        free_gpus.entry(row.host_id).or_default().push(row.gpu_uuid);
    }
    Ok(Checked {
        epoch,
        wallets: wallet_map,
        claimed: claimed.into_iter().map(|c| (c.user_id, c.key)).collect(),
        free_gpus,
        hosts: hosts.into_iter().map(|row| (row.host_id, row.host)).collect(),
    })
}
