"""The synchronous client.

    import capex

    client = capex.Client("http://127.0.0.1:8080", api_key="capex_...")
    job = client.jobs.submit(cls="H100-80GB", gpus=2, hours=1, max_price="2.5",
                             command=["python", "train.py"])
    for line in job.lines(follow=True):
        print(line)
    job.wait()
    print(job.cost)            # Decimal, exact
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx

from . import _calls as c
from . import models as m
from ._base import Call, RetryPolicy, base_url_from, credentials_from
from ._sse import Event, SSEParser
from ._transport import SyncTransport
from .errors import CapexError, Conflict, JobNotPlaced, NotFound, TransportError, WaitTimeout
from .money import Hours, Money

T = TypeVar("T")

__all__ = ["Client", "Job", "JobContext", "Pager", "EventStream"]

#: Order statuses after which a bid will never trade.
_BID_GONE = ("cancelled", "expired")


class Pager(Generic[T]):
    """Iterates the items of a cursor-paged list, fetching pages as it goes.

    ``for order in client.orders.list(status="all"): ...``; ``.pages()`` yields whole pages;
    ``limit`` is the page size asked of the server (not a total).
    """

    def __init__(self, fetch: Callable[[str | None], m.Page[T]]) -> None:
        self._fetch = fetch

    def pages(self) -> Iterator[m.Page[T]]:
        cursor: str | None = None
        while True:
            page = self._fetch(cursor)
            yield page
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.items

    def first(self, n: int) -> list[T]:
        out: list[T] = []
        for item in self:
            if len(out) >= n:
                break
            out.append(item)
        return out


class EventStream:
    """The live feed (``GET /api/v1/stream``, Server-Sent Events) as an iterator of
    :class:`~capex.Event`. Use it in a ``with`` block (or call :meth:`close`) so the
    connection is closed when you stop reading.

    With ``reconnect=True`` a stream the server ended (a restart, a deploy) is opened
    again after a pause, and a ``resync`` event is yielded first: events may have been
    missed, refetch what you show.
    """

    def __init__(
        self,
        transport: SyncTransport,
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

    def _open(self) -> None:
        params: dict[str, str] = {}
        if self._authenticated:
            creds = self._transport.credentials
            if creds.needs_login():
                self._transport.login()
            if creds.token:
                params["token"] = creds.token
        self._cm = self._transport.stream("/stream", params)
        self._response = self._cm.__enter__()

    def _close_response(self) -> None:
        cm, self._cm, self._response = self._cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except (CapexError, httpx.HTTPError):
                pass

    def close(self) -> None:
        self._closed = True
        self._close_response()

    def __enter__(self) -> EventStream:
        if self._response is None:
            self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        attempt = 0
        while not self._closed:
            if self._response is None:
                self._open()
            parser = SSEParser()
            try:
                for line in self._response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    attempt = 0
                    if self._kinds is None or event.kind in self._kinds or event.kind == "resync":
                        yield event
            except httpx.HTTPError as exc:
                if not self._reconnect or self._closed:
                    raise TransportError(f"the live feed broke: {exc!r}") from exc
            self._close_response()
            if not self._reconnect or self._closed:
                return
            time.sleep(self._transport.retry.delay(attempt))
            attempt += 1
            yield Event(kind="resync", data={"reconnected": True})


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _call(self, call: Call[T]) -> T:
        return self._client.call(call)


class Auth(_Resource):
    def login(self, email: str, password: str) -> m.Login:
        """Logs in; the client uses the token (and logs in again before it expires)."""
        creds = self._client.transport.credentials
        answer = self._call(c.login(email, password))
        creds.email, creds.password = email, password
        creds.token, creds.expires_at = answer.token, answer.expires_at
        return answer

    def register(self, email: str, password: str, roles: Sequence[str] = ("buyer",)) -> m.User:
        return self._call(c.register(email, password, roles))

    def me(self) -> m.User:
        return self._call(c.me())

    def create_api_key(self, name: str) -> m.ApiKeyCreated:
        return self._call(c.create_api_key(name))

    def api_keys(self) -> list[m.ApiKey]:
        return self._call(c.list_api_keys()).items

    def revoke_api_key(self, api_key_id: str) -> None:
        self._call(c.revoke_api_key(api_key_id))


class Wallet(_Resource):
    def get(self) -> m.Wallet:
        return self._call(c.wallet())

    def ledger(self, *, limit: int | None = None) -> Pager[m.LedgerLine]:
        """The wallet's ledger lines, newest first, across all pages."""
        return Pager(lambda cursor: self._call(c.ledger(cursor, limit)))


