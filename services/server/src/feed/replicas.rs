//! The feed across replicas: every event a process publishes also goes to the other
//! processes on the same database through Postgres `NOTIFY`, and each process `LISTEN`s and
//! hands the others' events to its own subscribers.
//!
//! Postgres rather than a message broker because every replica already has it, so one
//! machine needs nothing new. A process delivers its own events to its subscribers at once
//! and skips them when they come back from Postgres: each notification starts with the
//! origin's process id, so that check needs no parsing. An event too large for a
//! notification payload (8000 bytes) is stored in `feed_spill` and its notification
//! carries the row id.
//!
//! Publishing never waits for Postgres: events go into a bounded queue that one task
//! drains, sending what has gathered with one statement while the next batch gathers.
//! While no other replica listens (a single process, the usual case), nothing is sent at
//! all: each listen connection carries the process's origin in its `application_name`, the
//! relay looks for others' at most every [`PEER_CHECK`], and a replica that starts
//! listening announces itself at once with a `hello` notification.
//! Events the queue could not take or Postgres refused are lost to the other replicas;
//! their subscribers are told to `resync` instead, as are this process's subscribers when
//! its listen connection is lost and re-established (notifications sent meanwhile never
//! arrive).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::FeedEvent;

/// The Postgres notification channel of the feed.
pub const FEED_CHANNEL: &str = "capex_feed";
/// Largest notification sent as is; larger events go through `feed_spill`. Postgres refuses
/// payloads of 8000 bytes or more.
pub(crate) const NOTIFY_PAYLOAD_MAX: usize = 7900;
/// Events waiting for the relay before new ones are dropped (and announced as a resync).
pub(crate) const RELAY_QUEUE_EVENTS: usize = 8192;
/// Most events sent with one statement.
pub(crate) const RELAY_BATCH_MAX: usize = 256;
/// Pause after Postgres refused a batch or a listen connection, before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often the relay looks for other replicas' listen connections.
const PEER_CHECK: Duration = Duration::from_secs(1);
/// The body of the notification a replica sends once it listens.
const HELLO: &str = "!hello";
/// Prefix of a listen connection's `application_name`, followed by its origin.
const LISTENER_APP_PREFIX: &str = "capex-feed:";
/// Distinct event kinds a listener accepts (kinds are few and fixed in the code).
const KINDS_MAX: usize = 64;

/// The sending half, inside every clone of [`super::Feed`].
#[derive(Clone)]
pub(super) struct Outgoing {
    queue: mpsc::Sender<FeedEvent>,
    /// Events the queue refused since the relay last sent a batch.
    dropped: Arc<AtomicU64>,
}

impl Outgoing {
    /// Queues an event for the other replicas without waiting.
    pub(super) fn offer(&self, event: &FeedEvent) {
        if self.queue.try_send(event.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("capex_feed_replica_dropped_total").increment(1);
        }
    }
}

/// The relay and listener tasks of one process.
pub struct Replicas {
    stop: CancellationToken,
    relay: JoinHandle<()>,
    listener: JoinHandle<()>,
}

impl Replicas {
    /// Stops listening, sends what is still queued, and waits for both tasks.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.listener.await;
        let _ = self.relay.await;
    }
}

/// Starts the relay and the listener; returns once this process listens, so no event
/// another replica publishes after this returns is missed.
pub(super) async fn start(pool: &PgPool, local: broadcast::Sender<FeedEvent>) -> anyhow::Result<(Outgoing, Replicas)> {
    let origin = Uuid::now_v7().simple().to_string();
    // Its own one-connection pool, so the listen connection never takes a request's slot.
    let options = (*pool.connect_options()).clone().application_name(&format!("{LISTENER_APP_PREFIX}{origin}"));
    let listen_pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
    let listener = listen(&listen_pool, pool, &origin).await?;
    let stop = CancellationToken::new();
    let (queue, queued) = mpsc::channel(RELAY_QUEUE_EVENTS);
    let dropped = Arc::new(AtomicU64::new(0));
    let peers = Arc::new(AtomicBool::new(false));
    let relay = tokio::spawn(relay(pool.clone(), origin.clone(), queued, dropped.clone(), peers.clone(), stop.clone()));
    let listener = tokio::spawn(follow(listener, listen_pool, pool.clone(), origin, local, peers, stop.clone()));
    Ok((Outgoing { queue, dropped }, Replicas { stop, relay, listener }))
}

/// An event as it travels between replicas (after the origin id and a space).
#[derive(Serialize)]
struct WireOut<'a> {
    /// Per-process sequence number: Postgres folds identical payloads sent in one
    /// transaction into one notification, and two events may be identical.
    s: u64,
    k: &'a str,
    u: Option<Uuid>,
    d: &'a Value,
}

