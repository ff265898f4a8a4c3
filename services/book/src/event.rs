//! What goes into the book and what comes out.

use serde::{Deserialize, Serialize};

use crate::{Ask, AskGrade, Bid, HostId, OrderId, Price, Priority, UserId, Verification};

/// One input to [`crate::Book::apply`]. Every command carries the caller's clock.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    PlaceBid {
        at_ms: i64,
        bid: Bid,
    },
    PlaceAsk {
        at_ms: i64,
        ask: Ask,
    },
    /// Withdraw a resting order; only its owner may.
    Cancel {
        at_ms: i64,
        order_id: OrderId,
        owner: UserId,
    },
    /// Change a resting order's price and/or size (for an ask, its total size, sold GPUs
    /// included). A price change or a size increase loses time priority; a size decrease
    /// keeps it. The amended order is then matched as if it were incoming.
    Amend {
        at_ms: i64,
        order_id: OrderId,
        owner: UserId,
        new_price: Option<Price>,
        new_gpus: Option<u32>,
    },
    /// The exchange's own re-assessment of a resting ask's supply: a GPU bound to it
    /// changed verification level, or its host's uptime moved. Sent by the server, not by
    /// the provider, so there is no owner to check. The ask keeps its time priority (its
    /// price and size did not change, only what the server knows about it) and is then
    /// matched against the resting bids, since a better grade may admit bids that were
    /// waiting; a worse one only stops future trades, never undoes past ones.
    Regrade {
        at_ms: i64,
        order_id: OrderId,
        grade: AskGrade,
    },
    /// Only lets time pass: expires asks whose `available_until_ms <= at_ms`.
    Tick {
        at_ms: i64,
    },
    /// An interruptible lease ended outside the book (its job exited or was cancelled, it
    /// ran to its duration, or its host was lost). Its GPUs are idle again and are then
    /// matched against the resting interruptible bids. Sent by the server, so there is no
    /// owner to check.
    EndLease {
        at_ms: i64,
        ask_id: OrderId,
        lease_id: OrderId,
    },
}

impl Command {
    /// The caller's clock for this command, unix ms.
    pub fn at_ms(&self) -> i64 {
        match *self {
            Command::PlaceBid { at_ms, .. }
            | Command::PlaceAsk { at_ms, .. }
            | Command::Cancel { at_ms, .. }
            | Command::Amend { at_ms, .. }
            | Command::Regrade { at_ms, .. }
            | Command::Tick { at_ms }
            | Command::EndLease { at_ms, .. } => at_ms,
        }
    }
}

/// One output of [`crate::Book::apply`]. The events of one command are in the order
/// things happened: expiries first, then acceptance or rejection, trades (each preceded by
/// the preemptions it caused), and last the cancellation of an IOC order's leftover.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A new order passed validation; trades (and, for IOC, a cancellation) may follow.
    Accepted { order_id: OrderId },
    /// The command changed nothing in the book.
    Rejected { order_id: OrderId, reason: RejectReason },
    /// `gpus` GPUs of `host` go to the buyer for up to `duration_ms` at `price` per
    /// GPU-hour. The bid is now fully filled. On demand, the price is the resting order's
    /// and the GPUs are the buyer's; interruptible, the price is the ask's interruptible
    /// price and the trade is a lease named `bid_id` that the book keeps until it ends or
    /// is preempted.
    Trade {
        bid_id: OrderId,
        ask_id: OrderId,
        buyer: UserId,
        seller: UserId,
        host: HostId,
        gpus: u32,
        price: Price,
        duration_ms: i64,
        at_ms: i64,
        /// The bid's priority: whether this trade is a lease that may be preempted.
        #[serde(default)]
        priority: Priority,
        /// The book's sequence number taken at the trade (for an interruptible trade, the
        /// lease's [`crate::InterruptibleLease::seq`]): later trades have larger numbers.
        /// Unique within one book's life; a restored book may reuse numbers of orders and
        /// trades that left before the restart, never in a different order.
        #[serde(default)]
        seq: u64,
    },
    /// An on-demand bid (`by_bid`) needed GPUs that the interruptible lease `lease_id` held
    /// on ask `ask_id`: the lease is over, its `gpus` go to that bid. Always immediately
    /// before the trade (or the other preemptions of that trade) that caused it.
    Preempted {
        lease_id: OrderId,
        ask_id: OrderId,
        buyer: UserId,
        host: HostId,
        gpus: u32,
        price: Price,
        by_bid: OrderId,
        at_ms: i64,
    },
    /// The book forgot the lease `lease_id` after a [`Command::EndLease`]: `gpus_released`
    /// GPUs of ask `ask_id` are idle again. Interruptible trades may follow.
    LeaseEnded { ask_id: OrderId, lease_id: OrderId, gpus_released: u32 },
    /// The order left the book (or, for IOC, never entered it) by cancellation;
    /// `gpus_released` were still unsold on demand (a bid's whole size; an ask's remaining
    /// GPUs, those in interruptible use included: its leases are forgotten, not ended).
    Cancelled { order_id: OrderId, gpus_released: u32 },
    /// An ask reached its `available_until_ms` and left the book with `gpus_released`
    /// unsold on demand (interruptibly held ones included, as for [`Event::Cancelled`]).
    Expired { order_id: OrderId, gpus_released: u32 },
    /// A resting order now has this price and total size (`gpus`), of which
    /// `remaining_gpus` are unsold. Trades may follow.
    Amended { order_id: OrderId, price: Price, gpus: u32, remaining_gpus: u32 },
    /// A resting ask now has this grade, with its priority unchanged. Trades may follow.
    Regraded { order_id: OrderId, grade: AskGrade },
}

