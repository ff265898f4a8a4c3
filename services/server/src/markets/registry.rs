//! The running matchers, one per market, started on first use and at startup for every
//! market with open orders.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use super::matcher::{Matcher, Request};
use super::ownership;
use super::resting::load_market;
use super::views::BookView;
use crate::config::Config;
use crate::error::ApiError;
use crate::feed::Feed;

#[derive(Clone)]
pub(crate) struct MatcherHandle {
    requests: mpsc::Sender<Request>,
}

impl MatcherHandle {
    /// Queues a request; refuses with 503 `market_busy` when the queue is full.
    pub(crate) fn send(&self, request: Request) -> Result<(), ApiError> {
        self.requests.try_send(request).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "market_busy",
                "this market has too many requests waiting; retry shortly",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "market_unavailable", "this market's matcher stopped")
            }
        })
    }

    /// The book as its last batch committed it.
    pub(crate) async fn book(&self) -> Result<Arc<BookView>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Book { reply })?;
        rx.await.map_err(|_| matcher_stopped())
    }
}

/// A matcher dropped a request without answering: it stopped.
fn matcher_stopped() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "market_unavailable", "the matcher stopped")
}

/// Awaits a matcher's answer.
pub(crate) async fn reply<T>(rx: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    rx.await.map_err(|_| matcher_stopped())?
}

/// Holds the market's lock connection while the matcher runs: stops the matcher when the
/// process shuts down or the lock connection dies, and releases the lock when it stops.
async fn keep_claim(
    mut claim: ownership::Claim,
    requests: mpsc::Sender<Request>,
    stop: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    use sqlx::Connection;
    loop {
        tokio::select! {
            // The value, not a change: a matcher started during a shutdown stops at once.
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
            _ = requests.closed() => break,
            _ = tokio::time::sleep(ownership::CLAIM_INTERVAL) => {
                if claim.conn.ping().await.is_err() {
                    tracing::error!("market lock connection lost; stopping its matcher");
                    break;
                }
            }
        }
    }
    stop.send_replace(true);
    // Let the matcher finish its batch before the lock goes.
    requests.closed().await;
    let _ = claim.conn.close().await;
}

/// Every market's matcher. Cheap to share; matchers stop on [`Markets::stop`].
pub struct Markets {
    pool: PgPool,
    /// Where other processes forward this process's markets' requests.
    owner_url: String,
    config: Arc<Config>,
    feed: Feed,
    matchers: Mutex<HashMap<String, MatcherHandle>>,
    shutdown: watch::Sender<bool>,
    /// Every matcher and its claim keeper, so a shutdown can wait for their last batch.
    tasks: TaskTracker,
}

