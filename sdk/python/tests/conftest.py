"""Fixtures that run the real exchange: a capex-server on a fresh Postgres database and a
random port, and a capex-agent on the simulated backend (4 simulated H100s, reports every
second, jobs as plain processes), as the Rust end-to-end tests do (tests/src/lib.rs).

Binaries come from ``$CARGO_TARGET_DIR`` (default ``target/``) ``/debug``; Postgres from
``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/postgres``). Without the
binaries the server tests are skipped, unless ``CAPEX_SDK_REQUIRE_SERVER=1`` (as
``scripts/test`` sets) makes that an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

import capex

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target").resolve() / "debug"
ADMIN_DB = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
OPERATOR_EMAIL = "operator@sdk.test"
OPERATOR_PASSWORD = "operator password sdk"
PASSWORD = "correct horse battery"
CLASS = "H100-80GB"
#: Simulated GPUs of the test host.
HOST_GPUS = 4
LOG = os.environ.get("TEST_LOG")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], object], what: str, timeout: float = 30.0, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def _binary(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        message = f"{path} is missing: run `cargo build --workspace --bins` first"
        if os.environ.get("CAPEX_SDK_REQUIRE_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _psql(sql: str) -> None:
    subprocess.run(["psql", ADMIN_DB, "-qtAc", sql], check=True, capture_output=True)


@dataclass
class Exchange:
    url: str
    log: Path
    fee_rate: Decimal

    def operator(self) -> capex.Client:
        return capex.Client.login(self.url, OPERATOR_EMAIL, OPERATOR_PASSWORD)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    server = _binary("capex-server")
    if shutil.which("psql") is None:
        pytest.skip("psql is missing")
    db = f"capex_sdk_{uuid.uuid4().hex}"
    _psql(f"create database {db}")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": ADMIN_DB.rsplit("/", 1)[0] + "/" + db,
        "CAPEX_BIND": f"127.0.0.1:{port}",
        "CAPEX_JWT_SECRET": "sdk-secret-sdk-secret-sdk-secret-sdk-secret",
        "CAPEX_ALLOW_SIMULATED": "true",
        "CAPEX_OPERATOR_EMAIL": OPERATOR_EMAIL,
        "CAPEX_OPERATOR_PASSWORD": OPERATOR_PASSWORD,
        "CAPEX_LOG_FORMAT": "json",
        "CAPEX_FEE_RATE": "0.02",
        "RUST_LOG": LOG or "warn",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(server)], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    ex = Exchange(url=url, log=log, fee_rate=Decimal("0.02"))
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"capex-server exited with {proc.returncode}:\n{ex.log_tail()}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"capex-server did not become healthy:\n{ex.log_tail()}")
            time.sleep(0.1)
        yield ex
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["psql", ADMIN_DB, "-qtAc", f"drop database if exists {db} with (force)"], capture_output=True)


@pytest.fixture(scope="session")
def operator(exchange: Exchange) -> Iterator[capex.Client]:
    with exchange.operator() as client:
        yield client


@dataclass
class Users:
    exchange: Exchange
    operator: capex.Client

    def new(self, credits: str | None = "100", roles: tuple[str, ...] = ("buyer",)) -> capex.Client:
        """A new user (logged in with its password), funded with ``credits``."""
        email = f"{uuid.uuid4().hex}@sdk.test"
        with capex.Client(self.exchange.url) as anon:
            user = anon.auth.register(email, PASSWORD, roles=roles)
        client = capex.Client.login(self.exchange.url, email, PASSWORD)
        if credits is not None:
            self.operator.operator.mint(user.user_id, credits, "sdk test funds")
        return client


@pytest.fixture(scope="session")
def users(exchange: Exchange, operator: capex.Client) -> Users:
    return Users(exchange, operator)


@dataclass
class Provider:
    client: capex.Client
    host_id: str
    state_dir: Path

    def offer(self, price: str, gpus: int = 1, hours: float = 24) -> capex.models.Order:
        until = datetime.now(timezone.utc) + timedelta(hours=hours)
        return self.client.orders.ask(CLASS, host_id=self.host_id, gpus=gpus, price=price, available_until=until)

    def withdraw(self) -> None:
        """Cancels the provider's open asks (each test leaves the book as it found it)."""
        for order in list(self.client.orders.list(status="open")):
            try:
                self.client.orders.cancel(order.order_id)
            except capex.Conflict:
                pass

    def wait_free(self, gpus: int = HOST_GPUS) -> None:
        def free() -> bool:
            host = self.client.hosts.get(self.host_id)
            return host.live and sum(1 for g in host.gpus if not g.busy) >= gpus

        eventually(free, f"{gpus} free GPUs on the test host", timeout=30)


@pytest.fixture(scope="session")
def provider(exchange: Exchange, users: Users) -> Iterator[Provider]:
    agent = _binary("capex-agent")
    client = users.new(credits=None, roles=("provider",))
    key = client.auth.create_api_key("sdk test agent").key
    state = Path(tempfile.mkdtemp(prefix="capex-sdk-agent-"))
    env = {**os.environ, "RUST_LOG": LOG or "error"}
    env.pop("CAPEX_AGENT_CONFIG", None)
    gpus = ",".join(["H100"] * HOST_GPUS)
    common = [str(agent), "--state-dir", str(state), "--backend", "simulated", "--sim-gpus", gpus, "--interval-s", "1"]
    subprocess.run([str(agent), "--state-dir", str(state), "init"], env=env, check=True, capture_output=True)
    registered = subprocess.run(
        [*common, "register", "--exchange", exchange.url, "--api-key", key],
        env=env, check=True, capture_output=True, text=True,
    )
    host_id = registered.stdout.strip()
    run_env = {**env, "CAPEX_AGENT_PROCESS_RUNTIME": "true", "CAPEX_AGENT_KILL_GRACE_S": "2"}
    log = open(state / "agent.log", "wb")
    proc = subprocess.Popen(
        [*common, "--backoff-max-s", "1", "--request-timeout-s", "2", "run", "--exchange", exchange.url],
        env=run_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    p = Provider(client=client, host_id=host_id, state_dir=state)
    try:
        eventually(lambda: client.hosts.get(host_id).live, "the test host live", timeout=30)
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        client.close()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def market(provider: Provider) -> Iterator[Provider]:
    """The test host with all its GPUs free, and none of its asks left afterwards."""
    provider.withdraw()
    provider.wait_free()
    yield provider
    provider.withdraw()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
