//! Market classes (`H100-80GB`, ...): which names are well formed and which markets exist.

use axum::http::StatusCode;
use sqlx::PgPool;

use crate::error::ApiError;

/// Longest class name accepted.
pub(crate) const CLASS_CHARS_MAX: usize = 64;

/// A class name as it appears in URLs: 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
pub(crate) fn well_formed(class: &str) -> bool {
    !class.is_empty()
        && class.len() <= CLASS_CHARS_MAX
        && class.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A market exists for a class when the operator configured it (`CAPEX_MARKET_CLASSES`),
/// when some registered GPU has that class, or while it has open orders. Anything else is refused with `unknown_market`
/// (404, field `class`), so typos never open empty markets.
pub(crate) async fn require_known(pool: &PgPool, configured: &[String], class: &str) -> Result<(), ApiError> {
    let unknown = || {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_market", format!("there is no market for GPU class {class:?}"))
            .with_field("class")
    };
    if !well_formed(class) {
        return Err(unknown());
    }
    if configured.iter().any(|c| c == class) {
        return Ok(());
    }
    // A class that lost its GPUs and its place in the configuration keeps its market while it
    // has open orders, so they can still be cancelled.
    let registered: bool = sqlx::query_scalar(
        "select exists (select 1 from host_gpus where class = $1)
             or exists (select 1 from orders where status = 'open' and class = $1)",
    )
    .bind(class)
    .fetch_one(pool)
    .await?;
    if registered { Ok(()) } else { Err(unknown()) }
}
