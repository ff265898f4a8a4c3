//! SLA credits, by rule rather than by ticket: when a lease is lost to a silent host, the
//! buyer gets `CAPEX_SLA_CREDIT_RATE` (default 0.1) x what the lease had billed (gross),
//! rounded down to the micro-credit, paid from the provider's wallet as far as its balance
//! covers. One ledger transfer of kind `sla_credit`, memo `lease <id> host_lost`, with the
//! idempotency key `sla_credit:<lease id>`, in the transaction that closes the lease; the
//! amount is recorded on the lease and counted on the host.

use capex_core::Credits;
use capex_ledger::{TransferSpec, post_transfer, wallet_account};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::json;
use sqlx::PgConnection;

use super::settle::{LeaseRow, Outbox};
use crate::error::ApiError;

/// The credit the rule gives for a lost lease that billed `cost`, when the provider's
/// wallet holds `provider_balance`.
pub(crate) fn sla_credit(cost: Decimal, rate: Decimal, provider_balance: Decimal) -> Decimal {
    let owed = (cost * rate.clamp(Decimal::ZERO, Decimal::ONE))
        .round_dp_with_strategy(capex_core::credits::CREDITS_SCALE_MAX, RoundingStrategy::ToZero);
    owed.min(provider_balance.max(Decimal::ZERO)).max(Decimal::ZERO)
}

/// Pays the SLA credit of `lease`, which is being closed as `host_lost`. The caller holds
/// the lease's accounts locked (both wallets among them: `lock_lease_accounts`).
pub(crate) async fn credit_lost_lease(
    conn: &mut PgConnection,
    lease: &LeaseRow,
    rate: Decimal,
    out: &mut Outbox,
) -> Result<(), ApiError> {
    let provider = wallet_account(conn, lease.provider_id).await?;
    let balance: Decimal = sqlx::query_scalar("select balance from accounts where account_id = $1")
        .bind(provider)
        .fetch_one(&mut *conn)
        .await?;
    let credit = sla_credit(lease.cost, rate, balance);
    if credit <= Decimal::ZERO {
        return Ok(());
    }
    let buyer = wallet_account(conn, lease.buyer_id).await?;
    post_transfer(
        conn,
        TransferSpec {
            from: provider,
            to: buyer,
            amount: Credits::from_db(credit),
            kind: "sla_credit".into(),
            memo: format!("lease {} host_lost", lease.lease_id),
            idempotency_key: Some(format!("sla_credit:{}", lease.lease_id)),
        },
    )
    .await?;
    sqlx::query("update leases set sla_credit = $2 where lease_id = $1")
        .bind(lease.lease_id)
        .bind(credit)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update hosts set sla_credits_paid = sla_credits_paid + $2 where host_id = $1")
        .bind(lease.host_id)
        .bind(credit)
        .execute(&mut *conn)
        .await?;
    metrics::counter!("capex_sla_credits_total").increment(1);
    out.push(
        "wallet",
        lease.buyer_id,
        json!({"reason": "sla_credit", "job_id": lease.job_id, "lease_id": lease.lease_id}),
    );
    out.push("wallet", lease.provider_id, json!({"reason": "sla_credit", "lease_id": lease.lease_id}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn a_tenth_of_what_was_billed_as_far_as_the_provider_covers() {
        assert_eq!(sla_credit(dec!(1.234567), dec!(0.1), dec!(100)), dec!(0.123456));
        assert_eq!(sla_credit(dec!(10), dec!(0.1), dec!(0.5)), dec!(0.5));
        assert_eq!(sla_credit(dec!(10), dec!(0.1), dec!(0)), dec!(0));
        assert_eq!(sla_credit(dec!(0), dec!(0.1), dec!(5)), dec!(0));
        assert_eq!(sla_credit(dec!(3), dec!(2), dec!(5)), dec!(3));
    }
}
