//! The engine against a slow, obviously correct reference matcher over plain `Vec`s.
//!
//! Random command streams over a tiny world (four users, three hosts, a handful of prices,
//! sizes and durations in tens of ms, four verification levels and a few uptimes around
//! the usual floors) so that crossing, self-trades, skips, expiry, duplicates, amendments,
//! requirements that exclude asks, and regrades happen often. For every command: identical events, identical
//! resting orders (with their sequence numbers), and no resting bid and ask that could
//! trade with each other.

use capex_book::{
    Ask, AskGrade, Bid, Book, Command, DURATION_MS_MAX, Depth, Event, ExcludedHosts, GPUS_PER_ORDER_MAX, HostId, Level,
    ORDERS_RESTING_MAX, OrderId, PPM_MAX, Price, RejectReason, Requirements, RestingAsk, RestingBid, RestingOrder, Tif,
    UnfilledReason, UserId, Verification,
};
use proptest::prelude::*;
use uuid::Uuid;

const T0: i64 = 1_000_000;

// ---------------------------------------------------------------------------------------
// The reference model: every rule written out directly, linear scans and sorts everywhere.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Model {
    bids: Vec<RestingBid>,
    asks: Vec<RestingAsk>,
    now_ms: Option<i64>,
    next_seq: u64,
}

/// Trust written out as a number, independent of the enum's derived order.
fn rank(level: Verification) -> u8 {
    match level {
        Verification::Simulated => 0,
        Verification::Reported => 1,
        Verification::Challenged => 2,
        Verification::CcAttested => 3,
    }
}

fn level_ok(requires: &Requirements, grade: &AskGrade) -> bool {
    match requires.min_verification {
        None => true,
        Some(min) => rank(grade.verification) >= rank(min),
    }
}

fn uptime_ok(requires: &Requirements, grade: &AskGrade) -> bool {
    match requires.min_uptime_7d_ppm {
        None => true,
        Some(min) => grade.uptime_7d_ppm >= min,
    }
}

fn can_hold(ask: &RestingAsk, ask_remaining: u32, bid: &RestingBid, now_ms: i64) -> bool {
    ask_remaining >= bid.gpus
        && now_ms + bid.duration_ms <= ask.available_until_ms
        && ask.owner != bid.owner
        && level_ok(&bid.requires, &ask.grade)
        && uptime_ok(&bid.requires, &ask.grade)
        && bid.price >= ask.price
        && !bid.excluded_hosts.as_slice().contains(&ask.host)
}

fn trade(bid: &RestingBid, ask: &RestingAsk, price: Price, now_ms: i64) -> Event {
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
    }
}

impl Model {
    fn now(&self) -> i64 {
        self.now_ms.expect("a command has set the clock")
    }

    fn exists(&self, id: OrderId) -> bool {
        self.bids.iter().any(|b| b.id == id) || self.asks.iter().any(|a| a.id == id)
    }

    fn sorted_bids(&self) -> Vec<RestingBid> {
        let mut bids = self.bids.clone();
        bids.sort_by_key(|b| (std::cmp::Reverse(b.price), b.seq));
        bids
    }

    fn sorted_asks(&self) -> Vec<RestingAsk> {
        let mut asks = self.asks.clone();
        asks.sort_by_key(|a| (a.price, a.seq));
        asks
    }

    fn new_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    fn check_new(&self, id: OrderId, gpus: u32, price: Price) -> Option<RejectReason> {
        if self.exists(id) {
            Some(RejectReason::DuplicateOrderId)
        } else if self.bids.len() + self.asks.len() >= ORDERS_RESTING_MAX {
            Some(RejectReason::BookFull)
        } else if gpus == 0 {
            Some(RejectReason::ZeroGpus)
        } else if gpus > GPUS_PER_ORDER_MAX {
            Some(RejectReason::TooManyGpus)
        } else if price.micros() <= 0 {
            Some(RejectReason::ZeroOrNegativePrice)
        } else {
            None
        }
    }