class Transfers(_Resource):
    def create(self, to_user: str, amount: Money, memo: str = "", *, idempotency_key: str | None = None) -> m.Transfer:
        """Sends credits to another user. Retries reuse one Idempotency-Key (made here
        unless given), so the credits move once."""
        return self._call(c.transfer(to_user, amount, memo, idempotency_key))


class Markets(_Resource):
    def list(self) -> list[m.Market]:
        return self._call(c.markets()).items

    def book(self, cls: str) -> m.Book:
        return self._call(c.book(cls))

    def trades(self, cls: str, *, limit: int | None = None) -> Pager[m.Trade]:
        return Pager(lambda cursor: self._call(c.trades(cls, cursor, limit)))

    def candles(self, cls: str, interval: str = "1m") -> builtins.list[m.Candle]:
        return self._call(c.candles(cls, interval)).items

    def estimate(self, cls: str, *, gpus: int, price: Money, hours: Hours) -> m.Estimate:
        return self._call(c.estimate(cls, gpus, price, hours))


class Orders(_Resource):
    def bid(
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
        """Places a bid (its ``order_id`` is the job's id). ``priority`` (e.g.
        ``"interruptible"``) is sent only when given."""
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
        return self._call(c.place_order(cls, body, idempotency_key))

    def ask(
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
        """Offers GPUs of your live host. ``interruptible_price`` is sent only when given."""
        body = c.ask_body(
            host_id=host_id,
            gpus=gpus,
            price=price,
            available_until=available_until,
            tif=tif,
            interruptible_price=interruptible_price,
            extra=extra,
        )
        return self._call(c.place_order(cls, body, idempotency_key))

    def get(self, order_id: str) -> m.Order:
        return self._call(c.get_order(order_id))

    def cancel(self, order_id: str) -> m.Order:
        return self._call(c.cancel_order(order_id))

    def list(self, *, status: str = "open", limit: int | None = None) -> Pager[m.Order]:
        return Pager(lambda cursor: self._call(c.list_orders(status, cursor, limit)))


class Jobs(_Resource):
    def submit(
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
    ) -> Job:
        """Bids for ``gpus`` GPUs of ``cls`` for up to ``hours`` at most ``max_price``
        credits per GPU-hour and returns the job's handle. ``max_price x gpus x hours`` is
        held from the wallet; what the job does not use comes back when it ends."""
        order = self._client.orders.bid(
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
        return Job(self._client, order.order_id, order=order)

    def get(self, job_id: str) -> m.JobView:
        return self._call(c.get_job(job_id))

    def attach(self, job_id: str) -> Job:
        """A handle on an existing job (or on a bid that has not traded yet)."""
        job = Job(self._client, job_id)
        job.refresh()
        return job

    def list(self, *, state: str | None = None, limit: int | None = None) -> Pager[m.JobView]:
        return Pager(lambda cursor: self._call(c.list_jobs(state, cursor, limit)))

    def logs(
        self, job_id: str, *, attempt: int | None = None, after: int | None = None, follow: bool = False
    ) -> m.LogPage:
        """One page of log lines (see :meth:`Job.logs` for the iterator)."""
        return self._call(c.job_logs(job_id, attempt, after, follow))

    def telemetry(self, job_id: str, *, since: datetime | None = None, limit: int | None = None) -> m.Telemetry:
        return self._call(c.job_telemetry(job_id, since, limit))

    def cancel(self, job_id: str) -> m.JobView:
        return self._call(c.cancel_job(job_id))

    def release(self, job_id: str) -> m.JobView:
        return self._call(c.release_job(job_id))

    def place_child(
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
        """A child bid of ``job_id``, paid from the owner's wallet within the job's budget."""
        job = c.JobSpec(command=command, env=env, image=image)
        body = c.bid_body(gpus=gpus, hours=hours, max_price=max_price, job=job, tif=tif, priority=priority)
        return self._call(c.place_child(job_id, cls, body, idempotency_key))

    def cancel_child(self, job_id: str, child_id: str) -> m.Child:
        return self._call(c.cancel_child(job_id, child_id))


class Hosts(_Resource):
    def list(self, *, limit: int | None = None) -> Pager[m.Host]:
        return Pager(lambda cursor: self._call(c.list_hosts(cursor, limit)))

    def get(self, host_id: str) -> m.Host:
        return self._call(c.get_host(host_id))

    def telemetry(self, host_id: str, *, since: datetime | None = None, limit: int | None = None) -> m.Telemetry:
        return self._call(c.host_telemetry(host_id, since, limit))

    def reports(self, host_id: str, *, limit: int | None = None) -> Pager[m.StoredReport]:
        return Pager(lambda cursor: self._call(c.host_reports(host_id, cursor, limit)))

    def reliability(self, host_id: str) -> m.Reliability:
        return self._call(c.host_reliability(host_id))

    def verification(self, host_id: str) -> dict[str, Any]:
        return self._call(c.host_verification(host_id))

    def capacity(self) -> builtins.list[m.ClassCapacity]:
        return self._call(c.capacity()).items


class Operator(_Resource):
    def mint(self, user_id: str, amount: Money, memo: str = "", *, idempotency_key: str | None = None) -> m.Transfer:
        return self._call(c.mint(user_id, amount, memo, idempotency_key))

    def invariants(self) -> m.Invariants:
        return self._call(c.invariants())

    def users(self) -> list[m.UserOverview]:
        return self._call(c.users()).items

    def fees(self) -> m.Fees:
        return self._call(c.fees())


class Feed:
    def __init__(self, client: Client) -> None:
        self._client = client

    def events(
        self, *, kinds: Sequence[str] | None = None, authenticated: bool = True, reconnect: bool = False
    ) -> EventStream:
        """The live feed. Public events (book, trade, market) reach everyone; with the
        client's credentials also your own order, job, wallet and host events."""
        return EventStream(self._client.transport, kinds=kinds, authenticated=authenticated, reconnect=reconnect)


class Client:
    """A client of one exchange.

    Credentials: ``api_key="capex_..."``, ``token=`` (a login token), or ``email=`` and
    ``password=`` (logs in on first use and again before the token expires). Without any,
    ``CAPEX_API_KEY`` / ``CAPEX_TOKEN`` are read from the environment; the exchange's URL
    defaults to ``CAPEX_EXCHANGE``, else ``http://127.0.0.1:8080``.

    Retries: 503 ``market_busy`` / ``market_moving`` / ``transaction_conflict`` and
    failed connections are retried up to ``max_retries`` times with backoff; every POST
    carries one Idempotency-Key for all its tries.
    """

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
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url_from(base_url)
        creds = credentials_from(api_key, token, email, password, env=True)
        self.transport = SyncTransport(
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
    def login(cls, base_url: str | None, email: str, password: str, **kwargs: Any) -> Client:
        """A client logged in now (so a wrong password fails here, not on first use)."""
        client = cls(base_url, email=email, password=password, **kwargs)
        client.transport.login()
        return client

    def call(self, call: Call[T]) -> T:
        return self.transport.call(call)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Job:
    """A submitted job: the bid until it trades, then the job and its attempts.

    ``view`` is the job as last read (``None`` while its bid waits in the book), ``order``
    its bid; :meth:`refresh`, :meth:`wait` and :meth:`cancel` update them.
    """

    def __init__(self, client: Client, job_id: str, *, order: m.Order | None = None) -> None:
        self._client = client
        self.id = job_id
        self.order = order
        self.view: m.JobView | None = None

    def __repr__(self) -> str:
        return f"<capex.Job {self.id} {self.status}>"

    # -- state ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``queued`` while the bid waits, ``not_placed`` if it left the book untraded,
        else the job's state (``running``, ``restarting``, ``ended``, ``gave_up``)."""
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
        """Credits billed so far over all attempts (exact), as of the last refresh."""
        return _cost(self.view)

    @property
    def exit_code(self) -> int | None:
        return self.view.exit_code if self.view else None

    def refresh(self) -> Job:
        try:
            self.view = self._client.jobs.get(self.id)
        except NotFound:
            if self.view is not None:
                raise
            self.order = self._client.orders.get(self.id)
            if self.order.status == "filled":
                # Traded a moment ago: the lease is there now.
                self.view = self._client.jobs.get(self.id)
        return self

    def _check_placed(self) -> None:
        if self.view is None and self.order is not None and self.order.status in _BID_GONE:
            raise JobNotPlaced(self.id, self.order.status, [r.code for r in self.order.unfilled_reasons])

    def wait_started(self, timeout: float | None = None, poll: float = 0.5) -> Job:
        """Waits until the bid traded (the job has an attempt)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            self._check_placed()
            if self.view is not None:
                return self
            _sleep_until(deadline, poll, self.id)

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> m.JobView:
        """Waits until the job ended (after its restarts, if it has a policy) and returns
        its final view. Raises :class:`~capex.JobNotPlaced` if its bid left the book
        untraded and :class:`~capex.WaitTimeout` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            self._check_placed()
            if self.view is not None and self.view.ended:
                return self.view
            _sleep_until(deadline, poll, self.id)

    # -- logs -----------------------------------------------------------------------

    def logs(self, *, follow: bool = False, attempt: int | None = None, after: int | None = None) -> Iterator[m.LogLine]:
        """The job's log lines. ``follow=True`` waits for the job to start, streams lines as
        they come (long-polling the exchange) and ends when the job has ended and every
        line was read; a managed job's restarts are followed into the next attempt unless
        ``attempt`` pins one."""
        if self.view is None:
            if not follow:
                self.refresh()
                if self.view is None:
                    return
            else:
                self.wait_started()
        assert self.view is not None
        current = attempt or self.view.attempt
        cursor = -1 if after is None else after
        while True:
            page = self._client.jobs.logs(self.id, attempt=current, after=cursor, follow=follow)
            yield from page.items
            cursor = page.next_after
            if page.items:
                continue
            if not follow:
                return
            if not page.ended:
                continue
            if attempt is not None:
                return
            self.refresh()
            if self.view.attempt > current:
                current, cursor = current + 1, -1
                continue
            if self.view.job_state == "restarting":
                time.sleep(1.0)
                continue
            return

    def lines(
        self, *, follow: bool = False, attempt: int | None = None, streams: Sequence[str] | None = None
    ) -> Iterator[str]:
        """The job's output as text lines (without their line break). The exchange stores
        output as the chunks the agent read from the job's pipes (:meth:`logs`); this joins
        them per attempt and stream (``stdout``, ``stderr``, ``system``; ``streams`` picks)."""
        yield from _join_lines(self.logs(follow=follow, attempt=attempt), streams)

    def telemetry(self, *, since: datetime | None = None, limit: int | None = None) -> m.Telemetry:
        return self._client.jobs.telemetry(self.id, since=since, limit=limit)

    # -- ending ---------------------------------------------------------------------

    def cancel(self) -> Job:
        """Cancels the job: its bid if it has not traded, its running attempt (billed only
        what was attested; the rest of the escrow comes back), or a restart bid waiting."""
        self.refresh()
        if self.view is None:
            if self.order is not None and self.order.status == "open":
                self.order = self._client.orders.cancel(self.id)
            self.refresh()
            if self.view is None:
                return self
        if self.view.ended:
            return self
        try:
            if self.view.next_bid_id and self.view.job_state == "restarting":
                self._client.orders.cancel(self.view.next_bid_id)
            else:
                self.view = self._client.jobs.cancel(self.id)
        except Conflict:
            pass  # it ended meanwhile (or a retried cancel already did it): the refresh shows how
        return self.refresh()

    def release(self) -> Job:
        self.view = self._client.jobs.release(self.id)
        return self


class _LineJoiner:
    def __init__(self, streams: Sequence[str] | None) -> None:
        self.streams = set(streams) if streams else None
        self.pending: dict[tuple[int, str], str] = {}

    def push(self, chunk: m.LogLine) -> list[str]:
        if self.streams is not None and chunk.stream not in self.streams:
            return []
        key = (chunk.attempt, chunk.stream)
        *complete, rest = (self.pending.pop(key, "") + chunk.text).split("\n")
        if rest:
            self.pending[key] = rest
        return [line[:-1] if line.endswith("\r") else line for line in complete]

    def rest(self) -> list[str]:
        out = [text for text in self.pending.values() if text]
        self.pending.clear()
        return out


def _join_lines(chunks: Iterator[m.LogLine], streams: Sequence[str] | None) -> Iterator[str]:
    joiner = _LineJoiner(streams)
    for chunk in chunks:
        yield from joiner.push(chunk)
    yield from joiner.rest()


def _cost(view: m.JobView | None) -> Decimal:
    if view is None:
        return Decimal(0)
    if view.attempts:
        return sum((a.cost for a in view.attempts), Decimal(0))
    return view.cost_so_far


def _sleep_until(deadline: float | None, poll: float, job_id: str) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"job {job_id} did not finish in time")
        poll = min(poll, left)
    time.sleep(poll)


class JobContext:
    """For code running inside a job: the attempt's identity and its job token.

    The agent gives every attempt ``CAPEX_EXCHANGE``, ``CAPEX_JOB_TOKEN`` (``cxj_...``,
    valid while the attempt runs), ``CAPEX_JOB_ID``, ``CAPEX_LEASE_ID`` and
    ``CAPEX_ATTEMPT``. With them the job may read itself, release its GPUs early, place and
    cancel child bids within its budget, and read public market data; nothing else.
    """

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
        http_client: httpx.Client | None = None,
    ) -> None:
        self.exchange = base_url_from(exchange)
        self.job_id = job_id
        self.lease_id = lease_id
        self.attempt = attempt
        #: A client holding the job token: only what a job may do works with it.
        self.client = Client(
            self.exchange, token=token, timeout=timeout, max_retries=max_retries, http_client=http_client
        )
        #: Public market data (markets, book, trades, candles, estimate).
        self.markets = self.client.markets
        self._jobs = self.client.jobs

    @staticmethod
    def in_job(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env
        return bool(env.get("CAPEX_JOB_TOKEN") and env.get("CAPEX_JOB_ID"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> JobContext:
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

    def job(self) -> m.JobView:
        """This job: state, cost so far, escrow left, attempts, budget and children."""
        return self._jobs.get(self.job_id)

    def release(self) -> m.JobView:
        """Ends this attempt now (``released``): only attested time is billed, the rest of
        the escrow goes back to the owner, and no restart follows. The token is revoked."""
        return self._jobs.release(self.job_id)

    def place_child(
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
        """A child bid in any market, paid from the owner's wallet within this job's
        ``budget`` (refused ``budget_exceeded`` / ``no_budget``)."""
        return self._jobs.place_child(
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

    def cancel_child(self, child_id: str) -> m.Child:
        return self._jobs.cancel_child(self.job_id, child_id)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> JobContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
