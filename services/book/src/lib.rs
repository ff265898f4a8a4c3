//! The Capex matching engine: one [`Book`] per GPU class, a pure state machine.
//!
//! Commands in, events out: [`Book::apply`] takes a [`Command`] and appends [`Event`]s to
//! a caller-provided `Vec`. There is no I/O, no async, no clock and no randomness, so the
//! same commands always give the same events; the server makes each batch durable and can
//! rebuild a book from its open orders with [`Book::restore`].
//!
//! # Prices
//!
//! A [`Price`] is an `i64` of micro-credits per GPU-hour, not a `Decimal`. Prices have at
//! most six decimals ([`Price::from_decimal`] refuses more rather than rounding), so the
//! integer is exact; it compares in one instruction, is `Copy` and 8 bytes, which matters
//! when the matcher orders and scans thousands of orders per command. Convert at the edge
//! with [`Price::from_decimal`] and [`Price::to_decimal`].
//!
//! # Time
//!
//! Every command carries `at_ms` (unix ms) from the caller. The book keeps the latest it
//! has seen as its clock and never moves it back: a command stamped earlier runs at the
//! book's clock. Before each command, every ask with `available_until_ms <= clock` leaves
//! the book with an [`Event::Expired`]; [`Command::Tick`] does only that.
//!
//! # Matching
//!
//! An ask can hold a bid when all six hold at the clock `now`:
//! `ask.remaining_gpus >= bid.gpus` (all of a bid's GPUs come from one host, the ask's),
//! `now + bid.duration_ms <= ask.available_until_ms`, `ask.owner != bid.owner`,
//! `bid.requires.admits(&ask.grade)` (see [Supply](#supply)), `bid.price >= ask.price`,
//! and `ask.host` is not among the bid's [`ExcludedHosts`] (a managed job's restart never
//! returns to a host that failed it).
//!
//! - A bid is all or nothing: it trades once, for all its GPUs, with one ask.
//! - An incoming bid takes the best ask that can hold it: lowest price, then earliest.
//! - An incoming ask fills resting bids in price-time priority (highest price, then
//!   earliest) while it has GPUs left.
//! - Orders that cannot hold (or be held by) the incoming order are passed over and keep
//!   their place and priority: a small ask is not pushed back because a big bid came
//!   along, and a bid is not cancelled because the only ask is its owner's (self-trades
//!   are skipped, never cancelled).
//! - The trade price is always the resting order's price.
//! - [`Tif::Gtc`] rests what did not trade; [`Tif::Ioc`] never rests: an unfilled IOC bid,
//!   or an IOC ask's unsold GPUs, are reported [`Event::Cancelled`].
//!
//! After every command no resting bid and resting ask could trade with each other
//! ([`Book::check_invariants`] checks this).
//!
//! # Amend and cancel
//!
//! Only an order's owner may cancel or amend it. An amendment that changes the price or
//! raises the size (for an ask, its total size including sold GPUs, which it may not go
//! down to) loses time priority; one that only lowers the size keeps it. The amended
//! order is then matched as if it were incoming, and whatever is left rests again.
//!
//! # Supply
//!
//! Buyers may need more than a price: a workload with secrets needs GPUs the exchange has
//! checked, a long job needs a host that stays up. A bid's [`Requirements`] name a floor
//! for the weakest [`Verification`] of the GPUs it gets and for the host's 7-day uptime; an
//! ask carries the [`AskGrade`] the server computed (the minimum level over its bound
//! GPUs, and the host's uptime). Uptime is in parts per million ([`PPM_MAX`] is 100%) so
//! that the book compares integers exactly and its orders stay `Copy`. Each floor is
//! inclusive: an ask at exactly `min_uptime_7d_ppm` meets it.
//!
//! A requirement is one more way an ask can fail to hold a bid, nothing else: an ask the
//! bid does not admit is passed over like one that is too small, and both keep their
//! place. The grade is the exchange's knowledge, not the provider's offer, so
//! [`Command::Regrade`] changes it without an owner and without touching priority; a
//! raised grade is matched at once against the waiting bids, a lowered one only stops
//! later trades.
//!
//! # Events
//!
//! Per command, in order: expiries (by `available_until_ms`, then age), then either one
//! [`Event::Rejected`] (nothing else changes), or [`Event::Accepted`] /
//! [`Event::Amended`] / [`Event::Regraded`] / [`Event::Cancelled`], followed for
//! placements, amendments and regrades by trades in the order they happened and, for IOC, the cancellation of the leftover.
//!
//! # Limits
//!
//! Orders are bounded by [`GPUS_PER_ORDER_MAX`] and [`DURATION_MS_MAX`], and a book by
//! [`ORDERS_RESTING_MAX`] resting orders (or [`Book::with_orders_max`]).
//!
//! # Cost
//!
//! Each side is a `BTreeMap` keyed by (price, sequence number), so the best order is first
//! and priority is the key order; the tree holds slot numbers into a slab of order data,
//! so inserts and removes shift 4-byte values rather than whole orders. A hash map from
//! order id to key and slot finds orders to cancel or amend; a binary heap by
//! (available_until_ms, seq) finds asks to expire, with stale entries skipped when popped
//! and compacted away in bulk. Matching does not allocate once its buffers have grown.
//! Placing, cancelling and expiring cost O(log n); matching walks from the best price and
//! stops at the first fit (bids) or when the ask is sold out or the prices no longer cross
//! (asks), so its cost grows with the orders it must pass over.

mod book;
mod event;
mod grade;
mod id_hash;
mod ids;
mod order;
mod price;
mod side;

pub use book::{Book, DURATION_MS_MAX, Depth, GPUS_PER_ORDER_MAX, Level, ORDERS_RESTING_MAX};
pub use event::{Command, Event, RejectReason, UnfilledReason};
pub use grade::{AskGrade, PPM_MAX, Requirements, Verification, VerificationError};
pub use ids::{HostId, OrderId, UserId};
pub use order::{Ask, Bid, EXCLUDED_HOSTS_MAX, ExcludedHosts, RestingAsk, RestingBid, RestingOrder, Tif};
pub use price::{PRICE_SCALE, Price, PriceError};
