//! Ledger behaviour against a real Postgres, one fresh database per test.

use capex_core::Credits;
use capex_ledger::{
    LedgerError, MIGRATOR, TREASURY_ACCOUNT, TransferSpec, check_invariants, hold, post_transfer, release,
    wallet_account, wallet_summary,
};
use rand::RngExt;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sqlx::PgPool;
use uuid::Uuid;

async fn new_user(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("insert into users (user_id, email, password_hash, roles) values ($1, $2, 'x', array['buyer'])")
        .bind(id)
        .bind(format!("{id}@example.test"))
        .execute(pool)
        .await
        .unwrap();
    id
}

fn spec(from: Uuid, to: Uuid, amount: Decimal, key: Option<&str>) -> TransferSpec {
    TransferSpec {
        from,
        to,
        amount: Credits::positive(amount).unwrap(),
        kind: "transfer".into(),
        memo: String::new(),
        idempotency_key: key.map(str::to_owned),
    }
}

async fn mint(pool: &PgPool, user: Uuid, amount: Decimal) -> Uuid {
    let mut conn = pool.acquire().await.unwrap();
    let wallet = wallet_account(&mut conn, user).await.unwrap();
    post_transfer(&mut conn, spec(TREASURY_ACCOUNT, wallet, amount, None)).await.unwrap();
    wallet
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn overdraft_is_refused_and_nothing_is_written(pool: PgPool) {
    let alice = new_user(&pool).await;
    let bob = new_user(&pool).await;
    let a = mint(&pool, alice, dec!(10)).await;
    let mut conn = pool.acquire().await.unwrap();
    let b = wallet_account(&mut conn, bob).await.unwrap();
    let before: i64 = sqlx::query_scalar("select count(*) from journal").fetch_one(&pool).await.unwrap();

    let err = post_transfer(&mut conn, spec(a, b, dec!(10.000001), None)).await.unwrap_err();
    assert!(matches!(err, LedgerError::InsufficientFunds { account } if account == a));

    let after: i64 = sqlx::query_scalar("select count(*) from journal").fetch_one(&pool).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(wallet_summary(&mut conn, alice).await.unwrap().available.as_decimal(), dec!(10));
    assert!(check_invariants(&mut conn).await.unwrap().ok());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn same_key_posts_once_and_different_body_conflicts(pool: PgPool) {
    let alice = new_user(&pool).await;
    let bob = new_user(&pool).await;
    let a = mint(&pool, alice, dec!(100)).await;
    let mut conn = pool.acquire().await.unwrap();
    let b = wallet_account(&mut conn, bob).await.unwrap();

    let first = post_transfer(&mut conn, spec(a, b, dec!(5), Some("k1"))).await.unwrap();
    let second = post_transfer(&mut conn, spec(a, b, dec!(5), Some("k1"))).await.unwrap();
    assert_eq!(first, second);
    let err = post_transfer(&mut conn, spec(a, b, dec!(6), Some("k1"))).await.unwrap_err();
    assert!(matches!(err, LedgerError::IdempotencyConflict { .. }));

    let entries: i64 =
        sqlx::query_scalar("select count(*) from journal where idempotency_key = 'k1'").fetch_one(&pool).await.unwrap();
    assert_eq!(entries, 1);
    assert_eq!(wallet_summary(&mut conn, bob).await.unwrap().available.as_decimal(), dec!(5));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn journal_refuses_update_and_delete(pool: PgPool) {
    let alice = new_user(&pool).await;
    mint(&pool, alice, dec!(1)).await;
    let update = sqlx::query("update journal set amount = 1000").execute(&pool).await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("delete from journal").execute(&pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    let truncate = sqlx::query("truncate journal").execute(&pool).await;
    assert!(truncate.is_err());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn database_check_keeps_wallets_non_negative(pool: PgPool) {
    let alice = new_user(&pool).await;
    let wallet = mint(&pool, alice, dec!(1)).await;
    let res = sqlx::query("update accounts set balance = -1 where account_id = $1").bind(wallet).execute(&pool).await;
    assert!(res.unwrap_err().to_string().contains("accounts_balance_nonnegative"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn hold_and_release_escrow(pool: PgPool) {
    let alice = new_user(&pool).await;
    mint(&pool, alice, dec!(50)).await;
    let order = Uuid::now_v7();
    let mut tx = pool.begin().await.unwrap();
    hold(&mut tx, alice, order, Credits::positive(dec!(20)).unwrap(), "bid").await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let summary = wallet_summary(&mut conn, alice).await.unwrap();
    assert_eq!((summary.available.as_decimal(), summary.held.as_decimal()), (dec!(30), dec!(20)));
    let err = release(&mut conn, order, Credits::positive(dec!(20.5)).unwrap(), "too much").await.unwrap_err();
    assert!(matches!(err, LedgerError::InsufficientFunds { .. }));
    release(&mut conn, order, Credits::positive(dec!(20)).unwrap(), "cancel").await.unwrap();
    let summary = wallet_summary(&mut conn, alice).await.unwrap();
    assert_eq!((summary.available.as_decimal(), summary.held.as_decimal()), (dec!(50), dec!(0)));
    assert!(check_invariants(&mut conn).await.unwrap().ok());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn rolled_back_transaction_leaves_no_trace(pool: PgPool) {
    let alice = new_user(&pool).await;
    let bob = new_user(&pool).await;
    let a = mint(&pool, alice, dec!(10)).await;
    let mut tx = pool.begin().await.unwrap();
    let b = wallet_account(&mut tx, bob).await.unwrap();
    post_transfer(&mut tx, spec(a, b, dec!(4), None)).await.unwrap();
    tx.rollback().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(wallet_summary(&mut conn, alice).await.unwrap().available.as_decimal(), dec!(10));
    assert!(check_invariants(&mut conn).await.unwrap().ok());
}

/// 32 tasks x 200 random transfers among 10 wallets: no balance goes negative, nothing is
/// lost, and the sum of the successful transfers explains every balance.
#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_random_transfers_keep_the_books_balanced(pool: PgPool) {
    const WALLETS: usize = 10;
    const TASKS: usize = 32;
    const TRANSFERS_PER_TASK: usize = 200;
    let initial = dec!(1000);

    let mut wallets = Vec::new();
    for _ in 0..WALLETS {
        let user = new_user(&pool).await;
        wallets.push((user, mint(&pool, user, initial).await));
    }

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let pool = pool.clone();
        let wallets = wallets.clone();
        tasks.push(tokio::spawn(async move {
            let mut net = vec![Decimal::ZERO; WALLETS];
            let mut refused = 0usize;
            for _ in 0..TRANSFERS_PER_TASK {
                let (from, to, cents) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(0..WALLETS);
                    let to = (from + rng.random_range(1..WALLETS)) % WALLETS;
                    (from, to, rng.random_range(1..=40_000i64))
                };
                let amount = Decimal::new(cents, 2);
                let mut tx = pool.begin().await.unwrap();
                match post_transfer(&mut tx, spec(wallets[from].1, wallets[to].1, amount, None)).await {
                    Ok(_) => {
                        tx.commit().await.unwrap();
                        net[from] -= amount;
                        net[to] += amount;
                    }
                    Err(LedgerError::InsufficientFunds { .. }) => refused += 1,
                    Err(other) => panic!("unexpected ledger error: {other}"),
                }
            }
            (net, refused)
        }));
    }
    let mut expected = vec![initial; WALLETS];
    let mut refused_total = 0;
    for task in tasks {
        let (net, refused) = task.await.unwrap();
        refused_total += refused;
        for (slot, delta) in expected.iter_mut().zip(net) {
            *slot += delta;
        }
    }

    let mut conn = pool.acquire().await.unwrap();
    for ((user, _), want) in wallets.iter().zip(&expected) {
        let got = wallet_summary(&mut conn, *user).await.unwrap().available.as_decimal();
        assert!(got >= Decimal::ZERO);
        assert_eq!(&got, want, "wallet of {user}");
    }
    let journal_rows: i64 = sqlx::query_scalar("select count(*) from journal").fetch_one(&pool).await.unwrap();
    assert_eq!(journal_rows as usize, WALLETS + TASKS * TRANSFERS_PER_TASK - refused_total);
    let report = check_invariants(&mut conn).await.unwrap();
    assert!(report.ok(), "{report:?}");
}
