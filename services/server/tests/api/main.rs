//! In-process API tests: each test gets a fresh migrated database and a server on a
//! random port, and talks to it over real HTTP.
#![allow(unreachable_pub)]

mod auth;
mod feed;
mod feed_replicas;
mod helpers;
mod hosts;
mod jobs;
mod markets;
mod operator;
mod problems;
mod wallet;