/// Why a command was refused. Each is a business outcome, not an error of the engine.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// An order (or amendment) for zero GPUs.
    ZeroGpus,
    /// More than [`crate::GPUS_PER_ORDER_MAX`] GPUs.
    TooManyGpus,
    /// A price of zero (prices cannot be negative).
    ZeroOrNegativePrice,
    /// A bid whose duration is zero or negative.
    NonPositiveDuration,
    /// A bid longer than [`crate::DURATION_MS_MAX`].
    DurationTooLong,
    /// An ask whose `available_until_ms` is not after the command's time.
    AlreadyExpired,
    /// An order with the id of an order already resting in this book, or of a live
    /// interruptible lease (a lease is named by the bid that made it).
    DuplicateOrderId,
    /// The book already holds its maximum number of resting orders.
    BookFull,
    /// Cancel, amend or regrade of an order that is not resting (never placed, filled, cancelled
    /// or expired).
    UnknownOrder,
    /// Cancel or amend by someone other than the order's owner.
    NotOwner,
    /// An amendment with neither a new price nor a new size.
    NothingToAmend,
    /// An ask amended to a size not above the GPUs it has already sold.
    GpusBelowFilled,
    /// A bid's `min_uptime_7d_ppm` or an ask's `uptime_7d_ppm` above
    /// [`crate::PPM_MAX`] (more than 100%).
    UptimeOutOfRange,
    /// A [`Command::Regrade`] of a resting bid: only asks have a grade.
    NotAnAsk,
    /// [`crate::Book::restore`] only: an order with the same side, price and `seq` (or an
    /// ask with the same `available_until_ms` and `seq`) already rests;
    /// [`crate::Book::restore_lease`]: a lease of the same ask has the same `seq`.
    SequenceTaken,
    /// An ask whose interruptible price is not below its price (placed so, or amended to
    /// a price at or below it).
    InterruptiblePriceNotBelowPrice,
    /// An ask amended to a size that leaves fewer GPUs unsold than its interruptible
    /// leases hold; [`crate::Book::restore_lease`]: the ask has fewer idle GPUs than the
    /// lease holds; [`crate::Book::restore`]: an ask given with `interruptible_gpus` above
    /// zero (its leases come back through `restore_lease`, which counts them).
    GpusBelowInterruptible,
    /// [`Command::EndLease`] of a lease the book does not know on that ask (never made,
    /// ended, preempted, or its ask left the book). `order_id` is the lease id.
    UnknownLease,
}

/// Why a resting bid has not traded, for the UI. See [`crate::Book::why_unfilled`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum UnfilledReason {
    /// There are no asks in this market.
    NoAsks,
    /// An interruptible bid: no ask of other owners on a host it does not exclude offers
    /// interruptible use.
    NoInterruptibleAsks,
    /// Every ask in this market belongs to the bidder (self-trades are skipped).
    OnlyOwnAsks,
    /// Every ask of other owners is on a host the bid excludes (hosts that failed its job).
    OnlyExcludedHosts,
    /// The bid's limit is below the cheapest ask of other owners (for an interruptible bid,
    /// the lowest interruptible price).
    PriceBelowBestAsk { best_ask: Price },
    /// No ask of other owners has the bid's GPU count free on one host; the most any
    /// offers is `largest_free` (for an interruptible bid, idle GPUs).
    NoHostWithEnoughGpus { largest_free: u32 },
    /// No ask of other owners is available for the bid's whole duration; the longest any
    /// offers from now is `longest_available_ms`.
    NoAskLongEnough { longest_available_ms: i64 },
    /// No ask of other owners meets the bid's `min_verification`; the strongest level any
    /// offers is `best_available`.
    VerificationBelowRequired { best_available: Verification },
    /// No ask of other owners is on a host that meets the bid's `min_uptime_7d_ppm`; the
    /// best 7-day uptime any offers is `best_uptime_7d_ppm`.
    ReliabilityBelowRequired { best_uptime_7d_ppm: u32 },
    /// Each of the bid's conditions (price, size, duration and what it requires of the
    /// supply) is met by some ask of other owners, but no single ask meets them all.
    NoSingleAskFits,
}
