//! The body of `POST /api/v1/markets/{class}/orders`, parsed into a validated order.
//!
//! Every check that needs no database happens here, each with its own code and field;
//! after [`parse`] the order's numbers are known good.

use std::collections::BTreeMap;

use capex_book::{ExcludedHosts, Price, PriceError, Priority, Tif};
use capex_core::Credits;
use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::money::{MS_PER_HOUR, reserve};
use crate::error::ApiError;
use crate::input::{Text, TextBlock, Time};

/// Most GPUs one order may ask for or offer.
pub(crate) const ORDER_GPUS_MAX: i64 = 64;
/// Decimal places a bid's `max_hours` may have (0.001 h = 3.6 s: a whole number of ms).
pub(crate) const MAX_HOURS_SCALE_MAX: u32 = 3;
/// Bounds on a bid's job spec: arguments of the command, characters of one argument or
/// environment value, variables, characters of a variable's name and of the image.
pub(crate) const JOB_ARGS_MAX: usize = 256;
pub(crate) const JOB_ARG_CHARS_MAX: usize = 4096;
pub(crate) const JOB_ENV_MAX: usize = 128;
pub(crate) const JOB_ENV_NAME_CHARS_MAX: usize = 256;
pub(crate) const JOB_IMAGE_CHARS_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Bid,
    Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancelled: what does not trade at once rests in the book.
    Gtc,
    /// Immediate or cancel: what does not trade at once is cancelled.
    Ioc,
}

impl TimeInForce {
    pub(crate) fn book(self) -> Tif {
        match self {
            TimeInForce::Gtc => Tif::Gtc,
            TimeInForce::Ioc => Tif::Ioc,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
        }
    }
}

/// Whether a bid may be interrupted: `interruptible` bids trade at asks' (lower)
/// interruptible prices and yield their GPUs, with notice, to on-demand bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BidPriority {
    /// The GPUs are the buyer's until the lease ends (the default).
    #[default]
    OnDemand,
    /// Cheaper, and preempted (SIGTERM, then SIGKILL after the grace) when an on-demand bid
    /// needs the GPUs.
    Interruptible,
}

impl BidPriority {
    pub(crate) fn book(self) -> Priority {
        match self {
            BidPriority::OnDemand => Priority::OnDemand,
            BidPriority::Interruptible => Priority::Interruptible,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BidPriority::OnDemand => "on_demand",
            BidPriority::Interruptible => "interruptible",
        }
    }

    pub(crate) fn of_db(text: &str) -> BidPriority {
        if text == "interruptible" { BidPriority::Interruptible } else { BidPriority::OnDemand }
    }
}

/// What to run on the GPUs a bid wins. Its text is checked as it is parsed (no control
/// characters but tabs and line breaks in arguments and values, none in names and the
/// image; each bounded), so a bad job is refused alone and never reaches a matcher batch.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Program and arguments (at most 256, each at most 4096 characters); at least the program.
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 256)]
    pub command: Vec<TextBlock<JOB_ARG_CHARS_MAX>>,
    /// At most 128 variables; names are not empty and have no `=`.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub env: BTreeMap<Text<JOB_ENV_NAME_CHARS_MAX>, TextBlock<JOB_ARG_CHARS_MAX>>,
    /// Container image; without it the host runs the command as a plain process (where its
    /// owner allows that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512)]
    pub image: Option<Text<JOB_IMAGE_CHARS_MAX>>,
    /// Managed job: when an attempt ends for a listed reason, the exchange places the next
    /// attempt's bid itself, funded from the job's own escrow, never on a host that failed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Credits the job may spend on child bids it places with its job token (at most 6
    /// decimals); without it the job places none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub budget: Option<Value>,
}

/// Why an attempt ended, as a restart policy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartOn {
    /// The host stopped reporting and the lease was lost.
    HostLost,
    /// The job exited with a code other than 0.
    Failed,
    /// An interruptible attempt's GPUs were taken by an on-demand buyer.
    Preempted,
}