impl Markets {
    /// Starts a matcher, with its book rebuilt from the database, for every market that
    /// has open orders.
    pub async fn start(
        pool: PgPool,
        config: Arc<Config>,
        feed: Feed,
        owner_url: String,
    ) -> anyhow::Result<Arc<Markets>> {
        let (shutdown, _) = watch::channel(false);
        let markets = Arc::new(Markets {
            pool,
            owner_url,
            config,
            feed,
            matchers: Mutex::new(HashMap::new()),
            shutdown,
            tasks: TaskTracker::new(),
        });
        markets.claim_orphans().await.map_err(|err| anyhow::anyhow!("starting markets: {}", err.detail))?;
        // Takes over the markets of processes that die, for as long as this one runs.
        let weak = Arc::downgrade(&markets);
        let mut stop = markets.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(ownership::CLAIM_INTERVAL) => {}
                }
                let Some(markets) = weak.upgrade() else { return };
                if let Err(err) = markets.claim_orphans().await {
                    tracing::warn!(error = %err.detail, "claiming markets failed");
                }
            }
        });
        Ok(markets)
    }

    /// Starts a matcher for every market with open orders or a recorded owner that no
    /// living process holds.
    async fn claim_orphans(&self) -> Result<(), ApiError> {
        // The classes of open orders are found by skipping from one class to the next in
        // `orders_open_by_class` (a loose index scan): `select distinct` read every open
        // order, about 6 ms a second on a busy book.
        let classes: Vec<String> = sqlx::query_scalar(
            "with recursive open_classes (class) as (
                 (select class from orders where status = 'open' order by class limit 1)
                 union all
                 select (select o.class from orders o where o.status = 'open' and o.class > c.class
                         order by o.class limit 1)
                 from open_classes c where c.class is not null
             )
             select class from open_classes where class is not null
             union select class from market_owners order by 1",
        )
        .fetch_all(&self.pool)
        .await?;
        for class in classes {
            match self.ensure_local(&class).await {
                Ok(_) => {}
                // An owner row of a class that has no market (nor orders) is left over from
                // before classes were checked ahead of a claim: it is dropped, not claimed.
                Err(err) if err.code == "unknown_market" => self.drop_unknown_market(&class).await?,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn drop_unknown_market(&self, class: &str) -> Result<(), ApiError> {
        let dropped = sqlx::query(
            "delete from market_owners m where m.class = $1
             and not exists (select 1 from orders o where o.class = m.class)",
        )
        .bind(class)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if dropped > 0 {
            tracing::info!(class, "dropped the owner record of a class that has no market");
        }
        Ok(())
    }

    /// True when this process runs the market's matcher, starting it if no other process
    /// owns the market; false when another process does.
    pub(crate) async fn ensure_local(&self, class: &str) -> Result<bool, ApiError> {
        match self.handle(class).await {
            Ok(_) => Ok(true),
            Err(err) if err.code == "market_owned_elsewhere" => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The matcher of `class` (which the caller checked is a known class), started if needed.
    pub(crate) async fn handle(&self, class: &str) -> Result<MatcherHandle, ApiError> {
        let mut matchers = self.matchers.lock().await;
        if let Some(handle) = matchers.get(class)
            && !handle.requests.is_closed()
        {
            return Ok(handle.clone());
        }
        if *self.shutdown.borrow() {
            return Err(matcher_stopped());
        }
        // Every running market holds two connections outside the pool (its lock and its
        // matcher's): only a known class may have one, whoever asks.
        super::class::require_known(&self.pool, &self.config.market_classes, class).await?;
        let Some(claim) = ownership::try_claim(&self.pool, class, &self.owner_url).await? else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "market_owned_elsewhere",
                "another capex-server process matches this market",
            ));
        };
        // Loaded after the claim, so the book includes everything the previous owner committed.
        let market = load_market(&self.pool, class).await?;
        tracing::info!(class, orders = market.1.len(), epoch = claim.epoch, "matcher starting");
        let matcher = Matcher::new(
            class.to_string(),
            self.pool.clone(),
            self.feed.clone(),
            market,
            self.config.matcher_batch_max,
            claim.epoch,
        )
        .with_preempt_grace(Duration::from_secs(self.config.preempt_grace_s));
        let (tx, rx) = mpsc::channel(self.config.matcher_queue_max.max(1));
        let (stop_tx, stop_rx) = watch::channel(false);
        self.tasks.spawn(matcher.run(
            rx,
            stop_rx,
            self.config.matcher_tick_ms,
            Duration::from_secs(self.config.uptime_regrade_s),
        ));
        self.tasks.spawn(keep_claim(claim, tx.clone(), stop_tx, self.shutdown.subscribe()));
        let handle = MatcherHandle { requests: tx };
        matchers.insert(class.to_string(), handle.clone());
        Ok(handle)
    }

    /// The committed book of `class` if its matcher runs (a market without one has none).
    pub(crate) async fn running(&self, class: &str) -> Option<MatcherHandle> {
        self.matchers.lock().await.get(class).cloned()
    }

    /// Stops every matcher after its current batch.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops every matcher after its current batch and waits until each has stopped and
    /// released its market's lock.
    pub async fn stop(&self) {
        self.shutdown();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
