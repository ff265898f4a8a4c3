//! The order book of one market and its matching rules.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::id_hash::IdBuildHasher;
use crate::side::Side;
use crate::{
    Ask, AskGrade, Bid, Command, Event, ExcludedHosts, HostId, InterruptibleLease, OrderId, PPM_MAX, Price, Priority,
    RejectReason, Requirements, RestingAsk, RestingBid, RestingOrder, Tif, UnfilledReason, UserId, Verification,
};

/// Most GPUs one order may name. Far above any single host; bigger is a typo.
pub const GPUS_PER_ORDER_MAX: u32 = 1_024;

/// Longest a bid may ask to hold GPUs: 366 days in ms.
pub const DURATION_MS_MAX: i64 = 366 * 24 * 3_600 * 1_000;

/// Stale expiry entries tolerated beyond twice the resting asks before compacting.
const EXPIRIES_STALE_MIN: usize = 1_024;

/// Default bound on resting orders per book (see [`Book::with_orders_max`]).
pub const ORDERS_RESTING_MAX: usize = 1_000_000;

/// Bids sort best-first: highest price, then earliest sequence number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct BidKey {
    price: Reverse<Price>,
    seq: u64,
}

/// Asks sort best-first: lowest price, then earliest sequence number. The same key with
/// the interruptible price orders the asks that offer interruptible use.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct AskKey {
    price: Price,
    seq: u64,
}

/// A resting bid's data; its priority is the side it rests on.
#[derive(Clone, Copy, Debug)]
struct BidSlot {
    id: OrderId,
    owner: UserId,
    gpus: u32,
    duration_ms: i64,
    excluded_hosts: ExcludedHosts,
    requires: Requirements,
}

#[derive(Clone, Copy, Debug)]
struct AskSlot {
    id: OrderId,
    owner: UserId,
    host: HostId,
    gpus: u32,
    /// Unsold on demand, the GPUs in interruptible use included.
    remaining_gpus: u32,
    available_until_ms: i64,
    grade: AskGrade,
    interruptible_price: Option<Price>,
    /// The sum of this ask's leases' GPUs, at most `remaining_gpus`; zero exactly when it
    /// has no lease (a lease holds at least one GPU).
    interruptible_gpus: u32,
}

impl AskSlot {
    /// GPUs neither sold nor in interruptible use: what an interruptible bid may take.
    #[inline]
    fn idle_gpus(&self) -> u32 {
        self.remaining_gpus - self.interruptible_gpus
    }
}

/// Where a resting order sits: its side, its key there and its slot.
#[derive(Clone, Copy, Debug)]
enum Loc {
    Bid(Priority, BidKey, u32),
    Ask(AskKey, u32),
}

/// When an ask expires: ordered by `available_until_ms`, then seq. The id and key find
/// the ask, and tell whether the entry is stale (the ask is gone or has a new key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Expiry {
    until_ms: i64,
    seq: u64,
    price: Price,
    id: u128,
}

/// One price level of [`Depth`]: all resting orders of one side at one price.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Level {
    pub price: Price,
    /// GPUs wanted (bids) or still offered (asks) at this price.
    pub gpus: u64,
    pub orders: u32,
}

/// Aggregated book, each side best-first (bids highest price first, asks lowest first).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Depth {
    /// On-demand bids by price.
    pub bids: Vec<Level>,
    /// Asks by price, with their remaining GPUs (those in interruptible use included: they
    /// are offered on demand).
    pub asks: Vec<Level>,
    /// Interruptible bids by price.
    #[serde(default)]
    pub interruptible_bids: Vec<Level>,
    /// Asks by interruptible price, with their idle GPUs; asks with none idle are left out.
    #[serde(default)]
    pub interruptible_asks: Vec<Level>,
}

/// Whether `ask`, with `free_gpus` of its GPUs available to this bid, can hold all of
/// `bid` at `now_ms`: enough GPUs on its host, free for the bid's whole duration, another
/// owner, supply the bid admits, a host the bid does not exclude, and prices that cross.
#[inline]
fn fits(ask: &AskSlot, free_gpus: u32, ask_price: Price, bid: &BidSlot, bid_price: Price, now_ms: i64) -> bool {
    free_gpus >= bid.gpus
        && now_ms.saturating_add(bid.duration_ms) <= ask.available_until_ms
        && ask.owner != bid.owner
        && bid.requires.admits(&ask.grade)
        && bid_price >= ask_price
        && !bid.excluded_hosts.contains(ask.host)
}

/// The trade of all of `bid` with `ask` at `price` (the book's `seq` for it).
fn trade(bid: &BidSlot, ask: &AskSlot, price: Price, priority: Priority, seq: u64, now_ms: i64) -> Event {
    Event::Trade {
        bid_id: bid.id,
        ask_id: ask.id,
        buyer: bid.owner,
        seller: ask.owner,
        host: ask.host,
        gpus: bid.gpus,
        price,
        duration_ms: bid.duration_ms,
        at_ms: now_ms,
        priority,
        seq,
    }
}

/// The keys of the resting bids of `side` that `ask` fills from `gpus` of its GPUs at
/// `ask_price`, in priority order, into `filled` (cleared first): the scan stops when the
/// GPUs run out or the prices no longer cross; bids it cannot hold are passed over.
fn bids_filling(
    side: &Side<BidKey, BidSlot>,
    ask: &AskSlot,
    mut gpus: u32,
    ask_price: Price,
    now_ms: i64,
    filled: &mut Vec<BidKey>,
) {
    filled.clear();
    for (key, bid) in side.iter() {
        if gpus == 0 || key.price.0 < ask_price {
            break;
        }
        if fits(ask, gpus, ask_price, bid, key.price.0, now_ms) {
            gpus -= bid.gpus;
            filled.push(*key);
        }
    }
}

fn check_gpus(gpus: u32) -> Result<(), RejectReason> {
    if gpus == 0 {
        Err(RejectReason::ZeroGpus)
    } else if gpus > GPUS_PER_ORDER_MAX {
        Err(RejectReason::TooManyGpus)
    } else {
        Ok(())
    }
}

fn check_price(price: Price) -> Result<(), RejectReason> {
    if price.micros() <= 0 { Err(RejectReason::ZeroOrNegativePrice) } else { Ok(()) }
}

/// An interruptible price, if any, is a price (above zero) and below the ask's `price`.
fn check_interruptible_price(interruptible_price: Option<Price>, price: Price) -> Result<(), RejectReason> {
    let Some(interruptible_price) = interruptible_price else {
        return Ok(());
    };
    check_price(interruptible_price)?;
    if interruptible_price >= price { Err(RejectReason::InterruptiblePriceNotBelowPrice) } else { Ok(()) }
}

fn check_duration(duration_ms: i64) -> Result<(), RejectReason> {
    if duration_ms <= 0 {
        Err(RejectReason::NonPositiveDuration)
    } else if duration_ms > DURATION_MS_MAX {
        Err(RejectReason::DurationTooLong)
    } else {
        Ok(())
    }
}

fn check_available(available_until_ms: i64, now_ms: i64) -> Result<(), RejectReason> {
    if available_until_ms <= now_ms { Err(RejectReason::AlreadyExpired) } else { Ok(()) }
}