    fn apply(&mut self, command: Command) -> Vec<Event> {
        let mut out = Vec::new();
        let at_ms = command.at_ms();
        self.now_ms = Some(self.now_ms.map_or(at_ms, |now| now.max(at_ms)));
        let now = self.now();

        let mut expired: Vec<RestingAsk> = self.asks.iter().filter(|a| a.available_until_ms <= now).copied().collect();
        expired.sort_by_key(|a| (a.available_until_ms, a.seq));
        for a in &expired {
            out.push(Event::Expired { order_id: a.id, gpus_released: a.remaining_gpus });
        }
        self.asks.retain(|a| a.available_until_ms > now);

        match command {
            Command::PlaceBid { bid, .. } => self.place_bid(bid, &mut out),
            Command::PlaceAsk { ask, .. } => self.place_ask(ask, &mut out),
            Command::Cancel { order_id, owner, .. } => self.cancel(order_id, owner, &mut out),
            Command::Amend { order_id, owner, new_price, new_gpus, .. } => {
                self.amend(order_id, owner, new_price, new_gpus, &mut out)
            }
            Command::Regrade { order_id, grade, .. } => self.regrade(order_id, grade, &mut out),
            Command::Tick { .. } => {}
        }
        out
    }

    fn place_bid(&mut self, bid: Bid, out: &mut Vec<Event>) {
        let reason = self.check_new(bid.id, bid.gpus, bid.price).or(if bid.duration_ms <= 0 {
            Some(RejectReason::NonPositiveDuration)
        } else if bid.duration_ms > DURATION_MS_MAX {
            Some(RejectReason::DurationTooLong)
        } else if bid.requires.min_uptime_7d_ppm.is_some_and(|ppm| ppm > PPM_MAX) {
            Some(RejectReason::UptimeOutOfRange)
        } else {
            None
        });
        if let Some(reason) = reason {
            out.push(Event::Rejected { order_id: bid.id, reason });
            return;
        }
        out.push(Event::Accepted { order_id: bid.id });
        let resting = RestingBid {
            id: bid.id,
            seq: 0,
            owner: bid.owner,
            gpus: bid.gpus,
            duration_ms: bid.duration_ms,
            price: bid.price,
            excluded_hosts: bid.excluded_hosts,
            requires: bid.requires,
        };
        if !self.take_ask(&resting, out) {
            match bid.tif {
                Tif::Gtc => {
                    let seq = self.new_seq();
                    self.bids.push(RestingBid { seq, ..resting });
                }
                Tif::Ioc => out.push(Event::Cancelled { order_id: bid.id, gpus_released: bid.gpus }),
            }
        }
    }

    /// Trades `bid` with the cheapest, earliest ask that can hold it.
    fn take_ask(&mut self, bid: &RestingBid, out: &mut Vec<Event>) -> bool {
        let now = self.now();
        let best = self
            .asks
            .iter()
            .enumerate()
            .filter(|(_, a)| can_hold(a, a.remaining_gpus, bid, now))
            .min_by_key(|(_, a)| (a.price, a.seq))
            .map(|(i, _)| i);
        let Some(i) = best else {
            return false;
        };
        let ask = self.asks[i];
        out.push(trade(bid, &ask, ask.price, now));
        self.asks[i].remaining_gpus -= bid.gpus;
        if self.asks[i].remaining_gpus == 0 {
            self.asks.remove(i);
        }
        true
    }

    fn place_ask(&mut self, ask: Ask, out: &mut Vec<Event>) {
        let reason = self.check_new(ask.id, ask.gpus, ask.price).or(if ask.available_until_ms <= self.now() {
            Some(RejectReason::AlreadyExpired)
        } else if ask.grade.uptime_7d_ppm > PPM_MAX {
            Some(RejectReason::UptimeOutOfRange)
        } else {
            None
        });
        if let Some(reason) = reason {
            out.push(Event::Rejected { order_id: ask.id, reason });
            return;
        }
        out.push(Event::Accepted { order_id: ask.id });
        let mut resting = RestingAsk {
            id: ask.id,
            seq: 0,
            owner: ask.owner,
            host: ask.host,
            gpus: ask.gpus,
            remaining_gpus: ask.gpus,
            available_until_ms: ask.available_until_ms,
            price: ask.price,
            grade: ask.grade,
        };
        self.fill_bids(&mut resting, out);
        if resting.remaining_gpus > 0 {
            match ask.tif {
                Tif::Gtc => {
                    let seq = self.new_seq();
                    self.asks.push(RestingAsk { seq, ..resting });
                }
                Tif::Ioc => out.push(Event::Cancelled { order_id: ask.id, gpus_released: resting.remaining_gpus }),
            }
        }
    }

