//! The live feed: Server-Sent Events at `GET /api/v1/stream`.
//!
//! SSE rather than WebSocket because the feed only flows one way, browsers reconnect an
//! `EventSource` by themselves, and it passes through any HTTP proxy. Public events (book,
//! trade, market) go to everyone; private ones (order, job, wallet, host) only to their
//! owner, who authenticates with `?token=` because `EventSource` cannot set headers.
//!
//! Every replica's subscribers see every replica's events ([`replicas`]). A stream ends
//! when the process shuts down; the browser's `EventSource` reconnects to another replica.

mod replicas;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

pub use self::replicas::{FEED_CHANNEL, Replicas};
use crate::auth::authenticate;
use crate::error::ApiResult;
use crate::state::AppState;

/// Events buffered per subscriber before a slow one starts missing them (it is then told
/// to refetch with a `resync` event).
pub const FEED_BUFFER_EVENTS: usize = 1024;
pub const FEED_KEEPALIVE: Duration = Duration::from_secs(15);

/// One event on the feed.
#[derive(Debug, Clone, Serialize)]
pub struct FeedEvent {
    /// SSE event name: book, trade, market, order, job, wallet, host; or resync (refetch:
    /// events may have been missed).
    pub kind: &'static str,
    /// Owner of a private event; `None` for public ones.
    #[serde(skip)]
    pub user_id: Option<Uuid>,
    pub data: serde_json::Value,
}

/// Sender side of the feed, cheap to clone into every module that publishes.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<FeedEvent>,
    /// Where events go to the other replicas; `None` for a feed of this process alone.
    replicas: Option<replicas::Outgoing>,
}

/// A feed of this process alone.
impl Default for Feed {
    fn default() -> Self {
        Feed { sender: broadcast::channel(FEED_BUFFER_EVENTS).0, replicas: None }
    }
}

impl Feed {
    /// A feed shared with every process on `pool`'s database; stop its tasks with
    /// [`Replicas::stop`] after the last event was published.
    pub async fn connect(pool: &sqlx::PgPool) -> anyhow::Result<(Feed, Replicas)> {
        let sender = broadcast::channel(FEED_BUFFER_EVENTS).0;
        let (outgoing, replicas) = replicas::start(pool, sender.clone()).await?;
        Ok((Feed { sender, replicas: Some(outgoing) }, replicas))
    }

    /// Publishes an event for everyone.
    pub fn public(&self, kind: &'static str, data: serde_json::Value) {
        self.send(FeedEvent { kind, user_id: None, data });
    }

    /// Publishes an event only its owner receives.
    pub fn private(&self, kind: &'static str, user_id: Uuid, data: serde_json::Value) {
        self.send(FeedEvent { kind, user_id: Some(user_id), data });
    }

    /// To this process's subscribers at once, to the other replicas' soon after.
    fn send(&self, event: FeedEvent) {
        if let Some(replicas) = &self.replicas {
            replicas.offer(&event);
        }
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// A login token or API key; without it only public events are sent.
    pub token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "feed", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of book, trade, market, order, job, wallet and host events"),
        (status = 401, body = crate::error::Problem)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    crate::params::ApiQuery(query): crate::params::ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let viewer = match &query.token {
        Some(token) => Some(authenticate(&state, token).await?.user_id),
        None => None,
    };
    let hello = futures::stream::once(async move {
        Ok(Event::default().event("hello").data(serde_json::json!({"authenticated": viewer.is_some()}).to_string()))
    });
    let shutdown = state.shutdown.clone().cancelled_owned();
    let events = BroadcastStream::new(state.feed.subscribe()).filter_map(move |item| match item {
        Ok(event) if event.user_id.is_none() || event.user_id == viewer => {
            Some(Ok(Event::default().event(event.kind).data(event.data.to_string())))
        }
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            Some(Ok(Event::default().event("resync").data(serde_json::json!({"missed": missed}).to_string())))
        }
    });
    // Ends with the process, so a shutdown need not wait for open streams.
    let stream = futures::StreamExt::take_until(hello.chain(events), shutdown);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(FEED_KEEPALIVE)))
}
