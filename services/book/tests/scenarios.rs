//! Hand-written scenarios for each matching rule and each rejection.

use capex_book::{
    Ask, AskGrade, Bid, Book, Command, DURATION_MS_MAX, Depth, Event, ExcludedHosts, GPUS_PER_ORDER_MAX, HostId,
    InterruptibleLease, Level, OrderId, PPM_MAX, Price, Priority, RejectReason, Requirements, RestingAsk, RestingBid,
    RestingOrder, Tif, UnfilledReason, UserId, Verification,
};
use uuid::Uuid;

const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

fn order(n: u128) -> OrderId {
    OrderId(Uuid::from_u128(n))
}

fn user(n: u128) -> UserId {
    UserId(Uuid::from_u128(1_000 + n))
}

fn host(n: u128) -> HostId {
    HostId(Uuid::from_u128(2_000 + n))
}

/// Credits per GPU-hour in hundredths, for short test prices.
fn cents(n: i64) -> Price {
    Price::from_micros(n * 10_000).expect("non-negative")
}

const ALICE: u128 = 1; // buyer
const BOB: u128 = 2; // provider
const CAROL: u128 = 3; // provider
const DAN: u128 = 4; // buyer

fn bid(id: u128, owner: u128, gpus: u32, hours: i64, price: i64) -> Bid {
    Bid {
        id: order(id),
        owner: user(owner),
        gpus,
        duration_ms: hours * HOUR_MS,
        price: cents(price),
        tif: Tif::Gtc,
        excluded_hosts: ExcludedHosts::NONE,
        requires: Requirements::default(),
        priority: Priority::OnDemand,
    }
}

fn ask(id: u128, owner: u128, gpus: u32, hours: i64, price: i64) -> Ask {
    Ask {
        id: order(id),
        owner: user(owner),
        host: host(owner),
        gpus,
        available_until_ms: T0 + hours * HOUR_MS,
        price: cents(price),
        tif: Tif::Gtc,
        grade: AskGrade::UNGRADED,
        interruptible_price: None,
    }
}

/// A bid that requires at least `level` of every GPU it gets.
fn bid_verified(id: u128, owner: u128, gpus: u32, hours: i64, price: i64, level: Verification) -> Bid {
    Bid {
        requires: Requirements { min_verification: Some(level), ..Requirements::default() },
        ..bid(id, owner, gpus, hours, price)
    }
}

/// A bid that requires a host uptime of at least `ppm` over 7 days.
fn bid_reliable(id: u128, owner: u128, gpus: u32, hours: i64, price: i64, ppm: u32) -> Bid {
    Bid {
        requires: Requirements { min_uptime_7d_ppm: Some(ppm), ..Requirements::default() },
        ..bid(id, owner, gpus, hours, price)
    }
}

fn grade(verification: Verification, uptime_7d_ppm: u32) -> AskGrade {
    AskGrade { verification, uptime_7d_ppm }
}

/// An ask of `grade`.
fn ask_graded(id: u128, owner: u128, gpus: u32, hours: i64, price: i64, grade: AskGrade) -> Ask {
    Ask { grade, ..ask(id, owner, gpus, hours, price) }
}

struct Harness {
    book: Book,
    now_ms: i64,
}

impl Harness {
    fn new() -> Self {
        Harness { book: Book::new(), now_ms: T0 }
    }

    /// The command's events, with each trade's `seq` zeroed (see [`without_seqs`]).
    fn apply(&mut self, command: Command) -> Vec<Event> {
        without_seqs(self.apply_exact(command))
    }

    fn apply_exact(&mut self, command: Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.book.apply(command, &mut out);
        self.book.check_invariants();
        out
    }

    fn bid(&mut self, bid: Bid) -> Vec<Event> {
        self.apply(Command::PlaceBid { at_ms: self.now_ms, bid })
    }

    fn ask(&mut self, ask: Ask) -> Vec<Event> {
        self.apply(Command::PlaceAsk { at_ms: self.now_ms, ask })
    }

    fn cancel(&mut self, id: u128, owner: u128) -> Vec<Event> {
        self.apply(Command::Cancel { at_ms: self.now_ms, order_id: order(id), owner: user(owner) })
    }

    fn amend(&mut self, id: u128, owner: u128, price: Option<i64>, gpus: Option<u32>) -> Vec<Event> {
        self.apply(Command::Amend {
            at_ms: self.now_ms,
            order_id: order(id),
            owner: user(owner),
            new_price: price.map(cents),
            new_gpus: gpus,
        })
    }

    fn regrade(&mut self, id: u128, grade: AskGrade) -> Vec<Event> {
        self.apply(Command::Regrade { at_ms: self.now_ms, order_id: order(id), grade })
    }

    fn resting_bid(&self, id: u128) -> RestingBid {
        match self.book.order(order(id)) {
            Some(RestingOrder::Bid(bid)) => bid,
            other => panic!("bid {id} not resting: {other:?}"),
        }
    }

    fn resting_ask(&self, id: u128) -> RestingAsk {
        match self.book.order(order(id)) {
            Some(RestingOrder::Ask(ask)) => ask,
            other => panic!("ask {id} not resting: {other:?}"),
        }
    }
}

fn accepted(id: u128) -> Event {
    Event::Accepted { order_id: order(id) }
}

fn rejected(id: u128, reason: RejectReason) -> Event {
    Event::Rejected { order_id: order(id), reason }
}

fn trade(bid: &Bid, ask: &Ask, price: i64, at_ms: i64) -> Event {
    Event::Trade {
        bid_id: bid.id,
        ask_id: ask.id,
        buyer: bid.owner,
        seller: ask.owner,
        host: ask.host,
        gpus: bid.gpus,
        price: cents(price),
        duration_ms: bid.duration_ms,
        at_ms,
        priority: bid.priority,
        seq: 0,
    }
}

/// Events with each trade's `seq` zeroed: most scenarios are about who trades with whom
/// at what price; the tests that are about sequence numbers read them with
/// `apply_exact`, and the reference model checks every one.
fn without_seqs(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|event| match event {
            Event::Trade { bid_id, ask_id, buyer, seller, host, gpus, price, duration_ms, at_ms, priority, .. } => {
                Event::Trade { bid_id, ask_id, buyer, seller, host, gpus, price, duration_ms, at_ms, priority, seq: 0 }
            }
            other => other,
        })
        .collect()
}

/// `trade` (a [`Event::Trade`]) with sequence number `seq`.
fn with_seq(trade: Event, seq: u64) -> Event {
    match trade {
        Event::Trade { bid_id, ask_id, buyer, seller, host, gpus, price, duration_ms, at_ms, priority, .. } => {
            Event::Trade { bid_id, ask_id, buyer, seller, host, gpus, price, duration_ms, at_ms, priority, seq }
        }
        other => panic!("not a trade: {other:?}"),
    }
}

