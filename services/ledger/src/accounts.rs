use capex_core::Credits;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::LedgerError;

/// The operator's treasury: the source of minted credits, the only account allowed below zero.
pub const TREASURY_ACCOUNT: Uuid = Uuid::from_u128(1);
/// Where the operator's fees on settled leases accumulate.
pub const FEES_ACCOUNT: Uuid = Uuid::from_u128(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Treasury,
    Fees,
    Wallet,
    Escrow,
}

impl AccountKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountKind::Treasury => "treasury",
            AccountKind::Fees => "fees",
            AccountKind::Wallet => "wallet",
            AccountKind::Escrow => "escrow",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<AccountKind> {
        match s {
            "treasury" => Some(AccountKind::Treasury),
            "fees" => Some(AccountKind::Fees),
            "wallet" => Some(AccountKind::Wallet),
            "escrow" => Some(AccountKind::Escrow),
            _ => None,
        }
    }
}

/// The user's wallet account, created on first use.
pub async fn wallet_account(conn: &mut PgConnection, user_id: Uuid) -> Result<Uuid, LedgerError> {
    let created: Option<Uuid> = sqlx::query_scalar(
        "insert into accounts (account_id, kind, user_id) values ($1, 'wallet', $2)
         on conflict (user_id) where kind = 'wallet' do nothing
         returning account_id",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = created {
        return Ok(id);
    }
    let id = sqlx::query_scalar("select account_id from accounts where kind = 'wallet' and user_id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(id)
}

/// Opens an empty escrow account owned by `user_id` for the order or lease `ref_id`.
pub async fn open_escrow(conn: &mut PgConnection, user_id: Uuid, ref_id: Uuid) -> Result<Uuid, LedgerError> {
    let id = Uuid::now_v7();
    sqlx::query("insert into accounts (account_id, kind, user_id, ref_id) values ($1, 'escrow', $2, $3)")
        .bind(id)
        .bind(user_id)
        .bind(ref_id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// The escrow account holding credits for `ref_id`, with its owner.
pub async fn escrow_account(conn: &mut PgConnection, ref_id: Uuid) -> Result<Option<(Uuid, Uuid)>, LedgerError> {
    let row: Option<(Uuid, Uuid)> =
        sqlx::query_as("select account_id, user_id from accounts where kind = 'escrow' and ref_id = $1")
            .bind(ref_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row)
}

pub async fn account_balance(conn: &mut PgConnection, account_id: Uuid) -> Result<rust_decimal::Decimal, LedgerError> {
    let balance: Option<rust_decimal::Decimal> =
        sqlx::query_scalar("select balance from accounts where account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    balance.ok_or(LedgerError::UnknownAccount(account_id))
}

/// What a user can spend now, and what is held in escrow for their open bids and leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletSummary {
    pub available: Credits,
    pub held: Credits,
}

pub async fn wallet_summary(conn: &mut PgConnection, user_id: Uuid) -> Result<WalletSummary, LedgerError> {
    let (available, held): (rust_decimal::Decimal, rust_decimal::Decimal) = sqlx::query_as(
        "select coalesce(sum(balance) filter (where kind = 'wallet'), 0),
                coalesce(sum(balance) filter (where kind = 'escrow'), 0)
         from accounts where user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(WalletSummary { available: Credits::from_db(available), held: Credits::from_db(held) })
}
