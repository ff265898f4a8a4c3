//! Orders as placed, and orders as they rest in the book.

use serde::{Deserialize, Serialize};

use crate::{AskGrade, HostId, OrderId, Price, Requirements, UserId};

/// Most hosts one bid may exclude (a managed job's restarts never go back to a host that
/// failed it; a job has at most this many failed attempts to remember).
pub const EXCLUDED_HOSTS_MAX: usize = 4;

/// Hosts a bid must not trade with: the hosts that failed its job before. Fixed-size so
/// that orders stay `Copy`; [`ExcludedHosts::NONE`] for an ordinary bid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "Vec<HostId>", into = "Vec<HostId>")]
pub struct ExcludedHosts {
    hosts: [HostId; EXCLUDED_HOSTS_MAX],
    len: u8,
}

impl ExcludedHosts {
    /// No host excluded.
    pub const NONE: ExcludedHosts = ExcludedHosts { hosts: [HostId(uuid::Uuid::nil()); EXCLUDED_HOSTS_MAX], len: 0 };

    /// The set of `hosts` (duplicates kept once); `None` if more than
    /// [`EXCLUDED_HOSTS_MAX`] distinct hosts.
    pub fn new(hosts: &[HostId]) -> Option<ExcludedHosts> {
        let mut set = ExcludedHosts::NONE;
        for host in hosts {
            if set.contains(*host) {
                continue;
            }
            let slot = set.hosts.get_mut(usize::from(set.len))?;
            *slot = *host;
            set.len += 1;
        }
        Some(set)
    }

    #[inline]
    pub fn contains(&self, host: HostId) -> bool {
        self.len > 0 && self.as_slice().contains(&host)
    }

    pub fn as_slice(&self) -> &[HostId] {
        &self.hosts[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for ExcludedHosts {
    fn default() -> Self {
        ExcludedHosts::NONE
    }
}

impl TryFrom<Vec<HostId>> for ExcludedHosts {
    type Error = String;

    fn try_from(hosts: Vec<HostId>) -> Result<Self, Self::Error> {
        ExcludedHosts::new(&hosts).ok_or_else(|| format!("at most {EXCLUDED_HOSTS_MAX} excluded hosts"))
    }
}

impl From<ExcludedHosts> for Vec<HostId> {
    fn from(set: ExcludedHosts) -> Self {
        set.as_slice().to_vec()
    }
}

/// Time in force.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tif {
    /// Good till cancelled: whatever does not trade at once rests in the book.
    Gtc,
    /// Immediate or cancel: whatever does not trade at once is cancelled, never rests.
    Ioc,
}

/// Whether a bid wants GPUs of its own or takes idle ones until an on-demand buyer needs
/// them (see the crate docs, [Interruptible capacity](crate#interruptible-capacity)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The GPUs are the buyer's for the whole duration; may preempt interruptible use.
    #[default]
    OnDemand,
    /// Idle GPUs at an ask's interruptible price, taken back (preempted) whenever an
    /// on-demand bid needs them.
    Interruptible,
}

/// A buyer's order: `gpus` GPUs on one host for up to `duration_ms`, at most `price` per
/// GPU-hour. All or nothing: it trades once, for all its GPUs, with one ask.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Bid {
    pub id: OrderId,
    pub owner: UserId,
    pub gpus: u32,
    /// The longest the buyer may hold the GPUs (the caller converts hours to ms).
    pub duration_ms: i64,
    /// Limit: the most the buyer pays per GPU-hour.
    pub price: Price,
    pub tif: Tif,
    /// Hosts this bid never trades with.
    #[serde(default)]
    pub excluded_hosts: ExcludedHosts,
    /// The supply the buyer accepts: asks whose grade falls short are passed over as if
    /// they were too small, so a buyer who needs attested GPUs never pays for others.
    #[serde(default)]
    pub requires: Requirements,
    /// On demand (the default) or interruptible; `price` is the limit either way.
    #[serde(default)]
    pub priority: Priority,
}