/// (bid, ask) ids of the trades among `events`.
fn trades(events: &[Event]) -> Vec<(OrderId, OrderId)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Trade { bid_id, ask_id, .. } => Some((*bid_id, *ask_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn incoming_bid_trades_at_the_resting_ask_price() {
    let mut h = Harness::new();
    let a = ask(10, BOB, 4, 10, 200);
    assert_eq!(h.ask(a), vec![accepted(10)]);
    let b = bid(20, ALICE, 4, 2, 250);
    assert_eq!(h.bid(b), vec![accepted(20), trade(&b, &a, 200, T0)]);
    assert!(h.book.is_empty());
}

#[test]
fn incoming_ask_trades_at_the_resting_bid_price() {
    let mut h = Harness::new();
    let b = bid(20, ALICE, 2, 2, 250);
    h.bid(b);
    let a = ask(10, BOB, 4, 10, 200);
    assert_eq!(h.ask(a), vec![accepted(10), trade(&b, &a, 250, T0)]);
    assert_eq!(h.resting_ask(10).remaining_gpus, 2);
    assert_eq!(h.resting_ask(10).gpus, 4);
    assert_eq!(h.book.best_bid(), None);
}

#[test]
fn one_ask_fills_two_bids_and_rests_the_rest() {
    let mut h = Harness::new();
    let b1 = bid(20, ALICE, 3, 2, 300);
    let b2 = bid(21, DAN, 2, 2, 250);
    h.bid(b1);
    h.bid(b2);
    let a = ask(10, BOB, 8, 10, 200);
    assert_eq!(h.ask(a), vec![accepted(10), trade(&b1, &a, 300, T0), trade(&b2, &a, 250, T0)]);
    assert_eq!(h.resting_ask(10).remaining_gpus, 3);

    // Two incoming bids then take from the same ask until it is sold out.
    let b3 = bid(22, ALICE, 1, 1, 200);
    let b4 = bid(23, DAN, 2, 1, 200);
    assert_eq!(h.bid(b3), vec![accepted(22), trade(&b3, &a, 200, T0)]);
    assert_eq!(h.bid(b4), vec![accepted(23), trade(&b4, &a, 200, T0)]);
    assert!(h.book.is_empty());
}

#[test]
fn earlier_ask_at_the_same_price_fills_first() {
    let mut h = Harness::new();
    let early = ask(10, BOB, 4, 10, 200);
    let late = ask(11, CAROL, 4, 10, 200);
    h.ask(early);
    h.ask(late);
    let b = bid(20, ALICE, 2, 2, 200);
    assert_eq!(trades(&h.bid(b)), vec![(b.id, early.id)]);
}

#[test]
fn earlier_bid_at_the_same_price_fills_first() {
    let mut h = Harness::new();
    let early = bid(20, ALICE, 2, 2, 200);
    let late = bid(21, DAN, 2, 2, 200);
    h.bid(early);
    h.bid(late);
    let a = ask(10, BOB, 2, 10, 200);
    assert_eq!(trades(&h.ask(a)), vec![(early.id, a.id)]);
}

#[test]
fn better_price_beats_earlier_order() {
    let mut h = Harness::new();
    let early = ask(10, BOB, 4, 10, 210);
    let cheaper = ask(11, CAROL, 4, 10, 200);
    h.ask(early);
    h.ask(cheaper);
    let b = bid(20, ALICE, 2, 2, 300);
    assert_eq!(h.bid(b), vec![accepted(20), trade(&b, &cheaper, 200, T0)]);

    let low = bid(21, ALICE, 1, 2, 150);
    let high = bid(22, DAN, 1, 2, 160);
    h.ask(ask(12, CAROL, 1, 10, 300)); // keeps asks above the bids
    h.bid(low);
    h.bid(high);
    let a = ask(13, BOB, 1, 10, 100);
    assert_eq!(h.ask(a), vec![accepted(13), trade(&high, &a, 160, T0)]);
}

#[test]
fn ask_too_small_for_a_bid_is_skipped_and_keeps_its_place() {
    let mut h = Harness::new();
    let small = ask(10, BOB, 2, 10, 100);
    let big = ask(11, CAROL, 8, 10, 150);
    h.ask(small);
    h.ask(big);
    let wide = bid(20, ALICE, 4, 2, 200);
    assert_eq!(h.bid(wide), vec![accepted(20), trade(&wide, &big, 150, T0)]);
    // The small ask is still first in line, unchanged.
    assert_eq!(h.book.best_ask(), Some(cents(100)));
    assert_eq!(h.book.asks().next().map(|a| a.id), Some(small.id));
    let narrow = bid(21, DAN, 1, 2, 200);
    assert_eq!(trades(&h.bid(narrow)), vec![(narrow.id, small.id)]);
}

#[test]
fn ask_too_short_for_a_bid_is_skipped() {
    let mut h = Harness::new();
    let short = ask(10, BOB, 8, 1, 100);
    let long = ask(11, CAROL, 8, 10, 150);
    h.ask(short);
    h.ask(long);
    let b = bid(20, ALICE, 1, 2, 200);
    assert_eq!(trades(&h.bid(b)), vec![(b.id, long.id)]);
    // Exactly long enough is enough.
    let exact = bid(21, ALICE, 1, 1, 200);
    assert_eq!(trades(&h.bid(exact)), vec![(exact.id, short.id)]);
}

#[test]
fn incoming_ask_skips_bids_it_cannot_hold_and_they_keep_priority() {
    let mut h = Harness::new();
    let wide = bid(20, ALICE, 8, 2, 300);
    let long = bid(21, DAN, 1, 20, 290);
    let own = bid(22, BOB, 1, 2, 280);
    let fits = bid(23, DAN, 2, 2, 250);
    for b in [wide, long, own, fits] {
        h.bid(b);
    }
    let a = ask(10, BOB, 4, 10, 200);
    assert_eq!(h.ask(a), vec![accepted(10), trade(&fits, &a, 250, T0)]);
    let order: Vec<OrderId> = h.book.bids().map(|b| b.id).collect();
    assert_eq!(order, vec![wide.id, long.id, own.id]);
    assert_eq!(h.resting_ask(10).remaining_gpus, 2);
}

#[test]
fn ioc_never_rests() {
    let mut h = Harness::new();
    let b = Bid { tif: Tif::Ioc, ..bid(20, ALICE, 2, 2, 200) };
    assert_eq!(h.bid(b), vec![accepted(20), Event::Cancelled { order_id: b.id, gpus_released: 2 }]);
    assert!(h.book.is_empty());

    let resting = bid(21, DAN, 3, 2, 250);
    h.bid(resting);
    let a = Ask { tif: Tif::Ioc, ..ask(10, BOB, 8, 10, 200) };
    assert_eq!(
        h.ask(a),
        vec![accepted(10), trade(&resting, &a, 250, T0), Event::Cancelled { order_id: a.id, gpus_released: 5 }]
    );
    assert!(h.book.is_empty());

    // A fully filled IOC order has nothing left to cancel.
    h.ask(ask(11, CAROL, 2, 10, 200));
    let all = Bid { tif: Tif::Ioc, ..bid(22, ALICE, 2, 2, 200) };
    assert_eq!(h.bid(all).len(), 2);
    assert!(h.book.is_empty());
}

#[test]
fn cancel_releases_gpus_and_only_the_owner_may() {
    let mut h = Harness::new();
    h.bid(bid(20, ALICE, 2, 2, 100));
    h.ask(ask(10, BOB, 8, 10, 200));
    h.bid(bid(21, DAN, 3, 2, 300)); // takes 3 GPUs of ask 10
    assert_eq!(h.cancel(20, BOB), vec![rejected(20, RejectReason::NotOwner)]);
    assert_eq!(h.cancel(10, ALICE), vec![rejected(10, RejectReason::NotOwner)]);
    assert_eq!(h.book.len(), 2);
    assert_eq!(h.cancel(10, BOB), vec![Event::Cancelled { order_id: order(10), gpus_released: 5 }]);
    assert_eq!(h.cancel(20, ALICE), vec![Event::Cancelled { order_id: order(20), gpus_released: 2 }]);
    assert_eq!(h.cancel(20, ALICE), vec![rejected(20, RejectReason::UnknownOrder)]);
    assert_eq!(h.cancel(21, DAN), vec![rejected(21, RejectReason::UnknownOrder)]);
    assert!(h.book.is_empty());
}

#[test]
fn self_trade_is_skipped_not_cancelled() {
    let mut h = Harness::new();
    let own = ask(10, ALICE, 4, 10, 100);
    let other = ask(11, BOB, 4, 10, 150);
    h.ask(own);
    h.ask(other);
    let b = bid(20, ALICE, 2, 2, 200);
    assert_eq!(h.bid(b), vec![accepted(20), trade(&b, &other, 150, T0)]);
    assert_eq!(h.resting_ask(10).remaining_gpus, 4);

    // With only its owner's ask on offer, the bid rests beside it.
    let b2 = bid(21, ALICE, 4, 2, 200);
    assert_eq!(h.bid(b2), vec![accepted(21)]);
    assert_eq!(h.book.len(), 3);
    // And an incoming ask passes over its owner's bid.
    let a = ask(12, ALICE, 4, 10, 100);
    assert_eq!(h.ask(a), vec![accepted(12)]);
}

#[test]
fn asks_expire_before_the_command_runs() {
    let mut h = Harness::new();
    h.ask(ask(10, BOB, 4, 2, 100));
    h.ask(ask(11, CAROL, 4, 1, 100));
    h.ask(ask(12, CAROL, 4, 5, 300));
    // One ms before the end nothing expires.
    h.now_ms = T0 + HOUR_MS - 1;
    assert!(h.apply(Command::Tick { at_ms: h.now_ms }).is_empty());
    h.now_ms = T0 + HOUR_MS;
    assert_eq!(
        h.apply(Command::Tick { at_ms: h.now_ms }),
        vec![Event::Expired { order_id: order(11), gpus_released: 4 }]
    );
    // A bid at the moment ask 10 expires cannot take it; it trades with 12.
    h.now_ms = T0 + 2 * HOUR_MS;
    let b = bid(20, ALICE, 1, 1, 400);
    let events = h.bid(b);
    assert_eq!(
        events,
        vec![
            Event::Expired { order_id: order(10), gpus_released: 4 },
            accepted(20),
            trade(&b, &ask(12, CAROL, 4, 5, 300), 300, h.now_ms),
        ]
    );
    assert_eq!(h.cancel(10, BOB), vec![rejected(10, RejectReason::UnknownOrder)]);
    // Expiry releases only the unsold GPUs.
    h.now_ms = T0 + 5 * HOUR_MS;
    assert_eq!(
        h.apply(Command::Tick { at_ms: h.now_ms }),
        vec![Event::Expired { order_id: order(12), gpus_released: 3 }]
    );
    assert!(h.book.is_empty());
}

#[test]
fn expiry_survives_many_asks_leaving_early() {
    // Asks that trade out or are cancelled leave stale expiry entries behind, which the
    // book compacts now and then; none of that may lose or reorder a real expiry.
    let mut h = Harness::new();
    for (id, hours) in [(1, 3), (2, 2), (3, 3)] {
        h.ask(ask(id, BOB, 1, hours, 500));
    }
    for n in 0..3_000_u128 {
        h.now_ms += 1;
        if n % 2 == 0 {
            h.ask(ask(100 + n, CAROL, 2, 2, 100));
            assert_eq!(h.cancel(100 + n, CAROL).len(), 1);
        } else {
            h.ask(ask(100 + n, CAROL, 1, 2, 100));
            let b = bid(100_000 + n, ALICE, 1, 1, 100);
            assert_eq!(trades(&h.bid(b)), vec![(b.id, order(100 + n))]);
        }
    }
    assert_eq!(h.book.len(), 3);
    let amended = h.amend(3, BOB, None, Some(1)); // keeps priority: pushed again
    assert_eq!(amended.len(), 1);
    assert_eq!(
        h.apply(Command::Tick { at_ms: T0 + 3 * HOUR_MS }),
        vec![
            Event::Expired { order_id: order(2), gpus_released: 1 },
            Event::Expired { order_id: order(1), gpus_released: 1 },
            Event::Expired { order_id: order(3), gpus_released: 1 },
        ]
    );
    assert!(h.book.is_empty());
}

#[test]
fn clock_never_goes_back() {
    let mut h = Harness::new();
    h.ask(ask(10, BOB, 4, 1, 100));
    h.apply(Command::Tick { at_ms: T0 + HOUR_MS / 2 });
    // A command stamped earlier runs at the book's clock: this bid no longer fits.
    let b = bid(20, ALICE, 1, 1, 200);
    assert_eq!(h.apply(Command::PlaceBid { at_ms: T0, bid: b }), vec![accepted(20)]);
    assert_eq!(h.book.now_ms(), Some(T0 + HOUR_MS / 2));
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::NoAskLongEnough { longest_available_ms: HOUR_MS / 2 }]);
}

#[test]
fn amend_size_down_keeps_priority_and_up_loses_it() {
    let mut h = Harness::new();
    h.ask(ask(10, BOB, 8, 10, 200));
    h.ask(ask(11, CAROL, 8, 10, 200));
    assert_eq!(
        h.amend(10, BOB, None, Some(4)),
        vec![Event::Amended { order_id: order(10), price: cents(200), gpus: 4, remaining_gpus: 4 }]
    );
    let ids: Vec<OrderId> = h.book.asks().map(|a| a.id).collect();
    assert_eq!(ids, vec![order(10), order(11)]);
    h.amend(10, BOB, None, Some(6));
    let ids: Vec<OrderId> = h.book.asks().map(|a| a.id).collect();
    assert_eq!(ids, vec![order(11), order(10)]);

    h.bid(bid(20, ALICE, 1, 2, 100));
    h.bid(bid(21, DAN, 2, 2, 100));
    h.amend(20, ALICE, None, Some(1)); // same size: keeps priority
    let ids: Vec<OrderId> = h.book.bids().map(|b| b.id).collect();
    assert_eq!(ids, vec![order(20), order(21)]);
    h.amend(21, DAN, None, Some(1)); // smaller: keeps priority
    assert_eq!(h.resting_bid(21).gpus, 1);
    let ids: Vec<OrderId> = h.book.bids().map(|b| b.id).collect();
    assert_eq!(ids, vec![order(20), order(21)]);
    h.amend(20, ALICE, None, Some(2)); // larger: to the back
    let ids: Vec<OrderId> = h.book.bids().map(|b| b.id).collect();
    assert_eq!(ids, vec![order(21), order(20)]);
}

