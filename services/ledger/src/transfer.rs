use std::collections::BTreeMap;

use capex_core::Credits;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::LedgerError;
use crate::accounts::{AccountKind, escrow_account, wallet_account};

/// A transfer to be posted. `kind` names the business reason ("mint", "transfer",
/// "escrow_hold", "settlement", ...) and is stored with the journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSpec {
    pub from: Uuid,
    pub to: Uuid,
    pub amount: Credits,
    pub kind: String,
    pub memo: String,
    /// A transfer posted again with the same key returns the first result and moves
    /// nothing; the same key with a different transfer is a conflict.
    pub idempotency_key: Option<String>,
}

/// A posted journal row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Transfer {
    pub entry_id: i64,
    pub transfer_id: Uuid,
    #[sqlx(rename = "debit_account")]
    pub from: Uuid,
    #[sqlx(rename = "credit_account")]
    pub to: Uuid,
    pub amount: Decimal,
    pub kind: String,
    pub memo: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Transfer {
    fn matches(&self, spec: &TransferSpec) -> bool {
        self.from == spec.from
            && self.to == spec.to
            && self.amount == spec.amount.as_decimal()
            && self.kind == spec.kind
            && self.memo == spec.memo
    }
}

const TRANSFER_COLUMNS: &str =
    "entry_id, transfer_id, debit_account, credit_account, amount, kind, memo, idempotency_key, created_at";

/// Applies `specs` in order to balances the caller has read under lock (account id ->
/// kind and balance), refusing an overdraft of any account but the treasury. Pure: the
/// caller writes the journal rows and the new balances in its own transaction.
pub fn apply_to_balances(
    balances: &mut BTreeMap<Uuid, (AccountKind, Decimal)>,
    specs: &[&TransferSpec],
) -> Result<(), LedgerError> {
    for spec in specs {
        if spec.from == spec.to {
            return Err(LedgerError::SameAccount);
        }
        let amount = spec.amount.as_decimal();
        if amount <= Decimal::ZERO {
            return Err(LedgerError::NonPositiveAmount);
        }
        let (from_kind, from_balance) = balances.get_mut(&spec.from).ok_or(LedgerError::UnknownAccount(spec.from))?;
        *from_balance -= amount;
        if *from_kind != AccountKind::Treasury && *from_balance < Decimal::ZERO {
            return Err(LedgerError::InsufficientFunds { account: spec.from });
        }
        balances.get_mut(&spec.to).ok_or(LedgerError::UnknownAccount(spec.to))?.1 += amount;
    }
    Ok(())
}

/// Posts one transfer inside the caller's transaction.
pub async fn post_transfer(conn: &mut PgConnection, spec: TransferSpec) -> Result<Transfer, LedgerError> {
    let mut posted = post_transfers(conn, std::slice::from_ref(&spec)).await?;
    debug_assert_eq!(posted.len(), 1);
    Ok(posted.remove(0))
}