fn check_uptime(uptime_7d_ppm: u32) -> Result<(), RejectReason> {
    if uptime_7d_ppm > PPM_MAX { Err(RejectReason::UptimeOutOfRange) } else { Ok(()) }
}

fn check_requirements(requires: &Requirements) -> Result<(), RejectReason> {
    requires.min_uptime_7d_ppm.map_or(Ok(()), check_uptime)
}

fn check_amendment(new_price: Option<Price>, new_gpus: Option<u32>) -> Result<(), RejectReason> {
    if new_price.is_none() && new_gpus.is_none() {
        return Err(RejectReason::NothingToAmend);
    }
    if let Some(price) = new_price {
        check_price(price)?;
    }
    if let Some(gpus) = new_gpus {
        check_gpus(gpus)?;
    }
    Ok(())
}

fn key_of(id: OrderId) -> u128 {
    id.0.as_u128()
}

/// Folds a best-first stream of (price, gpus) into at most `levels_max` levels.
fn levels(orders: impl Iterator<Item = (Price, u32)>, levels_max: usize) -> Vec<Level> {
    let mut out: Vec<Level> = Vec::new();
    for (price, gpus) in orders {
        match out.last_mut() {
            Some(level) if level.price == price => {
                level.gpus += u64::from(gpus);
                level.orders += 1;
            }
            _ => {
                if out.len() == levels_max {
                    break;
                }
                out.push(Level { price, gpus: u64::from(gpus), orders: 1 });
            }
        }
    }
    out
}

/// What [`Book::why_unfilled`] learned from the asks a bid could use (other owners, hosts
/// it does not exclude), each condition on its own.
struct Survey {
    best_ask: Price,
    largest_free: u32,
    latest_until_ms: i64,
    best_verification: Verification,
    best_uptime_7d_ppm: u32,
}

impl Survey {
    /// Scans `asks` (price, GPUs free for this bid, ask), best price first, until each of
    /// size, duration and the bid's requirements is met by some ask seen (all of them if
    /// not); `None` if none is usable.
    fn of<'a>(bid: &RestingBid, now_ms: i64, asks: impl Iterator<Item = (Price, u32, &'a AskSlot)>) -> Option<Survey> {
        let mut best_ask: Option<Price> = None;
        let mut largest_free = 0_u32;
        let mut latest_until_ms = i64::MIN;
        // The weakest grade there is stands in for "none seen": it is only read once some
        // ask has been, and then the maximum is at least that ask's.
        let mut best_verification = Verification::Simulated;
        let mut best_uptime_7d_ppm = 0_u32;
        let needed_until_ms = now_ms.saturating_add(bid.duration_ms);
        // No requirement is the floor every grade meets.
        let min_verification = bid.requires.min_verification.unwrap_or(Verification::Simulated);
        let min_uptime_7d_ppm = bid.requires.min_uptime_7d_ppm.unwrap_or(0);
        for (price, free_gpus, ask) in asks {
            if ask.owner == bid.owner || bid.excluded_hosts.contains(ask.host) {
                continue;
            }
            best_ask.get_or_insert(price);
            largest_free = largest_free.max(free_gpus);
            latest_until_ms = latest_until_ms.max(ask.available_until_ms);
            best_verification = best_verification.max(ask.grade.verification);
            best_uptime_7d_ppm = best_uptime_7d_ppm.max(ask.grade.uptime_7d_ppm);
            // Asks come in price order, so the best price is known at the first; once each
            // other condition is met by some ask, none of them is a reason and the rest of
            // the book cannot change the answer. Every placed bid that rests asks for its
            // reasons, so a full scan made each one O(resting asks).
            if largest_free >= bid.gpus
                && latest_until_ms >= needed_until_ms
                && best_verification >= min_verification
                && best_uptime_7d_ppm >= min_uptime_7d_ppm
            {
                break;
            }
        }
        Some(Survey { best_ask: best_ask?, largest_free, latest_until_ms, best_verification, best_uptime_7d_ppm })
    }

    fn reasons(&self, bid: &RestingBid, now_ms: i64) -> Vec<UnfilledReason> {
        let mut reasons = Vec::new();
        if bid.price < self.best_ask {
            reasons.push(UnfilledReason::PriceBelowBestAsk { best_ask: self.best_ask });
        }
        if self.largest_free < bid.gpus {
            reasons.push(UnfilledReason::NoHostWithEnoughGpus { largest_free: self.largest_free });
        }
        if self.latest_until_ms < now_ms.saturating_add(bid.duration_ms) {
            reasons.push(UnfilledReason::NoAskLongEnough {
                longest_available_ms: self.latest_until_ms.saturating_sub(now_ms),
            });
        }
        if self.best_verification < bid.requires.min_verification.unwrap_or(Verification::Simulated) {
            reasons.push(UnfilledReason::VerificationBelowRequired { best_available: self.best_verification });
        }
        if self.best_uptime_7d_ppm < bid.requires.min_uptime_7d_ppm.unwrap_or(0) {
            reasons.push(UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm: self.best_uptime_7d_ppm });
        }
        if reasons.is_empty() {
            reasons.push(UnfilledReason::NoSingleAskFits);
        }
        reasons
    }
}

/// The order book of one market (one GPU class): a deterministic state machine.
///
/// Feed it [`Command`]s with [`Book::apply`]; it appends [`Event`]s. The same commands in
/// the same order always give the same events and the same book. See the crate docs for
/// the matching rules.
#[derive(Clone, Debug)]
pub struct Book {
    /// On-demand bids.
    bids: Side<BidKey, BidSlot>,
    /// Interruptible bids: a side of their own, since no match ever weighs an on-demand
    /// bid against an interruptible one; each walk reads only the bids it can fill.
    interruptible_bids: Side<BidKey, BidSlot>,
    asks: Side<AskKey, AskSlot>,
    /// The asks that offer interruptible use, keyed by (interruptible price, seq), as slots
    /// into `asks`: an interruptible bid walks these from the cheapest, like an on-demand
    /// bid walks `asks`.
    interruptible_asks: BTreeMap<AskKey, u32>,
    /// Live leases by the id of their (resting) ask, in seq order; only asks that have
    /// some are present. An ask holds at most as many leases as it has remaining GPUs.
    leases: HashMap<u128, Vec<InterruptibleLease>, IdBuildHasher>,
    /// The ask of each live lease, by lease id: lease ids are unique, and no new order may
    /// take one.
    lease_asks: HashMap<u128, OrderId, IdBuildHasher>,
    /// Soonest expiry first. Entries are not removed when an ask trades out or is
    /// cancelled (that would cost a tree operation on the hot path); `expire` skips entries
    /// whose ask is gone, and `rest_ask` compacts when stale ones pile up.
    expiries: BinaryHeap<Reverse<Expiry>>,
    index: HashMap<u128, Loc, IdBuildHasher>,
    /// Time priority: the next order to rest (or lose priority), or the next trade, gets
    /// this number.
    next_seq: u64,
    /// The book's clock: the latest `at_ms` seen; `i64::MIN` before any.
    now_ms: i64,
    orders_max: usize,
    /// Reused buffer of bids an incoming ask fills, so matching does not allocate.
    scratch: Vec<BidKey>,
}

