//! Jepsen-style fault runs: every request the clients make is recorded with its route,
//! its answer and when it was sent and answered; a fault window (from a `kill -9` of the
//! server until the restarted one answers `/healthz`) says which failures are excused; and
//! the figures of a run (requests by route and status, latency percentiles, 5xx outside
//! the window) are printed at the end.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{JWT_SECRET_FOR_TESTS, SERVER_READY_TIMEOUT, ServerProcess, binary};

/// Longest one request may take before the client gives up on it (a hung server shows as
/// a failed request, never as a hung test).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Body text kept per failed request, for the report.
const FAILURE_BODY_CHARS_MAX: usize = 300;
/// Attempts to start the server again on its port (a bind may fail for a moment).
const RESTART_ATTEMPTS_MAX: u32 = 10;

/// Starts `capex-server` on `port` with its stdout and stderr appended to `log` (so the
/// log survives a restart and can be searched afterwards); waits for `/healthz`.
pub async fn start_logged_server(port: u16, env: &[(&str, &str)], log: &Path) -> anyhow::Result<ServerProcess> {
    let mut last_error = None;
    for _ in 0..RESTART_ATTEMPTS_MAX {
        let out = OpenOptions::new().create(true).append(true).open(log).context("server log")?;
        let mut cmd = Command::new(binary("capex-server"));
        cmd.env_remove("DATABASE_URL")
            .env("CAPEX_BIND", format!("127.0.0.1:{port}"))
            .env("CAPEX_JWT_SECRET", JWT_SECRET_FOR_TESTS)
            // The agents of these tests run the simulated backend (no GPUs here).
            .env("CAPEX_ALLOW_SIMULATED", "true")
            // Warnings and errors, with the request each happened in (method, path, id).
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,[request]=info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().context("starting capex-server")?;
        let mut server = ServerProcess { child, base_url: format!("http://127.0.0.1:{port}"), port };
        match server.wait_healthy(SERVER_READY_TIMEOUT).await {
            Ok(()) => return Ok(server),
            // Exited early (the port not free yet): try again; dropping kills it otherwise.
            Err(err) => last_error = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("capex-server did not start")))
}

/// Lines of `log` that contain `needle`.
pub fn log_lines_with(log: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .map(String::from)
        .collect()
}

/// One request as a client saw it. `status` is `None` when no HTTP answer came (the
/// connection failed or timed out).
#[derive(Clone, Debug)]
pub struct Record {
    pub route: &'static str,
    pub status: Option<u16>,
    pub sent: Instant,
    pub done: Instant,
    /// For a failure (no answer or 5xx): the error or the start of the body.
    pub failure: Option<String>,
}

