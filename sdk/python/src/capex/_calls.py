"""Every operation of the API as a :class:`~capex._base.Call`, built once here and run by
either client (sync or async), so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from . import models as m
from ._base import Call, delete, get, none, post, raw, seg
from .money import Hours, Money, hours_to_wire, to_wire

T = TypeVar("T", bound=BaseModel)


def parse(model: type[T]) -> Callable[[Any], T]:
    def run(data: Any) -> T:
        return model.model_validate(data)

    run.__qualname__ = f"parse[{model.__name__}]"
    return run


def parse_page(model: type[T]) -> Callable[[Any], m.Page[T]]:
    adapter: TypeAdapter[m.Page[T]] = TypeAdapter(m.Page[model])  # type: ignore[valid-type]

    def run(data: Any) -> m.Page[T]:
        return adapter.validate_python(data)

    return run


@dataclass(frozen=True)
class Restart:
    """A managed job's restart policy: when an attempt ends for one of ``on``
    (``"host_lost"``, ``"failed"`` = a non-zero exit), the exchange places the next attempt
    itself, funded from the job's escrow, never on a host that failed it."""

    on: Sequence[str] = ("host_lost", "failed")
    max_attempts: int | None = None
    max_price: Money | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"on": list(self.on)}
        if self.max_attempts is not None:
            body["max_attempts"] = self.max_attempts
        if self.max_price is not None:
            body["max_price"] = to_wire(self.max_price, "restart.max_price")
        return body


RestartLike = Restart | Mapping[str, Any]


@dataclass
class JobSpec:
    """What runs on the GPUs a bid wins."""

    command: Sequence[str]
    env: Mapping[str, str] | None = None
    image: str | None = None
    restart: RestartLike | None = None
    budget: Money | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.command, str):
            raise TypeError('command is a list of arguments, e.g. ["python", "train.py"], not a string')
        job: dict[str, Any] = {"command": [str(a) for a in self.command]}
        if self.env:
            job["env"] = {str(k): str(v) for k, v in self.env.items()}
        if self.image is not None:
            job["image"] = self.image
        if self.restart is not None:
            job["restart"] = self.restart.to_json() if isinstance(self.restart, Restart) else dict(self.restart)
        if self.budget is not None:
            job["budget"] = to_wire(self.budget, "budget")
        job.update(self.extra)
        return job


def bid_body(
    *,
    gpus: int,
    hours: Hours,
    max_price: Money,
    job: JobSpec,
    tif: str = "gtc",
    min_verification: str | None = None,
    min_uptime_7d: Money | None = None,
    priority: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "side": "bid",
        "gpus": gpus,
        "max_hours": hours_to_wire(hours, "hours"),
        "price": to_wire(max_price, "max_price"),
        "tif": tif,
        "job": job.to_json(),
    }
    if min_verification is not None:
        body["min_verification"] = min_verification
    if min_uptime_7d is not None:
        body["min_reliability"] = {"uptime_7d": to_wire(min_uptime_7d, "min_uptime_7d")}
    # Sent only when given: servers without the field refuse it as unknown.
    if priority is not None:
        body["priority"] = priority
    body.update(extra or {})
    return body


