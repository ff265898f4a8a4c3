//! The one lock order for money.
//!
//! Every transaction that moves credits locks every account it will touch in ONE step,
//! before its first write, in ascending `account_id` order. Two transactions that both
//! follow the rule can wait for each other but never in a cycle, so no deadlock involves
//! accounts. Callers say *which* accounts (an [`AccountSet`]: wallets of users, escrows of
//! orders or leases, the fees account); the ledger decides the order.
//!
//! Rows are locked `for no key update`, the lock an `update` of a balance takes anyway. A
//! stronger `for update` would also conflict with the `key share` locks that inserting a
//! journal row takes on the two accounts it references (its foreign keys), which made
//! journal inserts of one transaction wait on another's account locks: one of the cycles
//! the load-and-fault run found.
//!
//! Locks taken later in the same transaction are no-ops for accounts already held, so the
//! transfer functions, which lock the accounts they post to, may be called any number of
//! times after the set was locked. What a caller must not do is post to an account outside
//! the set it locked first: that account would be locked out of order. Rows of other
//! tables come before accounts: a market's owner row, then hosts, then leases, then
//! accounts (see each caller's module docs).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::LedgerError;
use crate::accounts::{AccountKind, FEES_ACCOUNT};

/// The accounts a transaction will touch, named by what they belong to.
#[derive(Debug, Clone, Default)]
pub struct AccountSet {
    /// Users whose wallets are touched. Wallets that do not exist yet are opened first.
    pub wallets_of: Vec<Uuid>,
    /// Orders or leases whose escrow accounts are touched (those that exist).
    pub escrows_of: Vec<Uuid>,
    /// Accounts named by id (the fees account, a known account).
    pub accounts: Vec<Uuid>,
}

impl AccountSet {
    pub fn wallet_of(mut self, user_id: Uuid) -> Self {
        self.wallets_of.push(user_id);
        self
    }

    pub fn escrow_of(mut self, ref_id: Uuid) -> Self {
        self.escrows_of.push(ref_id);
        self
    }

    pub fn fees(mut self) -> Self {
        self.accounts.push(FEES_ACCOUNT);
        self
    }
}

/// The accounts a transaction holds locked, by id, with their kinds and balances as locked.
pub type LockedAccounts = BTreeMap<Uuid, (AccountKind, Decimal)>;

/// Opens the wallets of `set` that do not exist yet, then locks every account of `set` in
/// ascending id order in one statement. Call it once, before the transaction's first write
/// to any account.
pub async fn lock_accounts(conn: &mut PgConnection, set: &AccountSet) -> Result<LockedAccounts, LedgerError> {
    let mut users = set.wallets_of.clone();
    users.sort_unstable();
    users.dedup();
    if !users.is_empty() {
        // New wallets are rows no other transaction can see: inserting them takes no lock
        // another transaction could hold, whatever their ids.
        let ids: Vec<Uuid> = users.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(
            "insert into accounts (account_id, kind, user_id)
             select * from unnest($1::uuid[], array_fill('wallet'::text, array[cardinality($1)]), $2::uuid[])
             on conflict (user_id) where kind = 'wallet' do nothing",
        )
        .bind(&ids)
        .bind(&users)
        .execute(&mut *conn)
        .await?;
    }
    let rows: Vec<(Uuid, String, Decimal)> = sqlx::query_as(
        "select account_id, kind, balance from accounts
         where account_id = any($1)
            or (kind = 'wallet' and user_id = any($2))
            or (kind = 'escrow' and ref_id = any($3))
         order by account_id
         for no key update",
    )
    .bind(&set.accounts)
    .bind(&users)
    .bind(&set.escrows_of)
    .fetch_all(&mut *conn)
    .await?;
    let mut balances = BTreeMap::new();
    for (id, kind, balance) in rows {
        let kind = AccountKind::parse(&kind).ok_or(LedgerError::UnknownAccount(id))?;
        balances.insert(id, (kind, balance));
    }
    Ok(balances)
}

/// Locks the accounts with these ids, in ascending id order, in one statement.
pub(crate) async fn lock_by_id(conn: &mut PgConnection, ids: &[Uuid]) -> Result<LockedAccounts, LedgerError> {
    lock_accounts(conn, &AccountSet { accounts: ids.to_vec(), ..AccountSet::default() }).await
}
