"""The asynchronous client: the same API as :mod:`capex.client`, awaited.

    async with capex.AsyncClient(api_key="capex_...") as client:
        job = await client.jobs.submit(cls="H100-80GB", gpus=1, hours=1, max_price="2.5",
                                       command=["python", "train.py"])
        async for line in job.lines(follow=True):
            print(line)
        await job.wait()
        print(job.cost)

Both clients run the same :class:`~capex._base.Call` objects (``capex._calls``), so
paths, bodies, Idempotency-Keys and models are the same by construction.
"""

from __future__ import annotations

import builtins
import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx

from . import _calls as c
from . import models as m
from ._base import Call, RetryPolicy, base_url_from, credentials_from
from ._sse import Event, SSEParser
from ._transport import AsyncTransport
from .client import _BID_GONE, _cost, _LineJoiner
from .errors import CapexError, Conflict, JobNotPlaced, NotFound, TransportError, WaitTimeout
from .money import Hours, Money

T = TypeVar("T")

__all__ = ["AsyncClient", "AsyncJob", "AsyncJobContext", "AsyncPager", "AsyncEventStream"]


class AsyncPager(Generic[T]):
    """``async for item in pager``; ``pager.pages()`` yields whole pages."""

    def __init__(self, fetch: Callable[[str | None], Awaitable[m.Page[T]]]) -> None:
        self._fetch = fetch

    async def pages(self) -> AsyncIterator[m.Page[T]]:
        cursor: str | None = None
        while True:
            page = await self._fetch(cursor)
            yield page
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    async def _items(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def first(self, n: int) -> list[T]:
        out: list[T] = []
        async for item in self:
            if len(out) >= n:
                break
            out.append(item)
        return out

    async def all(self) -> list[T]:
        return [item async for item in self]


class AsyncEventStream:
    """The live feed as an async iterator of :class:`~capex.Event`; use ``async with``."""

    def __init__(
        self,
        transport: AsyncTransport,
        *,
        kinds: Sequence[str] | None = None,
        authenticated: bool = True,
        reconnect: bool = False,
    ) -> None:
        self._transport = transport
        self._kinds = set(kinds) if kinds else None
        self._authenticated = authenticated
        self._reconnect = reconnect
        self._response: Any = None
        self._cm: Any = None
        self._closed = False

    async def _open(self) -> None:
        params: dict[str, str] = {}
        if self._authenticated:
            creds = self._transport.credentials
            if creds.needs_login():
                await self._transport.login()
            if creds.token:
                params["token"] = creds.token
        self._cm = self._transport.stream("/stream", params)
        self._response = await self._cm.__aenter__()

    async def _close_response(self) -> None:
        cm, self._cm, self._response = self._cm, None, None
        if cm is not None:
            try:
                await cm.__aexit__(None, None, None)
            except (CapexError, httpx.HTTPError):
                pass

    async def aclose(self) -> None:
        self._closed = True
        await self._close_response()

    async def __aenter__(self) -> AsyncEventStream:
        if self._response is None:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        attempt = 0
        while not self._closed:
            if self._response is None:
                await self._open()
            parser = SSEParser()
            try:
                async for line in self._response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    attempt = 0
                    if self._kinds is None or event.kind in self._kinds or event.kind == "resync":
                        yield event
            except httpx.HTTPError as exc:
                if not self._reconnect or self._closed:
                    raise TransportError(f"the live feed broke: {exc!r}") from exc
            await self._close_response()
            if not self._reconnect or self._closed:
                return
            await asyncio.sleep(self._transport.retry.delay(attempt))
            attempt += 1
            yield Event(kind="resync", data={"reconnected": True})


class _Resource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def _call(self, call: Call[T]) -> T:
        return await self._client.call(call)


class Auth(_Resource):
    async def login(self, email: str, password: str) -> m.Login:
        creds = self._client.transport.credentials
        answer = await self._call(c.login(email, password))
        creds.email, creds.password = email, password
        creds.token, creds.expires_at = answer.token, answer.expires_at
        return answer

    async def register(self, email: str, password: str, roles: Sequence[str] = ("buyer",)) -> m.User:
        return await self._call(c.register(email, password, roles))

    async def me(self) -> m.User:
        return await self._call(c.me())

    async def create_api_key(self, name: str) -> m.ApiKeyCreated:
        return await self._call(c.create_api_key(name))

    async def api_keys(self) -> list[m.ApiKey]:
        return (await self._call(c.list_api_keys())).items

    async def revoke_api_key(self, api_key_id: str) -> None:
        await self._call(c.revoke_api_key(api_key_id))


class Wallet(_Resource):
    async def get(self) -> m.Wallet:
        return await self._call(c.wallet())

    def ledger(self, *, limit: int | None = None) -> AsyncPager[m.LedgerLine]:
        return AsyncPager(lambda cursor: self._call(c.ledger(cursor, limit)))


class Transfers(_Resource):
    async def create(
        self, to_user: str, amount: Money, memo: str = "", *, idempotency_key: str | None = None
    ) -> m.Transfer:
        return await self._call(c.transfer(to_user, amount, memo, idempotency_key))


class Markets(_Resource):
    async def list(self) -> list[m.Market]:
        return (await self._call(c.markets())).items

    async def book(self, cls: str) -> m.Book:
        return await self._call(c.book(cls))

    def trades(self, cls: str, *, limit: int | None = None) -> AsyncPager[m.Trade]:
        return AsyncPager(lambda cursor: self._call(c.trades(cls, cursor, limit)))

    async def candles(self, cls: str, interval: str = "1m") -> builtins.list[m.Candle]:
        return (await self._call(c.candles(cls, interval))).items

    async def estimate(self, cls: str, *, gpus: int, price: Money, hours: Hours) -> m.Estimate:
        return await self._call(c.estimate(cls, gpus, price, hours))


class Orders(_Resource):
    async def bid(
        self,
        cls: str,
        *,
        gpus: int,
        hours: Hours,
        max_price: Money,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        tif: str = "gtc",
        restart: c.RestartLike | None = None,
        budget: Money | None = None,
        min_verification: str | None = None,
        min_uptime_7d: Money | None = None,
        priority: str | None = None,
        idempotency_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> m.Order:
        job = c.JobSpec(command=command, env=env, image=image, restart=restart, budget=budget)
        body = c.bid_body(
            gpus=gpus,
            hours=hours,
            max_price=max_price,
            job=job,
            tif=tif,
            min_verification=min_verification,
            min_uptime_7d=min_uptime_7d,
            priority=priority,
            extra=extra,
        )
        return await self._call(c.place_order(cls, body, idempotency_key))

    async def ask(
        self,
        cls: str,
        *,
        host_id: str,
        gpus: int,
        price: Money,
        available_until: datetime,
        tif: str = "gtc",
        interruptible_price: Money | None = None,
        idempotency_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> m.Order:
        body = c.ask_body(
            host_id=host_id,
            gpus=gpus,
            price=price,
            available_until=available_until,
            tif=tif,
            interruptible_price=interruptible_price,
            extra=extra,
        )
        return await self._call(c.place_order(cls, body, idempotency_key))

    async def get(self, order_id: str) -> m.Order:
        return await self._call(c.get_order(order_id))

    async def cancel(self, order_id: str) -> m.Order:
        return await self._call(c.cancel_order(order_id))

    def list(self, *, status: str = "open", limit: int | None = None) -> AsyncPager[m.Order]:
        return AsyncPager(lambda cursor: self._call(c.list_orders(status, cursor, limit)))


class Jobs(_Resource):
    async def submit(
        self,
        *,
        cls: str,
        gpus: int,
        hours: Hours,
        max_price: Money,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        tif: str = "gtc",
        restart: c.RestartLike | None = None,
        budget: Money | None = None,
        min_verification: str | None = None,
        min_uptime_7d: Money | None = None,
        priority: str | None = None,
        idempotency_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncJob:
        order = await self._client.orders.bid(
            cls,
            gpus=gpus,
            hours=hours,
            max_price=max_price,
            command=command,
            env=env,
            image=image,
            tif=tif,
            restart=restart,
            budget=budget,
            min_verification=min_verification,
            min_uptime_7d=min_uptime_7d,
            priority=priority,
            idempotency_key=idempotency_key,
            extra=extra,
        )
        return AsyncJob(self._client, order.order_id, order=order)

    async def get(self, job_id: str) -> m.JobView:
        return await self._call(c.get_job(job_id))

    async def attach(self, job_id: str) -> AsyncJob:
        job = AsyncJob(self._client, job_id)
        await job.refresh()
        return job

    def list(self, *, state: str | None = None, limit: int | None = None) -> AsyncPager[m.JobView]:
        return AsyncPager(lambda cursor: self._call(c.list_jobs(state, cursor, limit)))

    async def logs(
        self, job_id: str, *, attempt: int | None = None, after: int | None = None, follow: bool = False
    ) -> m.LogPage:
        return await self._call(c.job_logs(job_id, attempt, after, follow))

    async def telemetry(
        self, job_id: str, *, since: datetime | None = None, limit: int | None = None
    ) -> m.Telemetry:
        return await self._call(c.job_telemetry(job_id, since, limit))

    async def cancel(self, job_id: str) -> m.JobView:
        return await self._call(c.cancel_job(job_id))

    async def release(self, job_id: str) -> m.JobView:
        return await self._call(c.release_job(job_id))

    async def place_child(
        self,
        job_id: str,
        *,
        cls: str,
        gpus: int,
        hours: Hours,
        max_price: Money,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        tif: str = "gtc",
        priority: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Order:
        job = c.JobSpec(command=command, env=env, image=image)
        body = c.bid_body(gpus=gpus, hours=hours, max_price=max_price, job=job, tif=tif, priority=priority)
        return await self._call(c.place_child(job_id, cls, body, idempotency_key))

    async def cancel_child(self, job_id: str, child_id: str) -> m.Child:
        return await self._call(c.cancel_child(job_id, child_id))


class Hosts(_Resource):
    def list(self, *, limit: int | None = None) -> AsyncPager[m.Host]:
        return AsyncPager(lambda cursor: self._call(c.list_hosts(cursor, limit)))

    async def get(self, host_id: str) -> m.Host:
        return await self._call(c.get_host(host_id))

    async def telemetry(
        self, host_id: str, *, since: datetime | None = None, limit: int | None = None
    ) -> m.Telemetry:
        return await self._call(c.host_telemetry(host_id, since, limit))

    def reports(self, host_id: str, *, limit: int | None = None) -> AsyncPager[m.StoredReport]:
        return AsyncPager(lambda cursor: self._call(c.host_reports(host_id, cursor, limit)))

    async def reliability(self, host_id: str) -> m.Reliability:
        return await self._call(c.host_reliability(host_id))

    async def verification(self, host_id: str) -> dict[str, Any]:
        return await self._call(c.host_verification(host_id))

    async def capacity(self) -> builtins.list[m.ClassCapacity]:
        return (await self._call(c.capacity())).items


class Operator(_Resource):
    async def mint(
        self, user_id: str, amount: Money, memo: str = "", *, idempotency_key: str | None = None
    ) -> m.Transfer:
        return await self._call(c.mint(user_id, amount, memo, idempotency_key))

    async def invariants(self) -> m.Invariants:
        return await self._call(c.invariants())

    async def users(self) -> list[m.UserOverview]:
        return (await self._call(c.users())).items

    async def fees(self) -> m.Fees:
        return await self._call(c.fees())


class Feed:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def events(
        self, *, kinds: Sequence[str] | None = None, authenticated: bool = True, reconnect: bool = False
    ) -> AsyncEventStream:
        return AsyncEventStream(
            self._client.transport, kinds=kinds, authenticated=authenticated, reconnect=reconnect
        )


class AsyncClient:
    """The async twin of :class:`capex.Client` (same arguments, same resources)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        email: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url_from(base_url)
        creds = credentials_from(api_key, token, email, password, env=True)
        self.transport = AsyncTransport(
            self.base_url, creds, timeout=timeout, retry=RetryPolicy(max_retries=max_retries), http=http_client
        )
        self.auth = Auth(self)
        self.wallet = Wallet(self)
        self.transfers = Transfers(self)
        self.markets = Markets(self)
        self.orders = Orders(self)
        self.jobs = Jobs(self)
        self.hosts = Hosts(self)
        self.operator = Operator(self)
        self.feed = Feed(self)

    @classmethod
    async def login(cls, base_url: str | None, email: str, password: str, **kwargs: Any) -> AsyncClient:
        client = cls(base_url, email=email, password=password, **kwargs)
        await client.transport.login()
        return client

    async def call(self, call: Call[T]) -> T:
        return await self.transport.call(call)

    async def aclose(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncJob:
    """The async twin of :class:`capex.Job`."""

    def __init__(self, client: AsyncClient, job_id: str, *, order: m.Order | None = None) -> None:
        self._client = client
        self.id = job_id
        self.order = order
        self.view: m.JobView | None = None

    def __repr__(self) -> str:
        return f"<capex.AsyncJob {self.id} {self.status}>"

    @property
    def status(self) -> str:
        if self.view is not None:
            return self.view.job_state
        if self.order is not None and self.order.status in _BID_GONE:
            return "not_placed"
        return "queued"

    @property
    def ended(self) -> bool:
        return self.view is not None and self.view.ended

    @property
    def cost(self) -> Decimal:
        return _cost(self.view)

    @property
    def exit_code(self) -> int | None:
        return self.view.exit_code if self.view else None

    async def refresh(self) -> AsyncJob:
        try:
            self.view = await self._client.jobs.get(self.id)
        except NotFound:
            if self.view is not None:
                raise
            self.order = await self._client.orders.get(self.id)
            if self.order.status == "filled":
                self.view = await self._client.jobs.get(self.id)
        return self

    def _check_placed(self) -> None:
        if self.view is None and self.order is not None and self.order.status in _BID_GONE:
            raise JobNotPlaced(self.id, self.order.status, [r.code for r in self.order.unfilled_reasons])

    async def wait_started(self, timeout: float | None = None, poll: float = 0.5) -> AsyncJob:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self.refresh()
            self._check_placed()
            if self.view is not None:
                return self
            await _sleep_until(deadline, poll, self.id)

    async def wait(self, timeout: float | None = None, poll: float = 1.0) -> m.JobView:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self.refresh()
            self._check_placed()
            if self.view is not None and self.view.ended:
                return self.view
            await _sleep_until(deadline, poll, self.id)

    async def logs(
        self, *, follow: bool = False, attempt: int | None = None, after: int | None = None
    ) -> AsyncIterator[m.LogLine]:
        if self.view is None:
            if not follow:
                await self.refresh()
                if self.view is None:
                    return
            else:
                await self.wait_started()
        assert self.view is not None
        current = attempt or self.view.attempt
        cursor = -1 if after is None else after
        while True:
            page = await self._client.jobs.logs(self.id, attempt=current, after=cursor, follow=follow)
            for line in page.items:
                yield line
            cursor = page.next_after
            if page.items:
                continue
            if not follow:
                return
            if not page.ended:
                continue
            if attempt is not None:
                return
            await self.refresh()
            if self.view.attempt > current:
                current, cursor = current + 1, -1
                continue
            if self.view.job_state == "restarting":
                await asyncio.sleep(1.0)
                continue
            return

    async def lines(
        self, *, follow: bool = False, attempt: int | None = None, streams: Sequence[str] | None = None
    ) -> AsyncIterator[str]:
        """The job's output as text lines; see :meth:`capex.Job.lines`."""
        joiner = _LineJoiner(streams)
        async for chunk in self.logs(follow=follow, attempt=attempt):
            for line in joiner.push(chunk):
                yield line
        for line in joiner.rest():
            yield line

    async def telemetry(self, *, since: datetime | None = None, limit: int | None = None) -> m.Telemetry:
        return await self._client.jobs.telemetry(self.id, since=since, limit=limit)

    async def cancel(self) -> AsyncJob:
        await self.refresh()
        if self.view is None:
            if self.order is not None and self.order.status == "open":
                self.order = await self._client.orders.cancel(self.id)
            await self.refresh()
            if self.view is None:
                return self
        if self.view.ended:
            return self
        try:
            if self.view.next_bid_id and self.view.job_state == "restarting":
                await self._client.orders.cancel(self.view.next_bid_id)
            else:
                self.view = await self._client.jobs.cancel(self.id)
        except Conflict:
            pass  # it ended meanwhile (or a retried cancel already did it): the refresh shows how
        return await self.refresh()

    async def release(self) -> AsyncJob:
        self.view = await self._client.jobs.release(self.id)
        return self


async def _sleep_until(deadline: float | None, poll: float, job_id: str) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"job {job_id} did not finish in time")
        poll = min(poll, left)
    await asyncio.sleep(poll)


class AsyncJobContext:
    """The async twin of :class:`capex.JobContext`."""

    def __init__(
        self,
        exchange: str,
        token: str,
        job_id: str,
        *,
        lease_id: str | None = None,
        attempt: int = 1,
        timeout: float = 30.0,
        max_retries: int = 6,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.exchange = base_url_from(exchange)
        self.job_id = job_id
        self.lease_id = lease_id
        self.attempt = attempt
        self.client = AsyncClient(
            self.exchange, token=token, timeout=timeout, max_retries=max_retries, http_client=http_client
        )
        self.markets = self.client.markets
        self._jobs = self.client.jobs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> AsyncJobContext:
        env = os.environ if env is None else env
        missing = [k for k in ("CAPEX_EXCHANGE", "CAPEX_JOB_TOKEN", "CAPEX_JOB_ID") if not env.get(k)]
        if missing:
            raise CapexError(f"not running inside a Capex job: {', '.join(missing)} not set")
        return cls(
            env["CAPEX_EXCHANGE"],
            env["CAPEX_JOB_TOKEN"],
            env["CAPEX_JOB_ID"],
            lease_id=env.get("CAPEX_LEASE_ID"),
            attempt=int(env.get("CAPEX_ATTEMPT") or 1),
            **kwargs,
        )

    async def job(self) -> m.JobView:
        return await self._jobs.get(self.job_id)

    async def release(self) -> m.JobView:
        return await self._jobs.release(self.job_id)

    async def place_child(
        self,
        *,
        cls: str,
        gpus: int,
        hours: Hours,
        max_price: Money,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        tif: str = "gtc",
        priority: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Order:
        return await self._jobs.place_child(
            self.job_id,
            cls=cls,
            gpus=gpus,
            hours=hours,
            max_price=max_price,
            command=command,
            env=env,
            image=image,
            tif=tif,
            priority=priority,
            idempotency_key=idempotency_key,
        )

    async def cancel_child(self, child_id: str) -> m.Child:
        return await self._jobs.cancel_child(self.job_id, child_id)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncJobContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