def ask_body(
    *,
    host_id: str,
    gpus: int,
    price: Money,
    available_until: datetime,
    tif: str = "gtc",
    interruptible_price: Money | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if available_until.tzinfo is None:
        raise ValueError("available_until must be timezone-aware (e.g. datetime.now(timezone.utc) + ...)")
    body: dict[str, Any] = {
        "side": "ask",
        "host_id": str(host_id),
        "gpus": gpus,
        "price": to_wire(price, "price"),
        "available_until": available_until.astimezone(timezone.utc).isoformat(),
        "tif": tif,
    }
    if interruptible_price is not None:
        body["interruptible_price"] = to_wire(interruptible_price, "interruptible_price")
    body.update(extra or {})
    return body


# --- auth ---------------------------------------------------------------------------


def register(email: str, password: str, roles: Sequence[str]) -> Call[m.User]:
    body = {"email": email, "password": password, "roles": list(roles)}
    return post("/auth/register", parse(m.User), body, anonymous=True)


def login(email: str, password: str) -> Call[m.Login]:
    return Call("POST", "/api/v1/auth/login", parse(m.Login), json={"email": email, "password": password},
                anonymous=True)


def me() -> Call[m.User]:
    return get("/me", parse(m.User))


def create_api_key(name: str) -> Call[m.ApiKeyCreated]:
    return post("/auth/api-keys", parse(m.ApiKeyCreated), {"name": name})


def list_api_keys() -> Call[m.ApiKeyList]:
    return get("/auth/api-keys", parse(m.ApiKeyList))


def revoke_api_key(api_key_id: str) -> Call[None]:
    return delete(f"/auth/api-keys/{seg(api_key_id)}", none)


# --- wallet -------------------------------------------------------------------------


def wallet() -> Call[m.Wallet]:
    return get("/wallet", parse(m.Wallet))


def ledger(cursor: str | None, limit: int | None) -> Call[m.Page[m.LedgerLine]]:
    return get("/wallet/ledger", parse_page(m.LedgerLine), {"cursor": cursor, "limit": limit})


def transfer(to_user: str, amount: Money, memo: str, key: str | None) -> Call[m.Transfer]:
    body = {"to_user": str(to_user), "amount": to_wire(amount), "memo": memo}
    return post("/transfers", parse(m.Transfer), body, key)


# --- markets and orders -------------------------------------------------------------


def markets() -> Call[m.MarketList]:
    return get("/markets", parse(m.MarketList))


def book(cls: str) -> Call[m.Book]:
    return get(f"/markets/{seg(cls)}/book", parse(m.Book))


def trades(cls: str, cursor: str | None, limit: int | None) -> Call[m.Page[m.Trade]]:
    return get(f"/markets/{seg(cls)}/trades", parse_page(m.Trade), {"cursor": cursor, "limit": limit})


def candles(cls: str, interval: str) -> Call[m.CandleList]:
    return get(f"/markets/{seg(cls)}/candles", parse(m.CandleList), {"interval": interval})


def estimate(cls: str, gpus: int, price: Money, hours: Hours) -> Call[m.Estimate]:
    params = {"gpus": gpus, "price": to_wire(price, "price"), "max_hours": hours_to_wire(hours)}
    return get(f"/markets/{seg(cls)}/estimate", parse(m.Estimate), params)


def place_order(cls: str, body: Mapping[str, Any], key: str | None) -> Call[m.Order]:
    return post(f"/markets/{seg(cls)}/orders", parse(m.Order), dict(body), key)


def get_order(order_id: str) -> Call[m.Order]:
    return get(f"/orders/{seg(order_id)}", parse(m.Order))


def cancel_order(order_id: str) -> Call[m.Order]:
    return delete(f"/orders/{seg(order_id)}", parse(m.Order))


def list_orders(status: str, cursor: str | None, limit: int | None) -> Call[m.Page[m.Order]]:
    return get("/orders", parse_page(m.Order), {"status": status, "cursor": cursor, "limit": limit})


# --- jobs ---------------------------------------------------------------------------

#: Longest a log request waits for new lines on the server (``follow``), seconds.
LOG_FOLLOW_S = 25


def get_job(job_id: str) -> Call[m.JobView]:
    return get(f"/jobs/{seg(job_id)}", parse(m.JobView))


def list_jobs(state: str | None, cursor: str | None, limit: int | None) -> Call[m.Page[m.JobView]]:
    return get("/jobs", parse_page(m.JobView), {"state": state, "cursor": cursor, "limit": limit})


def job_logs(job_id: str, attempt: int | None, after: int | None, follow: bool) -> Call[m.LogPage]:
    params = {"attempt": attempt, "after": after, "follow": LOG_FOLLOW_S if follow else None}
    timeout = LOG_FOLLOW_S + 15.0 if follow else None
    return get(f"/jobs/{seg(job_id)}/logs", parse(m.LogPage), params, timeout=timeout)


def job_telemetry(job_id: str, since: datetime | None, limit: int | None) -> Call[m.Telemetry]:
    return get(f"/jobs/{seg(job_id)}/telemetry", parse(m.Telemetry), {"since": since, "limit": limit})


def cancel_job(job_id: str) -> Call[m.JobView]:
    return post(f"/jobs/{seg(job_id)}/cancel", parse(m.JobView))


def release_job(job_id: str) -> Call[m.JobView]:
    return post(f"/jobs/{seg(job_id)}/release", parse(m.JobView))


def place_child(job_id: str, cls: str, body: Mapping[str, Any], key: str | None) -> Call[m.Order]:
    return post(f"/jobs/{seg(job_id)}/children", parse(m.Order), {"class": cls, **body}, key)


def cancel_child(job_id: str, child_id: str) -> Call[m.Child]:
    return delete(f"/jobs/{seg(job_id)}/children/{seg(child_id)}", parse(m.Child))


# --- hosts --------------------------------------------------------------------------


def list_hosts(cursor: str | None, limit: int | None) -> Call[m.Page[m.Host]]:
    return get("/hosts", parse_page(m.Host), {"cursor": cursor, "limit": limit})


def get_host(host_id: str) -> Call[m.Host]:
    return get(f"/hosts/{seg(host_id)}", parse(m.Host))


def host_telemetry(host_id: str, since: datetime | None, limit: int | None) -> Call[m.Telemetry]:
    return get(f"/hosts/{seg(host_id)}/telemetry", parse(m.Telemetry), {"since": since, "limit": limit})


def host_reports(host_id: str, cursor: str | None, limit: int | None) -> Call[m.Page[m.StoredReport]]:
    return get(f"/hosts/{seg(host_id)}/reports", parse_page(m.StoredReport), {"cursor": cursor, "limit": limit})


def host_reliability(host_id: str) -> Call[m.Reliability]:
    return get(f"/hosts/{seg(host_id)}/reliability", parse(m.Reliability))


def host_verification(host_id: str) -> Call[dict[str, Any]]:
    return get(f"/hosts/{seg(host_id)}/verification", raw)


def capacity() -> Call[m.Capacity]:
    return get("/capacity", parse(m.Capacity))


# --- operator -----------------------------------------------------------------------


def mint(user_id: str, amount: Money, memo: str, key: str | None) -> Call[m.Transfer]:
    body = {"user_id": str(user_id), "amount": to_wire(amount), "memo": memo}
    return post("/operator/mint", parse(m.Transfer), body, key)


def invariants() -> Call[m.Invariants]:
    return get("/operator/invariants", parse(m.Invariants))


def users() -> Call[m.UserList]:
    return get("/operator/users", parse(m.UserList))


def fees() -> Call[m.Fees]:
    return get("/operator/fees", parse(m.Fees))
