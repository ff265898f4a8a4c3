//! In-process API tests: each test gets a fresh migrated database and a server on a
//! random port, and talks to it over real HTTP.
#![allow(unreachable_pub)]

mod api_keys;
mod auth;
mod conformance;
mod edge;
mod feed;
mod feed_replicas;
mod gpu_states;
mod hardening;
mod helpers;
mod host_replay;
mod hosts;
mod interruptible;
mod job_tokens;
mod jobs;
mod managed_jobs;
mod markets;
mod operator;
mod problems;
mod reliability_bids;
mod report_attribution;
mod top_of_book;
mod verification;
mod wallet;
mod wallet_movements;
