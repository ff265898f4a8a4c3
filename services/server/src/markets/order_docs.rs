//! The documented shape of `POST /api/v1/markets/{class}/orders`: one of a bid or an ask.
//!
//! [`OrderRequest`] is one flat struct with optional fields so that [`request::parse`]
//! can name each missing or misplaced field in its refusal; its schema is a `oneOf` of
//! [`BidOrder`] and [`AskOrder`], which carry the limits `parse` enforces. The tests below
//! keep the two in step: what these schemas describe, `parse` accepts.
//!
//! [`request::parse`]: super::request::parse

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::request::{JobSpec, OrderRequest, TimeInForce};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum BidSide {
    Bid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum AskSide {
    Ask,
}

/// A bid: buy `gpus` GPUs of the market's class for up to `max_hours`, paying at most
/// `price` credits per GPU-hour; `price x gpus x max_hours` is held from the wallet.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde in the tests; the server parses an `OrderRequest`
pub(super) struct BidOrder {
    side: BidSide,
    /// 1 to 64.
    #[schema(minimum = 1, maximum = 64)]
    gpus: i64,
    /// Credits per GPU-hour: a decimal string greater than zero with at most 6 decimals.
    #[schema(
        example = "2.5",
        pattern = r"^(?:[1-9][0-9]{0,11}(?:\.[0-9]{1,6})?|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$"
    )]
    price: String,
    /// Hours: a decimal string greater than zero with at most 3 decimals, at most the
    /// server's `CAPEX_MAX_HOURS` (168 by default).
    #[schema(
        example = "1.5",
        pattern = r"^(?:[1-9][0-9]{0,2}(?:\.[0-9]{1,3})?|0\.(?:[1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))$"
    )]
    max_hours: String,
    /// Default gtc.
    #[serde(default)]
    tif: Option<TimeInForce>,
    job: JobSpec,
    /// Trade only with asks whose GPUs all have at least this verification level.
    #[serde(default)]
    min_verification: Option<MinVerification>,
    /// Trade only with asks whose host has at least this attested uptime
    /// (`GET /api/v1/hosts/{id}/reliability` shows a host's).
    #[serde(default)]
    min_reliability: Option<MinReliability>,
    /// `on_demand` (default) or `interruptible`: trade at asks' lower interruptible prices
    /// and yield the GPUs, after SIGTERM and a grace period, to on-demand buyers.
    #[serde(default)]
    priority: Option<super::request::BidPriority>,
}

/// What a bid may require of the ask's host's reliability.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct MinReliability {
    /// The least uptime over the last 7 days: a decimal string from 0 to 1 with at most 6
    /// decimals.
    #[schema(example = "0.99", pattern = r"^(?:0(?:\.[0-9]{1,6})?|1(?:\.0{1,6})?)$")]
    uptime_7d: String,
}

/// The verification levels a bid may require (every GPU is at least `simulated`).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum MinVerification {
    Reported,
    Challenged,
    CcAttested,
}

/// An ask: offer `gpus` free GPUs of your live host `host_id` until `available_until`
/// (in the future), for at least `price` credits per GPU-hour.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde in the tests; the server parses an `OrderRequest`
pub(super) struct AskOrder {
    side: AskSide,
    host_id: Uuid,
    /// 1 to 64.
    #[schema(minimum = 1, maximum = 64)]
    gpus: i64,
    /// Credits per GPU-hour: a decimal string greater than zero with at most 6 decimals.
    #[schema(
        example = "2.5",
        pattern = r"^(?:[1-9][0-9]{0,11}(?:\.[0-9]{1,6})?|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$"
    )]
    price: String,
    /// Must be in the future.
    available_until: DateTime<Utc>,
    /// Default gtc.
    #[serde(default)]
    tif: Option<TimeInForce>,
    /// Also sell the idle GPUs for interruptible use at this price (credits per GPU-hour,
    /// below `price`); they stay offered on demand.
    #[serde(default)]
    #[schema(
        example = "1.2",
        pattern = r"^(?:[1-9][0-9]{0,11}(?:\.[0-9]{1,6})?|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$"
    )]
    interruptible_price: Option<String>,
}

impl PartialSchema for OrderRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(BidOrder::name()))
            .item(Ref::from_schema_name(AskOrder::name()))
            .description(Some("A bid (`side: \"bid\"`) or an ask (`side: \"ask\"`)"))
            .into()
    }
}

impl ToSchema for OrderRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OrderRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema, dependencies) in [
            (BidOrder::name(), BidOrder::schema(), BidOrder::schemas as fn(&mut Vec<(String, RefOr<Schema>)>)),
            (AskOrder::name(), AskOrder::schema(), AskOrder::schemas),
        ] {
            schemas.push((name.into_owned(), schema));
            dependencies(schemas);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::markets::request::parse;

    fn both_parse<T: serde::de::DeserializeOwned>(body: serde_json::Value) {
        serde_json::from_value::<T>(body.clone()).expect("the documented type takes it");
        let req: OrderRequest = serde_json::from_value(body.clone()).expect("the server's type takes it");
        parse(&req, 168, Utc::now()).unwrap_or_else(|err| panic!("{body}: {}", err.detail));
    }

    #[test]
    fn documented_bids_are_accepted() {
        for (price, hours, gpus) in [("0.000001", "0.001", 1), ("999999999999.999999", "0.001", 1), ("2.5", "168", 64)]
        {
            both_parse::<BidOrder>(json!({"side": "bid", "gpus": gpus, "price": price, "max_hours": hours,
                "job": {"command": ["python"]}}));
        }
        for uptime in ["0", "0.99", "0.999999", "1", "1.000000"] {
            both_parse::<BidOrder>(json!({"side": "bid", "gpus": 1, "price": "1", "max_hours": "1",
                "job": {"command": ["python"]}, "min_reliability": {"uptime_7d": uptime}}));
        }
    }

    #[test]
    fn documented_asks_are_accepted() {
        let until = Utc::now() + chrono::Duration::hours(1);
        both_parse::<AskOrder>(json!({"side": "ask", "host_id": Uuid::now_v7(), "gpus": 2, "price": "0.5",
            "available_until": until, "tif": "ioc"}));
    }

    #[test]
    fn the_request_schema_is_one_of_bid_and_ask() {
        let schema = serde_json::to_value(OrderRequest::schema()).unwrap();
        let refs: Vec<&str> = schema["oneOf"].as_array().unwrap().iter().map(|r| r["$ref"].as_str().unwrap()).collect();
        assert_eq!(refs, ["#/components/schemas/BidOrder", "#/components/schemas/AskOrder"]);
        let bid = serde_json::to_value(BidOrder::schema()).unwrap();
        assert_eq!(bid["additionalProperties"], false);
        assert_eq!(bid["properties"]["side"]["$ref"], "#/components/schemas/BidSide");
        assert_eq!(serde_json::to_value(BidSide::schema()).unwrap()["enum"], json!(["bid"]));
        assert_eq!(serde_json::to_value(AskSide::schema()).unwrap()["enum"], json!(["ask"]));
        let mut components = Vec::new();
        OrderRequest::schemas(&mut components);
        let names: Vec<&str> = components.iter().map(|(name, _)| name.as_str()).collect();
        for name in ["BidOrder", "AskOrder", "BidSide", "AskSide", "JobSpec", "TimeInForce", "MinReliability"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
}