#[test]
fn amend_price_loses_priority_even_back_to_the_same_level() {
    let mut h = Harness::new();
    h.bid(bid(20, ALICE, 1, 2, 100));
    h.bid(bid(21, DAN, 1, 2, 100));
    h.amend(20, ALICE, Some(90), None);
    h.amend(20, ALICE, Some(100), None);
    let ids: Vec<OrderId> = h.book.bids().map(|b| b.id).collect();
    assert_eq!(ids, vec![order(21), order(20)]);
    // Restating the same price is not a change.
    h.amend(21, DAN, Some(100), None);
    let ids: Vec<OrderId> = h.book.bids().map(|b| b.id).collect();
    assert_eq!(ids, vec![order(21), order(20)]);
}

#[test]
fn amended_order_can_cross_and_trade() {
    let mut h = Harness::new();
    let a = ask(10, BOB, 4, 10, 200);
    h.ask(a);
    let b = bid(20, ALICE, 2, 2, 150);
    h.bid(b);
    let events = h.amend(20, ALICE, Some(210), None);
    let raised = Bid { price: cents(210), ..b };
    assert_eq!(
        events,
        vec![
            Event::Amended { order_id: b.id, price: cents(210), gpus: 2, remaining_gpus: 2 },
            trade(&raised, &a, 200, T0)
        ]
    );
    // A bid that is too wide may fit once it is made smaller.
    let wide = bid(21, DAN, 4, 2, 300);
    assert_eq!(h.bid(wide), vec![accepted(21)]);
    let events = h.amend(21, DAN, None, Some(2));
    assert_eq!(trades(&events), vec![(wide.id, a.id)]);
    assert!(h.book.is_empty());

    // An ask lowered into the bids fills them at their price.
    let b = bid(22, ALICE, 1, 2, 150);
    h.bid(b);
    let a = ask(11, CAROL, 3, 10, 200);
    h.ask(a);
    let events = h.amend(11, CAROL, Some(100), None);
    assert_eq!(
        events,
        vec![
            Event::Amended { order_id: a.id, price: cents(100), gpus: 3, remaining_gpus: 3 },
            trade(&b, &Ask { price: cents(100), ..a }, 150, T0)
        ]
    );
    assert_eq!(h.resting_ask(11).remaining_gpus, 2);
    assert_eq!(h.resting_ask(11).price, cents(100));
}

#[test]
fn amend_rejections() {
    let mut h = Harness::new();
    h.ask(ask(10, BOB, 4, 10, 200));
    h.bid(bid(20, ALICE, 3, 2, 250)); // sells 3 of ask 10
    h.bid(bid(21, ALICE, 3, 2, 100));
    assert_eq!(h.amend(99, BOB, Some(1), None), vec![rejected(99, RejectReason::UnknownOrder)]);
    assert_eq!(h.amend(10, ALICE, Some(1), None), vec![rejected(10, RejectReason::NotOwner)]);
    assert_eq!(h.amend(10, BOB, None, None), vec![rejected(10, RejectReason::NothingToAmend)]);
    assert_eq!(h.amend(10, BOB, Some(0), None), vec![rejected(10, RejectReason::ZeroOrNegativePrice)]);
    assert_eq!(h.amend(21, ALICE, None, Some(0)), vec![rejected(21, RejectReason::ZeroGpus)]);
    assert_eq!(h.amend(21, ALICE, None, Some(GPUS_PER_ORDER_MAX + 1)), vec![rejected(21, RejectReason::TooManyGpus)]);
    assert_eq!(h.amend(10, BOB, None, Some(3)), vec![rejected(10, RejectReason::GpusBelowFilled)]);
    assert_eq!(
        h.amend(10, BOB, None, Some(5)),
        vec![Event::Amended { order_id: order(10), price: cents(200), gpus: 5, remaining_gpus: 2 }]
    );
}

#[test]
fn placement_rejections() {
    let mut h = Harness::new();
    let cases = [
        (bid(1, ALICE, 0, 1, 100), RejectReason::ZeroGpus),
        (bid(2, ALICE, GPUS_PER_ORDER_MAX + 1, 1, 100), RejectReason::TooManyGpus),
        (bid(3, ALICE, 1, 1, 0), RejectReason::ZeroOrNegativePrice),
        (bid(4, ALICE, 1, 0, 100), RejectReason::NonPositiveDuration),
        (bid(5, ALICE, 1, -1, 100), RejectReason::NonPositiveDuration),
        (Bid { duration_ms: DURATION_MS_MAX + 1, ..bid(6, ALICE, 1, 1, 100) }, RejectReason::DurationTooLong),
    ];
    for (b, reason) in cases {
        assert_eq!(h.bid(b), vec![Event::Rejected { order_id: b.id, reason }]);
    }
    let cases = [
        (ask(11, BOB, 0, 1, 100), RejectReason::ZeroGpus),
        (ask(12, BOB, GPUS_PER_ORDER_MAX + 1, 1, 100), RejectReason::TooManyGpus),
        (ask(13, BOB, 1, 1, 0), RejectReason::ZeroOrNegativePrice),
        (ask(14, BOB, 1, 0, 100), RejectReason::AlreadyExpired),
    ];
    for (a, reason) in cases {
        assert_eq!(h.ask(a), vec![Event::Rejected { order_id: a.id, reason }]);
    }
    assert!(h.book.is_empty());
    // Ids must be unique among resting orders, across sides.
    h.bid(bid(20, ALICE, 1, 1, 100));
    assert_eq!(h.ask(ask(20, BOB, 1, 10, 200)), vec![rejected(20, RejectReason::DuplicateOrderId)]);
    assert_eq!(h.bid(bid(20, ALICE, 1, 1, 100)), vec![rejected(20, RejectReason::DuplicateOrderId)]);
}

#[test]
fn full_book_rejects_new_orders() {
    let mut book = Book::with_orders_max(2);
    let mut out = Vec::new();
    for (n, id) in [20, 21, 22].into_iter().enumerate() {
        out.clear();
        book.apply(Command::PlaceBid { at_ms: T0, bid: bid(id, ALICE, 1, 1, 100 + n as i64) }, &mut out);
    }
    assert_eq!(out, vec![rejected(22, RejectReason::BookFull)]);
    assert_eq!(book.len(), 2);
}

#[test]
fn why_unfilled_explains_each_reason() {
    let mut h = Harness::new();
    let b = bid(20, ALICE, 4, 5, 100);
    h.bid(b);
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::NoAsks]);
    assert_eq!(h.book.why_unfilled(order(99)), vec![]);

    h.ask(ask(10, ALICE, 8, 10, 50));
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::OnlyOwnAsks]);
    assert_eq!(h.book.why_unfilled(order(10)), vec![], "asks have no reasons");

    h.ask(ask(11, BOB, 2, 3, 150));
    assert_eq!(
        h.book.why_unfilled(b.id),
        vec![
            UnfilledReason::PriceBelowBestAsk { best_ask: cents(150) },
            UnfilledReason::NoHostWithEnoughGpus { largest_free: 2 },
            UnfilledReason::NoAskLongEnough { longest_available_ms: 3 * HOUR_MS },
        ]
    );
    // Cheap but small and short, or big and long but dear: no single ask fits.
    h.cancel(11, BOB);
    h.ask(ask(12, BOB, 2, 3, 90));
    h.ask(ask(13, CAROL, 8, 10, 150));
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::NoSingleAskFits]);
}

#[test]
fn depth_aggregates_levels_best_first() {
    let mut h = Harness::new();
    h.bid(bid(20, ALICE, 1, 1, 100));
    h.bid(bid(21, DAN, 2, 1, 100));
    h.bid(bid(22, DAN, 4, 1, 120));
    h.ask(ask(10, BOB, 8, 10, 200));
    h.ask(ask(11, CAROL, 2, 10, 190));
    h.bid(bid(23, ALICE, 3, 1, 200)); // ask 11 is cheaper but too small: takes 3 of ask 10
    assert_eq!(
        h.book.depth(10),
        Depth {
            bids: vec![
                Level { price: cents(120), gpus: 4, orders: 1 },
                Level { price: cents(100), gpus: 3, orders: 2 },
            ],
            asks: vec![
                Level { price: cents(190), gpus: 2, orders: 1 },
                Level { price: cents(200), gpus: 5, orders: 1 },
            ],
            ..Depth::default()
        }
    );
    assert_eq!(h.book.depth(1).bids.len(), 1);
    assert_eq!(h.book.depth(0), Depth::default());
    assert_eq!(h.book.best_bid(), Some(cents(120)));
    assert_eq!(h.book.best_ask(), Some(cents(190)));
}

#[test]
fn restore_rebuilds_priority_without_matching() {
    let mut h = Harness::new();
    h.bid(bid(20, ALICE, 1, 1, 100));
    h.bid(bid(21, DAN, 1, 1, 100));
    h.ask(ask(10, BOB, 8, 10, 200));
    h.bid(bid(22, DAN, 3, 1, 250)); // sells 3 of ask 10
    h.ask(ask(11, CAROL, 2, 10, 200));
    h.amend(20, ALICE, None, Some(2)); // to the back of its level

    let mut rebuilt = Book::new();
    let orders: Vec<RestingOrder> =
        h.book.bids().map(RestingOrder::Bid).chain(h.book.asks().map(RestingOrder::Ask)).collect();
    // Any call order gives the same book: priority comes from seq.
    for o in orders.iter().rev() {
        rebuilt.restore(*o, T0).expect("valid order");
    }
    rebuilt.check_invariants();
    assert_eq!(rebuilt.bids().collect::<Vec<_>>(), h.book.bids().collect::<Vec<_>>());
    assert_eq!(rebuilt.asks().collect::<Vec<_>>(), h.book.asks().collect::<Vec<_>>());
    assert_eq!(rebuilt.len(), h.book.len());

    // New orders rank after restored ones, exactly as in the original.
    let next = bid(30, ALICE, 1, 1, 100);
    let mut out = Vec::new();
    rebuilt.apply(Command::PlaceBid { at_ms: T0, bid: next }, &mut out);
    h.bid(next);
    assert_eq!(rebuilt.bids().collect::<Vec<_>>(), h.book.bids().collect::<Vec<_>>());

    // Restoring refuses bad input and changes nothing then.
    let first = orders[0];
    assert_eq!(rebuilt.restore(first, T0), Err(RejectReason::DuplicateOrderId));
    let RestingOrder::Ask(a) = orders[orders.len() - 1] else {
        panic!("last is an ask");
    };
    let clash = RestingAsk { id: order(50), ..a };
    assert_eq!(rebuilt.restore(RestingOrder::Ask(clash), T0), Err(RejectReason::SequenceTaken));
    let sold_out = RestingAsk { id: order(51), seq: 1_000, remaining_gpus: 0, ..a };
    assert_eq!(rebuilt.restore(RestingOrder::Ask(sold_out), T0), Err(RejectReason::ZeroGpus));
    let oversold = RestingAsk { id: order(52), seq: 1_001, remaining_gpus: a.gpus + 1, ..a };
    assert_eq!(rebuilt.restore(RestingOrder::Ask(oversold), T0 + HOUR_MS), Err(RejectReason::TooManyGpus));
    assert_eq!(rebuilt.now_ms(), Some(T0), "a refused restore leaves the clock");
    rebuilt.check_invariants();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "could trade")]