/// Posts several transfers atomically inside the caller's transaction: either all are
/// written (or found already written under their idempotency keys) or none is.
///
/// Every account touched is locked in ascending id order first, the new balances are
/// computed and checked, and only then is anything written, so a refusal leaves no trace.
pub async fn post_transfers(conn: &mut PgConnection, specs: &[TransferSpec]) -> Result<Vec<Transfer>, LedgerError> {
    let mut results: Vec<Option<Transfer>> = vec![None; specs.len()];

    for (slot, spec) in results.iter_mut().zip(specs) {
        if spec.from == spec.to {
            return Err(LedgerError::SameAccount);
        }
        let Some(key) = &spec.idempotency_key else { continue };
        let existing: Option<Transfer> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {TRANSFER_COLUMNS} from journal where idempotency_key = $1"
        )))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(existing) = existing {
            if !existing.matches(spec) {
                return Err(LedgerError::IdempotencyConflict { key: key.clone() });
            }
            *slot = Some(existing);
        }
    }

    let pending: Vec<(usize, &TransferSpec)> =
        specs.iter().enumerate().filter(|(i, _)| results[*i].is_none()).collect();
    if pending.is_empty() {
        return Ok(results.into_iter().flatten().collect());
    }

    // Locked in the ledger's one order (a no-op for accounts the caller locked already
    // with `lock_accounts`); the placeholders are replaced by what the lock read.
    let mut ids: Vec<Uuid> = pending.iter().flat_map(|(_, spec)| [spec.from, spec.to]).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut balances = crate::locking::lock_by_id(conn, &ids).await?;
    if let Some(missing) = ids.iter().find(|id| !balances.contains_key(id)) {
        return Err(LedgerError::UnknownAccount(*missing));
    }

    let pending_specs: Vec<&TransferSpec> = pending.iter().map(|(_, spec)| *spec).collect();
    apply_to_balances(&mut balances, &pending_specs)?;

    let transfer_ids: Vec<Uuid> = pending.iter().map(|_| Uuid::now_v7()).collect();
    let froms: Vec<Uuid> = pending.iter().map(|(_, s)| s.from).collect();
    let tos: Vec<Uuid> = pending.iter().map(|(_, s)| s.to).collect();
    let amounts: Vec<Decimal> = pending.iter().map(|(_, s)| s.amount.as_decimal()).collect();
    let kinds: Vec<String> = pending.iter().map(|(_, s)| s.kind.clone()).collect();
    let memos: Vec<String> = pending.iter().map(|(_, s)| s.memo.clone()).collect();
    let keys: Vec<Option<String>> = pending.iter().map(|(_, s)| s.idempotency_key.clone()).collect();
    let inserted: Vec<Transfer> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into journal (transfer_id, debit_account, credit_account, amount, kind, memo, idempotency_key)
         select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::numeric[], $5::text[], $6::text[], $7::text[])
         returning {TRANSFER_COLUMNS}"
    )))
    .bind(&transfer_ids)
    .bind(&froms)
    .bind(&tos)
    .bind(&amounts)
    .bind(&kinds)
    .bind(&memos)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| match err {
        sqlx::Error::Database(db) if db.constraint() == Some("journal_idempotency_key_key") => {
            LedgerError::IdempotencyConflict { key: "concurrent request with the same key".into() }
        }
        other => LedgerError::Database(other),
    })?;

    let (account_ids, new_balances): (Vec<Uuid>, Vec<Decimal>) =
        balances.iter().map(|(id, (_, balance))| (*id, *balance)).unzip();
    sqlx::query(
        "update accounts set balance = new.balance
         from unnest($1::uuid[], $2::numeric[]) as new(account_id, balance)
         where accounts.account_id = new.account_id",
    )
    .bind(&account_ids)
    .bind(&new_balances)
    .execute(&mut *conn)
    .await
    .map_err(|err| match err {
        // The balance check above already refuses overdrafts; the database CHECK is the backstop.
        sqlx::Error::Database(db) if db.constraint() == Some("accounts_balance_nonnegative") => {
            LedgerError::InsufficientFunds { account: Uuid::nil() }
        }
        other => LedgerError::Database(other),
    })?;

    let mut inserted_by_id: BTreeMap<Uuid, Transfer> = inserted.into_iter().map(|t| (t.transfer_id, t)).collect();
    for ((index, _), transfer_id) in pending.iter().zip(&transfer_ids) {
        results[*index] = inserted_by_id.remove(transfer_id);
    }
    assert!(results.iter().all(Option::is_some), "every pending transfer was inserted");
    Ok(results.into_iter().flatten().collect())
}

/// Moves `amount` from the user's wallet into the escrow account of `ref_id`, opening the
/// escrow if needed.
pub async fn hold(
    conn: &mut PgConnection,
    user_id: Uuid,
    ref_id: Uuid,
    amount: Credits,
    memo: &str,
) -> Result<Transfer, LedgerError> {
    let wallet = wallet_account(conn, user_id).await?;
    let escrow = match escrow_account(conn, ref_id).await? {
        Some((escrow, _owner)) => escrow,
        None => crate::accounts::open_escrow(conn, user_id, ref_id).await?,
    };
    post_transfer(
        conn,
        TransferSpec {
            from: wallet,
            to: escrow,
            amount,
            kind: "escrow_hold".into(),
            memo: memo.into(),
            idempotency_key: None,
        },
    )
    .await
}

/// Returns `amount` from the escrow of `ref_id` to its owner's wallet.
pub async fn release(
    conn: &mut PgConnection,
    ref_id: Uuid,
    amount: Credits,
    memo: &str,
) -> Result<Transfer, LedgerError> {
    let (escrow, owner) = escrow_account(conn, ref_id).await?.ok_or(LedgerError::UnknownAccount(ref_id))?;
    let wallet = wallet_account(conn, owner).await?;
    post_transfer(
        conn,
        TransferSpec {
            from: escrow,
            to: wallet,
            amount,
            kind: "escrow_release".into(),
            memo: memo.into(),
            idempotency_key: None,
        },
    )
    .await
}

/// Pays `amount` out of the escrow of `ref_id` to another account.
pub async fn capture(
    conn: &mut PgConnection,
    ref_id: Uuid,
    to: Uuid,
    amount: Credits,
    kind: &str,
    memo: &str,
) -> Result<Transfer, LedgerError> {
    let (escrow, _owner) = escrow_account(conn, ref_id).await?.ok_or(LedgerError::UnknownAccount(ref_id))?;
    post_transfer(
        conn,
        TransferSpec { from: escrow, to, amount, kind: kind.into(), memo: memo.into(), idempotency_key: None },
    )
    .await
}