#[derive(Deserialize)]
struct WireIn {
    k: String,
    u: Option<Uuid>,
    d: Value,
}

/// Sends queued events to Postgres, one statement per batch, until `stop`; then sends
/// what is still queued and returns.
async fn relay(
    pool: PgPool,
    origin: String,
    mut queued: mpsc::Receiver<FeedEvent>,
    dropped: Arc<AtomicU64>,
    peers: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut seq = 0_u64;
    let mut peers_checked: Option<Instant> = None;
    let mut lost = 0_u64;
    let mut batch = Vec::with_capacity(RELAY_BATCH_MAX);
    let mut stopping = false;
    loop {
        let received = tokio::select! {
            biased;
            received = queued.recv_many(&mut batch, RELAY_BATCH_MAX) => received,
            _ = stop.cancelled(), if !stopping => {
                // No more events are taken; the ones queued are still sent.
                queued.close();
                stopping = true;
                continue;
            }
        };
        if received == 0 {
            return;
        }
        if peers_checked.is_none_or(|at| at.elapsed() >= PEER_CHECK) {
            peers_checked = Some(Instant::now());
            match other_listeners(&pool, &origin).await {
                Ok(found) => peers.store(found, Ordering::Relaxed),
                Err(err) => tracing::warn!(error = %err, "cannot look for other replicas"),
            }
        }
        if !peers.load(Ordering::Relaxed) {
            // Nobody else listens: nothing to send, nothing lost.
            dropped.store(0, Ordering::Relaxed);
            batch.clear();
            continue;
        }
        let missed = dropped.swap(0, Ordering::Relaxed) + lost;
        let mut bodies = Vec::with_capacity(batch.len() + 1);
        if missed > 0 {
            let resync = json!({"reason": "replica_events_lost", "missed": missed});
            bodies.push(encode(&mut seq, "resync", None, &resync));
        }
        bodies.extend(batch.iter().map(|event| encode(&mut seq, event.kind, event.user_id, &event.data)));
        match send(&pool, &origin, bodies).await {
            Ok(()) => lost = 0,
            Err(err) => {
                tracing::warn!(error = %err, events = batch.len(), "feed events not sent to other replicas");
                metrics::counter!("capex_feed_replica_dropped_total").increment(batch.len() as u64);
                lost = missed + batch.len() as u64;
                if !stopping {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
        batch.clear();
    }
}

/// Whether another process listens to the feed on this database.
async fn other_listeners(pool: &PgPool, origin: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from pg_stat_activity
                        where datname = current_database() and application_name like $1 || '%'
                          and application_name <> $1 || $2)",
    )
    .bind(LISTENER_APP_PREFIX)
    .bind(origin)
    .fetch_one(pool)
    .await
}

fn encode(seq: &mut u64, kind: &str, user: Option<Uuid>, data: &Value) -> String {
    *seq += 1;
    serde_json::to_string(&WireOut { s: *seq, k: kind, u: user, d: data }).unwrap_or_default()
}

/// Notifies `$1` of each of `$2`, in order. A transaction that notifies is given a
/// transaction id and its commit is flushed to disk like any write, one more flush per relay
/// batch; feed events are not records (a lost one is made good by `resync` and a refetch),
/// so this commit does not wait for its flush (`synchronous_commit` off for this transaction
/// only).
const NOTIFY_SQL: &str = "select pg_notify($1, p)
     from (select set_config('synchronous_commit', 'off', true)) as unflushed, unnest($2::text[]) as p";

/// Notifies every listener of `bodies`, in order, in one transaction.
async fn send(pool: &PgPool, origin: &str, bodies: Vec<String>) -> Result<(), sqlx::Error> {
    if bodies.iter().all(|body| origin.len() + 1 + body.len() <= NOTIFY_PAYLOAD_MAX) {
        let payloads: Vec<String> = bodies.iter().map(|body| format!("{origin} {body}")).collect();
        sqlx::query(NOTIFY_SQL).bind(FEED_CHANNEL).bind(&payloads).execute(pool).await?;
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("delete from feed_spill where created_at < now() - interval '1 minute'").execute(&mut *tx).await?;
    let mut payloads = Vec::with_capacity(bodies.len());
    for body in bodies {
        if origin.len() + 1 + body.len() <= NOTIFY_PAYLOAD_MAX {
            payloads.push(format!("{origin} {body}"));
            continue;
        }
        let id: i64 = sqlx::query_scalar("insert into feed_spill (event) values ($1) returning id")
            .bind(&body)
            .fetch_one(&mut *tx)
            .await?;
        payloads.push(format!("{origin} #{id}"));
    }
    sqlx::query(NOTIFY_SQL).bind(FEED_CHANNEL).bind(&payloads).execute(&mut *tx).await?;
    tx.commit().await
}

/// Listens, then tells the other replicas (so they start sending at once).
async fn listen(listen_pool: &PgPool, pool: &PgPool, origin: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(listen_pool).await?;
    listener.listen(FEED_CHANNEL).await?;
    sqlx::query("select pg_notify($1, $2)").bind(FEED_CHANNEL).bind(format!("{origin} {HELLO}")).execute(pool).await?;
    Ok(listener)
}

/// Hands other replicas' events to this process's subscribers until `stop`. A lost listen
/// connection is opened again; subscribers then get a `resync`.
async fn follow(
    mut listener: PgListener,
    listen_pool: PgPool,
    pool: PgPool,
    origin: String,
    local: broadcast::Sender<FeedEvent>,
    peers: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => {
                let payload = notification.payload();
                if payload.split_once(' ').is_some_and(|(from, _)| from != origin) {
                    peers.store(true, Ordering::Relaxed);
                }
                deliver(&pool, &origin, payload, &local).await
            }
            // The connection dropped; `try_recv` has reconnected and listens again.
            Ok(None) => resync(&local, "listen connection re-established"),
            Err(err) => {
                tracing::warn!(error = %err, "feed listen connection lost; reconnecting");
                // Its connection is the listen pool's only one.
                drop(listener);
                listener = match reopen(&listen_pool, &pool, &origin, &stop).await {
                    Some(listener) => listener,
                    None => return listen_pool.close().await,
                };
                resync(&local, "listen connection re-established");
            }
        }
    }
    drop(listener);
    listen_pool.close().await;
}

