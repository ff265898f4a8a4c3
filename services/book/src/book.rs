//! The order book of one market and its matching rules.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::id_hash::IdBuildHasher;
use crate::side::Side;
use crate::{
    Ask, AskGrade, Bid, Command, Event, ExcludedHosts, HostId, OrderId, PPM_MAX, Price, RejectReason, Requirements,
    RestingAsk, RestingBid, RestingOrder, Tif, UnfilledReason, UserId, Verification,
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

/// Asks sort best-first: lowest price, then earliest sequence number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct AskKey {
    price: Price,
    seq: u64,
}

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
    remaining_gpus: u32,
    available_until_ms: i64,
    grade: AskGrade,
}

/// Where a resting order sits: its key in its side and its slot there.
#[derive(Clone, Copy, Debug)]
enum Loc {
    Bid(BidKey, u32),
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
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// Whether `ask` can hold all of `bid` at `now_ms`: enough GPUs left on its host, free for
/// the bid's whole duration, another owner, supply the bid admits, and prices that cross.
#[inline]
fn fits(ask: &AskSlot, ask_price: Price, bid: &BidSlot, bid_price: Price, now_ms: i64) -> bool {
    ask.remaining_gpus >= bid.gpus
        && now_ms.saturating_add(bid.duration_ms) <= ask.available_until_ms
        && ask.owner != bid.owner
        && bid.requires.admits(&ask.grade)
        && bid_price >= ask_price
        && !bid.excluded_hosts.contains(ask.host)
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

/// The order book of one market (one GPU class): a deterministic state machine.
///
/// Feed it [`Command`]s with [`Book::apply`]; it appends [`Event`]s. The same commands in
/// the same order always give the same events and the same book. See the crate docs for
/// the matching rules.
#[derive(Clone, Debug)]
pub struct Book {
    bids: Side<BidKey, BidSlot>,
    asks: Side<AskKey, AskSlot>,
    /// Soonest expiry first. Entries are not removed when an ask trades out or is
    /// cancelled (that would cost a tree operation on the hot path); `expire` skips entries
    /// whose ask is gone, and `rest_ask` compacts when stale ones pile up.
    expiries: BinaryHeap<Reverse<Expiry>>,
    index: HashMap<u128, Loc, IdBuildHasher>,
    /// Time priority: the next order to rest (or lose priority) gets this number.
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
    /// are rejected with [`RejectReason::BookFull`].
    pub fn with_orders_max(orders_max: usize) -> Book {
        Book {
            bids: Side::new(),
            asks: Side::new(),
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
            Command::Tick { .. } => {}
        }
    }

    /// Puts an order back into the book without matching it, for rebuilding a book from
    /// the database after a restart. The order keeps the `seq` it had (as read from
    /// [`Book::order`], [`Book::bids`] or [`Book::asks`]), so priority and expiry order
    /// are as before; later orders rank after every restored one. Moves the clock to
    /// `at_ms` like a command but expires nothing (the next command does, with events).
    /// With no orders to restore, set the clock with a [`Command::Tick`] at the last
    /// clock instead.
    ///
    /// Refuses what [`Book::apply`] would refuse for a new order (except an ask already
    /// past its time, which is kept so that the next command reports it Expired), an ask
    /// whose `remaining_gpus` is zero ([`RejectReason::ZeroGpus`]) or above its `gpus`
    /// ([`RejectReason::TooManyGpus`]), and a `seq` clash
    /// ([`RejectReason::SequenceTaken`]). In debug builds, panics if the order could trade
    /// with a resting order: the restored set must come from a book that was not crossed.
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
                    self.ask_for(&slot, bid.price, now_ms).is_none(),
                    "restored bid {} could trade with a resting ask",
                    bid.id
                );
                let key = BidKey { price: Reverse(bid.price), seq: bid.seq };
                if self.bids.contains_key(&key) {
                    return Err(RejectReason::SequenceTaken);
                }
                self.next_seq = self.next_seq.max(bid.seq.saturating_add(1));
                self.rest_bid(slot, bid.price, bid.seq);
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
                check_uptime(ask.grade.uptime_7d_ppm)?;
                let slot = AskSlot {
                    id: ask.id,
                    owner: ask.owner,
                    host: ask.host,
                    gpus: ask.gpus,
                    remaining_gpus: ask.remaining_gpus,
                    available_until_ms: ask.available_until_ms,
                    grade: ask.grade,
                };
                debug_assert!(
                    !self.bids.iter().any(|(key, bid)| fits(&slot, ask.price, bid, key.price.0, now_ms)),
                    "restored ask {} could trade with a resting bid",
                    ask.id
                );
                let key = AskKey { price: ask.price, seq: ask.seq };
                if self.asks.contains_key(&key) {
                    return Err(RejectReason::SequenceTaken);
                }
                self.next_seq = self.next_seq.max(ask.seq.saturating_add(1));
                self.rest_ask(slot, ask.price, ask.seq);
            }
        }
        self.now_ms = now_ms;
        Ok(())
    }

    /// The book's clock: the latest `at_ms` it has seen, or `None` before any.
    pub fn now_ms(&self) -> Option<i64> {
        (self.now_ms != i64::MIN).then_some(self.now_ms)
    }

    /// Highest resting bid price.
    pub fn best_bid(&self) -> Option<Price> {
        self.bids.first_key_value().map(|(key, _)| key.price.0)
    }

    /// Lowest resting ask price.
    pub fn best_ask(&self) -> Option<Price> {
        self.asks.first_key_value().map(|(key, _)| key.price)
    }

    /// Up to `levels_max` price levels per side, best first. Because bids need all their
    /// GPUs on one host, a level's total is a guide, not a promise of fillable size.
    pub fn depth(&self, levels_max: usize) -> Depth {
        Depth {
            bids: levels(self.bids.iter().map(|(key, bid)| (key.price.0, bid.gpus)), levels_max),
            asks: levels(self.asks.iter().map(|(key, ask)| (key.price, ask.remaining_gpus)), levels_max),
        }
    }

    /// The resting order with this id, if any.
    pub fn order(&self, id: OrderId) -> Option<RestingOrder> {
        match *self.index.get(&key_of(id))? {
            Loc::Bid(key, at) => Some(RestingOrder::Bid(Self::bid_view(key, self.bids.slot(at)))),
            Loc::Ask(key, at) => Some(RestingOrder::Ask(Self::ask_view(key, self.asks.slot(at)))),
        }
    }

    /// Resting bids in priority order (highest price, then earliest).
    pub fn bids(&self) -> impl Iterator<Item = RestingBid> + '_ {
        self.bids.iter().map(|(key, bid)| Self::bid_view(*key, bid))
    }

    /// Resting asks in priority order (lowest price, then earliest).
    pub fn asks(&self) -> impl Iterator<Item = RestingAsk> + '_ {
        self.asks.iter().map(|(key, ask)| Self::ask_view(*key, ask))
    }

    /// Number of resting orders, both sides.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no order rests.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Why the resting bid `bid_id` has not traded, judged at the book's clock; empty if
    /// `bid_id` is not a resting bid. Either one of [`UnfilledReason::NoAsks`],
    /// [`UnfilledReason::OnlyOwnAsks`], [`UnfilledReason::NoSingleAskFits`] alone, or one
    /// or more of price, size, duration, verification and reliability, in that order. Each
    /// of those is judged over all asks of other owners on its own: it is a reason when no
    /// such ask meets that one condition, so the buyer learns which limit to move, and
    /// [`UnfilledReason::NoSingleAskFits`] says that each is met by some ask but no ask meets
    /// all. Scans the asks in price order until, for each of size, duration and the bid's
    /// requirements, some ask meeting it has been seen (all of them if not).
    pub fn why_unfilled(&self, bid_id: OrderId) -> Vec<UnfilledReason> {
        let Some(RestingOrder::Bid(bid)) = self.order(bid_id) else {
            return Vec::new();
        };
        if self.asks.is_empty() {
            return vec![UnfilledReason::NoAsks];
        }
        let mut best_ask: Option<Price> = None;
        let mut largest_free = 0_u32;
        let mut latest_until_ms = i64::MIN;
        // The weakest grade there is stands in for "none seen": it is only read once some
        // ask has been, and then the maximum is at least that ask's.
        let mut best_verification = Verification::Simulated;
        let mut best_uptime_7d_ppm = 0_u32;
        let needed_until_ms = self.now_ms.saturating_add(bid.duration_ms);
        let mut only_excluded = false;
        // No requirement is the floor every grade meets.
        let min_verification = bid.requires.min_verification.unwrap_or(Verification::Simulated);
        let min_uptime_7d_ppm = bid.requires.min_uptime_7d_ppm.unwrap_or(0);
        for (key, ask) in self.asks.iter().filter(|(_, ask)| ask.owner != bid.owner) {
            if bid.excluded_hosts.contains(ask.host) {
                only_excluded = true;
                continue;
            }
            best_ask.get_or_insert(key.price);
            largest_free = largest_free.max(ask.remaining_gpus);
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
        let Some(best_ask) = best_ask else {
            return vec![if only_excluded { UnfilledReason::OnlyExcludedHosts } else { UnfilledReason::OnlyOwnAsks }];
        };
        let mut reasons = Vec::new();
        if bid.price < best_ask {
            reasons.push(UnfilledReason::PriceBelowBestAsk { best_ask });
        }
        if largest_free < bid.gpus {
            reasons.push(UnfilledReason::NoHostWithEnoughGpus { largest_free });
        }
        if latest_until_ms < self.now_ms.saturating_add(bid.duration_ms) {
            reasons.push(UnfilledReason::NoAskLongEnough {
                longest_available_ms: latest_until_ms.saturating_sub(self.now_ms),
            });
        }
        if best_verification < min_verification {
            reasons.push(UnfilledReason::VerificationBelowRequired { best_available: best_verification });
        }
        if best_uptime_7d_ppm < min_uptime_7d_ppm {
            reasons.push(UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm });
        }
        if reasons.is_empty() {
            reasons.push(UnfilledReason::NoSingleAskFits);
        }
        reasons
    }

    /// Panics if the book's internal structures disagree or if a resting bid and a
    /// resting ask could trade at the book's clock. Costs O(bids x asks): for tests and
    /// debug checks, not for every command in production.
    pub fn check_invariants(&self) {
        assert_eq!(self.index.len(), self.bids.len() + self.asks.len());
        let expiries: std::collections::BTreeSet<Expiry> = self.expiries.iter().map(|e| e.0).collect();
        self.bids.check();
        self.asks.check();
        for (key, bid) in self.bids.iter() {
            assert!(key.seq < self.next_seq);
            assert!(key.price.0.micros() > 0 && bid.gpus > 0 && bid.duration_ms > 0);
            assert!(
                matches!(self.index.get(&key_of(bid.id)), Some(Loc::Bid(k, at)) if k == key && self.bids.slot(*at).id == bid.id)
            );
        }
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
            for (bid_key, bid) in self.bids.iter() {
                assert!(
                    !fits(ask, key.price, bid, bid_key.price.0, self.now_ms),
                    "book crossed: bid {} could trade with ask {}",
                    bid.id,
                    ask.id
                );
            }
        }
    }

    fn bid_view(key: BidKey, bid: &BidSlot) -> RestingBid {
        RestingBid {
            id: bid.id,
            seq: key.seq,
            owner: bid.owner,
            gpus: bid.gpus,
            duration_ms: bid.duration_ms,
            price: key.price.0,
            excluded_hosts: bid.excluded_hosts,
            requires: bid.requires,
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
        if self.index.contains_key(&key_of(id)) {
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
            let key = AskKey { price: expiry.price, seq: expiry.seq };
            let ask = self.asks.remove(&key).expect("a live expiry names a resting ask");
            self.index.remove(&expiry.id);
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
        if self.match_bid(&slot, bid.price, now_ms, out) {
            return;
        }
        match bid.tif {
            Tif::Gtc => {
                let seq = self.take_seq();
                self.rest_bid(slot, bid.price, seq);
            }
            Tif::Ioc => out.push(Event::Cancelled { order_id: bid.id, gpus_released: bid.gpus }),
        }
    }

    fn place_ask(&mut self, ask: Ask, now_ms: i64, out: &mut Vec<Event>) {
        let valid = self
            .check_new(ask.id)
            .and_then(|()| check_gpus(ask.gpus))
            .and_then(|()| check_price(ask.price))
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
        };
        self.match_ask(&mut slot, ask.price, now_ms, out);
        if slot.remaining_gpus == 0 {
            return;
        }
        match ask.tif {
            Tif::Gtc => {
                let seq = self.take_seq();
                self.rest_ask(slot, ask.price, seq);
            }
            Tif::Ioc => out.push(Event::Cancelled { order_id: ask.id, gpus_released: slot.remaining_gpus }),
        }
    }

    /// The best ask (lowest price, then earliest) that can hold all of `bid`. Asks that
    /// cannot are passed over and keep their place.
    fn ask_for(&self, bid: &BidSlot, bid_price: Price, now_ms: i64) -> Option<AskKey> {
        // `iter().take_while` rather than `range`: the best asks are first, and a range
        // would first search the tree for its far end.
        self.asks
            .iter()
            .take_while(|(key, _)| key.price <= bid_price)
            .find(|(key, ask)| fits(ask, key.price, bid, bid_price, now_ms))
            .map(|(key, _)| *key)
    }

    /// Trades `bid` (not resting) with the best ask that fits it, if any. Returns whether
    /// it traded.
    fn match_bid(&mut self, bid: &BidSlot, bid_price: Price, now_ms: i64, out: &mut Vec<Event>) -> bool {
        let Some(key) = self.ask_for(bid, bid_price, now_ms) else {
            return false;
        };
        let ask = self.asks.get_mut(&key).expect("ask found by the scan is resting");
        // These guard money: never sell GPUs a host does not have, never trade with oneself,
        // never charge a buyer above their limit.
        assert!(ask.remaining_gpus >= bid.gpus, "ask oversold");
        assert!(ask.owner != bid.owner, "self-trade");
        assert!(key.price <= bid_price, "trade above the bid's limit");
        ask.remaining_gpus -= bid.gpus;
        let ask = *ask;
        out.push(Event::Trade {
            bid_id: bid.id,
            ask_id: ask.id,
            buyer: bid.owner,
            seller: ask.owner,
            host: ask.host,
            gpus: bid.gpus,
            price: key.price,
            duration_ms: bid.duration_ms,
            at_ms: now_ms,
        });
        if ask.remaining_gpus == 0 {
            self.asks.remove(&key);
            self.index.remove(&key_of(ask.id));
        }
        true
    }

    /// Fills resting bids from `ask` (not resting) in priority order while it has GPUs,
    /// passing over bids it cannot hold; they keep their place.
    fn match_ask(&mut self, ask: &mut AskSlot, ask_price: Price, now_ms: i64, out: &mut Vec<Event>) {
        let mut filled = std::mem::take(&mut self.scratch);
        filled.clear();
        let mut remaining_gpus = ask.remaining_gpus;
        for (key, bid) in self.bids.iter() {
            if remaining_gpus == 0 || key.price.0 < ask_price {
                break;
            }
            let candidate = AskSlot { remaining_gpus, ..*ask };
            if fits(&candidate, ask_price, bid, key.price.0, now_ms) {
                remaining_gpus -= bid.gpus;
                filled.push(*key);
            }
        }
        for key in &filled {
            let bid = self.bids.remove(key).expect("bid found by the scan is resting");
            self.index.remove(&key_of(bid.id));
            assert!(ask.remaining_gpus >= bid.gpus, "ask oversold");
            assert!(ask.owner != bid.owner, "self-trade");
            assert!(key.price.0 >= ask_price, "trade below the ask's limit");
            ask.remaining_gpus -= bid.gpus;
            out.push(Event::Trade {
                bid_id: bid.id,
                ask_id: ask.id,
                buyer: bid.owner,
                seller: ask.owner,
                host: ask.host,
                gpus: bid.gpus,
                price: key.price.0,
                duration_ms: bid.duration_ms,
                at_ms: now_ms,
            });
        }
        self.scratch = filled;
    }

    fn rest_bid(&mut self, bid: BidSlot, price: Price, seq: u64) {
        let key = BidKey { price: Reverse(price), seq };
        let at = self.bids.insert(key, bid);
        self.index.insert(key_of(bid.id), Loc::Bid(key, at));
    }

    fn rest_ask(&mut self, ask: AskSlot, price: Price, seq: u64) {
        let key = AskKey { price, seq };
        let at = self.asks.insert(key, ask);
        self.index.insert(key_of(ask.id), Loc::Ask(key, at));
        if self.expiries.len() >= 2 * self.asks.len() + EXPIRIES_STALE_MIN {
            // Mostly stale: rebuild from the resting asks, O(n) once per n pushes.
            let mut expiries = std::mem::take(&mut self.expiries);
            expiries.retain(|Reverse(expiry)| self.expiry_is_live(expiry));
            self.expiries = expiries;
        }
        let id = key_of(ask.id);
        self.expiries.push(Reverse(Expiry { until_ms: ask.available_until_ms, seq, price, id }));
    }

    fn cancel(&mut self, order_id: OrderId, owner: UserId, out: &mut Vec<Event>) {
        let reject = |reason| Event::Rejected { order_id, reason };
        let Some(&loc) = self.index.get(&key_of(order_id)) else {
            out.push(reject(RejectReason::UnknownOrder));
            return;
        };
        let gpus_released = match loc {
            Loc::Bid(key, at) => {
                let bid = self.bids.slot(at);
                if bid.owner != owner {
                    out.push(reject(RejectReason::NotOwner));
                    return;
                }
                let gpus = bid.gpus;
                self.bids.remove(&key);
                gpus
            }
            Loc::Ask(key, at) => {
                let ask = self.asks.slot(at);
                if ask.owner != owner {
                    out.push(reject(RejectReason::NotOwner));
                    return;
                }
                let gpus = ask.remaining_gpus;
                self.asks.remove(&key);
                gpus
            }
        };
        self.index.remove(&key_of(order_id));
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
            Loc::Bid(key, at) => {
                let bid = *self.bids.slot(at);
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
                let keeps_priority = price == key.price.0 && gpus <= bid.gpus;
                self.bids.remove(&key);
                self.index.remove(&key_of(order_id));
                out.push(Event::Amended { order_id, price, gpus, remaining_gpus: gpus });
                let bid = BidSlot { gpus, ..bid };
                if !self.match_bid(&bid, price, now_ms, out) {
                    let seq = if keeps_priority { key.seq } else { self.take_seq() };
                    self.rest_bid(bid, price, seq);
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
                let keeps_priority = price == key.price && gpus <= ask.gpus;
                self.asks.remove(&key);
                self.index.remove(&key_of(order_id));
                let mut ask = AskSlot { gpus, remaining_gpus: gpus - sold_gpus, ..ask };
                out.push(Event::Amended { order_id, price, gpus, remaining_gpus: ask.remaining_gpus });
                self.match_ask(&mut ask, price, now_ms, out);
                if ask.remaining_gpus > 0 {
                    let seq = if keeps_priority { key.seq } else { self.take_seq() };
                    self.rest_ask(ask, price, seq);
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
        self.asks.remove(&key);
        self.index.remove(&key_of(order_id));
        out.push(Event::Regraded { order_id, grade });
        self.match_ask(&mut ask, key.price, now_ms, out);
        if ask.remaining_gpus > 0 {
            self.rest_ask(ask, key.price, key.seq);
        }
    }
}