fn restore_of_a_crossing_order_panics_in_debug() {
    let mut book = Book::new();
    let a = ask(10, BOB, 4, 10, 100);
    book.restore(
        RestingOrder::Ask(RestingAsk {
            id: a.id,
            seq: 0,
            owner: a.owner,
            host: a.host,
            gpus: 4,
            remaining_gpus: 4,
            available_until_ms: a.available_until_ms,
            price: a.price,
            grade: a.grade,
            interruptible_price: None,
            interruptible_gpus: 0,
        }),
        T0,
    )
    .expect("valid");
    let b = bid(20, ALICE, 1, 1, 200);
    let _ = book.restore(
        RestingOrder::Bid(RestingBid {
            id: b.id,
            seq: 1,
            owner: b.owner,
            gpus: 1,
            duration_ms: b.duration_ms,
            price: b.price,
            excluded_hosts: ExcludedHosts::NONE,
            requires: b.requires,
            priority: Priority::OnDemand,
        }),
        T0,
    );
}

#[test]
fn events_and_commands_serialise() {
    let b = bid(20, ALICE, 1, 1, 100);
    let a = ask(10, BOB, 1, 10, 100);
    let events = vec![
        accepted(20),
        rejected(20, RejectReason::NotOwner),
        trade(&b, &a, 100, T0),
        Event::Cancelled { order_id: order(1), gpus_released: 2 },
        Event::Expired { order_id: order(1), gpus_released: 2 },
        Event::Amended { order_id: order(1), price: cents(5), gpus: 2, remaining_gpus: 1 },
        Event::Regraded { order_id: order(1), grade: grade(Verification::CcAttested, 990_000) },
    ];
    let json = serde_json::to_string(&events).expect("serialises");
    assert!(json.contains(r#""reason":"not_owner""#), "{json}");
    assert!(json.contains(r#""grade":{"verification":"cc_attested","uptime_7d_ppm":990000}"#), "{json}");
    assert!(json.contains(r#""price":"1.000000""#), "{json}");
    let back: Vec<Event> = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, events);

    let command = Command::PlaceBid { at_ms: T0, bid: b };
    let json = serde_json::to_string(&command).expect("serialises");
    assert_eq!(serde_json::from_str::<Command>(&json).expect("parses"), command);

    let command = Command::PlaceBid { at_ms: T0, bid: bid_verified(21, ALICE, 1, 1, 100, Verification::Challenged) };
    let json = serde_json::to_string(&command).expect("serialises");
    assert!(json.contains(r#""min_verification":"challenged""#), "{json}");
    assert_eq!(serde_json::from_str::<Command>(&json).expect("parses"), command);
    let command = Command::Regrade { at_ms: T0, order_id: order(10), grade: AskGrade::UNGRADED };
    let json = serde_json::to_string(&command).expect("serialises");
    assert!(json.contains(r#""type":"regrade""#), "{json}");
    assert_eq!(serde_json::from_str::<Command>(&json).expect("parses"), command);

    // A bid written before requirements existed reads as requiring nothing.
    let json = r#"{"id":"00000000-0000-0000-0000-000000000014","owner":"00000000-0000-0000-0000-0000000003e9",
        "gpus":1,"duration_ms":3600000,"price":"1.000000","tif":"gtc"}"#;
    assert_eq!(serde_json::from_str::<Bid>(json).expect("parses"), b);
}

#[test]
fn bid_requiring_challenged_skips_a_cheaper_reported_ask() {
    let mut h = Harness::new();
    let reported = ask_graded(10, BOB, 4, 10, 100, grade(Verification::Reported, PPM_MAX));
    h.ask(reported);
    let b = bid_verified(20, ALICE, 2, 2, 200, Verification::Challenged);
    assert_eq!(h.bid(b), vec![accepted(20)], "the only ask is too weakly verified");

    // A later, dearer challenged ask takes the waiting bid at the bid's price.
    let challenged = ask_graded(11, CAROL, 4, 10, 150, grade(Verification::Challenged, PPM_MAX));
    assert_eq!(h.ask(challenged), vec![accepted(11), trade(&b, &challenged, 200, T0)]);

    // An incoming bid passes over the cheaper reported ask too, which keeps its place.
    let seq = h.resting_ask(10).seq;
    let b2 = bid_verified(21, DAN, 1, 1, 200, Verification::Challenged);
    assert_eq!(h.bid(b2), vec![accepted(21), trade(&b2, &challenged, 150, T0)]);
    assert_eq!(h.resting_ask(10).seq, seq);
    // Stronger supply meets a weaker floor, and no floor takes the cheapest.
    let b3 = bid_verified(22, DAN, 1, 1, 200, Verification::Reported);
    assert_eq!(trades(&h.bid(b3)), vec![(b3.id, reported.id)]);
    let b4 = bid(23, ALICE, 1, 1, 200);
    assert_eq!(trades(&h.bid(b4)), vec![(b4.id, reported.id)]);
}

#[test]
fn incoming_ask_skips_bids_that_do_not_admit_it_and_they_keep_priority() {
    let mut h = Harness::new();
    let picky = bid_verified(20, ALICE, 2, 2, 300, Verification::CcAttested);
    let plain = bid(21, DAN, 2, 2, 200);
    h.bid(picky);
    h.bid(plain);
    let seq = h.resting_bid(20).seq;
    let a = ask_graded(10, BOB, 4, 10, 100, grade(Verification::Challenged, PPM_MAX));
    assert_eq!(h.ask(a), vec![accepted(10), trade(&plain, &a, 200, T0)]);
    assert_eq!(h.resting_bid(20).seq, seq);
    assert_eq!(h.resting_bid(20).requires, picky.requires);
    assert_eq!(h.resting_ask(10).grade, a.grade);
}

#[test]
fn regrade_up_fills_a_waiting_bid_and_keeps_priority() {
    let mut h = Harness::new();
    let a = ask_graded(10, BOB, 4, 10, 100, grade(Verification::Reported, PPM_MAX));
    let other = ask(11, CAROL, 4, 10, 100);
    h.ask(a);
    h.ask(other);
    let b = bid_verified(20, ALICE, 3, 2, 200, Verification::Challenged);
    assert_eq!(h.bid(b), vec![accepted(20)]);
    let seq = h.resting_ask(10).seq;

    let up = grade(Verification::Challenged, PPM_MAX);
    assert_eq!(
        h.regrade(10, up),
        vec![Event::Regraded { order_id: a.id, grade: up }, trade(&b, &Ask { grade: up, ..a }, 200, T0)]
    );
    let after = h.resting_ask(10);
    assert_eq!((after.seq, after.remaining_gpus, after.grade), (seq, 1, up));
    // Still ahead of the ask placed after it at the same price.
    let next = bid(21, DAN, 1, 1, 100);
    assert_eq!(trades(&h.bid(next)), vec![(next.id, a.id)]);
}

#[test]
fn regrade_down_stops_later_matches() {
    let mut h = Harness::new();
    let a = ask_graded(10, BOB, 4, 10, 100, grade(Verification::CcAttested, 999_000));
    h.ask(a);
    let down = grade(Verification::Reported, 999_000);
    assert_eq!(h.regrade(10, down), vec![Event::Regraded { order_id: a.id, grade: down }]);
    let b = bid_verified(20, ALICE, 1, 1, 200, Verification::Challenged);
    assert_eq!(h.bid(b), vec![accepted(20)]);
    assert_eq!(
        h.book.why_unfilled(b.id),
        vec![UnfilledReason::VerificationBelowRequired { best_available: Verification::Reported }]
    );
    // An uptime drop stops a reliability floor the same way.
    let b2 = bid_reliable(21, DAN, 1, 1, 200, 990_000);
    h.regrade(10, grade(Verification::Reported, 989_999));
    assert_eq!(h.bid(b2), vec![accepted(21)]);
    // Without a floor, the regraded ask still sells.
    let b3 = bid(22, DAN, 1, 1, 200);
    assert_eq!(trades(&h.bid(b3)), vec![(b3.id, a.id)]);
}

#[test]
fn regrade_rejections() {
    let mut h = Harness::new();
    h.ask(ask(10, BOB, 4, 10, 300));
    h.bid(bid(20, ALICE, 1, 1, 100));
    let before = (h.book.bids().collect::<Vec<_>>(), h.book.asks().collect::<Vec<_>>());
    assert_eq!(h.regrade(20, AskGrade::UNGRADED), vec![rejected(20, RejectReason::NotAnAsk)]);
    assert_eq!(h.regrade(99, AskGrade::UNGRADED), vec![rejected(99, RejectReason::UnknownOrder)]);
    assert_eq!(
        h.regrade(10, grade(Verification::Challenged, PPM_MAX + 1)),
        vec![rejected(10, RejectReason::UptimeOutOfRange)]
    );
    assert_eq!((h.book.bids().collect::<Vec<_>>(), h.book.asks().collect::<Vec<_>>()), before);
}

#[test]
fn reliability_floor_is_inclusive() {
    let mut h = Harness::new();
    let a = ask_graded(10, BOB, 4, 10, 100, grade(Verification::Reported, 990_000));
    h.ask(a);
    let above = bid_reliable(20, ALICE, 1, 1, 200, 990_001);
    assert_eq!(h.bid(above), vec![accepted(20)]);
    assert_eq!(
        h.book.why_unfilled(above.id),
        vec![UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm: 990_000 }]
    );
    let at = bid_reliable(21, DAN, 1, 1, 200, 990_000);
    assert_eq!(h.bid(at), vec![accepted(21), trade(&at, &a, 100, T0)]);
    let zero = bid_reliable(22, DAN, 1, 1, 200, 0);
    assert_eq!(trades(&h.bid(zero)), vec![(zero.id, a.id)]);
    // A better host fills the bid that was waiting; a perfect one meets a 100% floor.
    let perfect = ask_graded(11, CAROL, 2, 10, 100, grade(Verification::Reported, PPM_MAX));
    assert_eq!(trades(&h.ask(perfect)), vec![(above.id, perfect.id)]);
    let all = bid_reliable(23, DAN, 1, 1, 200, PPM_MAX);
    assert_eq!(trades(&h.bid(all)), vec![(all.id, perfect.id)]);

    // More than 100% is refused on either side.
    let over = bid_reliable(24, ALICE, 1, 1, 200, PPM_MAX + 1);
    assert_eq!(h.bid(over), vec![rejected(24, RejectReason::UptimeOutOfRange)]);
    let over = ask_graded(12, BOB, 1, 10, 100, grade(Verification::Reported, PPM_MAX + 1));
    assert_eq!(h.ask(over), vec![rejected(12, RejectReason::UptimeOutOfRange)]);
    let mut book = Book::new();
    let resting = RestingAsk {
        id: order(13),
        seq: 0,
        owner: user(BOB),
        host: host(BOB),
        gpus: 1,
        remaining_gpus: 1,
        available_until_ms: T0 + HOUR_MS,
        price: cents(100),
        grade: grade(Verification::Reported, PPM_MAX + 1),
        interruptible_price: None,
        interruptible_gpus: 0,
    };
    assert_eq!(book.restore(RestingOrder::Ask(resting), T0), Err(RejectReason::UptimeOutOfRange));
    let resting = RestingBid {
        id: order(14),
        seq: 0,
        owner: user(ALICE),
        gpus: 1,
        duration_ms: HOUR_MS,
        price: cents(100),
        requires: over_requirement(),
        excluded_hosts: ExcludedHosts::NONE,
        priority: Priority::OnDemand,
    };
    assert_eq!(book.restore(RestingOrder::Bid(resting), T0), Err(RejectReason::UptimeOutOfRange));
    assert!(book.is_empty());
}

fn over_requirement() -> Requirements {
    Requirements { min_verification: None, min_uptime_7d_ppm: Some(PPM_MAX + 1) }
}

#[test]
fn why_unfilled_names_verification_and_reliability() {
    let mut h = Harness::new();
    let needs = Requirements { min_verification: Some(Verification::CcAttested), min_uptime_7d_ppm: Some(999_000) };
    let b = Bid { requires: needs, ..bid(20, ALICE, 2, 2, 100) };
    h.bid(b);
    // The bidder's own attested, reliable ask does not count.
    h.ask(ask_graded(10, ALICE, 4, 10, 50, grade(Verification::CcAttested, PPM_MAX)));
    h.ask(ask_graded(11, BOB, 4, 10, 90, grade(Verification::Reported, 990_000)));
    h.ask(ask_graded(12, CAROL, 4, 10, 200, grade(Verification::Challenged, 995_000)));
    assert_eq!(
        h.book.why_unfilled(b.id),
        vec![
            UnfilledReason::VerificationBelowRequired { best_available: Verification::Challenged },
            UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm: 995_000 },
        ]
    );

    // Each after price, size and duration.
    let small = Bid { requires: needs, ..bid(21, ALICE, 8, 20, 10) };
    h.bid(small);
    assert_eq!(
        h.book.why_unfilled(small.id),
        vec![
            UnfilledReason::PriceBelowBestAsk { best_ask: cents(90) },
            UnfilledReason::NoHostWithEnoughGpus { largest_free: 4 },
            UnfilledReason::NoAskLongEnough { longest_available_ms: 10 * HOUR_MS },
            UnfilledReason::VerificationBelowRequired { best_available: Verification::Challenged },
            UnfilledReason::ReliabilityBelowRequired { best_uptime_7d_ppm: 995_000 },
        ]
    );

    // Attested but unreliable, reliable but unattested: each floor is met by some ask, no
    // single ask meets both.
    h.ask(ask_graded(13, BOB, 4, 10, 90, grade(Verification::CcAttested, 500_000)));
    h.ask(ask_graded(14, CAROL, 4, 10, 90, grade(Verification::Simulated, PPM_MAX)));
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::NoSingleAskFits]);
    // A bid without requirements is never told about grades.
    let plain = bid(22, ALICE, 2, 2, 80);
    h.bid(plain);
    assert_eq!(h.book.why_unfilled(plain.id), vec![UnfilledReason::PriceBelowBestAsk { best_ask: cents(90) }]);
}

/// A managed job's restart bid never trades with a host that failed the job: it passes
/// over the cheaper ask on the excluded host and takes the other one; with only excluded
/// hosts left it rests and says so; an incoming ask on the excluded host passes over it.
#[test]
fn a_bid_never_trades_with_an_excluded_host() {
    let mut h = Harness::new();
    let bob = ask(10, BOB, 1, 10, 100);
    let carol = ask(11, CAROL, 1, 10, 150);
    h.ask(bob);
    h.ask(carol);
    let restart = Bid { excluded_hosts: ExcludedHosts::new(&[host(BOB)]).unwrap(), ..bid(20, ALICE, 1, 1, 200) };
    assert_eq!(h.bid(restart), vec![accepted(20), trade(&restart, &carol, 150, T0)]);

    let again = Bid { excluded_hosts: ExcludedHosts::new(&[host(BOB)]).unwrap(), ..bid(21, ALICE, 1, 1, 200) };
    assert_eq!(h.bid(again), vec![accepted(21)]);
    assert_eq!(h.book.why_unfilled(order(21)), vec![UnfilledReason::OnlyExcludedHosts]);
    assert_eq!(h.resting_bid(21).excluded_hosts.as_slice(), &[host(BOB)]);

    let bob_more = ask(12, BOB, 1, 10, 50);
    assert_eq!(h.ask(bob_more), vec![accepted(12)]);
    let carol_more = ask(13, CAROL, 1, 10, 150);
    assert_eq!(h.ask(carol_more), vec![accepted(13), trade(&again, &carol_more, 200, T0)]);
}

#[test]
fn excluded_hosts_are_a_bounded_set() {
    let hosts: Vec<HostId> = (0..capex_book::EXCLUDED_HOSTS_MAX as u128).map(host).collect();
    let set = ExcludedHosts::new(&[hosts.clone(), hosts.clone()].concat()).expect("duplicates count once");
    assert_eq!(set.as_slice(), hosts.as_slice());
    let too_many: Vec<HostId> = (0..=capex_book::EXCLUDED_HOSTS_MAX as u128).map(host).collect();
    assert!(ExcludedHosts::new(&too_many).is_none());
    assert!(ExcludedHosts::NONE.is_empty() && !ExcludedHosts::NONE.contains(host(0)));
}

// ---------------------------------------------------------------------------------------
// Interruptible capacity.
// ---------------------------------------------------------------------------------------

const EVE: u128 = 5; // buyer

/// An interruptible bid.
fn ibid(id: u128, owner: u128, gpus: u32, hours: i64, price: i64) -> Bid {
    Bid { priority: Priority::Interruptible, ..bid(id, owner, gpus, hours, price) }
}

/// An ask that also offers its idle GPUs for interruptible use at `interruptible`.
fn iask(id: u128, owner: u128, gpus: u32, hours: i64, price: i64, interruptible: i64) -> Ask {
    Ask { interruptible_price: Some(cents(interruptible)), ..ask(id, owner, gpus, hours, price) }
}

/// The lease `lease` (the bid that made it) on `ask` was preempted by bid `by`.
fn preempted(lease: &Bid, ask: &Ask, price: i64, by: u128) -> Event {
    Event::Preempted {
        lease_id: lease.id,
        ask_id: ask.id,
        buyer: lease.owner,
        host: ask.host,
        gpus: lease.gpus,
        price: cents(price),
        by_bid: order(by),
        at_ms: T0,
    }
}

fn lease_ended(ask: u128, lease: u128, gpus_released: u32) -> Event {
    Event::LeaseEnded { ask_id: order(ask), lease_id: order(lease), gpus_released }
}

impl Harness {
    fn end_lease(&mut self, ask: u128, lease: u128) -> Vec<Event> {
        self.apply(Command::EndLease { at_ms: self.now_ms, ask_id: order(ask), lease_id: order(lease) })
    }

    /// Lease ids on `ask`, oldest first.
    fn lease_ids(&self, ask: u128) -> Vec<OrderId> {
        self.book.leases_of(order(ask)).iter().map(|lease| lease.lease_id).collect()
    }
}

#[test]
fn incoming_interruptible_bid_leases_idle_gpus_at_the_interruptible_price() {
    let mut h = Harness::new();
    let a = iask(10, BOB, 4, 10, 200, 100);
    assert_eq!(h.apply_exact(Command::PlaceAsk { at_ms: T0, ask: a }), vec![accepted(10)]);
    let b = ibid(20, ALICE, 3, 2, 150);
    let events = h.apply_exact(Command::PlaceBid { at_ms: T0, bid: b });
    // The ask rested with seq 0; the trade takes the next number, which names the lease's age.
    let Event::Trade { seq, .. } = events[1] else { panic!("{events:?}") };
    assert_eq!(events, vec![accepted(20), with_seq(trade(&b, &a, 100, T0), 1)]);
    assert_eq!(
        h.book.leases_of(a.id),
        vec![InterruptibleLease { lease_id: b.id, ask_id: a.id, buyer: b.owner, gpus: 3, price: cents(100), seq }]
    );
    assert_eq!(h.book.leases().count(), 1);
    // The GPUs are still offered on demand; only one is idle.
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (4, 3));
    assert_eq!(h.book.best_ask(), Some(cents(200)));
    assert_eq!(h.book.best_interruptible_ask(), Some(cents(100)));
    assert_eq!(h.book.order(b.id), None, "a filled interruptible bid does not rest");

    // Below the interruptible price, or wider than the idle GPUs, an interruptible bid rests.
    let low = ibid(21, DAN, 1, 2, 90);
    assert_eq!(h.bid(low), vec![accepted(21)]);
    let wide = ibid(22, DAN, 2, 2, 150);
    assert_eq!(h.bid(wide), vec![accepted(22)]);
    assert_eq!(h.book.best_interruptible_bid(), Some(cents(150)));
    assert_eq!(h.book.best_bid(), None, "best_bid is on demand only");
    assert_eq!(h.resting_bid(22).priority, Priority::Interruptible);
    // An ask without an interruptible price never leases.
    h.ask(ask(11, CAROL, 4, 10, 50));
    assert_eq!(h.book.best_interruptible_ask(), Some(cents(100)));
    assert_eq!(h.book.why_unfilled(wide.id), vec![UnfilledReason::NoHostWithEnoughGpus { largest_free: 1 }]);
}

#[test]
fn interruptible_bid_takes_the_lowest_interruptible_price_then_the_earliest() {
    let mut h = Harness::new();
    let dear = iask(10, BOB, 4, 10, 200, 100); // dearer on demand, cheaper interruptible
    let cheap = iask(11, CAROL, 4, 10, 150, 120);
    let same = iask(12, CAROL, 4, 10, 300, 100); // same interruptible price, later
    for a in [dear, cheap, same] {
        h.ask(a);
    }
    let b = ibid(20, ALICE, 1, 1, 500);
    assert_eq!(h.bid(b), vec![accepted(20), trade(&b, &dear, 100, T0)]);
    let on_demand = bid(21, DAN, 1, 1, 500);
    assert_eq!(h.bid(on_demand), vec![accepted(21), trade(&on_demand, &cheap, 150, T0)]);
    // Requirements and excluded hosts pass asks over as on demand.
    let picky = Bid { excluded_hosts: ExcludedHosts::new(&[host(BOB)]).unwrap(), ..ibid(22, ALICE, 1, 1, 500) };
    assert_eq!(h.bid(picky), vec![accepted(22), trade(&picky, &same, 100, T0)]);
    let attested = Bid {
        requires: Requirements { min_verification: Some(Verification::CcAttested), ..Requirements::NONE },
        ..ibid(23, ALICE, 1, 1, 500)
    };
    assert_eq!(h.bid(attested), vec![accepted(23)]);
    assert_eq!(
        h.book.why_unfilled(attested.id),
        vec![UnfilledReason::VerificationBelowRequired { best_available: Verification::Reported }]
    );
}

#[test]
fn incoming_ask_fills_on_demand_bids_then_interruptible_ones_at_its_interruptible_price() {
    let mut h = Harness::new();
    let waiting = ibid(20, ALICE, 2, 2, 300);
    let rich = ibid(21, DAN, 1, 2, 250);
    let on_demand = bid(22, DAN, 3, 2, 210);
    for b in [waiting, rich, on_demand] {
        h.bid(b);
    }
    assert_eq!(h.book.why_unfilled(waiting.id), vec![UnfilledReason::NoAsks]);
    // An ask without an interruptible price fills only the on-demand bid.
    h.ask(ask(9, CAROL, 1, 10, 500));
    assert_eq!(h.book.why_unfilled(waiting.id), vec![UnfilledReason::NoInterruptibleAsks]);
    // The on-demand bid first, though both interruptible bids pay more; then the idle GPU
    // goes to the best interruptible bid that fits, at the ask's interruptible price, not
    // the bid's.
    let a = iask(10, BOB, 4, 10, 200, 100);
    assert_eq!(h.ask(a), vec![accepted(10), trade(&on_demand, &a, 210, T0), trade(&rich, &a, 100, T0)]);
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (1, 1));
    assert_eq!(h.lease_ids(10), vec![rich.id]);
    assert_eq!(h.book.why_unfilled(waiting.id), vec![UnfilledReason::NoHostWithEnoughGpus { largest_free: 0 }]);

    // An IOC interruptible bid that finds no idle GPUs is cancelled like any IOC bid.
    let ioc = Bid { tif: Tif::Ioc, ..ibid(23, ALICE, 1, 1, 500) };
    assert_eq!(h.bid(ioc), vec![accepted(23), Event::Cancelled { order_id: ioc.id, gpus_released: 1 }]);
}

#[test]
fn depth_shows_leased_gpus_on_demand_and_idle_ones_interruptible() {
    let mut h = Harness::new();
    h.ask(iask(10, BOB, 4, 10, 200, 100));
    h.ask(iask(11, CAROL, 2, 10, 200, 120));
    h.ask(ask(12, CAROL, 2, 10, 190));
    h.bid(ibid(20, ALICE, 3, 1, 150)); // leases 3 of ask 10
    h.bid(ibid(21, DAN, 2, 1, 150)); // leases all of ask 11
    h.bid(ibid(22, ALICE, 4, 1, 90));
    h.bid(bid(23, DAN, 1, 1, 80));
    assert_eq!(
        h.book.depth(10),
        Depth {
            bids: vec![Level { price: cents(80), gpus: 1, orders: 1 }],
            asks: vec![
                Level { price: cents(190), gpus: 2, orders: 1 },
                Level { price: cents(200), gpus: 6, orders: 2 },
            ],
            interruptible_bids: vec![Level { price: cents(90), gpus: 4, orders: 1 }],
            // Ask 11 has nothing idle, so it is not shown.
            interruptible_asks: vec![Level { price: cents(100), gpus: 1, orders: 1 }],
        }
    );
    assert_eq!(h.book.best_interruptible_bid(), Some(cents(90)));
    h.bid(ibid(24, DAN, 1, 1, 100)); // leases the last idle GPU of ask 10
    assert_eq!(h.book.best_interruptible_ask(), None, "no idle GPU anywhere");
    assert_eq!(h.book.best_ask(), Some(cents(190)));
    assert_eq!(h.book.depth(10).interruptible_asks, vec![]);
}

#[test]
fn on_demand_bid_preempts_the_newest_leases_whole_before_its_trade() {
    let mut h = Harness::new();
    let a = iask(10, BOB, 8, 10, 200, 100);
    h.ask(a);
    let first = ibid(20, ALICE, 3, 2, 150);
    let second = ibid(21, DAN, 2, 2, 150);
    let third = ibid(22, ALICE, 2, 2, 150);
    for b in [first, second, third] {
        h.bid(b);
    }
    assert_eq!(h.resting_ask(10).interruptible_gpus, 7);
    // Three GPUs needed, one idle: the newest lease goes, whole, and is reported first.
    let od = bid(30, EVE, 3, 2, 200);
    assert_eq!(h.bid(od), vec![accepted(30), preempted(&third, &a, 100, 30), trade(&od, &a, 200, T0)]);
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (5, 5));
    assert_eq!(h.lease_ids(10), vec![first.id, second.id]);
    assert_eq!(h.end_lease(10, 22), vec![rejected(22, RejectReason::UnknownLease)]);

    // One GPU needed, none idle: the two-GPU lease goes whole, one GPU is idle after.
    let small = bid(31, EVE, 1, 2, 250);
    assert_eq!(h.bid(small), vec![accepted(31), preempted(&second, &a, 100, 31), trade(&small, &a, 200, T0)]);
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (4, 3));

    // Four GPUs needed, one idle: more than one lease would go, but only one is left.
    let all = bid(32, DAN, 4, 2, 200);
    assert_eq!(h.bid(all), vec![accepted(32), preempted(&first, &a, 100, 32), trade(&all, &a, 200, T0)]);
    // The ask sold out, which took every lease.
    assert!(h.book.is_empty());
    assert_eq!(h.book.leases().count(), 0);
}

