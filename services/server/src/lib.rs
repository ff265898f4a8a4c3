//! capex-server: the exchange's HTTP API, authentication, ledger routes and (with later
//! modules) markets, hosts and settlement. `main.rs` only reads configuration and calls
//! [`startup::Application`]; tests build the same application on port 0.

pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod extract;
pub mod feed;
pub mod hosts;
pub mod idempotency;
pub mod input;
pub mod jobs;
pub mod markets;
pub mod openapi;
pub mod operator;
pub mod params;
pub mod pgcluster;
pub mod problem_docs;
pub mod routing_problems;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod verification;
pub mod wallet;

pub use capex_ledger::MIGRATOR;
pub use config::Config;
pub use startup::{Application, router};
pub use state::AppState;