/// A new listen connection, tried until it opens; `None` once `stop` is cancelled.
async fn reopen(listen_pool: &PgPool, pool: &PgPool, origin: &str, stop: &CancellationToken) -> Option<PgListener> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(RETRY_AFTER) => {}
        }
        match listen(listen_pool, pool, origin).await {
            Ok(listener) => return Some(listener),
            Err(err) => tracing::warn!(error = %err, "feed listen connection not re-established"),
        }
    }
}

fn resync(local: &broadcast::Sender<FeedEvent>, reason: &str) {
    tracing::info!(reason, "feed events from other replicas may be lost; subscribers told to resync");
    metrics::counter!("capex_feed_replica_resyncs_total").increment(1);
    let _ = local.send(FeedEvent { kind: "resync", user_id: None, data: json!({"reason": reason}) });
}

/// Delivers one notification to the local subscribers unless this process sent it.
async fn deliver(pool: &PgPool, origin: &str, payload: &str, local: &broadcast::Sender<FeedEvent>) {
    let Some((from, body)) = payload.split_once(' ') else { return };
    if from == origin || body == HELLO {
        return;
    }
    let spilled;
    let body = match body.strip_prefix('#').map(str::parse::<i64>) {
        None => body,
        Some(id) => {
            let read = match id {
                Ok(id) => sqlx::query_scalar::<_, String>("select event from feed_spill where id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            match read {
                Some(event) => {
                    spilled = event;
                    &spilled
                }
                None => return resync(local, "a large event from another replica could not be read"),
            }
        }
    };
    let Ok(event) = serde_json::from_str::<WireIn>(body) else {
        tracing::warn!("unreadable feed event from another replica");
        return;
    };
    let Some(kind) = intern(&event.k) else { return };
    let _ = local.send(FeedEvent { kind, user_id: event.u, data: event.d });
}

/// The `'static` name of an event kind ([`FeedEvent::kind`]); each name is allocated once.
fn intern(kind: &str) -> Option<&'static str> {
    static KINDS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut kinds = KINDS.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = kinds.get(kind) {
        return Some(known);
    }
    if kinds.len() >= KINDS_MAX {
        return None;
    }
    let leaked: &'static str = Box::leak(kind.to_string().into_boxed_str());
    kinds.insert(leaked);
    Some(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_events_get_distinct_payloads() {
        let mut seq = 0;
        let data = json!({"class": "H100-80GB"});
        assert_ne!(encode(&mut seq, "book", None, &data), encode(&mut seq, "book", None, &data));
    }

    #[test]
    fn kinds_are_interned_once() {
        let first = intern("trade").unwrap();
        let second = intern(&String::from("trade")).unwrap();
        assert!(std::ptr::eq(first, second));
    }
}
