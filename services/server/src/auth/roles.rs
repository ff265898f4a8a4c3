//! Callers' roles, as every authenticated request needs them, cached for a few seconds.
//!
//! Resolving the roles from Postgres on every request was one more database round trip per
//! request (in `perf`, sending to Postgres was about a fifth of the server's CPU under
//! order load, and this query most of those sends). Roles are set when a user registers and
//! no endpoint changes them or removes users; the time-to-live only bounds how long a change
//! made some other way takes to apply. An unknown user is never cached.

use std::sync::Arc;
use std::time::Duration;

use capex_core::Role;
use moka::sync::Cache;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// How long a user's roles are trusted without reading them again.
pub const ROLES_TTL: Duration = Duration::from_secs(10);
/// Users whose roles are kept at most (least recently used go first).
const USERS_CACHED_MAX: u64 = 100_000;

#[derive(Clone)]
pub struct RoleCache {
    cache: Cache<Uuid, Arc<[Role]>>,
}

impl Default for RoleCache {
    fn default() -> Self {
        RoleCache { cache: Cache::builder().max_capacity(USERS_CACHED_MAX).time_to_live(ROLES_TTL).build() }
    }
}

impl RoleCache {
    /// The user's roles, or `None` when no such user exists.
    pub async fn roles(&self, pool: &PgPool, user_id: Uuid) -> Result<Option<Arc<[Role]>>, ApiError> {
        if let Some(roles) = self.cache.get(&user_id) {
            return Ok(Some(roles));
        }
        let stored: Option<Vec<String>> =
            sqlx::query_scalar("select roles from users where user_id = $1").bind(user_id).fetch_optional(pool).await?;
        let Some(stored) = stored else { return Ok(None) };
        let roles: Arc<[Role]> = stored.iter().filter_map(|r| Role::parse(r)).collect();
        self.cache.insert(user_id, roles.clone());
        Ok(Some(roles))
    }
}