impl Default for Book {
    fn default() -> Self {
        Book::new()
    }
}

impl Book {
    /// An empty book holding at most [`ORDERS_RESTING_MAX`] resting orders.
    pub fn new() -> Book {
        Book::with_orders_max(ORDERS_RESTING_MAX)
    }

    /// An empty book holding at most `orders_max` resting orders; placements beyond that
    /// are rejected with [`RejectReason::BookFull`]. Leases do not count: they are bounded
    /// by the resting asks' GPUs.
    pub fn with_orders_max(orders_max: usize) -> Book {
        Book {
            bids: Side::new(),
            interruptible_bids: Side::new(),
            asks: Side::new(),
            interruptible_asks: BTreeMap::new(),
            leases: HashMap::default(),
            lease_asks: HashMap::default(),
            expiries: BinaryHeap::new(),
            index: HashMap::default(),
            next_seq: 0,
            now_ms: i64::MIN,
            orders_max,
            scratch: Vec::new(),
        }
    }

    /// Applies one command, appending its events to `out` (which is not cleared).
    ///
    /// First the clock moves to `max(clock, command.at_ms())` (it never goes back), then
    /// every ask with `available_until_ms <= clock` expires, then the command runs.
    pub fn apply(&mut self, command: Command, out: &mut Vec<Event>) {
        let now_ms = self.advance_clock(command.at_ms());
        self.expire(now_ms, out);
        match command {
            Command::PlaceBid { bid, .. } => self.place_bid(bid, now_ms, out),
            Command::PlaceAsk { ask, .. } => self.place_ask(ask, now_ms, out),
            Command::Cancel { order_id, owner, .. } => self.cancel(order_id, owner, out),
            Command::Amend { order_id, owner, new_price, new_gpus, .. } => {
                self.amend(order_id, owner, new_price, new_gpus, now_ms, out)
            }
            Command::Regrade { order_id, grade, .. } => self.regrade(order_id, grade, now_ms, out),
            Command::EndLease { ask_id, lease_id, .. } => self.end_lease(ask_id, lease_id, now_ms, out),
            Command::Tick { .. } => {}
        }
    }

    /// Puts an order back into the book without matching it, for rebuilding a book from
    /// the database after a restart. The order keeps the `seq` it had (as read from
    /// [`Book::order`], [`Book::bids`] or [`Book::asks`]), so priority and expiry order
    /// are as before; later orders rank after every restored one. Moves the clock to
    /// `at_ms` like a command but expires nothing (the next command does, with events).
    /// With no orders to restore, set the clock with a [`Command::Tick`] at the last
    /// clock instead. An ask comes back with no GPUs in interruptible use: give
    /// `interruptible_gpus` as 0 and its leases to [`Book::restore_lease`] once the asks
    /// are back.
    ///
    /// Refuses what [`Book::apply`] would refuse for a new order (except an ask already
    /// past its time, which is kept so that the next command reports it Expired), an ask
    /// whose `remaining_gpus` is zero ([`RejectReason::ZeroGpus`]) or above its `gpus`
    /// ([`RejectReason::TooManyGpus`]), an ask with `interruptible_gpus` above zero
    /// ([`RejectReason::GpusBelowInterruptible`]), and a `seq` clash
    /// ([`RejectReason::SequenceTaken`]). In debug builds, panics if an on-demand order
    /// could trade with a resting order: the restored set must come from a book that was
    /// not crossed. (Interruptible crossing is not judged here, since the leases that
    /// keep GPUs busy come back later; [`Book::check_invariants`] judges it after.)
    pub fn restore(&mut self, order: RestingOrder, at_ms: i64) -> Result<(), RejectReason> {
        if order.seq() == u64::MAX {
            // The next order would need a sequence number past the end.
            return Err(RejectReason::SequenceTaken);
        }
        // The clock moves only if the order is taken.
        let now_ms = self.now_ms.max(at_ms);
        match order {
            RestingOrder::Bid(bid) => {
                self.check_new(bid.id)?;
                check_gpus(bid.gpus)?;
                check_price(bid.price)?;
                check_duration(bid.duration_ms)?;
                check_requirements(&bid.requires)?;
                let slot = BidSlot {
                    id: bid.id,
                    owner: bid.owner,
                    gpus: bid.gpus,
                    duration_ms: bid.duration_ms,
                    excluded_hosts: bid.excluded_hosts,
                    requires: bid.requires,
                };
                debug_assert!(
                    bid.priority == Priority::Interruptible || self.ask_for(&slot, bid.price, now_ms).is_none(),
                    "restored bid {} could trade with a resting ask",
                    bid.id
                );
                let key = BidKey { price: Reverse(bid.price), seq: bid.seq };
                if self.bid_side(bid.priority).contains_key(&key) {
                    return Err(RejectReason::SequenceTaken);
                }
                self.next_seq = self.next_seq.max(bid.seq.saturating_add(1));
                self.rest_bid(slot, bid.priority, bid.price, bid.seq);
            }
            RestingOrder::Ask(ask) => {
                self.check_new(ask.id)?;
                check_gpus(ask.gpus)?;
                if ask.remaining_gpus == 0 {
                    return Err(RejectReason::ZeroGpus);
                }
                if ask.remaining_gpus > ask.gpus {
                    return Err(RejectReason::TooManyGpus);
                }
                check_price(ask.price)?;
                check_interruptible_price(ask.interruptible_price, ask.price)?;
                check_uptime(ask.grade.uptime_7d_ppm)?;
                if ask.interruptible_gpus != 0 {
                    return Err(RejectReason::GpusBelowInterruptible);
                }
                let slot = AskSlot {
                    id: ask.id,
                    owner: ask.owner,
                    host: ask.host,
                    gpus: ask.gpus,
                    remaining_gpus: ask.remaining_gpus,
                    available_until_ms: ask.available_until_ms,
                    grade: ask.grade,
                    interruptible_price: ask.interruptible_price,
                    interruptible_gpus: 0,
                };
                debug_assert!(
                    !self.bids.iter().any(|(key, bid)| fits(
                        &slot,
                        slot.remaining_gpus,
                        ask.price,
                        bid,
                        key.price.0,
                        now_ms
                    )),
                    "restored ask {} could trade with a resting bid",
                    ask.id
                );
                let key = AskKey { price: ask.price, seq: ask.seq };
                let interruptible_taken = ask
                    .interruptible_price
                    .is_some_and(|price| self.interruptible_asks.contains_key(&AskKey { price, seq: ask.seq }));
                if self.asks.contains_key(&key) || interruptible_taken {
                    return Err(RejectReason::SequenceTaken);
                }
                self.next_seq = self.next_seq.max(ask.seq.saturating_add(1));
                self.rest_ask(slot, ask.price, ask.seq);
            }
        }
        self.now_ms = now_ms;
        Ok(())
    }