    /// Fills bids from `ask` in priority order while it has GPUs.
    fn fill_bids(&mut self, ask: &mut RestingAsk, out: &mut Vec<Event>) {
        let now = self.now();
        let mut filled = Vec::new();
        for bid in self.sorted_bids() {
            if can_hold(ask, ask.remaining_gpus, &bid, now) {
                out.push(trade(&bid, ask, bid.price, now));
                ask.remaining_gpus -= bid.gpus;
                filled.push(bid.id);
            }
        }
        self.bids.retain(|b| !filled.contains(&b.id));
    }

    fn cancel(&mut self, order_id: OrderId, owner: UserId, out: &mut Vec<Event>) {
        if let Some(i) = self.bids.iter().position(|b| b.id == order_id) {
            if self.bids[i].owner != owner {
                out.push(Event::Rejected { order_id, reason: RejectReason::NotOwner });
            } else {
                let bid = self.bids.remove(i);
                out.push(Event::Cancelled { order_id, gpus_released: bid.gpus });
            }
        } else if let Some(i) = self.asks.iter().position(|a| a.id == order_id) {
            if self.asks[i].owner != owner {
                out.push(Event::Rejected { order_id, reason: RejectReason::NotOwner });
            } else {
                let ask = self.asks.remove(i);
                out.push(Event::Cancelled { order_id, gpus_released: ask.remaining_gpus });
            }
        } else {
            out.push(Event::Rejected { order_id, reason: RejectReason::UnknownOrder });
        }
    }

    fn amend(
        &mut self,
        order_id: OrderId,
        owner: UserId,
        new_price: Option<Price>,
        new_gpus: Option<u32>,
        out: &mut Vec<Event>,
    ) {
        let order_owner = self.bids.iter().find(|b| b.id == order_id).map(|b| b.owner).or(self
            .asks
            .iter()
            .find(|a| a.id == order_id)
            .map(|a| a.owner));
        let reason = match order_owner {
            None => Some(RejectReason::UnknownOrder),
            Some(o) if o != owner => Some(RejectReason::NotOwner),
            _ if new_price.is_none() && new_gpus.is_none() => Some(RejectReason::NothingToAmend),
            _ if new_price.is_some_and(|p| p.micros() <= 0) => Some(RejectReason::ZeroOrNegativePrice),
            _ if new_gpus == Some(0) => Some(RejectReason::ZeroGpus),
            _ if new_gpus.is_some_and(|g| g > GPUS_PER_ORDER_MAX) => Some(RejectReason::TooManyGpus),
            _ => None,
        };
        if let Some(reason) = reason {
            out.push(Event::Rejected { order_id, reason });
            return;
        }
        if let Some(i) = self.bids.iter().position(|b| b.id == order_id) {
            let old = self.bids[i];
            let price = new_price.unwrap_or(old.price);
            let gpus = new_gpus.unwrap_or(old.gpus);
            self.bids.remove(i);
            out.push(Event::Amended { order_id, price, gpus, remaining_gpus: gpus });
            let bid = RestingBid { price, gpus, ..old };
            if !self.take_ask(&bid, out) {
                let seq = if price != old.price || gpus > old.gpus { self.new_seq() } else { old.seq };
                self.bids.push(RestingBid { seq, ..bid });
            }
        } else {
            let i = self.asks.iter().position(|a| a.id == order_id).expect("found above");
            let old = self.asks[i];
            let sold = old.gpus - old.remaining_gpus;
            let price = new_price.unwrap_or(old.price);
            let gpus = new_gpus.unwrap_or(old.gpus);
            if gpus <= sold {
                out.push(Event::Rejected { order_id, reason: RejectReason::GpusBelowFilled });
                return;
            }
            self.asks.remove(i);
            let mut ask = RestingAsk { price, gpus, remaining_gpus: gpus - sold, ..old };
            out.push(Event::Amended { order_id, price, gpus, remaining_gpus: ask.remaining_gpus });
            self.fill_bids(&mut ask, out);
            if ask.remaining_gpus > 0 {
                let seq = if price != old.price || gpus > old.gpus { self.new_seq() } else { old.seq };
                self.asks.push(RestingAsk { seq, ..ask });
            }
        }
    }

