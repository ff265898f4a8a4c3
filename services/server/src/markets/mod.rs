//! Markets: one order book per GPU class, its matcher, orders, trades and the leases trades
//! create.
//!
//! Handlers validate a request (class, sizes, prices, roles) and hand the order to the
//! market's matcher ([`matcher`]), the single writer of that market's
//! [`capex_book::Book`]. The matcher applies commands in batches and makes each batch
//! durable in one Postgres transaction before it answers any of them.

mod capacity;
mod checks;
pub(crate) mod class;
pub(crate) mod estimate;
mod literal;
pub(crate) mod matcher;
pub(crate) mod money;
mod order_docs;
mod ownership;
pub(crate) mod registry;
pub(crate) mod request;
mod resting;
mod routes;
mod store;
pub(crate) mod top;
pub(crate) mod views;
mod writes;

#[cfg(test)]
mod plans;

pub(crate) use capacity::GPU_UNTAKEN_SQL;
pub use estimate::FillEstimate;
pub use registry::Markets;
pub use request::{JobSpec, OrderRequest, Side, TimeInForce};
pub(crate) use routes::*;
pub use routes::{owned_router, router};
pub use top::{CrossingPair, TOP_ORDERS_MAX, TopOfBook, TopOrder};
pub use views::{
    BookView, CandleList, CandleView, FillView, LevelView, MarketList, MarketView, OrderPage, OrderView, TradePage,
    TradeView, UnfilledReasonView,
};