    /// After the asks are restored: puts a lease back on its resting ask, without
    /// matching, so that it holds its GPUs and can be preempted as before the restart.
    /// Moves the book's seq counter past `lease.seq`, so later leases are newer.
    ///
    /// Refuses a lease whose ask is not resting or offers no interruptible use
    /// ([`RejectReason::UnknownOrder`]), whose id is a live lease's or a resting order's
    /// ([`RejectReason::DuplicateOrderId`]), of zero GPUs ([`RejectReason::ZeroGpus`]) or
    /// price ([`RejectReason::ZeroOrNegativePrice`]), with more GPUs than the ask has idle
    /// ([`RejectReason::GpusBelowInterruptible`]), or with the `seq` of another lease of
    /// the ask ([`RejectReason::SequenceTaken`]); a refusal changes nothing.
    pub fn restore_lease(&mut self, lease: InterruptibleLease) -> Result<(), RejectReason> {
        let Some(&Loc::Ask(_, at)) = self.index.get(&key_of(lease.ask_id)) else {
            return Err(RejectReason::UnknownOrder);
        };
        let ask = *self.asks.slot(at);
        if ask.interruptible_price.is_none() {
            return Err(RejectReason::UnknownOrder);
        }
        if self.index.contains_key(&key_of(lease.lease_id)) || self.lease_asks.contains_key(&key_of(lease.lease_id)) {
            return Err(RejectReason::DuplicateOrderId);
        }
        check_gpus(lease.gpus)?;
        check_price(lease.price)?;
        if ask.idle_gpus() < lease.gpus {
            return Err(RejectReason::GpusBelowInterruptible);
        }
        let seq_taken = |leases: &Vec<InterruptibleLease>| leases.iter().any(|other| other.seq == lease.seq);
        if lease.seq == u64::MAX || self.leases.get(&key_of(ask.id)).is_some_and(seq_taken) {
            return Err(RejectReason::SequenceTaken);
        }
        self.next_seq = self.next_seq.max(lease.seq + 1);
        self.asks.slot_mut(at).interruptible_gpus += lease.gpus;
        self.add_lease(lease);
        Ok(())
    }

    /// The book's clock: the latest `at_ms` it has seen, or `None` before any.
    pub fn now_ms(&self) -> Option<i64> {
        (self.now_ms != i64::MIN).then_some(self.now_ms)
    }

    /// Highest resting on-demand bid price.
    pub fn best_bid(&self) -> Option<Price> {
        self.bids.first_key_value().map(|(key, _)| key.price.0)
    }

    /// Lowest resting ask price (on demand).
    pub fn best_ask(&self) -> Option<Price> {
        self.asks.first_key_value().map(|(key, _)| key.price)
    }

    /// Highest resting interruptible bid price.
    pub fn best_interruptible_bid(&self) -> Option<Price> {
        self.interruptible_bids.first_key_value().map(|(key, _)| key.price.0)
    }

    /// Lowest interruptible price among asks with idle GPUs. Walks past asks whose GPUs
    /// are all in use.
    pub fn best_interruptible_ask(&self) -> Option<Price> {
        self.interruptible_asks.iter().find(|&(_, &at)| self.asks.slot(at).idle_gpus() > 0).map(|(key, _)| key.price)
    }

    /// Up to `levels_max` price levels per side, best first. Because bids need all their
    /// GPUs on one host, a level's total is a guide, not a promise of fillable size.
    pub fn depth(&self, levels_max: usize) -> Depth {
        let idle = self
            .interruptible_asks
            .iter()
            .map(|(key, &at)| (key.price, self.asks.slot(at).idle_gpus()))
            .filter(|&(_, gpus)| gpus > 0);
        Depth {
            bids: levels(self.bids.iter().map(|(key, bid)| (key.price.0, bid.gpus)), levels_max),
            asks: levels(self.asks.iter().map(|(key, ask)| (key.price, ask.remaining_gpus)), levels_max),
            interruptible_bids: levels(
                self.interruptible_bids.iter().map(|(key, bid)| (key.price.0, bid.gpus)),
                levels_max,
            ),
            interruptible_asks: levels(idle, levels_max),
        }
    }

    /// The resting order with this id, if any.
    pub fn order(&self, id: OrderId) -> Option<RestingOrder> {
        match *self.index.get(&key_of(id))? {
            Loc::Bid(priority, key, at) => {
                Some(RestingOrder::Bid(Self::bid_view(key, self.bid_side(priority).slot(at), priority)))
            }
            Loc::Ask(key, at) => Some(RestingOrder::Ask(Self::ask_view(key, self.asks.slot(at)))),
        }
    }