#[test]
fn preemption_takes_the_cheapest_lease_first_then_the_newest() {
    // Leases of one ask at different prices only come from a restore (an ask keeps its
    // interruptible price), so build the book that way.
    let mut book = Book::new();
    let a = iask(10, BOB, 8, 10, 200, 100);
    let resting = RestingAsk {
        id: a.id,
        seq: 0,
        owner: a.owner,
        host: a.host,
        gpus: 8,
        remaining_gpus: 8,
        available_until_ms: a.available_until_ms,
        price: a.price,
        grade: a.grade,
        interruptible_price: a.interruptible_price,
        interruptible_gpus: 0,
    };
    book.restore(RestingOrder::Ask(resting), T0).expect("valid ask");
    let lease = |id: u128, gpus: u32, price: i64, seq: u64| InterruptibleLease {
        lease_id: order(id),
        ask_id: a.id,
        buyer: user(ALICE),
        gpus,
        price: cents(price),
        seq,
    };
    // Oldest to newest: 20 (cheap), 21 and 22 (dearer), 23 (cheap again).
    let leases = [lease(20, 2, 80, 5), lease(21, 2, 100, 6), lease(22, 2, 100, 7), lease(23, 1, 80, 8)];
    for l in leases {
        book.restore_lease(l).expect("valid lease");
    }
    book.check_invariants();
    let as_preempted = |l: InterruptibleLease, by: u128| Event::Preempted {
        lease_id: l.lease_id,
        ask_id: a.id,
        buyer: l.buyer,
        host: a.host,
        gpus: l.gpus,
        price: l.price,
        by_bid: order(by),
        at_ms: T0,
    };
    let mut out = Vec::new();
    let od = bid(30, DAN, 5, 1, 200);
    book.apply(Command::PlaceBid { at_ms: T0, bid: od }, &mut out);
    // One idle; four more needed: the cheap ones newest first (23, then 20), then the
    // newest dear one (22). The book's counter is past every restored seq: the trade is 9.
    assert_eq!(
        out,
        vec![
            accepted(30),
            as_preempted(leases[3], 30),
            as_preempted(leases[0], 30),
            as_preempted(leases[2], 30),
            with_seq(trade(&od, &a, 200, T0), 9),
        ]
    );
    assert_eq!(book.leases_of(a.id), vec![leases[1]]);
    book.check_invariants();
}

