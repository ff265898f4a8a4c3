"""The exchange's resources as typed models (pydantic v2).

Written by hand from the served OpenAPI document (``/api/v1/openapi.json``); the test
``tests/test_openapi.py`` fetches that document from a running server and checks every
field of every model here against the schema it names in ``__schema__`` (the field
exists, and its type fits). Amounts and other decimals are :class:`decimal.Decimal`,
times are timezone-aware :class:`datetime.datetime`, ids are strings. Fields the server
adds later are kept (``extra="allow"``) and readable as attributes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Model",
    "Page",
    "User",
    "Login",
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyList",
    "Wallet",
    "LedgerLine",
    "Transfer",
    "Market",
    "MarketList",
    "Level",
    "Book",
    "Trade",
    "Candle",
    "CandleList",
    "Estimate",
    "Fill",
    "UnfilledReason",
    "MinReliability",
    "Order",
    "Attempt",
    "Child",
    "JobView",
    "LogLine",
    "LogPage",
    "TelemetryPoint",
    "GpuSeries",
    "Telemetry",
    "GpuVerification",
    "Gpu",
    "Host",
    "StoredReport",
    "Reliability",
    "ClassCapacity",
    "Capacity",
    "Violation",
    "Invariants",
    "UserOverview",
    "UserList",
    "Fees",
    "Problem",
]


class Model(BaseModel):
    """Base of every model: unknown fields are kept, values are checked on the way in."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)
    #: The schema of ``/api/v1/openapi.json`` this model mirrors (``components/schemas/<name>``).
    __schema__: ClassVar[str | None] = None


T = TypeVar("T")


class Page(Model, Generic[T]):
    """One page of a cursor-paged list; the client's iterators follow ``next_cursor``."""

    items: list[T]
    next_cursor: str | None = None


# --- auth ---------------------------------------------------------------------------


class User(Model):
    __schema__ = "UserView"
    user_id: str
    email: str
    roles: list[str]
    created_at: datetime


class Login(Model):
    __schema__ = "LoginResponse"
    token: str
    token_type: str
    expires_at: datetime
    user: User


class ApiKey(Model):
    __schema__ = "ApiKeyView"
    api_key_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None


class ApiKeyCreated(Model):
    __schema__ = "ApiKeyCreated"
    api_key_id: str
    name: str
    #: The key itself (``capex_...``): shown only in this answer.
    key: str
    prefix: str
    created_at: datetime


class ApiKeyList(Model):
    __schema__ = "ApiKeyList"
    items: list[ApiKey]


# --- wallet -------------------------------------------------------------------------


class Wallet(Model):
    __schema__ = "WalletView"
    #: Credits the user can spend now.
    available: Decimal
    #: Credits held in escrow for open bids and running leases.
    held: Decimal
    total: Decimal


class LedgerLine(Model):
    __schema__ = "LedgerLineView"
    entry_id: int
    transfer_id: str
    at: datetime
    #: "wallet" or "escrow".
    account: str
    account_id: str
    #: "credit" (money in) or "debit" (money out).
    direction: str
    amount: Decimal
    kind: str
    memo: str


class Transfer(Model):
    __schema__ = "TransferView"
    transfer_id: str
    entry_id: int
    from_user: str | None = None
    to_user: str
    amount: Decimal
    kind: str
    memo: str
    at: datetime


# --- markets ------------------------------------------------------------------------


class Market(Model):
    __schema__ = "MarketView"
    #: The GPU class, e.g. ``H100-80GB``.
    cls: str = Field(alias="class")
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    last_price: Decimal | None = None
    volume_24h_gpu_hours: Decimal
    free_gpus: int
    free_gpus_by_level: dict[str, int] = Field(default_factory=dict)
    offered_gpus_by_level: dict[str, int] = Field(default_factory=dict)


class MarketList(Model):
    __schema__ = "MarketList"
    items: list[Market]


class Level(Model):
    """All resting orders of one side at one price."""

    __schema__ = "LevelView"
    price: Decimal
    gpus: int
    orders: int


