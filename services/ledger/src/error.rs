use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {account} has insufficient funds")]
    InsufficientFunds { account: Uuid },
    #[error("account {0} does not exist")]
    UnknownAccount(Uuid),
    #[error("a transfer cannot move credits from an account to itself")]
    SameAccount,
    #[error("a transfer must move a positive amount")]
    NonPositiveAmount,
    #[error("idempotency key {key} was already used for a different transfer")]
    IdempotencyConflict { key: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