impl Record {
    pub fn failed(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// Every request of a run, shared by the clients.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Vec<Record>>>);

impl History {
    pub fn push(&self, record: Record) {
        self.0.lock().expect("history lock").push(record);
    }

    pub fn records(&self) -> Vec<Record> {
        self.0.lock().expect("history lock").clone()
    }
}

/// What one request got back.
#[derive(Clone, Debug)]
pub enum Reply {
    Answered {
        status: u16,
        body: Value,
        replayed: bool,
    },
    /// No HTTP answer: refused connection, reset, timeout.
    Failed,
}

impl Reply {
    /// An answer below 500: the request was decided (done or refused).
    pub fn decided(&self) -> Option<(u16, &Value, bool)> {
        match self {
            Reply::Answered { status, body, replayed } if *status < 500 => Some((*status, body, *replayed)),
            _ => None,
        }
    }
}

/// An HTTP client of its own (its own connection pool) that records each request.
#[derive(Clone)]
pub struct RecordingClient {
    pub base_url: String,
    pub client: reqwest::Client,
    history: History,
}

impl RecordingClient {
    pub fn new(base_url: &str, history: &History) -> anyhow::Result<RecordingClient> {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(RecordingClient { base_url: base_url.to_string(), client, history: history.clone() })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends `request`, records it under `route` and returns the answer.
    pub async fn send(&self, route: &'static str, request: reqwest::RequestBuilder) -> Reply {
        let sent = Instant::now();
        let result = async {
            let res = request.send().await?;
            let status = res.status().as_u16();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            let text = res.text().await?;
            anyhow::Ok((status, replayed, text))
        }
        .await;
        let done = Instant::now();
        let (reply, status, failure) = match result {
            Ok((status, replayed, text)) => {
                let failure = (status >= 500).then(|| text.chars().take(FAILURE_BODY_CHARS_MAX).collect());
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                (Reply::Answered { status, body, replayed }, Some(status), failure)
            }
            Err(err) => (Reply::Failed, None, Some(format!("{err:#}"))),
        };
        self.history.push(Record { route, status, sent, done, failure });
        reply
    }
}

/// The timestamp a server log line starts with (RFC 3339, UTC).
pub fn log_time(line: &str) -> Option<DateTime<Utc>> {
    line.split_whitespace().next()?.parse().ok()
}

/// From the kill until the restarted server answered `/healthz`, on the clients' clock and
/// on the wall clock (the server log's).
#[derive(Clone, Copy, Debug)]
pub struct FaultWindow {
    pub start: Instant,
    pub end: Instant,
    pub start_wall: DateTime<Utc>,
    pub end_wall: DateTime<Utc>,
}

impl FaultWindow {
    /// Whether a server log line was written during the window.
    pub fn covers_log_line(&self, line: &str) -> bool {
        log_time(line).is_some_and(|at| at >= self.start_wall && at <= self.end_wall)
    }

    /// Whether the request was in flight at some moment of the window.
    pub fn overlaps(&self, record: &Record) -> bool {
        record.sent <= self.end && record.done >= self.start
    }
}

/// xorshift64: enough randomness for a load mix, seeded per client so a run's mix is
/// reproducible apart from timing.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng((0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The `p`-quantile (0..=1) of sorted durations, in ms; 0 for none.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// The figures of a run, from its history and fault window.
pub struct Figures {
    /// route -> status ("conn_err" for no answer) -> count.
    pub by_route: BTreeMap<&'static str, BTreeMap<String, usize>>,
    /// route -> sorted latencies of answered requests.
    pub latencies: BTreeMap<&'static str, Vec<Duration>>,
    pub all_latencies: Vec<Duration>,
    /// Failed requests (5xx or no answer) that did not overlap the fault window.
    pub failures_outside: Vec<Record>,
    /// Failed requests in the window (excused).
    pub failures_inside: usize,
    pub total: usize,
}

impl Figures {
    pub fn of(records: &[Record], window: Option<FaultWindow>) -> Figures {
        let mut figures = Figures {
            by_route: BTreeMap::new(),
            latencies: BTreeMap::new(),
            all_latencies: Vec::new(),
            failures_outside: Vec::new(),
            failures_inside: 0,
            total: records.len(),
        };
        for record in records {
            let status = record.status.map_or_else(|| "conn_err".to_string(), |s| s.to_string());
            *figures.by_route.entry(record.route).or_default().entry(status).or_default() += 1;
            if record.status.is_some() {
                let latency = record.done - record.sent;
                figures.latencies.entry(record.route).or_default().push(latency);
                figures.all_latencies.push(latency);
            }
            if record.failed() {
                if window.is_some_and(|w| w.overlaps(record)) {
                    figures.failures_inside += 1;
                } else {
                    figures.failures_outside.push(record.clone());
                }
            }
        }
        for latencies in figures.latencies.values_mut() {
            latencies.sort_unstable();
        }
        figures.all_latencies.sort_unstable();
        figures
    }

    /// 5xx answers outside the window, by route.
    pub fn server_errors_outside(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for record in self.failures_outside.iter().filter(|r| r.status.is_some()) {
            *out.entry(record.route).or_default() += 1;
        }
        out
    }

    /// A table of requests by route and status with latency percentiles.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (route, statuses) in &self.by_route {
            let latencies = self.latencies.get(route).map(Vec::as_slice).unwrap_or_default();
            let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
            out.push_str(&format!(
                "  {route:<26} p50 {:>7.1} ms  p99 {:>7.1} ms  {}\n",
                percentile_ms(latencies, 0.5),
                percentile_ms(latencies, 0.99),
                statuses.join(" ")
            ));
        }
        out.push_str(&format!(
            "  {:<26} p50 {:>7.1} ms  p99 {:>7.1} ms  {} requests\n",
            "all",
            percentile_ms(&self.all_latencies, 0.5),
            percentile_ms(&self.all_latencies, 0.99),
            self.total
        ));
        out
    }
}