class Book(Model):
    __schema__ = "BookView"
    cls: str = Field(alias="class")
    bids: list[Level]
    asks: list[Level]
    ask_gpus_by_min_uptime_7d: dict[str, int] = Field(default_factory=dict)


class Trade(Model):
    __schema__ = "TradeView"
    trade_id: str
    price: Decimal
    gpus: int
    max_hours: Decimal
    at: datetime


class Candle(Model):
    """``t`` is the start of the interval in unix seconds; volume in GPU-hours."""

    __schema__ = "CandleView"
    t: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class CandleList(Model):
    __schema__ = "CandleList"
    items: list[Candle]


class Estimate(Model):
    __schema__ = "FillEstimate"
    cls: str = Field(alias="class")
    gpus: int
    price: Decimal
    max_hours: Decimal
    #: Expected seconds until such a bid fills; None when nothing recent says.
    expected_wait_s: int | None = None
    basis: str
    fitting_asks: int
    fills_in_window: int
    bids_ahead: int
    window_s: int


class Fill(Model):
    __schema__ = "FillView"
    trade_id: str
    lease_id: str
    price: Decimal
    gpus: int
    at: datetime


class UnfilledReason(Model):
    __schema__ = "UnfilledReasonView"
    code: str
    message: str


class MinReliability(Model):
    __schema__ = "MinReliabilityView"
    uptime_7d: Decimal


class Order(Model):
    """An order as its owner sees it. A bid's ``order_id`` is also its job's id."""

    __schema__ = "OrderView"
    order_id: str
    cls: str = Field(alias="class")
    #: "bid" or "ask".
    side: str
    #: "open", "filled", "cancelled" or "expired".
    status: str
    gpus: int
    gpus_remaining: int
    price: Decimal
    max_hours: Decimal | None = None
    available_until: datetime | None = None
    tif: str
    escrow: Decimal | None = None
    host_id: str | None = None
    created_at: datetime
    min_verification: str | None = None
    verification: str | None = None
    min_reliability: MinReliability | None = None
    host_uptime_7d: Decimal | None = None
    fills: list[Fill] = Field(default_factory=list)
    unfilled_reasons: list[UnfilledReason] = Field(default_factory=list)


# --- jobs ---------------------------------------------------------------------------


class Attempt(Model):
    __schema__ = "AttemptView"
    attempt: int
    lease_id: str
    host_id: str
    state: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    exit_code: int | None = None
    #: Seconds billed (only what accepted reports attested).
    billed: Decimal
    #: Credits billed, gross.
    cost: Decimal
    sla_credit: Decimal


class Child(Model):
    __schema__ = "ChildView"
    job_id: str
    cls: str = Field(alias="class")
    status: str
    gpus: int
    price: Decimal
    max_hours: Decimal | None = None
    held: Decimal
    spent: Decimal
    created_at: datetime


class JobView(Model):
    """A job at one attempt (lease), as ``GET /api/v1/jobs/{id}`` answers."""

    __schema__ = "JobView"
    job_id: str
    lease_id: str
    attempt: int
    #: This attempt's lease state: pending, running, exited, cancelled, released, host_lost, max_duration.
    state: str
    #: The job's state: running, restarting, gave_up or ended.
    job_state: str
    end_reason: str | None = None
    next_bid_id: str | None = None
    restart: dict[str, Any] | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    sla_credits: Decimal
    cls: str = Field(alias="class")
    host_id: str
    gpu_uuids: list[str]
    gpus: int
    #: Trade price, credits per GPU-hour.
    price: Decimal
    max_hours: Decimal
    #: Time billed so far (only intervals an accepted report attested).
    billed_seconds: Decimal
    #: Gross billed so far (provider's part plus the fee).
    cost_so_far: Decimal
    fee_so_far: Decimal
    escrow_left: Decimal
    exit_code: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    max_end_at: datetime
    command: list[str]
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    role: str
    parent_job_id: str | None = None
    budget: Decimal | None = None
    budget_used: Decimal
    children: list[Child] = Field(default_factory=list)

    @property
    def ended(self) -> bool:
        """The job is over: no attempt runs and none will."""
        return self.job_state in ("ended", "gave_up")