    fn regrade(&mut self, order_id: OrderId, grade: AskGrade, out: &mut Vec<Event>) {
        let reason = if self.bids.iter().any(|b| b.id == order_id) {
            Some(RejectReason::NotAnAsk)
        } else if !self.asks.iter().any(|a| a.id == order_id) {
            Some(RejectReason::UnknownOrder)
        } else if grade.uptime_7d_ppm > PPM_MAX {
            Some(RejectReason::UptimeOutOfRange)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.push(Event::Rejected { order_id, reason });
            return;
        }
        let i = self.asks.iter().position(|a| a.id == order_id).expect("found above");
        let mut ask = RestingAsk { grade, ..self.asks.remove(i) };
        out.push(Event::Regraded { order_id, grade });
        self.fill_bids(&mut ask, out);
        if ask.remaining_gpus > 0 {
            self.asks.push(ask);
        }
    }

    fn why_unfilled(&self, bid: &RestingBid) -> Vec<UnfilledReason> {
        if self.asks.is_empty() {
            return vec![UnfilledReason::NoAsks];
        }
        let others: Vec<&RestingAsk> = self.asks.iter().filter(|a| a.owner != bid.owner).collect();
        if others.is_empty() {
            return vec![UnfilledReason::OnlyOwnAsks];
        }
        let others: Vec<&RestingAsk> =
            others.into_iter().filter(|a| !bid.excluded_hosts.as_slice().contains(&a.host)).collect();
        if others.is_empty() {
            return vec![UnfilledReason::OnlyExcludedHosts];
        }
        let best_ask = others.iter().map(|a| a.price).min().expect("not empty");
        let largest_free = others.iter().map(|a| a.remaining_gpus).max().expect("not empty");
        let latest = others.iter().map(|a| a.available_until_ms).max().expect("not empty");
        let mut reasons = Vec::new();
        if bid.price < best_ask {
            reasons.push(UnfilledReason::PriceBelowBestAsk { best_ask });
        }
        if largest_free < bid.gpus {
            reasons.push(UnfilledReason::NoHostWithEnoughGpus { largest_free });
        }
        if latest < self.now() + bid.duration_ms {
            reasons.push(UnfilledReason::NoAskLongEnough { longest_available_ms: latest - self.now() });
        }
        if !others.iter().any(|a| level_ok(&bid.requires, &a.grade)) {
            let best_available =
                others.iter().map(|a| a.grade.verification).max_by_key(|&v| rank(v)).expect("not empty");
            reasons.push(UnfilledReason::VerificationBelowRequired { best_available });
        }
        if !others.iter().any(|a| uptime_ok(&bid.requires, &a.grade)) {
            let best_uptime_7d_ppm = others.iter().map(|a| a.grade.uptime_7d_ppm).max().expect("not empty");
            reasons.push(UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm });
        }
        if reasons.is_empty() {
            reasons.push(UnfilledReason::NoSingleAskFits);
        }
        reasons
    }

    fn depth(&self) -> Depth {
        let mut depth = Depth::default();
        for bid in self.sorted_bids() {
            add_to_levels(&mut depth.bids, bid.price, bid.gpus);
        }
        for ask in self.sorted_asks() {
            add_to_levels(&mut depth.asks, ask.price, ask.remaining_gpus);
        }
        depth
    }
}

fn add_to_levels(levels: &mut Vec<Level>, price: Price, gpus: u32) {
    match levels.iter_mut().find(|l| l.price == price) {
        Some(level) => {
            level.gpus += u64::from(gpus);
            level.orders += 1;
        }
        None => levels.push(Level { price, gpus: u64::from(gpus), orders: 1 }),
    }
}

