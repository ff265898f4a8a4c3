"""The SDK against a real capex-server (and a real capex-agent for the trades)."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest

import capex
from capex.models import JobView

from .conftest import CLASS, PASSWORD, Exchange, Provider, Users, eventually

pytestmark = pytest.mark.server


def assert_billed_exactly(view: JobView, fee_rate: Decimal, *, billed: bool = True) -> None:
    """The exchange's metering formula (services/server/src/jobs/metering.rs), to the micro-credit."""
    if billed:
        assert view.billed_seconds > 0, view
    escrow_total = view.cost_so_far + view.escrow_left
    assert view.cost_so_far == capex.job_cost(view.price, view.gpus, view.billed_seconds, escrow_total)
    assert view.fee_so_far == capex.job_fee(view.cost_so_far, fee_rate)


# --- auth and errors ----------------------------------------------------------------


def test_login_api_keys_and_problems(exchange: Exchange, users: Users) -> None:
    buyer = users.new("10")
    me = buyer.auth.me()
    assert me.roles == ["buyer"]

    with pytest.raises(capex.Unauthorized) as bad_login:
        capex.Client.login(exchange.url, me.email, "not the password")
    assert bad_login.value.code == "invalid_credentials"

    created = buyer.auth.create_api_key("sdk test")
    assert created.key.startswith("capex_")
    with capex.Client(exchange.url, api_key=created.key) as by_key:
        assert by_key.auth.me().user_id == me.user_id
        assert by_key.wallet.get().available == Decimal(10)
    assert [k.api_key_id for k in buyer.auth.api_keys()] == [created.api_key_id]
    buyer.auth.revoke_api_key(created.api_key_id)
    with capex.Client(exchange.url, api_key=created.key) as revoked, pytest.raises(capex.Unauthorized):
        revoked.wallet.get()

    with pytest.raises(capex.ValidationError) as precision:
        buyer.jobs.submit(cls=CLASS, gpus=1, hours=1, max_price="2.1234567", command=["true"])
    assert precision.value.field == "price" and precision.value.code
    with pytest.raises(capex.ValidationError) as empty:
        buyer.jobs.submit(cls=CLASS, gpus=1, hours=1, max_price="1", command=[])
    assert empty.value.field is not None and empty.value.field.startswith("job.command")
    with pytest.raises(capex.ValidationError) as broke:
        buyer.jobs.submit(cls=CLASS, gpus=8, hours=10, max_price="100", command=["true"])
    assert broke.value.code == "insufficient_funds"
    with pytest.raises(capex.NotFound) as unknown:
        buyer.jobs.get(str(uuid.uuid4()))
    assert unknown.value.code == "not_found"
    with pytest.raises(capex.NotFound) as market:
        buyer.markets.book("NO-SUCH-GPU")
    assert market.value.code == "unknown_market"
    with pytest.raises(capex.Forbidden):
        buyer.operator.invariants()


# --- money: transfers, idempotency, paging ------------------------------------------


def test_transfers_are_idempotent_and_the_ledger_pages(users: Users) -> None:
    alice, bob = users.new("100"), users.new(None)
    bob_id = bob.auth.me().user_id
    first = alice.transfers.create(bob_id, "1.5", "lunch", idempotency_key="lunch-1")
    again = alice.transfers.create(bob_id, "1.5", "lunch", idempotency_key="lunch-1")
    assert again.transfer_id == first.transfer_id
    with pytest.raises(capex.ApiError) as reused:
        alice.transfers.create(bob_id, "2", "lunch", idempotency_key="lunch-1")
    assert reused.value.code == "idempotency_key_reused"
    for i in range(5):
        alice.transfers.create(bob_id, Decimal("0.000001") * (i + 1))
    assert alice.wallet.get().available == Decimal("100") - Decimal("1.5") - Decimal("0.000015")
    assert bob.wallet.get().available == Decimal("1.500015")

    lines = list(alice.wallet.ledger(limit=2))
    assert len(lines) == 1 + 1 + 5  # the mint, the lunch, five transfers
    assert len({line.entry_id for line in lines}) == len(lines)
    pages = list(alice.wallet.ledger(limit=2).pages())
    assert [len(p.items) for p in pages] == [2, 2, 2, 1]
    assert all(isinstance(line.amount, Decimal) for line in lines)
    assert sum(line.amount for line in lines if line.direction == "debit") == Decimal("1.500015")