#[test]
fn preempted_gpus_the_trade_does_not_need_go_to_a_waiting_interruptible_bid() {
    let mut h = Harness::new();
    let a = iask(10, BOB, 4, 10, 200, 100);
    h.ask(a);
    let big = ibid(20, ALICE, 4, 2, 150);
    h.bid(big);
    let small = ibid(21, DAN, 1, 2, 120);
    let too_cheap = ibid(22, DAN, 1, 2, 90);
    assert_eq!(h.bid(small), vec![accepted(21)]);
    h.bid(too_cheap);
    assert_eq!(h.book.why_unfilled(small.id), vec![UnfilledReason::NoHostWithEnoughGpus { largest_free: 0 }]);
    let od = bid(30, EVE, 2, 2, 200);
    assert_eq!(
        h.bid(od),
        vec![accepted(30), preempted(&big, &a, 100, 30), trade(&od, &a, 200, T0), trade(&small, &a, 100, T0)]
    );
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (2, 1));
    assert_eq!(h.lease_ids(10), vec![small.id]);
    assert_eq!(h.resting_bid(22).priority, Priority::Interruptible, "below the interruptible price, it waits");
}

#[test]
fn ended_lease_frees_gpus_for_a_waiting_interruptible_bid() {
    let mut h = Harness::new();
    let a = iask(10, BOB, 4, 10, 200, 100);
    h.ask(a);
    let first = ibid(20, ALICE, 3, 2, 150);
    h.bid(first);
    let waiting = ibid(21, DAN, 2, 2, 150);
    assert_eq!(h.bid(waiting), vec![accepted(21)]);
    assert_eq!(h.end_lease(10, 20), vec![lease_ended(10, 20, 3), trade(&waiting, &a, 100, T0)]);
    assert_eq!(h.lease_ids(10), vec![waiting.id]);
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (4, 2));
    // With no bid waiting, the GPUs are just idle again.
    assert_eq!(h.end_lease(10, 21), vec![lease_ended(10, 21, 2)]);
    assert_eq!(h.resting_ask(10).interruptible_gpus, 0);
    assert_eq!(h.book.leases().count(), 0);
}

