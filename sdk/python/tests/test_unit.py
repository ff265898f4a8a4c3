"""Tests of the SDK's own logic against an in-process fake (httpx.MockTransport): what it
sends, how it retries, how it maps answers. The real server is in the other test files."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

import capex
from capex._sse import SSEParser

BASE = "http://exchange.test"
NOW = "2026-01-01T00:00:00Z"


def order_json(**over: Any) -> dict[str, Any]:
    body = {
        "order_id": "0190aaaa-0000-7000-8000-000000000001",
        "class": "H100-80GB",
        "side": "bid",
        "status": "open",
        "gpus": 2,
        "gpus_remaining": 2,
        "price": "2.5",
        "max_hours": "1",
        "available_until": None,
        "tif": "gtc",
        "escrow": "5",
        "host_id": None,
        "created_at": NOW,
        "min_verification": None,
        "verification": None,
        "min_reliability": None,
        "host_uptime_7d": None,
        "fills": [],
        "unfilled_reasons": [],
    }
    body.update(over)
    return body


def problem(status: int, code: str, field: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"type": f"https://capex.dev/problems/{code}", "title": "x", "status": status,
                            "detail": f"{code} detail", "code": code}
    if field:
        body["field"] = field
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


Handler = Callable[[httpx.Request], httpx.Response]


def sync_client(handler: Handler, **kw: Any) -> capex.Client:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = capex.Client(BASE, api_key="capex_test", http_client=http, **kw)
    client.transport.retry.base_s = 0.001
    return client


def async_client(handler: Handler, **kw: Any) -> capex.AsyncClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = capex.AsyncClient(BASE, api_key="capex_test", http_client=http, **kw)
    client.transport.retry.base_s = 0.001
    return client


def test_submit_sends_the_bid_with_decimal_strings_and_an_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=order_json())

    client = sync_client(handler)
    job = client.jobs.submit(cls="H100-80GB", gpus=2, hours=1, max_price=Decimal("2.50"),
                             command=["python", "train.py"], env={"LR": "0.1"})
    assert job.id == "0190aaaa-0000-7000-8000-000000000001"
    assert job.status == "queued"
    (request,) = seen
    assert request.url.path == "/api/v1/markets/H100-80GB/orders"
    assert request.headers["authorization"] == "Bearer capex_test"
    assert request.headers["idempotency-key"].startswith("capex-py-")
    body = json.loads(request.content)
    assert body == {"side": "bid", "gpus": 2, "max_hours": "1", "price": "2.5", "tif": "gtc",
                    "job": {"command": ["python", "train.py"], "env": {"LR": "0.1"}}}
    assert job.order is not None and job.order.escrow == Decimal("5")


def test_optional_fields_are_sent_only_when_given() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=order_json())

    client = sync_client(handler)
    client.orders.bid("H100-80GB", gpus=1, hours="0.5", max_price="2", command=["x"])
    client.orders.bid("H100-80GB", gpus=1, hours=0.5, max_price="2", command=["x"], priority="interruptible",
                      restart=capex.Restart(on=["failed"], max_attempts=2, max_price="3"), budget="10",
                      min_uptime_7d="0.99", min_verification="reported")
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    client.orders.ask("H100-80GB", host_id="h", gpus=1, price="2", available_until=until)
    client.orders.ask("H100-80GB", host_id="h", gpus=1, price="2", available_until=until,
                      interruptible_price=Decimal("1.25"))
    plain, rich, ask, ask_i = bodies
    assert "priority" not in plain and "restart" not in plain["job"] and "min_reliability" not in plain
    assert plain["max_hours"] == "0.5"
    assert rich["priority"] == "interruptible"
    assert rich["job"]["restart"] == {"on": ["failed"], "max_attempts": 2, "max_price": "3"}
    assert rich["job"]["budget"] == "10"
    assert rich["min_reliability"] == {"uptime_7d": "0.99"}
    assert rich["min_verification"] == "reported"
    assert "interruptible_price" not in ask
    assert ask_i["interruptible_price"] == "1.25"


def test_money_is_never_a_float() -> None:
    client = sync_client(lambda r: httpx.Response(500))
    with pytest.raises(TypeError, match="float"):
        client.jobs.submit(cls="H100-80GB", gpus=1, hours=1, max_price=2.5, command=["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        client.transfers.create("u", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of arguments"):
        client.jobs.submit(cls="H100-80GB", gpus=1, hours=1, max_price="1", command="python train.py")
    assert capex.money.to_wire(Decimal("1E+1")) == "10"
    assert capex.money.to_wire(Decimal("0.100000")) == "0.1"


@pytest.mark.parametrize("code", ["market_busy", "market_moving", "transaction_conflict"])
def test_503s_that_did_nothing_are_retried_with_the_same_key(code: str) -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        return problem(503, code) if len(keys) < 3 else httpx.Response(201, json=order_json())

    client = sync_client(handler)
    order = client.orders.bid("H100-80GB", gpus=1, hours=1, max_price="2", command=["x"])
    assert order.status == "open"
    assert len(keys) == 3 and len(set(keys)) == 1


def test_other_503s_and_exhausted_retries_raise() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return problem(503, "market_owned_elsewhere" if request.url.path.endswith("orders") else "market_busy")

    client = sync_client(handler, max_retries=2)
    with pytest.raises(capex.ServiceUnavailable) as err:
        client.orders.bid("H100-80GB", gpus=1, hours=1, max_price="2", command=["x"])
    assert err.value.code == "market_owned_elsewhere" and calls == 1
    with pytest.raises(capex.ServiceUnavailable) as err:
        client.wallet.get()
    assert err.value.code == "market_busy" and calls == 1 + 3


def test_a_lost_connection_is_retried_for_keyed_posts_with_the_same_key() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        if len(keys) == 1:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(201, json={"transfer_id": "t", "entry_id": 1, "from_user": "a", "to_user": "b",
                                         "amount": "1.000001", "kind": "transfer", "memo": "", "at": NOW})

    client = sync_client(handler)
    transfer = client.transfers.create("b", "1.000001", idempotency_key="my-key")
    assert transfer.amount == Decimal("1.000001")
    assert keys == ["my-key", "my-key"]


def test_problems_become_exceptions_with_code_and_field() -> None:
    client = sync_client(lambda r: problem(422, "invalid_precision", "price"))
    with pytest.raises(capex.ValidationError) as err:
        client.orders.bid("H100-80GB", gpus=1, hours=1, max_price="1.1234567", command=["x"])
    assert (err.value.status, err.value.code, err.value.field) == (422, "invalid_precision", "price")
    assert isinstance(err.value, capex.ApiError)
    client = sync_client(lambda r: httpx.Response(502, text="bad gateway"))
    with pytest.raises(capex.ServerError) as err2:
        client.markets.list()
    assert err2.value.code == "http_502"


def test_pager_follows_cursors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        n = 0 if cursor is None else int(cursor)
        items = [{"trade_id": f"t{n + i}", "price": "1", "gpus": 1, "max_hours": "1", "at": NOW} for i in range(2)]
        return httpx.Response(200, json={"items": items, "next_cursor": str(n + 2) if n < 4 else None})

    client = sync_client(handler)
    ids = [t.trade_id for t in client.markets.trades("H100-80GB", limit=2)]
    assert ids == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert [t.trade_id for t in client.markets.trades("H100-80GB").first(3)] == ["t0", "t1", "t2"]


def test_login_with_a_password_logs_in_again_when_the_token_is_refused() -> None:
    logins = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal logins
        if request.url.path == "/api/v1/auth/login":
            logins += 1
            assert "authorization" not in request.headers
            return httpx.Response(200, json={"token": f"jwt{logins}", "token_type": "Bearer",
                                             "expires_at": "2999-01-01T00:00:00Z",
                                             "user": {"user_id": "u", "email": "e@x.test", "roles": ["buyer"],
                                                      "created_at": NOW}})
        if request.headers["authorization"] == "Bearer jwt1":
            return problem(401, "unauthorized")
        return httpx.Response(200, json={"available": "1", "held": "0", "total": "1"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = capex.Client(BASE, email="e@x.test", password="pw", http_client=http)
    assert client.wallet.get().available == Decimal(1)
    assert logins == 2


def test_the_sse_parser() -> None:
    parser = SSEParser()
    lines = [": keep-alive", "event: hello", 'data: {"authenticated": true}', "", "event: job", "data: {\"a\":",
             "data: 1}", "", "data: plain", ""]
    events = [e for e in (parser.feed(line) for line in lines) if e is not None]
    assert [(e.kind, e.data) for e in events] == [("hello", {"authenticated": True}), ("job", {"a": 1}),
                                                 ("message", "plain")]


def test_job_context_from_env() -> None:
    env = {"CAPEX_EXCHANGE": "http://10.0.0.1:8080/", "CAPEX_JOB_TOKEN": "cxj_abc", "CAPEX_JOB_ID": "j",
           "CAPEX_LEASE_ID": "l", "CAPEX_ATTEMPT": "2"}
    ctx = capex.JobContext.from_env(env)
    assert (ctx.exchange, ctx.job_id, ctx.lease_id, ctx.attempt) == ("http://10.0.0.1:8080", "j", "l", 2)
    assert ctx.client.transport.credentials.token == "cxj_abc"
    assert capex.JobContext.in_job(env) and not capex.JobContext.in_job({})
    with pytest.raises(capex.CapexError, match="CAPEX_JOB_TOKEN"):
        capex.JobContext.from_env({"CAPEX_EXCHANGE": "x"})


def test_cost_formula_matches_the_servers_rounding() -> None:
    # From services/server/src/jobs/metering.rs's tests.
    assert capex.job_cost(Decimal("2"), 1, Decimal(3600)) == Decimal("2")
    assert capex.job_cost(Decimal("1.5"), 2, Decimal("0.001")) == Decimal("0")
    assert capex.job_cost(Decimal("1.234567"), 3, Decimal(3)) == Decimal("0.003086")
    assert capex.job_cost(Decimal("10"), 4, Decimal(3600), escrow_total=Decimal(5)) == Decimal(5)
    assert capex.job_fee(Decimal("2"), Decimal("0.02")) == Decimal("0.04")


@pytest.mark.anyio
async def test_async_client_retries_and_pages() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            keys.append(request.headers["idempotency-key"])
            return problem(503, "market_busy") if len(keys) == 1 else httpx.Response(201, json=order_json())
        cursor = request.url.params.get("cursor")
        items = [order_json(order_id=f"o{cursor or 0}")]
        return httpx.Response(200, json={"items": items, "next_cursor": None if cursor else "1"})

    async with async_client(handler) as client:
        job = await client.jobs.submit(cls="H100-80GB", gpus=1, hours=1, max_price="2", command=["x"],
                                       priority="interruptible")
        assert job.status == "queued" and len(keys) == 2 and keys[0] == keys[1]
        ids = [o.order_id async for o in client.orders.list(status="all")]
        assert ids == ["o0", "o1"]


def test_output_chunks_are_joined_into_lines() -> None:
    from capex.client import _join_lines

    def chunk(seq: int, text: str, stream: str = "stdout", attempt: int = 1) -> capex.models.LogLine:
        return capex.models.LogLine(attempt=attempt, seq=seq, stream=stream, text=text, at=NOW)

    chunks = [chunk(0, "a\nb"), chunk(1, "oops\n", "stderr"), chunk(2, "c\r\nd\n"), chunk(3, "tail"),
              chunk(4, "next\n", attempt=2)]
    assert list(_join_lines(iter(chunks), None)) == ["a", "oops", "bc", "d", "next", "tail"]
    assert list(_join_lines(iter(chunks), ["stderr"])) == ["oops"]