/// `restart: {on: ["host_lost", "failed"], max_attempts: 3, max_price: "2.5"}`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Reasons that restart the job (at least one).
    #[schema(min_items = 1)]
    pub on: Vec<RestartOn>,
    /// Attempts in all, the first included: 1 to 5 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 5)]
    pub max_attempts: Option<i64>,
    /// Limit price of the restart bids, credits per GPU-hour (default: the bid's own limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max_price: Option<Value>,
}

/// Most attempts a managed job may have: one more than the hosts a bid can exclude.
pub(crate) const MAX_ATTEMPTS_MAX: i64 = capex_book::EXCLUDED_HOSTS_MAX as i64 + 1;
/// Attempts of a managed job whose policy does not say.
pub(crate) const MAX_ATTEMPTS_DEFAULT: i64 = 3;

/// A bid (`side: "bid"`: gpus, max_hours, price, tif, job) or an ask (`side: "ask"`:
/// host_id, gpus, available_until, price, tif). Prices are credits per GPU-hour as decimal
/// strings (or JSON numbers) with at most 6 decimals.
/// Its schema is written in [`super::order_docs`]: one of a bid or an ask.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub side: Side,
    pub gpus: Option<i64>,
    pub price: Option<Value>,
    pub tif: Option<TimeInForce>,
    pub max_hours: Option<Value>,
    pub job: Option<JobSpec>,
    pub host_id: Option<Uuid>,
    pub available_until: Option<Time>,
    /// Bids only: the lowest verification level every GPU of the ask must have
    /// (reported, challenged or cc_attested).
    #[serde(default)]
    pub min_verification: Option<crate::verification::Level>,
    /// Bids only: `{"uptime_7d": "0.99"}`, the least 7-day uptime of the ask's host
    /// (a decimal 0 to 1 with at most 6 decimals).
    #[serde(default)]
    pub min_reliability: Option<Value>,
    /// Bids only: `on_demand` (default) or `interruptible`.
    #[serde(default)]
    pub priority: Option<BidPriority>,
    /// Asks only: the least the provider accepts per GPU-hour for interruptible use of the
    /// ask's idle GPUs; below `price`.
    #[serde(default)]
    pub interruptible_price: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct NewBid {
    pub(crate) gpus: u32,
    pub(crate) price: Price,
    pub(crate) max_hours: Decimal,
    pub(crate) duration_ms: i64,
    pub(crate) tif: TimeInForce,
    pub(crate) job: Value,
    /// price x gpus x max_hours, held from the wallet when the bid is accepted.
    pub(crate) escrow: Credits,
    /// The lowest verification level the bid accepts (none: any level the market sells).
    pub(crate) min_verification: Option<crate::verification::Level>,
    /// The least 7-day uptime of the ask's host, in parts per million (none: any host).
    pub(crate) min_uptime_7d_ppm: Option<u32>,
    pub(crate) priority: BidPriority,
    /// Set for a managed job's restart bid, which the exchange places itself; boxed, as
    /// only restarts have it and every queued request carries a bid's size.
    pub(crate) restart: Option<Box<RestartBid>>,
}

/// What a restart bid has beyond a buyer's bid.
#[derive(Debug, Clone)]
pub(crate) struct RestartBid {
    /// Hosts the bid never trades with (those that failed its job before).
    pub(crate) excluded_hosts: ExcludedHosts,
    /// This escrow account (of the bid's order id) already holds exactly the bid's
    /// `escrow`, funded from the job's last attempt.
    pub(crate) prefunded: Uuid,
}

impl NewBid {
    pub(crate) fn excluded_hosts(&self) -> ExcludedHosts {
        self.restart.as_ref().map_or(ExcludedHosts::NONE, |r| r.excluded_hosts)
    }