/// A provider's order: `gpus` GPUs of `host`, free until `available_until_ms`, at least
/// `price` per GPU-hour. May fill several bids while it has GPUs left.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ask {
    pub id: OrderId,
    pub owner: UserId,
    pub host: HostId,
    pub gpus: u32,
    /// Unix ms after which the GPUs are no longer offered; the ask expires at this instant.
    pub available_until_ms: i64,
    /// Limit: the least the provider accepts per GPU-hour.
    pub price: Price,
    pub tif: Tif,
    /// What the server judged the supply to be; bids with requirements compare against
    /// it. The provider does not set it, and [`crate::Command::Regrade`] changes it.
    pub grade: AskGrade,
    /// The least the provider accepts per GPU-hour for interruptible use of the ask's idle
    /// GPUs; `None` offers none. Above zero and below `price`.
    #[serde(default)]
    pub interruptible_price: Option<Price>,
}

/// A bid resting in the book (bids never rest partly filled).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RestingBid {
    pub id: OrderId,
    /// Time priority within the book: lower is earlier. Unique within a book; store it to
    /// give [`crate::Book::restore`] back.
    pub seq: u64,
    pub owner: UserId,
    pub gpus: u32,
    pub duration_ms: i64,
    pub price: Price,
    #[serde(default)]
    pub excluded_hosts: ExcludedHosts,
    pub requires: Requirements,
    #[serde(default)]
    pub priority: Priority,
}

/// An ask resting in the book. `remaining_gpus` is in `1..=gpus`; `gpus - remaining_gpus`
/// have been sold on demand. Of the remaining GPUs, `interruptible_gpus` are in
/// interruptible use (still offered on demand) and the rest are idle.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RestingAsk {
    pub id: OrderId,
    /// Time priority within the book: lower is earlier. Unique within a book; store it to
    /// give [`crate::Book::restore`] back.
    pub seq: u64,
    pub owner: UserId,
    pub host: HostId,
    /// The ask's size as placed or last amended.
    pub gpus: u32,
    /// GPUs still offered.
    pub remaining_gpus: u32,
    pub available_until_ms: i64,
    pub price: Price,
    /// The grade as last placed or regraded.
    pub grade: AskGrade,
    /// As placed; amendments keep it.
    #[serde(default)]
    pub interruptible_price: Option<Price>,
    /// GPUs held by interruptible leases (<= remaining_gpus); 0 when given to restore.
    #[serde(default)]
    pub interruptible_gpus: u32,
}

/// An interruptible lease resting on an ask: it holds `gpus` of the ask's GPUs at `price`
/// (the ask's interruptible price when it traded) until it ends
/// ([`crate::Command::EndLease`]) or is preempted ([`crate::Event::Preempted`]). While
/// its ask rests, the book knows it; when the ask leaves the book the lease is forgotten
/// (it keeps running outside, and nothing can preempt it any more).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InterruptibleLease {
    /// The id of the bid that made it. Unique among live leases and resting orders.
    pub lease_id: OrderId,
    pub ask_id: OrderId,
    pub buyer: UserId,
    pub gpus: u32,
    pub price: Price,
    /// The trade's sequence number: a newer lease has a larger one.
    pub seq: u64,
}

/// An order resting in the book, as [`crate::Book::order`] reports it and
/// [`crate::Book::restore`] takes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "side", rename_all = "snake_case")]
pub enum RestingOrder {
    Bid(RestingBid),
    Ask(RestingAsk),
}

impl RestingOrder {
    /// The order's id.
    pub fn id(&self) -> OrderId {
        match self {
            RestingOrder::Bid(bid) => bid.id,
            RestingOrder::Ask(ask) => ask.id,
        }
    }

    /// The order's time priority.
    pub fn seq(&self) -> u64 {
        match self {
            RestingOrder::Bid(bid) => bid.seq,
            RestingOrder::Ask(ask) => ask.seq,
        }
    }
}
