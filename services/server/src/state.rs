use std::sync::Arc;

use sqlx::PgPool;

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
}
