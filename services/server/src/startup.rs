//! Building the application (database, migrations, router) apart from running it, so tests
//! build the very same app on port 0.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::jwt::JwtKeys;
use crate::config::{Config, JWT_SECRET_BYTES_MIN};
use crate::error::ApiError;
use crate::markets::Markets;
use crate::openapi::ApiDoc;
use crate::routing_problems::api_not_found;
use crate::state::AppState;
use crate::{auth, hosts, markets, operator, pgcluster, telemetry, wallet};

/// Largest request body accepted by default; routes that take bigger bodies say so.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// How often the ledger invariants are checked in the background, so the
/// `capex_ledger_invariant_ok` gauge stays current without anyone asking.
pub const INVARIANT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// How long a shutdown waits for in-flight requests before it closes their connections.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_millis(1200);
/// How long a shutdown then waits for the matchers' last batches, the feed's last events
/// and the pool to close: together with the drain, the process exits within 2 s.
pub const SHUTDOWN_STOP_MAX: Duration = Duration::from_millis(600);

async fn watch_invariants(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(INVARIANT_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match crate::operator::check_invariants(&pool).await {
            Ok(report) if !report.ok => {
                tracing::error!(violations = report.violations.len(), "ledger invariants violated")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err.detail, "ledger invariant check failed"),
        }
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    pub state: AppState,
    background: Background,
}

/// The tasks a shutdown stops after the last request was answered.
struct Background {
    replicas: crate::feed::Replicas,
    sweeper: JoinHandle<()>,
    restarter: JoinHandle<()>,
    invariants: JoinHandle<()>,
    verification: JoinHandle<()>,
}

impl Application {
    /// Connects to (or starts) Postgres, runs migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let database_url = match &config.database_url {
            Some(url) => url.clone(),
            None => pgcluster::ensure_private_cluster(&config.data_dir).await?,
        };
        let pool = PgPoolOptions::new()
            .max_connections(config.db_pool_max)
            .acquire_timeout(Duration::from_secs(10))
            // No ping before each acquire: it doubles the round trips of every request. A
            // connection that broke fails its query once and the pool drops it.
            .test_before_acquire(false)
            .connect(&database_url)
            .await?;
        crate::MIGRATOR.run(&pool).await?;
        Self::build_with_pool(config, pool).await
    }

    /// Builds the app on an existing, migrated pool (tests use a fresh database per test).
    pub async fn build_with_pool(config: Config, pool: PgPool) -> anyhow::Result<Application> {
        let jwt_secret = match (&config.jwt_secret, config.demo) {
            (Some(secret), _) if secret.len() >= JWT_SECRET_BYTES_MIN => secret.clone().into_bytes(),
            (Some(_), _) => anyhow::bail!("CAPEX_JWT_SECRET must be at least {JWT_SECRET_BYTES_MIN} bytes"),
            (None, true) => {
                tracing::warn!("demo mode: using a random JWT secret; tokens end with the process");
                hex::encode(rand::random::<[u8; 32]>()).into_bytes()
            }
            (None, false) => anyhow::bail!(
                "CAPEX_JWT_SECRET is not set: outside demo mode the server refuses to start without it \
                 (set it to at least {JWT_SECRET_BYTES_MIN} random bytes, or run with --demo)"
            ),
        };
        let config_arc = Arc::new(config.clone());
        // Bound first: the advertised URL of a market owner needs the real port.
        let listener = TcpListener::bind(config.bind).await?;
        let owner_url = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default()));
        // Rebuilds every book with open orders (that no other process owns) before the first request is served.
        let (feed, replicas) = crate::feed::Feed::connect(&pool).await?;
        let shutdown = CancellationToken::new();
        let markets = Markets::start(pool.clone(), config_arc.clone(), feed.clone(), owner_url).await?;
        let state = AppState {
            pool: pool.clone(),
            jwt: Arc::new(JwtKeys::new(&jwt_secret, config.jwt_ttl_s)),
            roles: crate::auth::roles::RoleCache::default(),
            config: config_arc,
            reports: crate::hosts::ReportIngest::start(
                pool.clone(),
                config.report_skew_s,
                crate::jobs::Metering { fee_rate: config.fee_rate, feed: Some(feed.clone()) },
            ),
            feed,
            markets,
            forwarder: reqwest::Client::new(),
            shutdown: shutdown.clone(),
        };
        if config.fee_rate < rust_decimal::Decimal::ZERO || config.fee_rate > rust_decimal::Decimal::ONE {
            anyhow::bail!("CAPEX_FEE_RATE must be between 0 and 1");
        }
        let sweep_every = Duration::from_millis(config.sweep_ms.max(50));
        if config.sla_credit_rate < rust_decimal::Decimal::ZERO || config.sla_credit_rate > rust_decimal::Decimal::ONE {
            anyhow::bail!("CAPEX_SLA_CREDIT_RATE must be between 0 and 1");
        }
        let sweeper = crate::jobs::start_sweeper(
            pool.clone(),
            state.feed.clone(),
            sweep_every,
            config.sla_credit_rate,
            shutdown.clone(),
        );
        let restarter = crate::jobs::start_restarter(state.clone(), shutdown.clone());
        crate::demo::ensure_configured_operator(&state).await?;
        if config.demo {
            crate::demo::seed(&state).await?;
        }
        let verification = crate::verification::scheduler::start(state.clone(), sweep_every, shutdown.clone());
        let invariants = tokio::spawn(watch_invariants(state.pool.clone(), shutdown));
        let router = router(state.clone());
        let background = Background { replicas, sweeper, restarter, invariants, verification };
        Ok(Application { listener, router, state, background })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves (or [`AppState::shutdown`] is cancelled), then
    /// stops accepting, lets in-flight requests finish (long-polls and feed streams answer
    /// at once), stops the matchers after their batch and the background tasks, and closes
    /// the pool: all within [`SHUTDOWN_DRAIN_MAX`] + [`SHUTDOWN_STOP_MAX`].
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = self.state.shutdown.clone();
        let signal = {
            let token = token.clone();
            async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = token.cancelled() => {}
                }
                tracing::info!("shutting down: no new connections; finishing in-flight requests");
                token.cancel();
            }
        };
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(signal).into_future();
        let served = tokio::select! {
            served = serve => served,
            _ = async { token.cancelled().await; tokio::time::sleep(SHUTDOWN_DRAIN_MAX).await } => {
                tracing::warn!(after = ?SHUTDOWN_DRAIN_MAX, "shutdown: requests still running; closing their connections");
                Ok(())
            }
        };
        let state = self.state;
        let background = self.background;
        let stopped = tokio::time::timeout(SHUTDOWN_STOP_MAX, async move {
            state.markets.stop().await;
            let _ = background.sweeper.await;
            let _ = background.restarter.await;
            let _ = background.invariants.await;
            let _ = background.verification.await;
            // After the matchers and the sweeper: their last events still reach other replicas.
            background.replicas.stop().await;
            state.pool.close().await;
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(after = ?SHUTDOWN_STOP_MAX, "shutdown: background tasks did not stop in time");
        }
        served
    }
}