#[test]
fn end_lease_of_a_lease_the_book_does_not_know_is_rejected() {
    let mut h = Harness::new();
    h.ask(iask(10, BOB, 4, 10, 200, 100));
    h.ask(iask(11, CAROL, 4, 10, 200, 100));
    h.bid(ibid(20, ALICE, 1, 2, 150)); // a lease on ask 10
    h.bid(bid(21, ALICE, 1, 2, 100)); // a resting bid
    let before = (h.book.asks().collect::<Vec<_>>(), h.book.leases().collect::<Vec<_>>());
    let unknown = |lease| vec![rejected(lease, RejectReason::UnknownLease)];
    assert_eq!(h.end_lease(10, 99), unknown(99), "never made");
    assert_eq!(h.end_lease(11, 20), unknown(20), "on another ask");
    assert_eq!(h.end_lease(99, 20), unknown(20), "on an ask that does not exist");
    assert_eq!(h.end_lease(10, 21), unknown(21), "a resting bid is not a lease");
    assert_eq!(h.end_lease(10, 10), unknown(10), "nor is an ask");
    assert_eq!((h.book.asks().collect::<Vec<_>>(), h.book.leases().collect::<Vec<_>>()), before);
    assert_eq!(h.end_lease(10, 20), vec![lease_ended(10, 20, 1)]);
    assert_eq!(h.end_lease(10, 20), unknown(20), "already ended");
}

#[test]
fn an_ask_that_leaves_the_book_forgets_its_leases() {
    let mut h = Harness::new();
    h.ask(iask(10, BOB, 4, 10, 200, 100));
    h.bid(ibid(20, ALICE, 1, 2, 150));
    h.bid(ibid(21, DAN, 2, 2, 150));
    // While a lease lives, its id is taken: no order may use it.
    assert_eq!(h.bid(bid(20, ALICE, 1, 1, 100)), vec![rejected(20, RejectReason::DuplicateOrderId)]);
    assert_eq!(h.ask(ask(21, CAROL, 1, 10, 100)), vec![rejected(21, RejectReason::DuplicateOrderId)]);
    // Cancelling releases the remaining GPUs, the leased ones included, and the leases
    // are gone from the book (they run on outside it).
    assert_eq!(h.cancel(10, BOB), vec![Event::Cancelled { order_id: order(10), gpus_released: 4 }]);
    assert_eq!(h.book.leases().count(), 0);
    assert_eq!(h.book.leases_of(order(10)), vec![]);
    assert_eq!(h.end_lease(10, 20), vec![rejected(20, RejectReason::UnknownLease)]);
    // The ids are free again.
    assert_eq!(h.bid(bid(20, ALICE, 1, 1, 100)), vec![accepted(20)]);

    // Expiry forgets them the same way.
    h.ask(iask(11, BOB, 2, 1, 200, 100));
    h.bid(ibid(22, DAN, 1, 1, 150));
    assert_eq!(h.lease_ids(11), vec![order(22)]);
    h.now_ms = T0 + HOUR_MS;
    assert_eq!(
        h.apply(Command::Tick { at_ms: h.now_ms }),
        vec![Event::Expired { order_id: order(11), gpus_released: 2 }]
    );
    assert_eq!(h.book.leases().count(), 0);

    // And an IOC ask, which never rests, keeps none of the leases it made.
    h.bid(ibid(23, ALICE, 1, 1, 150));
    let ioc = Ask { tif: Tif::Ioc, ..iask(12, CAROL, 3, 10, 200, 100) };
    assert_eq!(
        h.ask(ioc),
        vec![
            accepted(12),
            trade(&ibid(23, ALICE, 1, 1, 150), &ioc, 100, h.now_ms),
            Event::Cancelled { order_id: ioc.id, gpus_released: 3 },
        ]
    );
    assert_eq!(h.book.leases().count(), 0);
}

#[test]
fn interruptible_price_must_be_above_zero_and_below_the_price() {
    let mut h = Harness::new();
    let cases = [
        (iask(10, BOB, 4, 10, 200, 0), RejectReason::ZeroOrNegativePrice),
        (iask(11, BOB, 4, 10, 200, 200), RejectReason::InterruptiblePriceNotBelowPrice),
        (iask(12, BOB, 4, 10, 200, 250), RejectReason::InterruptiblePriceNotBelowPrice),
        // The ask's own checks come first.
        (iask(13, BOB, 0, 10, 200, 250), RejectReason::ZeroGpus),
        (iask(14, BOB, 4, 10, 0, 100), RejectReason::ZeroOrNegativePrice),
        (iask(15, BOB, 4, 0, 200, 250), RejectReason::InterruptiblePriceNotBelowPrice),
    ];
    for (a, reason) in cases {
        assert_eq!(h.ask(a), vec![Event::Rejected { order_id: a.id, reason }]);
    }
    assert!(h.book.is_empty());
    assert_eq!(h.ask(iask(16, BOB, 4, 10, 200, 199)), vec![accepted(16)]);
}

#[test]
fn amending_an_ask_keeps_its_interruptible_price_and_its_leases() {
    let mut h = Harness::new();
    let a = iask(10, BOB, 8, 10, 200, 100);
    h.ask(a);
    let lease = ibid(20, ALICE, 3, 2, 150);
    h.bid(lease);
    h.bid(bid(21, DAN, 2, 2, 200)); // sells 2 on demand; 5 idle, no preemption
    let resting = h.resting_ask(10);
    assert_eq!((resting.remaining_gpus, resting.interruptible_gpus), (6, 3));

    assert_eq!(h.amend(10, BOB, Some(100), None), vec![rejected(10, RejectReason::InterruptiblePriceNotBelowPrice)]);
    assert_eq!(h.amend(10, BOB, Some(90), None), vec![rejected(10, RejectReason::InterruptiblePriceNotBelowPrice)]);
    // Unsold GPUs may not drop below those in interruptible use (2 left for 3 leased) ...
    assert_eq!(h.amend(10, BOB, None, Some(4)), vec![rejected(10, RejectReason::GpusBelowInterruptible)]);
    // ... nor the size to the GPUs sold, which is checked first.
    assert_eq!(h.amend(10, BOB, Some(90), Some(2)), vec![rejected(10, RejectReason::GpusBelowFilled)]);
    assert_eq!(h.amend(10, BOB, Some(90), Some(4)), vec![rejected(10, RejectReason::GpusBelowInterruptible)]);
    assert_eq!(h.resting_ask(10), resting, "a refused amendment changes nothing");
    // Exactly the leased GPUs left unsold is allowed.
    assert_eq!(
        h.amend(10, BOB, None, Some(5)),
        vec![Event::Amended { order_id: a.id, price: cents(200), gpus: 5, remaining_gpus: 3 }]
    );
    let after = h.resting_ask(10);
    assert_eq!((after.interruptible_price, after.interruptible_gpus, after.seq), (Some(cents(100)), 3, resting.seq));
    assert_eq!(h.lease_ids(10), vec![lease.id]);

    // An ask amended into a waiting on-demand bid fills it, preempting its own lease.
    let waiting = bid(22, DAN, 2, 2, 160);
    assert_eq!(h.bid(waiting), vec![accepted(22)]);
    let lowered = Ask { price: cents(150), gpus: 5, ..a };
    assert_eq!(
        h.amend(10, BOB, Some(150), None),
        vec![
            Event::Amended { order_id: a.id, price: cents(150), gpus: 5, remaining_gpus: 3 },
            preempted(&lease, &lowered, 100, 22),
            trade(&waiting, &lowered, 160, T0),
        ]
    );
    let after = h.resting_ask(10);
    assert_eq!((after.remaining_gpus, after.interruptible_gpus, after.interruptible_price), (1, 0, Some(cents(100))));
}

#[test]
fn amending_a_bid_keeps_its_priority() {
    let mut h = Harness::new();
    let a = iask(10, BOB, 4, 10, 200, 100);
    h.ask(a);
    let b = ibid(20, ALICE, 2, 2, 90);
    h.bid(b);
    assert_eq!(
        h.amend(20, ALICE, None, Some(1)),
        vec![Event::Amended { order_id: b.id, price: cents(90), gpus: 1, remaining_gpus: 1 }]
    );
    assert_eq!(h.resting_bid(20).priority, Priority::Interruptible);
    // Raised to the interruptible price (not the on-demand one), it leases.
    let raised = Bid { price: cents(100), gpus: 1, ..b };
    assert_eq!(
        h.amend(20, ALICE, Some(100), None),
        vec![
            Event::Amended { order_id: b.id, price: cents(100), gpus: 1, remaining_gpus: 1 },
            trade(&raised, &a, 100, T0)
        ]
    );
    assert_eq!(h.lease_ids(10), vec![b.id]);
}

#[test]
fn regrade_applies_to_interruptible_matching() {
    let mut h = Harness::new();
    let a = Ask { grade: grade(Verification::Reported, PPM_MAX), ..iask(10, BOB, 4, 10, 200, 100) };
    h.ask(a);
    let picky = Bid {
        requires: Requirements { min_verification: Some(Verification::Challenged), ..Requirements::NONE },
        ..ibid(20, ALICE, 2, 2, 150)
    };
    assert_eq!(h.bid(picky), vec![accepted(20)]);
    let up = grade(Verification::Challenged, PPM_MAX);
    assert_eq!(
        h.regrade(10, up),
        vec![Event::Regraded { order_id: a.id, grade: up }, trade(&picky, &Ask { grade: up, ..a }, 100, T0)]
    );
    // A worse grade stops later leases and leaves the live one alone.
    let down = grade(Verification::Reported, PPM_MAX);
    assert_eq!(h.regrade(10, down), vec![Event::Regraded { order_id: a.id, grade: down }]);
    assert_eq!(h.lease_ids(10), vec![picky.id]);
    let again = Bid { id: order(21), owner: user(DAN), ..picky };
    assert_eq!(h.bid(again), vec![accepted(21)]);
}

