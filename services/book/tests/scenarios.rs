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
