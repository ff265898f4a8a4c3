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
//! An ask can hold an on-demand bid (see [Interruptible capacity](#interruptible-capacity)
//! for the other kind) when all six hold at the clock `now`:
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
//! - The trade price is always the resting order's price (for on-demand trades; an
//!   interruptible trade is always at the ask's interruptible price).
//! - [`Tif::Gtc`] rests what did not trade; [`Tif::Ioc`] never rests: an unfilled IOC bid,
//!   or an IOC ask's unsold GPUs, are reported [`Event::Cancelled`].
//!
//! After every command no resting bid and resting ask could trade with each other
//! ([`Book::check_invariants`] checks this): an on-demand bid counting the ask's GPUs in
//! interruptible use as available, an interruptible bid only its idle ones.
//!
//! # Amend and cancel
//!
//! Only an order's owner may cancel or amend it. An amendment that changes the price or
//! raises the size (for an ask, its total size including sold GPUs, which it may not go
//! down to) loses time priority; one that only lowers the size keeps it. The amended
//! order is then matched as if it were incoming, and whatever is left rests again. An
//! amendment keeps a bid's [`Priority`] and an ask's interruptible price; an ask's new
//! price must stay above that ([`RejectReason::InterruptiblePriceNotBelowPrice`]) and its
//! new size must leave at least the GPUs its leases hold unsold
//! ([`RejectReason::GpusBelowInterruptible`]), besides more than it has sold
//! ([`RejectReason::GpusBelowFilled`]), checked in that order after the size's and
//! price's own checks: filled, then interruptible, then price.
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
//! # Interruptible capacity
//!
//! A provider's GPUs are often idle between on-demand sales. An ask may carry an
//! `interruptible_price` (above zero, below its `price`): the least it takes for
//! interruptible use of its idle GPUs, which on-demand buyers can take back at any time.
//! A bid's [`Priority`] is [`Priority::OnDemand`] (the default: everything above) or
//! [`Priority::Interruptible`].
//!
//! - An ask's `remaining_gpus` are those not sold on demand. Of them,
//!   `interruptible_gpus` are held by its [`InterruptibleLease`]s and the rest are idle.
//!   GPUs in interruptible use stay offered on demand: an interruptible trade does not
//!   lower `remaining_gpus`, it makes a lease on the ask, named by the bid's id.
//! - An interruptible bid matches under the six conditions above with the ask's
//!   interruptible price in place of its price and its idle GPUs in place of its
//!   remaining ones; asks without an interruptible price never hold one. An incoming
//!   interruptible bid takes the ask with the lowest interruptible price, then the
//!   earliest. The trade price is always the ask's interruptible price, whichever order
//!   came in. Requirements, excluded hosts and regrades apply as on demand.
//! - An on-demand bid matches as if there were no leases (it is never blocked by
//!   interruptible use it outbids). When the ask has fewer idle GPUs than the bid needs,
//!   the book preempts its leases, the cheapest first (the lowest price), then the newest
//!   (highest `seq`), each lease whole, until enough are idle; each is an
//!   [`Event::Preempted`] just before the [`Event::Trade`] that caused it. GPUs freed
//!   beyond the trade's need are idle again and go at once to resting interruptible bids,
//!   in their price-time order.
//! - An incoming ask (placed, amended, or regraded) first fills resting on-demand bids as
//!   above, preempting its own leases as needed, then resting interruptible bids (highest
//!   price, then earliest, at or above its interruptible price) from its idle GPUs.
//! - [`Command::EndLease`] tells the book a lease ended outside it (the job exited or was
//!   cancelled, it ran its duration, the host was lost): [`Event::LeaseEnded`], then its
//!   GPUs go to resting interruptible bids like freed ones; a lease the book does not know
//!   on that ask is [`RejectReason::UnknownLease`].
//! - An ask that leaves the book (cancelled, expired, an IOC's leftover) takes its leases
//!   out of the book silently: they run on outside, and nothing can preempt them any more.
//!   Its `gpus_released` still counts its remaining GPUs, leased ones included. An ask
//!   sells out only when `remaining_gpus` reaches zero, which takes every lease preempted.
//! - A lease id is a bid id, and is unique among live leases and resting orders: while a
//!   lease lives, an order with its id is refused ([`RejectReason::DuplicateOrderId`]).
//!
//! Every trade, on demand or interruptible, takes the book's next sequence number
//! ([`Event::Trade`]'s `seq`), so leases are ordered by age with the orders.
//!
//! # Events
//!
//! Per command, in order: expiries (by `available_until_ms`, then age), then either one
//! [`Event::Rejected`] (nothing else changes), or [`Event::Accepted`] /
//! [`Event::Amended`] / [`Event::Regraded`] / [`Event::Cancelled`] /
//! [`Event::LeaseEnded`], followed for placements, amendments, regrades and ended leases
//! by trades in the order they happened (each after the [`Event::Preempted`] it caused)
//! and, for IOC, the cancellation of the leftover.
//!
//! # Limits
//!
//! Orders are bounded by [`GPUS_PER_ORDER_MAX`] and [`DURATION_MS_MAX`], and a book by
//! [`ORDERS_RESTING_MAX`] resting orders (or [`Book::with_orders_max`]). Leases need no
//! bound of their own: each holds at least one of its resting ask's remaining GPUs.
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
//!
//! Interruptible capacity keeps that shape. Bids rest on two sides, one per priority,
//! rather than one side with the priority in the key: no match ever weighs an on-demand
//! bid against an interruptible one, so each walk reads only the bids it may fill, and the
//! on-demand walk costs what it did. Asks with an interruptible price are also in a second
//! tree keyed by (interruptible price, seq) holding the same slot numbers, which an
//! interruptible bid walks as an on-demand bid walks the asks. Leases live outside the
//! slots (which stay `Copy`): a map from ask id to that ask's few leases, kept in seq
//! order, and one from lease id to ask id for uniqueness and [`Command::EndLease`]. The
//! slot keeps the leased GPU count, so the hot paths read idle GPUs without the maps;
//! preempting scans one ask's leases, O(leases of the ask) per lease preempted. The first
//! lease on an ask allocates that ask's list; on-demand matching without leases
//! allocates nothing.

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
pub use order::{
    Ask, Bid, EXCLUDED_HOSTS_MAX, ExcludedHosts, InterruptibleLease, Priority, RestingAsk, RestingBid, RestingOrder,
    Tif,
};
pub use price::{PRICE_SCALE, Price, PriceError};