def test_the_feed_is_an_iterator_of_events(users: Users) -> None:
    alice, bob = users.new("5"), users.new(None)
    bob_id = bob.auth.me().user_id
    got: list[capex.Event] = []
    failure: list[BaseException] = []

    with alice.feed.events() as stream:
        events = iter(stream)
        hello = next(events)
        assert hello.kind == "hello" and hello.data == {"authenticated": True}

        def read() -> None:
            try:
                for event in events:
                    if event.kind == "wallet":
                        got.append(event)
                        return
            except BaseException as err:  # noqa: BLE001 - reported below
                failure.append(err)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        transfer = alice.transfers.create(bob_id, "0.25", "feed")
        reader.join(timeout=20)
    assert not failure, failure
    assert got, "no wallet event within 20 s"
    assert got[0].data["transfer_id"] == transfer.transfer_id
    assert Decimal(got[0].data["amount"]) == Decimal("0.25")


# --- trades -------------------------------------------------------------------------


def test_a_full_trade_submit_run_logs_and_exact_cost(exchange: Exchange, users: Users, market: Provider) -> None:
    buyer = users.new("100")
    provider_before = market.client.wallet.get().available
    market.offer("2.5", gpus=2)

    job = buyer.jobs.submit(cls=CLASS, gpus=2, hours=1, max_price="3",
                            command=["sh", "-c", "echo hello from $CAPEX_JOB_ID; sleep 3; echo done"])
    assert job.order is not None and job.order.status == "filled"
    assert job.order.fills[0].price == Decimal("2.5")
    lines = list(job.lines(follow=True))
    view = job.wait(timeout=60)
    assert lines == list(job.lines()) and lines[-1] == "done", lines

    assert lines[0] == f"hello from {job.id}", lines
    assert (view.state, view.job_state, view.exit_code, view.end_reason) == ("exited", "ended", 0, "exited")
    assert (view.price, view.gpus, view.cls) == (Decimal("2.5"), 2, CLASS)
    assert_billed_exactly(view, exchange.fee_rate)
    assert job.cost == view.cost_so_far == view.attempts[0].cost
    assert view.escrow_left == 0

    wallet = buyer.wallet.get()
    assert wallet.available == Decimal(100) - job.cost
    assert wallet.held == 0
    earned = market.client.wallet.get().available - provider_before
    assert earned == view.cost_so_far - view.fee_so_far
    assert exchange.operator().operator.invariants().ok

    # What the market shows of it.
    trades = list(buyer.markets.trades(CLASS))
    assert trades and trades[0].price == Decimal("2.5") and trades[0].gpus == 2
    assert any(m.cls == CLASS and m.last_price == Decimal("2.5") for m in buyer.markets.list())
    assert buyer.markets.candles(CLASS)[-1].close == Decimal("2.5")
    assert [j.job_id for j in buyer.jobs.list()] == [job.id]
    telemetry = job.telemetry()
    assert {s.uuid for s in telemetry.gpus} == set(view.gpu_uuids)


def test_cancel_a_running_job_pays_only_attested_time(exchange: Exchange, users: Users, market: Provider) -> None:
    buyer = users.new("50")
    market.offer("1.75")
    job = buyer.jobs.submit(cls=CLASS, gpus=1, hours="0.5", max_price="2", command=["sleep", "120"])

    def running() -> bool:
        job.refresh()
        return job.view is not None and job.view.state == "running" and job.view.billed_seconds > 0

    eventually(running, "the job running and billed")
    job.cancel()
    assert job.view is not None
    assert (job.view.state, job.view.job_state) == ("cancelled", "ended")
    assert_billed_exactly(job.view, exchange.fee_rate)
    wallet = buyer.wallet.get()
    assert wallet.available == Decimal(50) - job.cost and wallet.held == 0