/// The full HTTP surface: API routes, docs, metrics, health and the web UI.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request so no early metric is dropped.
    telemetry::prometheus();
    let web_dir = state.config.web_dir.clone();
    let index = web_dir.join("index.html");
    let api = Router::new()
        .merge(auth::router())
        .merge(wallet::router())
        .merge(operator::router())
        .merge(markets::router())
        .merge(markets::owned_router(state.clone()))
        .merge(hosts::router())
        .merge(crate::jobs::router())
        .merge(crate::verification::router())
        .route("/api/v1/stream", get(crate::feed::stream))
        .route("/healthz", get(healthz))
        .route("/metrics", get(telemetry::metrics_endpoint))
        .route_layer(axum::middleware::from_fn(crate::input::refuse_control_text_in_uri))
        .route_layer(axum::middleware::from_fn(telemetry::track_http))
        .route("/api", axum::routing::any(api_not_found))
        .route("/api/", axum::routing::any(api_not_found))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .with_state(state);
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(SwaggerUi::new("/api/v1/docs").url("/api/v1/openapi.json", ApiDoc::openapi()))
        .merge(api)
        .fallback_service(ServeDir::new(web_dir).fallback(ServeFile::new(index)))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(crate::routing_problems::method_not_allowed_problem))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "Database reachable")))]
pub(crate) async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, ApiError> {
    sqlx::query("select 1").execute(&state.pool).await.map_err(|err| {
        tracing::warn!(error = %err, "health check failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "database unreachable")
    })?;
    Ok("ok")
}