// ---------------------------------------------------------------------------------------
// Random command streams.
// ---------------------------------------------------------------------------------------

/// One step of a stream, in small numbers that [`Stream`] turns into a command.
#[derive(Clone, Debug)]
enum Op {
    Bid {
        owner: u8,
        gpus: u32,
        duration: i64,
        price: i64,
        ioc: bool,
        reuse_id: Option<u8>,
        requires: Requirements,
        excluded: Vec<u8>,
    },
    Ask {
        owner: u8,
        host: u8,
        gpus: u32,
        until: i64,
        price: i64,
        ioc: bool,
        reuse_id: Option<u8>,
        grade: AskGrade,
    },
    Cancel {
        target: u8,
        wrong_owner: Option<u8>,
    },
    Amend {
        target: u8,
        wrong_owner: Option<u8>,
        price: Option<i64>,
        gpus: Option<u32>,
    },
    Regrade {
        target: u8,
        grade: AskGrade,
    },
    Tick,
}

/// Uptimes on both sides of the floors buyers use, the ends of the range, and (rarely)
/// one past it.
fn uptime() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(0_u32),
        3 => Just(990_000_u32),
        3 => Just(995_000_u32),
        3 => Just(999_000_u32),
        3 => Just(PPM_MAX),
        1 => Just(PPM_MAX + 1),
    ]
}

fn level() -> impl Strategy<Value = Verification> {
    proptest::sample::select(Verification::ALL.to_vec())
}

/// Mostly graded well enough for most bids, so that plain matching still happens often.
fn grade() -> impl Strategy<Value = AskGrade> {
    (level(), uptime()).prop_map(|(verification, uptime_7d_ppm)| AskGrade { verification, uptime_7d_ppm })
}

/// About half the bids require nothing; the rest one floor or both.
fn requirements() -> impl Strategy<Value = Requirements> {
    let min_verification = prop_oneof![2 => Just(None), 1 => level().prop_map(Some)];
    let min_uptime_7d_ppm = prop_oneof![2 => Just(None), 1 => uptime().prop_map(Some)];
    (min_verification, min_uptime_7d_ppm)
        .prop_map(|(min_verification, min_uptime_7d_ppm)| Requirements { min_verification, min_uptime_7d_ppm })
}

const MS_PER_UNIT: i64 = 10;

fn op() -> impl Strategy<Value = Op> {
    let gpus = prop_oneof![1 => Just(0_u32), 12 => 1..=4_u32];
    let ask_gpus = prop_oneof![1 => Just(0_u32), 12 => 1..=8_u32];
    let price = prop_oneof![1 => Just(0_i64), 12 => 1..=6_i64];
    let duration = prop_oneof![1 => -1..=0_i64, 12 => 1..=4_i64];
    let reuse = prop_oneof![12 => Just(None), 1 => any::<u8>().prop_map(Some)];
    let wrong_owner = prop_oneof![4 => Just(None), 1 => (0..4_u8).prop_map(Some)];
    prop_oneof![
        4 => (0..4_u8, gpus.clone(), duration, price.clone(), any::<bool>(), reuse.clone(), (requirements(), excluded()))
            .prop_map(|(owner, gpus, duration, price, ioc, reuse_id, (requires, excluded))| Op::Bid {
                owner, gpus, duration, price, ioc: ioc && owner % 2 == 0, reuse_id, requires, excluded,
            }),
        4 => (0..4_u8, 0..3_u8, ask_gpus, -1..=8_i64, price.clone(), any::<bool>(), reuse, grade())
            .prop_map(|(owner, host, gpus, until, price, ioc, reuse_id, grade)| Op::Ask {
                owner, host, gpus, until, price, ioc: ioc && owner % 2 == 1, reuse_id, grade,
            }),
        1 => (any::<u8>(), grade()).prop_map(|(target, grade)| Op::Regrade { target, grade }),
        2 => (any::<u8>(), wrong_owner.clone())
            .prop_map(|(target, wrong_owner)| Op::Cancel { target, wrong_owner }),
        2 => (any::<u8>(), wrong_owner, proptest::option::of(price),
              proptest::option::of(gpus))
            .prop_map(|(target, wrong_owner, price, gpus)| Op::Amend {
                target, wrong_owner, price, gpus,
            }),
        1 => Just(Op::Tick),
    ]
}

