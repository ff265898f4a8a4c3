//! The running matchers, one per market, started on first use and at startup for every
//! market with open orders.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::matcher::{Matcher, Request, load_book};
use super::views::BookView;
use crate::config::Config;
use crate::error::ApiError;
use crate::feed::Feed;

#[derive(Clone)]
pub(crate) struct MatcherHandle {
    requests: mpsc::Sender<Request>,
    book: watch::Receiver<Arc<BookView>>,
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

    /// The book as of the last committed batch.
    pub(crate) fn book(&self) -> Arc<BookView> {
        self.book.borrow().clone()
    }
}

/// Awaits a matcher's answer.
pub(crate) async fn reply<T>(rx: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    rx.await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "market_unavailable", "the matcher stopped"))?
}

/// Every market's matcher. Cheap to share; matchers stop on [`Markets::shutdown`].
pub struct Markets {
    pool: PgPool,
    config: Arc<Config>,
    feed: Feed,
    matchers: Mutex<HashMap<String, MatcherHandle>>,
    shutdown: watch::Sender<bool>,
}

impl Markets {
    /// Starts a matcher, with its book rebuilt from the database, for every market that
    /// has open orders.
    pub async fn start(pool: PgPool, config: Arc<Config>, feed: Feed) -> anyhow::Result<Arc<Markets>> {
        let (shutdown, _) = watch::channel(false);
        let markets = Arc::new(Markets { pool, config, feed, matchers: Mutex::new(HashMap::new()), shutdown });
        let classes: Vec<String> =
            sqlx::query_scalar("select distinct class from orders where status = 'open' order by class")
                .fetch_all(&markets.pool)
                .await?;
        for class in classes {
            markets.handle(&class).await.map_err(|err| anyhow::anyhow!("starting market {class}: {}", err.detail))?;
        }
        Ok(markets)
    }

    /// The matcher of `class` (which the caller checked is a known class), started if needed.
    pub(crate) async fn handle(&self, class: &str) -> Result<MatcherHandle, ApiError> {
        let mut matchers = self.matchers.lock().await;
        if let Some(handle) = matchers.get(class)
            && !handle.requests.is_closed()
        {
            return Ok(handle.clone());
        }
        let book = load_book(&self.pool, class).await?;
        tracing::info!(class, orders = book.len(), "matcher starting");
        let (matcher, book_rx) =
            Matcher::new(class.to_string(), self.pool.clone(), self.feed.clone(), book, self.config.matcher_batch_max);
        let (tx, rx) = mpsc::channel(self.config.matcher_queue_max.max(1));
        tokio::spawn(matcher.run(rx, self.shutdown.subscribe(), self.config.matcher_tick_ms));
        let handle = MatcherHandle { requests: tx, book: book_rx };
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
}