def test_a_bid_that_waits_is_queued_and_can_be_cancelled(users: Users, market: Provider) -> None:
    buyer = users.new("10")
    job = buyer.jobs.submit(cls=CLASS, gpus=1, hours=1, max_price="0.5", command=["true"])
    assert job.status == "queued"
    assert buyer.wallet.get().held == Decimal("0.5")
    order = buyer.orders.get(job.id)
    assert [r.code for r in order.unfilled_reasons] == ["no_asks"]
    book = buyer.markets.book(CLASS)
    assert book.bids[0].price == Decimal("0.5")
    estimate = buyer.markets.estimate(CLASS, gpus=1, price="0.5", hours=1)
    assert estimate.bids_ahead >= 0 and estimate.cls == CLASS
    job.cancel()
    assert job.status == "not_placed"
    with pytest.raises(capex.JobNotPlaced):
        job.wait(timeout=5)
    assert buyer.wallet.get().held == 0

    ioc = buyer.jobs.submit(cls=CLASS, gpus=1, hours=1, max_price="0.5", command=["true"], tif="ioc")
    with pytest.raises(capex.JobNotPlaced) as never:
        ioc.wait(timeout=5)
    assert never.value.status == "cancelled"


def test_a_managed_job_restarts_and_a_waiting_restart_can_be_cancelled(users: Users, market: Provider) -> None:
    buyer = users.new("20")
    market.offer("1", gpus=2)  # one GPU for the first attempt, one left on the host that failed it
    job = buyer.jobs.submit(cls=CLASS, gpus=1, hours=1, max_price="1", command=["sh", "-c", "echo try; exit 3"],
                            restart=capex.Restart(on=["failed"], max_attempts=2, max_price="1.5"))

    def restarting() -> bool:
        job.refresh()
        return job.view is not None and job.view.job_state == "restarting"

    # The only host failed the job, so the restart bid waits (never on a host that failed it).
    try:
        eventually(restarting, "the job restarting")
    except AssertionError as err:
        raise AssertionError(f"{err}: {job.view!r}") from None
    assert job.view is not None
    assert job.view.restart == {"on": ["failed"], "max_attempts": 2, "max_price": "1.5"}
    assert job.view.attempts[0].exit_code == 3 and job.view.attempts[0].end_reason == "failed"
    assert job.view.next_bid_id is not None
    assert [r.code for r in buyer.orders.get(job.view.next_bid_id).unfilled_reasons] == ["only_excluded_hosts"]
    job.cancel()
    final = job.wait(timeout=20)
    assert (final.job_state, final.end_reason) == ("gave_up", "bid_cancelled")
    assert buyer.wallet.get().held == 0
    assert buyer.wallet.get().available == Decimal(20) - job.cost


def test_hosts_as_their_provider_sees_them(market: Provider) -> None:
    hosts = list(market.client.hosts.list())
    assert [h.host_id for h in hosts] == [market.host_id]
    host = market.client.hosts.get(market.host_id)
    assert host.live and host.backend == "simulated" and len(host.gpus) == 4
    assert {g.cls for g in host.gpus} == {CLASS}
    eventually(lambda: len(market.client.hosts.reports(market.host_id).first(5)) == 5, "five reports")
    reports = market.client.hosts.reports(market.host_id, limit=3).first(5)
    assert len(reports) == 5 and reports[0].seq > reports[1].seq > reports[-1].seq
    reliability = market.client.hosts.reliability(market.host_id)
    assert Decimal(0) <= reliability.uptime_7d <= Decimal(1)
    assert any(c.cls == CLASS and c.live_hosts == 1 for c in market.client.hosts.capacity())
    assert market.client.hosts.telemetry(market.host_id, limit=5).gpus


# --- code inside a job: the job token -----------------------------------------------

JOB_SCRIPT = r"""
import json, capex
def say(**kw): print(json.dumps(kw), flush=True)
ctx = capex.JobContext.from_env()
me = ctx.job()
say(step="self", job_id=me.job_id, state=me.state, budget=str(me.budget))
child = ctx.place_child(cls="H100-80GB", gpus=1, hours=1, max_price="1", command=["true"])
say(step="child", status=child.status, order_id=child.order_id)
try:
    ctx.place_child(cls="H100-80GB", gpus=1, hours=10, max_price="1", command=["true"])
except capex.ValidationError as err:
    say(step="over", code=err.code)
try:
    ctx.client.wallet.get()
except capex.Forbidden as err:
    say(step="wallet", code=err.code)
say(step="cancel", status=ctx.cancel_child(child.order_id).status)
say(step="markets", n=len(ctx.markets.list()))
# For the test to try the token once the job ended (a real job would never print it).
say(step="token", token=ctx.client.transport.credentials.token)
ctx.release()  # the agent stops this process at once
"""


