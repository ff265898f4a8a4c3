//! Demo mode seeding and the configured operator account.

use capex_core::{Credits, Role};
use rust_decimal::Decimal;

use crate::auth::{create_user, find_user_by_email};
use crate::extract::IdempotencyKey;
use crate::state::AppState;

pub const DEMO_PASSWORD: &str = "capex-demo";
pub const DEMO_OPERATOR: &str = "operator@capex.demo";
/// Demo users, their roles, and the credits each starts with.
pub const DEMO_USERS: &[(&str, &[Role], i64)] = &[
    ("alice@capex.demo", &[Role::Buyer], 50_000),
    ("bob@capex.demo", &[Role::Buyer], 50_000),
    ("carol@capex.demo", &[Role::Provider], 0),
    ("dave@capex.demo", &[Role::Provider], 0),
    ("erin@capex.demo", &[Role::Provider], 0),
];

/// Creates the operator named by `CAPEX_OPERATOR_EMAIL`, if configured and missing.
pub async fn ensure_configured_operator(state: &AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&state.config.operator_email, &state.config.operator_password) else {
        return Ok(());
    };
    ensure_user(state, email, password, &[Role::Operator]).await?;
    Ok(())
}

async fn ensure_user(state: &AppState, email: &str, password: &str, roles: &[Role]) -> anyhow::Result<uuid::Uuid> {
    let mut tx = state.pool.begin().await?;
    if let Some((user, _)) = find_user_by_email(&mut tx, email).await.map_err(|e| anyhow::anyhow!(e.detail))? {
        return Ok(user.user_id);
    }
    let user = create_user(&mut tx, email, password.to_string(), roles).await.map_err(|e| anyhow::anyhow!(e.detail))?;
    tx.commit().await?;
    Ok(user.user_id)
}

/// Seeds the operator and the funded demo users; safe to run on every start.
pub async fn seed(state: &AppState) -> anyhow::Result<()> {
    let operator = ensure_user(state, DEMO_OPERATOR, DEMO_PASSWORD, &[Role::Operator]).await?;
    println!("capex demo accounts (password for all: {DEMO_PASSWORD}):");
    println!("  operator  {DEMO_OPERATOR}");
    for (email, roles, credits) in DEMO_USERS {
        let user_id = ensure_user(state, email, DEMO_PASSWORD, roles).await?;
        if *credits > 0 {
            let amount = Credits::positive(Decimal::from(*credits)).map_err(|e| anyhow::anyhow!(e))?;
            // A fixed key per user: restarting the demo never mints twice.
            let key = IdempotencyKey(format!("demo-seed-{email}"));
            let hash = crate::idempotency::request_hash("demo-seed", &(email, credits));
            if crate::idempotency::replay(&state.pool, operator, &key, &hash)
                .await
                .map_err(|e| anyhow::anyhow!(e.detail))?
                .is_none()
            {
                crate::operator::mint_credits(state, operator, Some(&key), &hash, user_id, amount, "demo funding")
                    .await
                    .map_err(|e| anyhow::anyhow!(e.detail))?;
            }
        }
        let roles: Vec<&str> = roles.iter().map(Role::as_str).collect();
        println!("  {:<9} {email}", roles.join(","));
    }
    Ok(())
}