#[test]
fn why_unfilled_for_an_interruptible_bid_counts_interruptible_prices_and_idle_gpus() {
    let mut h = Harness::new();
    let b = ibid(20, ALICE, 3, 2, 90);
    h.bid(b);
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::NoAsks]);
    h.ask(iask(10, ALICE, 8, 10, 200, 50));
    assert_eq!(h.book.why_unfilled(b.id), vec![UnfilledReason::OnlyOwnAsks]);
    let bob_only = Bid { excluded_hosts: ExcludedHosts::new(&[host(BOB)]).unwrap(), ..ibid(21, ALICE, 1, 1, 90) };
    h.bid(bob_only);
    h.ask(iask(11, BOB, 2, 10, 200, 100));
    assert_eq!(h.book.why_unfilled(bob_only.id), vec![UnfilledReason::OnlyExcludedHosts]);
    // Carol's ask is cheap on demand but offers no interruptible use.
    h.ask(ask(12, CAROL, 8, 10, 60));
    assert_eq!(h.book.why_unfilled(bob_only.id), vec![UnfilledReason::NoInterruptibleAsks]);
    // For the first bid: the best interruptible price (not Carol's 60 on demand) and the
    // most idle GPUs (Bob's 2, of which the next line leases 1).
    let dan = Bid { excluded_hosts: ExcludedHosts::new(&[host(ALICE)]).unwrap(), ..ibid(22, DAN, 1, 1, 100) };
    assert_eq!(trades(&h.bid(dan)), vec![(dan.id, order(11))]);
    assert_eq!(
        h.book.why_unfilled(b.id),
        vec![
            UnfilledReason::PriceBelowBestAsk { best_ask: cents(100) },
            UnfilledReason::NoHostWithEnoughGpus { largest_free: 1 },
        ]
    );
    // On demand, the same bid would be told about Carol's ask.
    let od = bid(23, ALICE, 9, 2, 50);
    h.bid(od);
    assert_eq!(
        h.book.why_unfilled(od.id),
        vec![
            UnfilledReason::PriceBelowBestAsk { best_ask: cents(60) },
            UnfilledReason::NoHostWithEnoughGpus { largest_free: 8 },
        ]
    );
}

#[test]
fn restore_and_restore_lease_rebuild_a_book_that_behaves_the_same() {
    let mut h = Harness::new();
    h.ask(iask(10, BOB, 8, 10, 200, 100));
    h.ask(iask(11, CAROL, 4, 10, 180, 120));
    h.bid(ibid(20, ALICE, 3, 2, 150)); // leases ask 10
    h.bid(ibid(21, DAN, 2, 2, 150)); // leases ask 10
    h.bid(ibid(22, ALICE, 4, 2, 130)); // leases ask 11
    h.bid(ibid(23, DAN, 4, 2, 150)); // waits
    h.bid(bid(24, DAN, 9, 2, 300)); // waits: no host has 9
    let mut rebuilt = Book::new();
    let asks: Vec<RestingAsk> = h.book.asks().collect();
    assert_eq!(asks.iter().map(|a| a.interruptible_gpus).collect::<Vec<_>>(), vec![4, 5]);
    for a in &asks {
        rebuilt.restore(RestingOrder::Ask(RestingAsk { interruptible_gpus: 0, ..*a }), T0).expect("valid ask");
    }
    for b in h.book.bids() {
        rebuilt.restore(RestingOrder::Bid(b), T0).expect("valid bid");
    }
    let leases: Vec<InterruptibleLease> = h.book.leases().collect();
    for l in &leases {
        rebuilt.restore_lease(*l).expect("valid lease");
    }
    rebuilt.check_invariants();
    assert_eq!(rebuilt.asks().collect::<Vec<_>>(), asks);
    assert_eq!(rebuilt.bids().collect::<Vec<_>>(), h.book.bids().collect::<Vec<_>>());
    assert_eq!(rebuilt.leases_of(order(10)), h.book.leases_of(order(10)));

    // The same commands give the same events, sequence numbers included (nothing has
    // left the original book, so its counter and the rebuilt one's agree).
    let commands = [
        Command::PlaceBid { at_ms: T0, bid: bid(30, EVE, 7, 1, 200) }, // preempts 21, then 20
        Command::EndLease { at_ms: T0, ask_id: order(11), lease_id: order(22) }, // 23 takes ask 11
        Command::PlaceBid { at_ms: T0, bid: ibid(31, EVE, 1, 1, 150) },
        Command::Amend {
            at_ms: T0,
            order_id: order(11),
            owner: user(CAROL),
            new_price: Some(cents(130)),
            new_gpus: None,
        },
    ];
    let mut preemptions = 0;
    for command in commands {
        let mut out = Vec::new();
        rebuilt.apply(command, &mut out);
        rebuilt.check_invariants();
        preemptions += out.iter().filter(|e| matches!(e, Event::Preempted { .. })).count();
        assert_eq!(h.apply_exact(command), out, "{command:?}");
    }
    assert_eq!(preemptions, 2);
    let leases = |b: &Book| {
        let mut leases: Vec<InterruptibleLease> = b.leases().collect();
        leases.sort_by_key(|l| l.seq);
        leases
    };
    assert_eq!(leases(&rebuilt), leases(&h.book));
}

#[test]
fn restore_refuses_leases_that_do_not_fit() {
    let mut book = Book::new();
    let a = iask(10, BOB, 4, 10, 200, 100);
    let resting = RestingAsk {
        id: a.id,
        seq: 3,
        owner: a.owner,
        host: a.host,
        gpus: 4,
        remaining_gpus: 3,
        available_until_ms: a.available_until_ms,
        price: a.price,
        grade: a.grade,
        interruptible_price: a.interruptible_price,
        interruptible_gpus: 0,
    };
    let refused = |ask: RestingAsk| Book::new().restore(RestingOrder::Ask(ask), T0);
    assert_eq!(refused(RestingAsk { interruptible_gpus: 1, ..resting }), Err(RejectReason::GpusBelowInterruptible));
    assert_eq!(
        refused(RestingAsk { interruptible_price: Some(cents(200)), ..resting }),
        Err(RejectReason::InterruptiblePriceNotBelowPrice)
    );
    assert_eq!(
        refused(RestingAsk { interruptible_price: Some(Price::ZERO), ..resting }),
        Err(RejectReason::ZeroOrNegativePrice)
    );
    book.restore(RestingOrder::Ask(resting), T0).expect("valid ask");
    let plain = RestingAsk { id: order(11), seq: 4, interruptible_price: None, ..resting };
    book.restore(RestingOrder::Ask(plain), T0).expect("valid ask");
    let resting_bid = RestingBid {
        id: order(30),
        seq: 5,
        owner: user(ALICE),
        gpus: 9,
        duration_ms: HOUR_MS,
        price: cents(50),
        excluded_hosts: ExcludedHosts::NONE,
        requires: Requirements::NONE,
        priority: Priority::Interruptible,
    };
    book.restore(RestingOrder::Bid(resting_bid), T0).expect("valid bid");

    let lease = InterruptibleLease {
        lease_id: order(20),
        ask_id: a.id,
        buyer: user(ALICE),
        gpus: 2,
        price: cents(100),
        seq: 7,
    };
    assert_eq!(book.restore_lease(InterruptibleLease { ask_id: order(99), ..lease }), Err(RejectReason::UnknownOrder));
    assert_eq!(book.restore_lease(InterruptibleLease { ask_id: order(30), ..lease }), Err(RejectReason::UnknownOrder));
    assert_eq!(book.restore_lease(InterruptibleLease { ask_id: order(11), ..lease }), Err(RejectReason::UnknownOrder));
    assert_eq!(
        book.restore_lease(InterruptibleLease { lease_id: order(30), ..lease }),
        Err(RejectReason::DuplicateOrderId)
    );
    assert_eq!(book.restore_lease(InterruptibleLease { gpus: 0, ..lease }), Err(RejectReason::ZeroGpus));
    assert_eq!(
        book.restore_lease(InterruptibleLease { price: Price::ZERO, ..lease }),
        Err(RejectReason::ZeroOrNegativePrice)
    );
    assert_eq!(book.restore_lease(InterruptibleLease { gpus: 4, ..lease }), Err(RejectReason::GpusBelowInterruptible));
    assert_eq!(book.restore_lease(lease), Ok(()));
    assert_eq!(book.restore_lease(lease), Err(RejectReason::DuplicateOrderId));
    let next = InterruptibleLease { lease_id: order(21), gpus: 1, ..lease };
    assert_eq!(book.restore_lease(next), Err(RejectReason::SequenceTaken));
    assert_eq!(
        book.restore_lease(InterruptibleLease { gpus: 2, seq: 8, ..next }),
        Err(RejectReason::GpusBelowInterruptible)
    );
    assert_eq!(book.restore_lease(InterruptibleLease { seq: 8, ..next }), Ok(()));
    assert_eq!(book.order(a.id), Some(RestingOrder::Ask(RestingAsk { interruptible_gpus: 3, ..resting })));
    book.check_invariants();
    // A lease restored counts as newer than every restored order: the next trade is 9.
    let mut out = Vec::new();
    book.apply(Command::PlaceBid { at_ms: T0, bid: bid(40, DAN, 1, 1, 200) }, &mut out);
    assert!(
        matches!(out[..], [_, Event::Preempted { lease_id, .. }, Event::Trade { seq: 9, .. }] if lease_id == order(21)),
        "{out:?}"
    );
}

#[test]
fn interruptible_types_serialise() {
    let a = iask(10, BOB, 4, 10, 200, 100);
    let b = ibid(20, ALICE, 1, 1, 150);
    let events = vec![
        with_seq(trade(&b, &a, 100, T0), 7),
        preempted(&b, &a, 100, 30),
        lease_ended(10, 20, 1),
        rejected(20, RejectReason::UnknownLease),
    ];
    let json = serde_json::to_string(&events).expect("serialises");
    assert!(json.contains(r#""priority":"interruptible","seq":7"#), "{json}");
    assert!(json.contains(r#""type":"preempted""#) && json.contains(r#""type":"lease_ended""#), "{json}");
    assert!(json.contains(r#""reason":"unknown_lease""#), "{json}");
    assert_eq!(serde_json::from_str::<Vec<Event>>(&json).expect("parses"), events);
    for command in [
        Command::PlaceAsk { at_ms: T0, ask: a },
        Command::PlaceBid { at_ms: T0, bid: b },
        Command::EndLease { at_ms: T0, ask_id: a.id, lease_id: b.id },
    ] {
        let json = serde_json::to_string(&command).expect("serialises");
        assert_eq!(serde_json::from_str::<Command>(&json).expect("parses"), command, "{json}");
    }
    let json =
        serde_json::to_string(&Command::EndLease { at_ms: T0, ask_id: a.id, lease_id: b.id }).expect("serialises");
    assert!(json.contains(r#""type":"end_lease""#), "{json}");
    // Orders and trades written before interruptible capacity read as on demand.
    let json = r#"{"id":"00000000-0000-0000-0000-00000000000a","owner":"00000000-0000-0000-0000-0000000003ea",
        "host":"00000000-0000-0000-0000-0000000007d2","gpus":4,"available_until_ms":1700036000000,
        "price":"2.000000","tif":"gtc","grade":{"verification":"reported","uptime_7d_ppm":1000000}}"#;
    assert_eq!(serde_json::from_str::<Ask>(json).expect("parses"), ask(10, BOB, 4, 10, 200));
    let lease = InterruptibleLease { lease_id: b.id, ask_id: a.id, buyer: b.owner, gpus: 1, price: cents(100), seq: 3 };
    let json = serde_json::to_string(&lease).expect("serialises");
    assert_eq!(serde_json::from_str::<InterruptibleLease>(&json).expect("parses"), lease);
}