def test_code_in_a_job_steers_it_with_its_job_token(exchange: Exchange, users: Users, market: Provider) -> None:
    buyer = users.new("20")
    market.offer("2")
    job = buyer.jobs.submit(cls=CLASS, gpus=1, hours=1, max_price="2", budget="5",
                            command=[sys.executable, "-c", JOB_SCRIPT + "\nimport time; time.sleep(60)"])
    view = job.wait(timeout=60)
    said: dict[str, Any] = {}
    lines: list[str] = []

    def read_all() -> bool:
        # The lease ended at the release; the agent uploads the job's last lines just after.
        lines[:] = list(job.lines())
        for text in lines:
            if text.startswith("{"):
                record = json.loads(text)
                said[record.pop("step")] = record
        return "token" in said

    try:
        eventually(read_all, "the job's last log lines", timeout=20)
    except AssertionError as err:
        raise AssertionError(f"{err}: {lines}") from None
    assert said.get("self", {}).get("job_id") == job.id, lines
    assert said["self"]["budget"] == "5"
    assert said["child"]["status"] == "open"
    assert said["over"] == {"code": "budget_exceeded"}
    assert said["wallet"] == {"code": "job_token_not_allowed"}
    assert said["cancel"] == {"status": "cancelled"}
    assert said["markets"]["n"] >= 1
    assert said["token"]["token"].startswith("cxj_")
    with capex.JobContext(exchange.url, said["token"]["token"], job.id) as ended, \
            pytest.raises(capex.Unauthorized) as revoked:
        ended.job()
    assert revoked.value.code == "job_token_revoked"
    assert (view.state, view.job_state) == ("released", "ended")
    # It may have released itself before a report billed anything: then it paid nothing.
    assert_billed_exactly(view, exchange.fee_rate, billed=False)
    assert [c.job_id for c in view.children] == [said["child"]["order_id"]]
    assert buyer.wallet.get().available == Decimal(20) - job.cost


# --- async --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_client_trades_too(exchange: Exchange, users: Users, market: Provider) -> None:
    sync_buyer = users.new("30")
    email = sync_buyer.auth.me().email
    market.offer("1.25")
    async with await capex.AsyncClient.login(exchange.url, email, PASSWORD) as buyer:
        job = await buyer.jobs.submit(cls=CLASS, gpus=1, hours="0.1", max_price="1.5",
                                      command=["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 1; done"])
        chunks = [chunk async for chunk in job.logs(follow=True)]
        lines = [line async for line in job.lines()]
        assert "".join(c.text for c in chunks) == "".join(line + "\n" for line in lines)
        view = await job.wait(timeout=60)
        assert [t for t in lines if t.startswith("line")] == ["line 1", "line 2", "line 3"]
        assert view.exit_code == 0 and view.price == Decimal("1.25")
        assert_billed_exactly(view, exchange.fee_rate)
        assert (await buyer.wallet.get()).available == Decimal(30) - job.cost
        ledger = await buyer.wallet.ledger(limit=1).all()
        assert len(ledger) >= 3
        assert [j.job_id async for j in buyer.jobs.list()] == [job.id]


@pytest.mark.anyio
async def test_the_async_feed(exchange: Exchange, users: Users) -> None:
    import asyncio

    alice, bob = users.new("5"), users.new(None)
    bob_id = bob.auth.me().user_id
    async with await capex.AsyncClient.login(exchange.url, alice.auth.me().email, PASSWORD) as client:
        async with client.feed.events(kinds=["wallet"]) as stream:
            events = stream.__aiter__()
            transfer = await client.transfers.create(bob_id, "0.5", "async feed")
            event = await asyncio.wait_for(events.__anext__(), timeout=20)
    assert event.kind == "wallet" and event.data["transfer_id"] == transfer.transfer_id