    /// The escrow account of a prefunded (restart) bid.
    pub(crate) fn prefunded(&self) -> Option<Uuid> {
        self.restart.as_ref().map(|r| r.prefunded)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NewAsk {
    pub(crate) host_id: Uuid,
    pub(crate) gpus: u32,
    pub(crate) price: Price,
    pub(crate) available_until: DateTime<Utc>,
    pub(crate) tif: TimeInForce,
    /// For interruptible use of the ask's idle GPUs; below `price`.
    pub(crate) interruptible_price: Option<Price>,
    /// The host's 7-day uptime in parts per million, as the handler read it (the ask's
    /// grade); [`parse`] leaves it at [`capex_book::PPM_MAX`] for the handler to set.
    pub(crate) host_uptime_7d_ppm: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum NewOrder {
    Bid(NewBid),
    Ask(NewAsk),
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, "missing_field", format!("{field} is required")))
}

fn not_allowed(present: bool, field: &str, side: &str) -> Result<(), ApiError> {
    if present {
        return Err(ApiError::invalid(field, "field_not_allowed", format!("{field} does not apply to an {side}")));
    }
    Ok(())
}

/// A decimal from a JSON string or number, without going through a float.
fn decimal(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    Decimal::from_str_exact(&text).ok()
}

fn parse_gpus(gpus: Option<i64>) -> Result<u32, ApiError> {
    let gpus = required(gpus, "gpus")?;
    if !(1..=ORDER_GPUS_MAX).contains(&gpus) {
        return Err(ApiError::invalid("gpus", "invalid_gpus", format!("gpus must be 1 to {ORDER_GPUS_MAX}")));
    }
    Ok(gpus as u32)
}

fn parse_price(price: Option<&Value>) -> Result<Price, ApiError> {
    parse_price_field(required(price, "price")?, "price")
}

fn parse_price_field(raw: &Value, field: &str) -> Result<Price, ApiError> {
    let invalid = |code: &'static str, detail: &str| ApiError::invalid(field, code, format!("{field} {detail}"));
    let value = decimal(raw).ok_or_else(|| invalid("invalid_price", "must be a decimal number"))?;
    if value <= Decimal::ZERO {
        return Err(invalid("invalid_price", "must be greater than zero"));
    }
    Price::from_decimal(value).map_err(|err| match err {
        PriceError::TooPrecise => invalid("price_too_precise", "has at most 6 decimal places"),
        PriceError::Negative => invalid("invalid_price", "must be greater than zero"),
        PriceError::Overflow => invalid("price_too_large", "is too large"),
    })
}

fn parse_max_hours(max_hours: Option<&Value>, cap_hours: u32) -> Result<(Decimal, i64), ApiError> {
    let raw = required(max_hours, "max_hours")?;
    let hours = decimal(raw)
        .ok_or_else(|| ApiError::invalid("max_hours", "invalid_max_hours", "max_hours must be a decimal number"))?
        .normalize();
    if hours <= Decimal::ZERO {
        return Err(ApiError::invalid("max_hours", "invalid_max_hours", "max_hours must be greater than zero"));
    }
    if hours.scale() > MAX_HOURS_SCALE_MAX {
        return Err(ApiError::invalid(
            "max_hours",
            "max_hours_too_precise",
            format!("max_hours has at most {MAX_HOURS_SCALE_MAX} decimal places"),
        ));
    }
    if hours > Decimal::from(cap_hours) {
        return Err(ApiError::invalid(
            "max_hours",
            "max_hours_too_long",
            format!("max_hours must be at most {cap_hours}"),
        ));
    }
    let duration_ms = (hours * Decimal::from(MS_PER_HOUR)).trunc();
    let duration_ms = i64::try_from(duration_ms)
        .map_err(|_| ApiError::invalid("max_hours", "max_hours_too_long", "max_hours is too large"))?;
    Ok((hours, duration_ms))
}

fn check_job(job: &JobSpec) -> Result<(), ApiError> {
    if job.command.is_empty() || job.command[0].trim().is_empty() {
        return Err(ApiError::invalid("job.command", "invalid_job", "job.command needs at least the program"));
    }
    // Each argument's, name's and value's characters and length were checked as they were parsed.
    if job.command.len() > JOB_ARGS_MAX {
        return Err(ApiError::invalid(
            "job.command",
            "invalid_job",
            format!("job.command has at most {JOB_ARGS_MAX} arguments of at most {JOB_ARG_CHARS_MAX} characters"),
        ));
    }
    if job.env.len() > JOB_ENV_MAX || job.env.keys().any(|k| k.is_empty() || k.contains('=')) {
        return Err(ApiError::invalid(
            "job.env",
            "invalid_job",
            format!("job.env has at most {JOB_ENV_MAX} variables with non-empty names without '='"),
        ));
    }
    if let Some(image) = &job.image
        && image.trim().is_empty()
    {
        return Err(ApiError::invalid("job.image", "invalid_job", "job.image must be a non-empty image reference"));
    }
    Ok(())
}

/// Checks a restart policy and fills in its defaults (3 attempts, the bid's own limit).
fn check_restart(restart: &mut RestartPolicy, limit: Price) -> Result<(), ApiError> {
    if restart.on.is_empty() {
        return Err(ApiError::invalid("job.restart.on", "invalid_restart", "job.restart.on names at least one reason"));
    }
    restart.on.sort_by_key(|on| *on as u8);
    restart.on.dedup();
    let attempts = restart.max_attempts.unwrap_or(MAX_ATTEMPTS_DEFAULT);
    if !(1..=MAX_ATTEMPTS_MAX).contains(&attempts) {
        return Err(ApiError::invalid(
            "job.restart.max_attempts",
            "invalid_restart",
            format!("job.restart.max_attempts must be 1 to {MAX_ATTEMPTS_MAX}"),
        ));
    }
    restart.max_attempts = Some(attempts);
    let max_price = match &restart.max_price {
        Some(raw) => parse_price(Some(raw)).map_err(|err| err.with_field("job.restart.max_price"))?,
        None => limit,
    };
    restart.max_price = Some(Value::String(max_price.to_decimal().normalize().to_string()));
    Ok(())
}

/// A non-negative amount of credits (at most 6 decimals) from a JSON string or number.
pub(crate) fn parse_credits(raw: &Value, field: &str) -> Result<Decimal, ApiError> {
    let value = decimal(raw)
        .ok_or_else(|| ApiError::invalid(field, "invalid_amount", format!("{field} must be a decimal number")))?;
    let credits = Credits::new(value).map_err(|err| ApiError::invalid(field, err.code(), format!("{field} {err}")))?;
    Ok(credits.as_decimal())
}

/// `min_reliability: {"uptime_7d": "0.99"}` in parts per million; `None` when absent.
fn parse_min_reliability(raw: Option<&Value>) -> Result<Option<u32>, ApiError> {
    const FIELD: &str = "min_reliability.uptime_7d";
    let Some(raw) = raw else { return Ok(None) };
    let invalid = |field: &str| {
        ApiError::invalid(
            field,
            "invalid_min_reliability",
            "min_reliability is {\"uptime_7d\": a decimal from 0 to 1 with at most 6 decimals}",
        )
    };
    let Value::Object(fields) = raw else { return Err(invalid("min_reliability")) };
    if let Some(other) = fields.keys().find(|key| key.as_str() != "uptime_7d") {
        return Err(ApiError::invalid(
            &format!("min_reliability.{other}"),
            "unknown_field",
            format!("min_reliability has only uptime_7d, not {other}"),
        ));
    }
    let value = fields.get("uptime_7d").ok_or_else(|| invalid(FIELD))?;
    let ppm = decimal(value).and_then(crate::hosts::uptime::ppm_of_fraction).ok_or_else(|| invalid(FIELD))?;
    Ok(Some(ppm))
}

/// Validates a request for a market whose bids may last at most `cap_hours`.
pub(crate) fn parse(req: &OrderRequest, cap_hours: u32, now: DateTime<Utc>) -> Result<NewOrder, ApiError> {
    let tif = req.tif.unwrap_or(TimeInForce::Gtc);
    match req.side {
        Side::Bid => {
            not_allowed(req.host_id.is_some(), "host_id", "bid")?;
            not_allowed(req.available_until.is_some(), "available_until", "bid")?;
            not_allowed(req.interruptible_price.is_some(), "interruptible_price", "bid")?;
            let gpus = parse_gpus(req.gpus)?;
            let price = parse_price(req.price.as_ref())?;
            let (max_hours, duration_ms) = parse_max_hours(req.max_hours.as_ref(), cap_hours)?;
            let job = required(req.job.as_ref(), "job")?;
            check_job(job)?;
            let mut job = job.clone();
            if let Some(restart) = &mut job.restart {
                check_restart(restart, price)?;
            }
            if let Some(budget) = &job.budget {
                let budget = parse_credits(budget, "job.budget")?;
                job.budget = Some(Value::String(budget.normalize().to_string()));
            }
            let escrow = reserve(price.to_decimal(), gpus, max_hours).ok_or_else(|| {
                ApiError::invalid(
                    "price",
                    "escrow_too_large",
                    "price x gpus x max_hours is more than an account can hold",
                )
            })?;
            let job = serde_json::to_value(&job).map_err(ApiError::internal)?;
            let min_verification = req.min_verification;
            if min_verification == Some(crate::verification::Level::Simulated) {
                return Err(ApiError::invalid(
                    "min_verification",
                    "invalid_min_verification",
                    "min_verification is reported, challenged or cc_attested (every level is at least simulated)",
                ));
            }
            let min_uptime_7d_ppm = parse_min_reliability(req.min_reliability.as_ref())?;
            Ok(NewOrder::Bid(NewBid {
                gpus,
                price,
                max_hours,
                duration_ms,
                tif,
                job,
                escrow,
                min_verification,
                min_uptime_7d_ppm,
                priority: req.priority.unwrap_or_default(),
                restart: None,
            }))
        }
        Side::Ask => {
            not_allowed(req.max_hours.is_some(), "max_hours", "ask")?;
            not_allowed(req.job.is_some(), "job", "ask")?;
            not_allowed(req.min_verification.is_some(), "min_verification", "ask")?;
            not_allowed(req.min_reliability.is_some(), "min_reliability", "ask")?;
            not_allowed(req.priority.is_some(), "priority", "ask")?;
            let host_id = required(req.host_id, "host_id")?;
            let gpus = parse_gpus(req.gpus)?;
            let price = parse_price(req.price.as_ref())?;
            let interruptible_price = match &req.interruptible_price {
                Some(raw) => {
                    let interruptible = parse_price_field(raw, "interruptible_price")?;
                    if interruptible >= price {
                        return Err(ApiError::invalid(
                            "interruptible_price",
                            "interruptible_price_not_below_price",
                            "interruptible_price must be below price (it is the discount for interruptible use)",
                        ));
                    }
                    Some(interruptible)
                }
                None => None,
            };
            let available_until = required(req.available_until, "available_until")?.get();
            if available_until <= now {
                return Err(ApiError::invalid(
                    "available_until",
                    "invalid_available_until",
                    "available_until must be in the future",
                ));
            }
            // Postgres keeps microseconds: the order's answer must show what is stored.
            let available_until = available_until.trunc_subsecs(6);
            Ok(NewOrder::Ask(NewAsk {
                host_id,
                gpus,
                price,
                available_until,
                tif,
                interruptible_price,
                host_uptime_7d_ppm: capex_book::PPM_MAX,
            }))
        }
    }
}