    /// Resting bids: the on-demand ones in priority order (highest price, then earliest),
    /// then the interruptible ones in theirs.
    pub fn bids(&self) -> impl Iterator<Item = RestingBid> + '_ {
        let on_demand = self.bids.iter().map(|(key, bid)| Self::bid_view(*key, bid, Priority::OnDemand));
        let interruptible =
            self.interruptible_bids.iter().map(|(key, bid)| Self::bid_view(*key, bid, Priority::Interruptible));
        on_demand.chain(interruptible)
    }

    /// Resting asks in priority order (lowest price, then earliest).
    pub fn asks(&self) -> impl Iterator<Item = RestingAsk> + '_ {
        self.asks.iter().map(|(key, ask)| Self::ask_view(*key, ask))
    }

    /// Every live interruptible lease, in no particular order.
    pub fn leases(&self) -> impl Iterator<Item = InterruptibleLease> + '_ {
        self.leases.values().flat_map(|leases| leases.iter().copied())
    }

    /// The live leases on ask `ask_id`, oldest (lowest seq) first; empty if it has none or
    /// does not rest.
    pub fn leases_of(&self, ask_id: OrderId) -> Vec<InterruptibleLease> {
        self.leases.get(&key_of(ask_id)).cloned().unwrap_or_default()
    }

    /// Number of resting orders, both sides (leases are not orders).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no order rests.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Why the resting bid `bid_id` has not traded, judged at the book's clock; empty if
    /// `bid_id` is not a resting bid. Either one of [`UnfilledReason::NoAsks`],
    /// [`UnfilledReason::OnlyOwnAsks`], [`UnfilledReason::OnlyExcludedHosts`],
    /// [`UnfilledReason::NoInterruptibleAsks`], [`UnfilledReason::NoSingleAskFits`] alone,
    /// or one or more of price, size, duration, verification and reliability, in that
    /// order. Each of those is judged over all asks of other owners (on hosts the bid does
    /// not exclude) on its own: it is a reason when no such ask meets that one condition,
    /// so the buyer learns which limit to move, and [`UnfilledReason::NoSingleAskFits`]
    /// says that each is met by some ask but no ask meets all. For an interruptible bid,
    /// only asks that offer interruptible use count, at their interruptible price and with
    /// their idle GPUs. Scans the asks in price order until, for each of size, duration and
    /// the bid's requirements, some ask meeting it has been seen (all of them if not).
    pub fn why_unfilled(&self, bid_id: OrderId) -> Vec<UnfilledReason> {
        let Some(RestingOrder::Bid(bid)) = self.order(bid_id) else {
            return Vec::new();
        };
        if self.asks.is_empty() {
            return vec![UnfilledReason::NoAsks];
        }
        let survey = match bid.priority {
            Priority::OnDemand => {
                Survey::of(&bid, self.now_ms, self.asks.iter().map(|(key, ask)| (key.price, ask.remaining_gpus, ask)))
            }
            Priority::Interruptible => Survey::of(
                &bid,
                self.now_ms,
                self.interruptible_asks.iter().map(|(key, &at)| {
                    let ask = self.asks.slot(at);
                    (key.price, ask.idle_gpus(), ask)
                }),
            ),
        };
        match survey {
            Some(survey) => survey.reasons(&bid, self.now_ms),
            None => vec![self.no_usable_ask(&bid)],
        }
    }

    /// Why no ask at all counted for `bid`: all are its owner's, all others are on hosts
    /// it excludes, or (an interruptible bid) none of the rest offers interruptible use.
    fn no_usable_ask(&self, bid: &RestingBid) -> UnfilledReason {
        let mut other_owners = false;
        for (_, ask) in self.asks.iter().filter(|(_, ask)| ask.owner != bid.owner) {
            if !bid.excluded_hosts.contains(ask.host) {
                debug_assert_eq!(bid.priority, Priority::Interruptible, "an on-demand bid could use {}", ask.id);
                return UnfilledReason::NoInterruptibleAsks;
            }
            other_owners = true;
        }
        if other_owners { UnfilledReason::OnlyExcludedHosts } else { UnfilledReason::OnlyOwnAsks }
    }

    /// Panics if the book's internal structures disagree, if a resting bid and a resting
    /// ask could trade at the book's clock (an on-demand bid with the ask's remaining GPUs,
    /// those in interruptible use included; an interruptible bid with its idle ones), or if
    /// the leases do not add up: per ask, its leases hold `interruptible_gpus <=
    /// remaining_gpus`, every lease is on a resting ask, and lease ids are unique. Costs
    /// O(bids x asks): for tests and debug checks, not for every command in production.
    pub fn check_invariants(&self) {
        assert_eq!(self.index.len(), self.bids.len() + self.interruptible_bids.len() + self.asks.len());
        let expiries: std::collections::BTreeSet<Expiry> = self.expiries.iter().map(|e| e.0).collect();
        self.bids.check();
        self.interruptible_bids.check();
        self.asks.check();
        for priority in [Priority::OnDemand, Priority::Interruptible] {
            let side = self.bid_side(priority);
            for (key, bid) in side.iter() {
                assert!(key.seq < self.next_seq);
                assert!(key.price.0.micros() > 0 && bid.gpus > 0 && bid.duration_ms > 0);
                assert!(
                    matches!(self.index.get(&key_of(bid.id)), Some(Loc::Bid(p, k, at)) if *p == priority && k == key && side.slot(*at).id == bid.id)
                );
                assert!(!self.lease_asks.contains_key(&key_of(bid.id)), "bid {} shares a lease's id", bid.id);
            }
        }
        let mut interruptible_asks = 0;
        let mut leases_seen = 0;
        for (key, ask) in self.asks.iter() {
            assert!(key.seq < self.next_seq);
            assert!(key.price.micros() > 0);
            assert!(ask.remaining_gpus > 0 && ask.remaining_gpus <= ask.gpus);
            assert!(
                matches!(self.index.get(&key_of(ask.id)), Some(Loc::Ask(k, at)) if k == key && self.asks.slot(*at).id == ask.id)
            );
            let id = key_of(ask.id);
            assert!(expiries.contains(&Expiry {
                until_ms: ask.available_until_ms,
                seq: key.seq,
                price: key.price,
                id
            }));
            assert!(!self.lease_asks.contains_key(&id), "ask {} shares a lease's id", ask.id);
            if let Some(price) = ask.interruptible_price {
                assert!(price.micros() > 0 && price < key.price);
                let at = self.interruptible_asks.get(&AskKey { price, seq: key.seq });
                assert!(at.is_some_and(|&at| self.asks.slot(at).id == ask.id));
                interruptible_asks += 1;
            }
            let leases = self.leases.get(&id).map_or(&[][..], Vec::as_slice);
            assert!(ask.interruptible_gpus == 0 || ask.interruptible_price.is_some());
            assert_eq!(leases.iter().map(|lease| lease.gpus).sum::<u32>(), ask.interruptible_gpus);
            assert!(ask.interruptible_gpus <= ask.remaining_gpus, "ask {} holds more leases than GPUs", ask.id);
            assert!(leases.windows(2).all(|pair| pair[0].seq < pair[1].seq), "leases out of seq order");
            for lease in leases {
                assert!(lease.gpus > 0 && lease.price.micros() > 0 && lease.seq < self.next_seq);
                assert_eq!(lease.ask_id, ask.id);
                assert_eq!(self.lease_asks.get(&key_of(lease.lease_id)), Some(&ask.id));
                assert!(!self.index.contains_key(&key_of(lease.lease_id)));
            }
            leases_seen += leases.len();
            for (bid_key, bid) in self.bids.iter() {
                assert!(
                    !fits(ask, ask.remaining_gpus, key.price, bid, bid_key.price.0, self.now_ms),
                    "book crossed: bid {} could trade with ask {}",
                    bid.id,
                    ask.id
                );
            }
            if let Some(price) = ask.interruptible_price {
                for (bid_key, bid) in self.interruptible_bids.iter() {
                    assert!(
                        !fits(ask, ask.idle_gpus(), price, bid, bid_key.price.0, self.now_ms),
                        "book crossed: interruptible bid {} could lease from ask {}",
                        bid.id,
                        ask.id
                    );
                }
            }
        }
        assert_eq!(interruptible_asks, self.interruptible_asks.len());
        // Every lease was seen under a resting ask, each once: none is left on an ask
        // that is gone, and no two share an id (they would share an entry here).
        assert!(self.leases.values().all(|leases| !leases.is_empty()));
        assert_eq!(leases_seen, self.leases.values().map(Vec::len).sum::<usize>());
        assert_eq!(leases_seen, self.lease_asks.len());
    }

    fn bid_side(&self, priority: Priority) -> &Side<BidKey, BidSlot> {
        match priority {
            Priority::OnDemand => &self.bids,
            Priority::Interruptible => &self.interruptible_bids,
        }
    }

    fn bid_side_mut(&mut self, priority: Priority) -> &mut Side<BidKey, BidSlot> {
        match priority {
            Priority::OnDemand => &mut self.bids,
            Priority::Interruptible => &mut self.interruptible_bids,
        }
    }

    fn bid_view(key: BidKey, bid: &BidSlot, priority: Priority) -> RestingBid {
        RestingBid {
            id: bid.id,
            seq: key.seq,
            owner: bid.owner,
            gpus: bid.gpus,
            duration_ms: bid.duration_ms,
            price: key.price.0,
            excluded_hosts: bid.excluded_hosts,
            requires: bid.requires,
            priority,
        }
    }

    fn ask_view(key: AskKey, ask: &AskSlot) -> RestingAsk {
        RestingAsk {
            id: ask.id,
            seq: key.seq,
            owner: ask.owner,
            host: ask.host,
            gpus: ask.gpus,
            remaining_gpus: ask.remaining_gpus,
            available_until_ms: ask.available_until_ms,
            price: key.price,
            grade: ask.grade,
            interruptible_price: ask.interruptible_price,
            interruptible_gpus: ask.interruptible_gpus,
        }
    }

    fn advance_clock(&mut self, at_ms: i64) -> i64 {
        self.now_ms = self.now_ms.max(at_ms);
        self.now_ms
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn check_new(&self, id: OrderId) -> Result<(), RejectReason> {
        let id = key_of(id);
        if self.index.contains_key(&id) || (!self.lease_asks.is_empty() && self.lease_asks.contains_key(&id)) {
            Err(RejectReason::DuplicateOrderId)
        } else if self.index.len() >= self.orders_max {
            Err(RejectReason::BookFull)
        } else {
            Ok(())
        }
    }

    fn expire(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        while let Some(&Reverse(expiry)) = self.expiries.peek() {
            if expiry.until_ms > now_ms {
                break;
            }
            self.expiries.pop();
            if !self.expiry_is_live(&expiry) {
                continue;
            }
            let ask = self.unrest_ask(AskKey { price: expiry.price, seq: expiry.seq });
            self.forget_leases(&ask);
            out.push(Event::Expired { order_id: ask.id, gpus_released: ask.remaining_gpus });
        }
    }

    /// Whether the ask this entry was pushed for still rests under the same key and end
    /// time; if not, it traded out, was cancelled, or was amended (and pushed anew).
    fn expiry_is_live(&self, expiry: &Expiry) -> bool {
        match self.index.get(&expiry.id) {
            Some(&Loc::Ask(key, at)) => {
                key.seq == expiry.seq
                    && key.price == expiry.price
                    && self.asks.slot(at).available_until_ms == expiry.until_ms
            }
            _ => false,
        }
    }

    fn place_bid(&mut self, bid: Bid, now_ms: i64, out: &mut Vec<Event>) {
        let valid = self
            .check_new(bid.id)
            .and_then(|()| check_gpus(bid.gpus))
            .and_then(|()| check_price(bid.price))
            .and_then(|()| check_duration(bid.duration_ms))
            .and_then(|()| check_requirements(&bid.requires));
        if let Err(reason) = valid {
            out.push(Event::Rejected { order_id: bid.id, reason });
            return;
        }
        out.push(Event::Accepted { order_id: bid.id });
        let slot = BidSlot {
            id: bid.id,
            owner: bid.owner,
            gpus: bid.gpus,
            duration_ms: bid.duration_ms,
            excluded_hosts: bid.excluded_hosts,
            requires: bid.requires,
        };
        if self.match_bid(&slot, bid.price, bid.priority, now_ms, out) {
            return;
        }
        match bid.tif {
            Tif::Gtc => {
                let seq = self.take_seq();
                self.rest_bid(slot, bid.priority, bid.price, seq);
            }
            Tif::Ioc => out.push(Event::Cancelled { order_id: bid.id, gpus_released: bid.gpus }),
        }
    }

    fn place_ask(&mut self, ask: Ask, now_ms: i64, out: &mut Vec<Event>) {
        let valid = self
            .check_new(ask.id)
            .and_then(|()| check_gpus(ask.gpus))
            .and_then(|()| check_price(ask.price))
            .and_then(|()| check_interruptible_price(ask.interruptible_price, ask.price))
            .and_then(|()| check_available(ask.available_until_ms, now_ms))
            .and_then(|()| check_uptime(ask.grade.uptime_7d_ppm));
        if let Err(reason) = valid {
            out.push(Event::Rejected { order_id: ask.id, reason });
            return;
        }
        out.push(Event::Accepted { order_id: ask.id });
        let mut slot = AskSlot {
            id: ask.id,
            owner: ask.owner,
            host: ask.host,
            gpus: ask.gpus,
            remaining_gpus: ask.gpus,
            available_until_ms: ask.available_until_ms,
            grade: ask.grade,
            interruptible_price: ask.interruptible_price,
            interruptible_gpus: 0,
        };
        self.match_ask(&mut slot, ask.price, now_ms, out);
        if slot.remaining_gpus == 0 {
            self.forget_leases(&slot);
            return;
        }
        match ask.tif {
            Tif::Gtc => {
                let seq = self.take_seq();
                self.rest_ask(slot, ask.price, seq);
            }
            Tif::Ioc => {
                // The leases it made run on outside the book, like those of any ask that
                // leaves it.
                self.forget_leases(&slot);
                out.push(Event::Cancelled { order_id: ask.id, gpus_released: slot.remaining_gpus });
            }
        }
    }

    /// The best ask (lowest price, then earliest) that can hold all of `bid` on demand.
    /// Asks that cannot are passed over and keep their place.
    fn ask_for(&self, bid: &BidSlot, bid_price: Price, now_ms: i64) -> Option<AskKey> {
        // `iter().take_while` rather than `range`: the best asks are first, and a range
        // would first search the tree for its far end.
        self.asks
            .iter()
            .take_while(|(key, _)| key.price <= bid_price)
            .find(|(key, ask)| fits(ask, ask.remaining_gpus, key.price, bid, bid_price, now_ms))
            .map(|(key, _)| *key)
    }

    /// The best ask (lowest interruptible price, then earliest) whose idle GPUs can hold
    /// all of `bid`: its interruptible price and slot.
    fn interruptible_ask_for(&self, bid: &BidSlot, bid_price: Price, now_ms: i64) -> Option<(Price, u32)> {
        self.interruptible_asks
            .iter()
            .take_while(|(key, _)| key.price <= bid_price)
            .find(|&(key, &at)| {
                let ask = self.asks.slot(at);
                fits(ask, ask.idle_gpus(), key.price, bid, bid_price, now_ms)
            })
            .map(|(key, &at)| (key.price, at))
    }

    /// Trades `bid` (not resting) with the best ask that fits it, if any. Returns whether
    /// it traded.
    fn match_bid(
        &mut self,
        bid: &BidSlot,
        bid_price: Price,
        priority: Priority,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) -> bool {
        match priority {
            Priority::OnDemand => {
                let Some(key) = self.ask_for(bid, bid_price, now_ms) else {
                    return false;
                };
                let at = self.asks.at(&key).expect("ask found by the scan is resting");
                // Changed on a copy and written back: the ask keeps its key and slot.
                let mut ask = *self.asks.slot(at);
                let preempted = self.sell(&mut ask, key.price, bid, bid_price, key.price, now_ms, out);
                if ask.remaining_gpus == 0 {
                    self.unrest_ask(key);
                    self.forget_leases(&ask);
                } else {
                    if preempted {
                        // Whole leases went: what the trade did not need is idle again.
                        self.fill_interruptible_bids(&mut ask, now_ms, out);
                    }
                    *self.asks.slot_mut(at) = ask;
                }
            }
            Priority::Interruptible => {
                let Some((price, at)) = self.interruptible_ask_for(bid, bid_price, now_ms) else {
                    return false;
                };
                let mut ask = *self.asks.slot(at);
                self.lease(&mut ask, price, bid, bid_price, now_ms, out);
                *self.asks.slot_mut(at) = ask;
            }
        }
        true
    }

    /// Matches `ask` (not resting) as an incoming ask: first the on-demand bids it can
    /// hold, then interruptible bids with the GPUs it has idle.
    fn match_ask(&mut self, ask: &mut AskSlot, ask_price: Price, now_ms: i64, out: &mut Vec<Event>) {
        self.fill_on_demand_bids(ask, ask_price, now_ms, out);
        if ask.remaining_gpus > 0 {
            self.fill_interruptible_bids(ask, now_ms, out);
        }
    }

    /// Fills resting on-demand bids from `ask` (not resting) in priority order while it
    /// has GPUs, passing over bids it cannot hold; they keep their place. GPUs in
    /// interruptible use count as the ask's: leases are preempted as the trades need.
    fn fill_on_demand_bids(&mut self, ask: &mut AskSlot, ask_price: Price, now_ms: i64, out: &mut Vec<Event>) {
        let mut filled = std::mem::take(&mut self.scratch);
        bids_filling(&self.bids, ask, ask.remaining_gpus, ask_price, now_ms, &mut filled);
        for key in &filled {
            let bid = self.bids.remove(key).expect("bid found by the scan is resting");
            self.index.remove(&key_of(bid.id));
            self.sell(ask, ask_price, &bid, key.price.0, key.price.0, now_ms, out);
        }
        self.scratch = filled;
    }

    /// Fills resting interruptible bids from the idle GPUs of `ask` (resting or not, but
    /// changed here only through this copy) in priority order, at its interruptible price.
    fn fill_interruptible_bids(&mut self, ask: &mut AskSlot, now_ms: i64, out: &mut Vec<Event>) {
        let Some(price) = ask.interruptible_price else {
            return;
        };
        if ask.idle_gpus() == 0 || self.interruptible_bids.is_empty() {
            return;
        }
        let mut filled = std::mem::take(&mut self.scratch);
        bids_filling(&self.interruptible_bids, ask, ask.idle_gpus(), price, now_ms, &mut filled);
        for key in &filled {
            let bid = self.interruptible_bids.remove(key).expect("bid found by the scan is resting");
            self.index.remove(&key_of(bid.id));
            self.lease(ask, price, &bid, key.price.0, now_ms, out);
        }
        self.scratch = filled;
    }

    /// Sells `bid` on demand from `ask` at `price`, first preempting the ask's leases if
    /// it has too few idle GPUs. Returns whether it preempted.
    #[allow(clippy::too_many_arguments)]
    fn sell(
        &mut self,
        ask: &mut AskSlot,
        ask_price: Price,
        bid: &BidSlot,
        bid_price: Price,
        price: Price,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) -> bool {
        // These guard money: never sell GPUs a host does not have, never trade with oneself,
        // never charge a buyer above their limit or a provider below theirs.
        assert!(ask.remaining_gpus >= bid.gpus, "ask oversold");
        assert!(ask.owner != bid.owner, "self-trade");
        assert!(price <= bid_price, "trade above the bid's limit");
        assert!(price >= ask_price, "trade below the ask's limit");
        let preempts = ask.idle_gpus() < bid.gpus;
        if preempts {
            self.preempt(ask, bid.gpus, bid.id, now_ms, out);
        }
        ask.remaining_gpus -= bid.gpus;
        assert!(ask.interruptible_gpus <= ask.remaining_gpus, "GPUs sold and leased at once");
        let seq = self.take_seq();
        out.push(trade(bid, ask, price, Priority::OnDemand, seq, now_ms));
        preempts
    }

    /// Ends leases of `ask` until it has `gpus_needed` idle: cheapest lease first (the
    /// buyer who offered least loses), then the newest (the one that has run least), each
    /// lease whole.
    fn preempt(&mut self, ask: &mut AskSlot, gpus_needed: u32, by_bid: OrderId, now_ms: i64, out: &mut Vec<Event>) {
        let leases = self.leases.get_mut(&key_of(ask.id)).expect("an ask with GPUs in interruptible use has leases");
        while ask.idle_gpus() < gpus_needed {
            let (at, _) = leases
                .iter()
                .enumerate()
                .min_by_key(|(_, lease)| (lease.price, Reverse(lease.seq)))
                .expect("GPUs in interruptible use belong to some lease");
            let lease = leases.remove(at);
            ask.interruptible_gpus -= lease.gpus;
            self.lease_asks.remove(&key_of(lease.lease_id));
            out.push(Event::Preempted {
                lease_id: lease.lease_id,
                ask_id: ask.id,
                buyer: lease.buyer,
                host: ask.host,
                gpus: lease.gpus,
                price: lease.price,
                by_bid,
                at_ms: now_ms,
            });
        }
        if leases.is_empty() {
            self.leases.remove(&key_of(ask.id));
        }
    }

    /// Leases `bid` the idle GPUs it needs of `ask` at the ask's interruptible `price`.
    fn lease(
        &mut self,
        ask: &mut AskSlot,
        price: Price,
        bid: &BidSlot,
        bid_price: Price,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) {
        // As for a sale: never lease GPUs that are not idle, never to oneself, never above
        // the bid's limit, and only at the price the provider set for interruptible use.
        assert!(ask.idle_gpus() >= bid.gpus, "lease of GPUs that are not idle");
        assert!(ask.owner != bid.owner, "self-trade");
        assert!(price <= bid_price, "lease above the bid's limit");
        assert_eq!(ask.interruptible_price, Some(price), "lease at a price the ask did not set");
        let seq = self.take_seq();
        ask.interruptible_gpus += bid.gpus;
        self.add_lease(InterruptibleLease {
            lease_id: bid.id,
            ask_id: ask.id,
            buyer: bid.owner,
            gpus: bid.gpus,
            price,
            seq,
        });
        out.push(trade(bid, ask, price, Priority::Interruptible, seq, now_ms));
    }

    /// Records a lease (its GPUs already counted in its ask's `interruptible_gpus`).
    fn add_lease(&mut self, lease: InterruptibleLease) {
        let previous = self.lease_asks.insert(key_of(lease.lease_id), lease.ask_id);
        assert!(previous.is_none(), "two leases share an id");
        let leases = self.leases.entry(key_of(lease.ask_id)).or_default();
        let at = leases.partition_point(|other| other.seq < lease.seq);
        leases.insert(at, lease);
    }

    /// Forgets the leases of `ask`, which leaves the book: they run on outside it.
    fn forget_leases(&mut self, ask: &AskSlot) {
        if ask.interruptible_gpus == 0 {
            debug_assert!(!self.leases.contains_key(&key_of(ask.id)));
            return;
        }
        let leases = self.leases.remove(&key_of(ask.id)).expect("an ask with GPUs in interruptible use has leases");
        for lease in leases {
            self.lease_asks.remove(&key_of(lease.lease_id));
        }
    }

    fn rest_bid(&mut self, bid: BidSlot, priority: Priority, price: Price, seq: u64) {
        let key = BidKey { price: Reverse(price), seq };
        let at = self.bid_side_mut(priority).insert(key, bid);
        self.index.insert(key_of(bid.id), Loc::Bid(priority, key, at));
    }

    fn rest_ask(&mut self, ask: AskSlot, price: Price, seq: u64) {
        let key = AskKey { price, seq };
        let at = self.asks.insert(key, ask);
        self.index.insert(key_of(ask.id), Loc::Ask(key, at));
        if let Some(price) = ask.interruptible_price {
            let previous = self.interruptible_asks.insert(AskKey { price, seq }, at);
            assert!(previous.is_none(), "two asks share one interruptible priority key");
        }
        if self.expiries.len() >= 2 * self.asks.len() + EXPIRIES_STALE_MIN {
            // Mostly stale: rebuild from the resting asks, O(n) once per n pushes.
            let mut expiries = std::mem::take(&mut self.expiries);
            expiries.retain(|Reverse(expiry)| self.expiry_is_live(expiry));
            self.expiries = expiries;
        }
        let id = key_of(ask.id);
        self.expiries.push(Reverse(Expiry { until_ms: ask.available_until_ms, seq, price, id }));
    }

    /// Takes the ask under `key` out of the book's structures, its leases left as they are
    /// (the caller forgets them, or rests the ask again).
    fn unrest_ask(&mut self, key: AskKey) -> AskSlot {
        let ask = self.asks.remove(&key).expect("the ask rests under this key");
        self.index.remove(&key_of(ask.id));
        if let Some(price) = ask.interruptible_price {
            self.interruptible_asks.remove(&AskKey { price, seq: key.seq });
        }
        ask
    }

    fn cancel(&mut self, order_id: OrderId, owner: UserId, out: &mut Vec<Event>) {
        let reject = |reason| Event::Rejected { order_id, reason };
        let Some(&loc) = self.index.get(&key_of(order_id)) else {
            out.push(reject(RejectReason::UnknownOrder));
            return;
        };
        let gpus_released = match loc {
            Loc::Bid(priority, key, at) => {
                let side = self.bid_side_mut(priority);
                let bid = side.slot(at);
                if bid.owner != owner {
                    out.push(reject(RejectReason::NotOwner));
                    return;
                }
                let gpus = bid.gpus;
                side.remove(&key);
                self.index.remove(&key_of(order_id));
                gpus
            }
            Loc::Ask(key, at) => {
                if self.asks.slot(at).owner != owner {
                    out.push(reject(RejectReason::NotOwner));
                    return;
                }
                let ask = self.unrest_ask(key);
                self.forget_leases(&ask);
                ask.remaining_gpus
            }
        };
        out.push(Event::Cancelled { order_id, gpus_released });
    }

    fn amend(
        &mut self,
        order_id: OrderId,
        owner: UserId,
        new_price: Option<Price>,
        new_gpus: Option<u32>,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) {
        let reject = |reason| Event::Rejected { order_id, reason };
        let Some(&loc) = self.index.get(&key_of(order_id)) else {
            out.push(reject(RejectReason::UnknownOrder));
            return;
        };
        match loc {
            Loc::Bid(priority, key, at) => {
                let bid = *self.bid_side(priority).slot(at);
                if bid.owner != owner {
                    out.push(reject(RejectReason::NotOwner));
                    return;
                }
                if let Err(reason) = check_amendment(new_price, new_gpus) {
                    out.push(reject(reason));
                    return;
                }
                let price = new_price.unwrap_or(key.price.0);
                let gpus = new_gpus.unwrap_or(bid.gpus);
                let keeps_place = price == key.price.0 && gpus <= bid.gpus;
                self.bid_side_mut(priority).remove(&key);
                self.index.remove(&key_of(order_id));
                out.push(Event::Amended { order_id, price, gpus, remaining_gpus: gpus });
                let bid = BidSlot { gpus, ..bid };
                if !self.match_bid(&bid, price, priority, now_ms, out) {
                    let seq = if keeps_place { key.seq } else { self.take_seq() };
                    self.rest_bid(bid, priority, price, seq);
                }
            }
            Loc::Ask(key, at) => {
                let ask = *self.asks.slot(at);
                if ask.owner != owner {
                    out.push(reject(RejectReason::NotOwner));
                    return;
                }
                if let Err(reason) = check_amendment(new_price, new_gpus) {
                    out.push(reject(reason));
                    return;
                }
                let sold_gpus = ask.gpus - ask.remaining_gpus;
                let price = new_price.unwrap_or(key.price);
                let gpus = new_gpus.unwrap_or(ask.gpus);
                if gpus <= sold_gpus {
                    out.push(reject(RejectReason::GpusBelowFilled));
                    return;
                }
                if gpus - sold_gpus < ask.interruptible_gpus {
                    out.push(reject(RejectReason::GpusBelowInterruptible));
                    return;
                }
                if let Err(reason) = check_interruptible_price(ask.interruptible_price, price) {
                    out.push(reject(reason));
                    return;
                }
                let keeps_place = price == key.price && gpus <= ask.gpus;
                self.unrest_ask(key);
                let mut ask = AskSlot { gpus, remaining_gpus: gpus - sold_gpus, ..ask };
                out.push(Event::Amended { order_id, price, gpus, remaining_gpus: ask.remaining_gpus });
                self.match_ask(&mut ask, price, now_ms, out);
                if ask.remaining_gpus > 0 {
                    let seq = if keeps_place { key.seq } else { self.take_seq() };
                    self.rest_ask(ask, price, seq);
                } else {
                    self.forget_leases(&ask);
                }
            }
        }
    }

    fn regrade(&mut self, order_id: OrderId, grade: AskGrade, now_ms: i64, out: &mut Vec<Event>) {
        let reject = |reason| Event::Rejected { order_id, reason };
        let (key, at) = match self.index.get(&key_of(order_id)) {
            Some(&Loc::Ask(key, at)) => (key, at),
            Some(Loc::Bid(..)) => {
                out.push(reject(RejectReason::NotAnAsk));
                return;
            }
            None => {
                out.push(reject(RejectReason::UnknownOrder));
                return;
            }
        };
        if let Err(reason) = check_uptime(grade.uptime_7d_ppm) {
            out.push(reject(reason));
            return;
        }
        // Matched as if incoming, like an amendment, but it keeps its seq: a provider does not
        // lose its place because the exchange learned more about its GPUs. A grade no better
        // in either part admits no bid the old one did not, so the scan then finds nothing.
        let mut ask = AskSlot { grade, ..*self.asks.slot(at) };
        self.unrest_ask(key);
        out.push(Event::Regraded { order_id, grade });
        self.match_ask(&mut ask, key.price, now_ms, out);
        if ask.remaining_gpus > 0 {
            self.rest_ask(ask, key.price, key.seq);
        } else {
            self.forget_leases(&ask);
        }
    }

    fn end_lease(&mut self, ask_id: OrderId, lease_id: OrderId, now_ms: i64, out: &mut Vec<Event>) {
        if self.lease_asks.get(&key_of(lease_id)) != Some(&ask_id) {
            out.push(Event::Rejected { order_id: lease_id, reason: RejectReason::UnknownLease });
            return;
        }
        self.lease_asks.remove(&key_of(lease_id));
        let Some(&Loc::Ask(_, at)) = self.index.get(&key_of(ask_id)) else {
            panic!("lease {lease_id} is on ask {ask_id}, which does not rest");
        };
        let leases = self.leases.get_mut(&key_of(ask_id)).expect("a lease's ask lists it");
        let lease_at = leases.iter().position(|lease| lease.lease_id == lease_id).expect("a lease's ask lists it");
        let lease = leases.remove(lease_at);
        if leases.is_empty() {
            self.leases.remove(&key_of(ask_id));
        }
        let mut ask = *self.asks.slot(at);
        ask.interruptible_gpus -= lease.gpus;
        out.push(Event::LeaseEnded { ask_id, lease_id, gpus_released: lease.gpus });
        self.fill_interruptible_bids(&mut ask, now_ms, out);
        *self.asks.slot_mut(at) = ask;
    }
}