class LogLine(Model):
    __schema__ = "LogLine"
    attempt: int
    seq: int
    #: stdout, stderr or system.
    stream: str
    text: str
    at: datetime


class LogPage(Model):
    __schema__ = "LogPage"
    items: list[LogLine]
    next_after: int
    ended: bool


# --- hosts --------------------------------------------------------------------------


class TelemetryPoint(Model):
    __schema__ = "TelemetryPoint"
    at: datetime
    utilization_pct: int
    power_w: float
    temperature_c: int
    memory_used_mib: int


class GpuSeries(Model):
    __schema__ = "GpuSeries"
    uuid: str
    samples: list[TelemetryPoint]


class Telemetry(Model):
    __schema__ = "Telemetry"
    host_id: str
    gpus: list[GpuSeries]
    next_since: datetime | None = None


class GpuVerification(Model):
    __schema__ = "GpuVerification"
    gpu_uuid: str
    cls: str = Field(alias="class")
    level: str
    challenged_until: datetime | None = None
    cc_attested_until: datetime | None = None
    cc_measurements_checked: bool | None = None
    verified_at: datetime | None = None


class Gpu(Model):
    __schema__ = "GpuView"
    uuid: str
    index: int
    name: str
    cls: str = Field(alias="class")
    memory_total_mib: int
    pci_bus_id: str | None = None
    reporting: bool
    verification: GpuVerification
    busy: bool
    utilization_pct: int | None = None
    memory_used_mib: int | None = None
    power_w: float | None = None
    energy_mj: int | None = None
    temperature_c: int | None = None
    processes: int
    foreign_processes: int
    last_seen_at: datetime | None = None


class Host(Model):
    __schema__ = "HostView"
    host_id: str
    name: str
    status: str
    public_key: str
    report_interval_s: int
    driver_version: str | None = None
    cuda_version: str | None = None
    created_at: datetime
    live: bool
    last_report_at: datetime | None = None
    last_seq: int | None = None
    gpus: list[Gpu] = Field(default_factory=list)
    reports_accepted: int
    reports_duplicate: int
    reports_refused: dict[str, int] = Field(default_factory=dict)
    leases_completed: int
    leases_lost: int
    backend: str
    challenge_blocked_at: datetime | None = None


class StoredReport(Model):
    __schema__ = "StoredReport"
    seq: int
    sent_at: datetime
    measured_at: datetime
    received_at: datetime
    payload: str
    signature: str
    report: Any = None


class Reliability(Model):
    __schema__ = "ReliabilityView"
    host_id: str
    report_interval_s: int
    uptime_24h: Decimal
    uptime_7d: Decimal
    uptime_30d: Decimal
    leases_completed: int
    leases_lost: int
    sla_credits_paid: Decimal
    reports_30d: int
    challenges_passed_30d: int
    challenges_failed_30d: int
    computed_at: datetime


class ClassCapacity(Model):
    __schema__ = "ClassCapacity"
    cls: str = Field(alias="class")
    live_hosts: int
    free_gpus: int
    busy_gpus: int


class Capacity(Model):
    __schema__ = "Capacity"
    items: list[ClassCapacity]


# --- operator -----------------------------------------------------------------------


class Violation(Model):
    __schema__ = "ViolationView"
    account_id: str
    kind: str
    balance: Decimal
    journal: Decimal | None = None


class Invariants(Model):
    __schema__ = "InvariantsView"
    ok: bool
    total: Decimal
    accounts_checked: int
    violations: list[Violation]
    checked_at: datetime


class UserOverview(Model):
    __schema__ = "UserOverview"
    user_id: str
    email: str
    roles: list[str]
    created_at: datetime
    available: Decimal
    held: Decimal


class UserList(Model):
    __schema__ = "UserList"
    items: list[UserOverview]


class Fees(Model):
    __schema__ = "FeesView"
    fees_earned: Decimal
    minted: Decimal


class Problem(Model):
    __schema__ = "Problem"
    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