/// Hosts a bid excludes: mostly none, sometimes one or two of the world's three (so a
/// bid is often left with only excluded hosts, or one host it may still use).
fn excluded() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => Just(Vec::new()), 2 => proptest::collection::vec(0..3_u8, 1..=2)]
}

fn host_id(n: u8) -> HostId {
    HostId(Uuid::from_u128(2_000 + u128::from(n)))
}

/// A step: how far the caller's clock moves (sometimes back), then the op.
fn steps(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<(i64, Op)>> {
    proptest::collection::vec((-1..=3_i64, op()), len)
}

fn user(n: u8) -> UserId {
    UserId(Uuid::from_u128(1_000 + u128::from(n)))
}

fn micros(price: i64) -> Price {
    Price::from_micros(price * 250_000).expect("non-negative")
}

/// Turns ops into commands, remembering placed ids so cancels and amends mostly hit real
/// orders (and their owners).
struct Stream {
    at_ms: i64,
    next_id: u128,
    placed: Vec<(OrderId, UserId)>,
}

impl Stream {
    fn new() -> Self {
        Stream { at_ms: T0, next_id: 0, placed: Vec::new() }
    }

    fn id_for(&mut self, reuse: Option<u8>, owner: UserId) -> OrderId {
        if let Some(k) = reuse
            && !self.placed.is_empty()
        {
            return self.placed[usize::from(k) % self.placed.len()].0;
        }
        self.next_id += 1;
        let id = OrderId(Uuid::from_u128(self.next_id));
        self.placed.push((id, owner));
        id
    }

    fn target(&self, target: u8, wrong_owner: Option<u8>) -> (OrderId, UserId) {
        // One in eight targets an id never placed.
        if self.placed.is_empty() || target % 8 == 7 {
            return (OrderId(Uuid::from_u128(999_999)), user(0));
        }
        let (id, owner) = self.placed[usize::from(target) % self.placed.len()];
        (id, wrong_owner.map_or(owner, user))
    }

    fn command(&mut self, dt: i64, op: &Op) -> Command {
        self.at_ms += dt * MS_PER_UNIT;
        let at_ms = self.at_ms;
        match *op {
            Op::Bid { owner, gpus, duration, price, ioc, reuse_id, requires, ref excluded } => Command::PlaceBid {
                at_ms,
                bid: Bid {
                    id: self.id_for(reuse_id, user(owner)),
                    owner: user(owner),
                    gpus,
                    duration_ms: duration * MS_PER_UNIT,
                    price: micros(price),
                    tif: if ioc { Tif::Ioc } else { Tif::Gtc },
                    excluded_hosts: ExcludedHosts::new(&excluded.iter().map(|h| host_id(*h)).collect::<Vec<_>>())
                        .expect("at most two hosts"),
                    requires,
                },
            },
            Op::Ask { owner, host, gpus, until, price, ioc, reuse_id, grade } => Command::PlaceAsk {
                at_ms,
                ask: Ask {
                    id: self.id_for(reuse_id, user(owner)),
                    owner: user(owner),
                    host: host_id(host),
                    gpus,
                    available_until_ms: at_ms + until * MS_PER_UNIT,
                    price: micros(price),
                    tif: if ioc { Tif::Ioc } else { Tif::Gtc },
                    grade,
                },
            },
            Op::Cancel { target, wrong_owner } => {
                let (order_id, owner) = self.target(target, wrong_owner);
                Command::Cancel { at_ms, order_id, owner }
            }
            Op::Amend { target, wrong_owner, price, gpus } => {
                let (order_id, owner) = self.target(target, wrong_owner);
                Command::Amend { at_ms, order_id, owner, new_price: price.map(micros), new_gpus: gpus }
            }
            Op::Regrade { target, grade } => {
                // Mostly asks, sometimes a bid or an id never placed.
                let (order_id, _) = self.target(target, None);
                Command::Regrade { at_ms, order_id, grade }
            }
            Op::Tick => Command::Tick { at_ms },
        }
    }
}

/// No resting bid and ask could trade, judged only through the public API.
fn assert_not_crossed(book: &Book) -> Result<(), TestCaseError> {
    let Some(now) = book.now_ms() else {
        return Ok(());
    };
    for bid in book.bids() {
        for ask in book.asks() {
            prop_assert!(!can_hold(&ask, ask.remaining_gpus, &bid, now), "crossed: {bid:?} and {ask:?}");
        }
    }
    Ok(())
}

fn assert_same_state(book: &Book, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(book.bids().collect::<Vec<_>>(), model.sorted_bids());
    prop_assert_eq!(book.asks().collect::<Vec<_>>(), model.sorted_asks());
    prop_assert_eq!(book.len(), model.bids.len() + model.asks.len());
    prop_assert_eq!(book.now_ms(), model.now_ms);
    let depth = model.depth();
    prop_assert_eq!(book.depth(usize::MAX), depth.clone());
    prop_assert_eq!(book.best_bid(), depth.bids.first().map(|l| l.price));
    prop_assert_eq!(book.best_ask(), depth.asks.first().map(|l| l.price));
    for bid in &model.bids {
        prop_assert_eq!(book.why_unfilled(bid.id), model.why_unfilled(bid));
        prop_assert_eq!(book.order(bid.id), Some(RestingOrder::Bid(*bid)));
    }
    for ask in &model.asks {
        prop_assert_eq!(book.order(ask.id), Some(RestingOrder::Ask(*ask)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Same events and same book as the reference model after every command, and the
    /// book is never crossed.
    #[test]
    fn engine_matches_reference_model(steps in steps(1..=60)) {
        let mut book = Book::new();
        let mut model = Model::default();
        let mut stream = Stream::new();
        let mut out = Vec::new();
        for (dt, op) in &steps {
            let command = stream.command(*dt, op);
            out.clear();
            book.apply(command, &mut out);
            let expected = model.apply(command);
            prop_assert_eq!(&out, &expected, "command {:?}", command);
            book.check_invariants();
            assert_not_crossed(&book)?;
            assert_same_state(&book, &model)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// A book rebuilt with `restore` (in any call order) behaves exactly like the original.
    #[test]
    fn restored_book_behaves_like_the_original(
        before in steps(1..=40),
        after in steps(1..=40),
    ) {
        let mut book = Book::new();
        let mut stream = Stream::new();
        let mut out = Vec::new();
        for (dt, op) in &before {
            book.apply(stream.command(*dt, op), &mut out);
        }
        let mut rebuilt = Book::new();
        let orders: Vec<RestingOrder> = book
            .asks()
            .map(RestingOrder::Ask)
            .chain(book.bids().map(RestingOrder::Bid))
            .collect();
        let now_ms = book.now_ms().expect("at least one command ran");
        for order in orders.iter().rev() {
            prop_assert_eq!(rebuilt.restore(*order, now_ms), Ok(()));
        }
        rebuilt.check_invariants();
        // The clock, even with no orders to carry it: nothing is due to expire at it.
        let mut rebuilt_out = Vec::new();
        rebuilt.apply(Command::Tick { at_ms: now_ms }, &mut rebuilt_out);
        prop_assert_eq!(&rebuilt_out, &Vec::new());
        for (dt, op) in &after {
            let command = stream.command(*dt, op);
            out.clear();
            rebuilt_out.clear();
            book.apply(command, &mut out);
            rebuilt.apply(command, &mut rebuilt_out);
            prop_assert_eq!(&out, &rebuilt_out);
        }
        // Same orders in the same priority; the rebuilt book's numbering restarts lower,
        // as the original had spent numbers on orders that no longer rest.
        let bids = |b: &Book| b.bids().map(|o| RestingBid { seq: 0, ..o }).collect::<Vec<_>>();
        let asks = |b: &Book| b.asks().map(|o| RestingAsk { seq: 0, ..o }).collect::<Vec<_>>();
        prop_assert_eq!(bids(&book), bids(&rebuilt));
        prop_assert_eq!(asks(&book), asks(&rebuilt));
    }
}
