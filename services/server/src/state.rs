use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::JwtKeys;
use crate::auth::roles::RoleCache;
use crate::config::Config;
use crate::feed::Feed;
use crate::hosts::ReportIngest;
use crate::markets::Markets;

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub jwt: Arc<JwtKeys>,
    /// Callers' roles, cached briefly (see [`crate::auth::roles`]).
    pub roles: RoleCache,
    pub config: Arc<Config>,
    /// Every market's matcher.
    pub markets: Arc<Markets>,
    /// Queue into the report ingester (verifies and stores signed reports in batches).
    pub reports: ReportIngest,
    pub feed: Feed,
    /// HTTP client for forwarding market requests to the process that owns the market.
    pub forwarder: reqwest::Client,
    /// Cancelled when the process starts shutting down: long-polls, log follows and feed
    /// streams answer at once instead of holding the shutdown up.
    pub shutdown: CancellationToken,
}
