//! The one lock order and the retry of a transaction that lost a race, against a real
//! Postgres.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use capex_core::Credits;
use capex_ledger::{
    AccountSet, MIGRATOR, TREASURY_ACCOUNT, TransferSpec, check_invariants, lock_accounts, post_transfer, retrying,
    wallet_account,
};
use rand::RngExt;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sqlx::PgPool;
use tokio::sync::Barrier;
use uuid::Uuid;

async fn funded_user(pool: &PgPool, amount: Decimal) -> (Uuid, Uuid) {
    let id = Uuid::now_v7();
    sqlx::query("insert into users (user_id, email, password_hash, roles) values ($1, $2, 'x', array['buyer'])")
        .bind(id)
        .bind(format!("{id}@example.test"))
        .execute(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let wallet = wallet_account(&mut conn, id).await.unwrap();
    post_transfer(&mut conn, spec(TREASURY_ACCOUNT, wallet, amount)).await.unwrap();
    (id, wallet)
}

fn spec(from: Uuid, to: Uuid, amount: Decimal) -> TransferSpec {
    TransferSpec {
        from,
        to,
        amount: Credits::positive(amount).unwrap(),
        kind: "transfer".into(),
        memo: String::new(),
        idempotency_key: None,
    }
}

/// Transactions that each post several transfers between random wallets, in random
/// order, the way metering posts one lease after another. Each locks its whole set first,
/// so none ever waits in a cycle: not one deadlock, with no retry to hide it. (Posting
/// the same transfers without the first lock deadlocks within a few dozen transactions.)
#[sqlx::test(migrator = "MIGRATOR")]
async fn transactions_that_lock_their_accounts_first_never_deadlock(pool: PgPool) {
    let mut users = Vec::new();
    for _ in 0..6 {
        users.push(funded_user(&pool, dec!(1000)).await);
    }
    let users = Arc::new(users);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, users) = (pool.clone(), users.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let moves: Vec<(usize, usize)> = {
                    let mut rng = rand::rng();
                    (0..4)
                        .map(|_| {
                            let from = rng.random_range(0..users.len());
                            (from, (from + rng.random_range(1..users.len())) % users.len())
                        })
                        .collect()
                };
                let mut tx = pool.begin().await.unwrap();
                let set = moves.iter().fold(AccountSet::default(), |set, (from, to)| {
                    set.wallet_of(users[*from].0).wallet_of(users[*to].0)
                });
                lock_accounts(&mut tx, &set).await.expect("locking in the one order never deadlocks");
                for (from, to) in moves {
                    post_transfer(&mut tx, spec(users[from].1, users[to].1, dec!(0.5)))
                        .await
                        .expect("posting after the lock never deadlocks");
                    tokio::task::yield_now().await;
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    let report = check_invariants(&mut conn).await.unwrap();
    assert!(report.ok(), "{report:?}");
    let total: Decimal =
        sqlx::query_scalar("select sum(balance) from accounts where kind = 'wallet'").fetch_one(&pool).await.unwrap();
    assert_eq!(total, dec!(6000));
}

/// Two transactions that lock two accounts in opposite orders deadlock; Postgres aborts one.
/// Run through `retrying`, the one it aborted runs again and both commit.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_transaction_that_lost_a_deadlock_runs_again(pool: PgPool) {
    let (_, a) = funded_user(&pool, dec!(10)).await;
    let (_, b) = funded_user(&pool, dec!(10)).await;
    let barrier = Arc::new(Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let run = |first: Uuid, second: Uuid| {
        let (pool, barrier, attempts) = (pool.clone(), barrier.clone(), attempts.clone());
        async move {
            retrying("test", || async {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                let mut tx = pool.begin().await?;
                sqlx::query("update accounts set balance = balance where account_id = $1")
                    .bind(first)
                    .execute(&mut *tx)
                    .await?;
                // Only the first two attempts meet at the barrier: the deadlock happens once.
                if attempt < 2 {
                    barrier.wait().await;
                }
                sqlx::query("update accounts set balance = balance where account_id = $1")
                    .bind(second)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(())
            })
            .await
        }
    };
    let (one, two) = tokio::join!(run(a, b), run(b, a));
    one.expect("first transaction commits");
    two.expect("second transaction commits");
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "exactly one of the two ran again");
}

/// A failure that is not a lost race is passed on at once, not retried.
#[sqlx::test(migrator = "MIGRATOR")]
async fn other_failures_are_not_retried(pool: PgPool) {
    let attempts = AtomicU32::new(0);
    let result = retrying("test", || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        sqlx::query("select 1/0").execute(&pool).await.map(|_| ())
    })
    .await;
    assert!(result.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}
