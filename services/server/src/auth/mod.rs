//! Users, passwords, login tokens and API keys.

pub mod api_keys;
pub mod job_token;
pub mod jwt;
pub mod password;
pub mod roles;
pub mod routes;
pub mod user;

pub(crate) use api_keys::{__path_list_api_keys, __path_revoke_api_key};
pub use api_keys::{ApiKeyList, ApiKeyView};
pub use job_token::{Caller, JobToken};
pub(crate) use routes::__path_create_api_key;
pub(crate) use routes::__path_login;
pub(crate) use routes::__path_me;
pub(crate) use routes::__path_register;
pub use routes::{ApiKeyCreated, LoginRequest, LoginResponse, NewApiKey, RegisterRequest, router};
pub use user::{AuthUser, UserView, authenticate, create_user, find_user_by_email};
