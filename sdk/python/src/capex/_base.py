"""What the sync and the async clients share: the description of a call, credentials,
the retry policy and the mapping of answers to models and exceptions. Neither does I/O
here; :mod:`capex._transport` holds the two loops that do."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._version import __version__
from .errors import ApiError, error_class

T = TypeVar("T")

#: 503 codes after which nothing was done and the same request may simply be sent again.
RETRY_CODES = frozenset({"market_busy", "market_moving", "transaction_conflict"})
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 6
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
API = "/api/v1"


def seg(value: object) -> str:
    """A path segment, escaped."""
    return quote(str(value), safe="")


def new_idempotency_key() -> str:
    return f"capex-py-{uuid.uuid4()}"


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API operation, ready to send: what the sync and async transports execute.

    ``idempotency_key`` is fixed when the call is made, so every retry of a POST carries
    the same key and the exchange applies it once.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    idempotency_key: str | None = None
    timeout: float | None = None
    #: Sent without credentials (login, register, public market data works either way).
    anonymous: bool = False

    def with_params(self, **params: Any) -> Call[T]:
        merged = dict(self.params or {})
        merged.update({k: v for k, v in params.items() if v is not None})
        return replace(self, params=merged)


def get(path: str, parse: Callable[[Any], T], params: Mapping[str, Any] | None = None, **kw: Any) -> Call[T]:
    clean = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
    return Call("GET", API + path, parse, params=clean, **kw)


def post(
    path: str, parse: Callable[[Any], T], body: Any = None, idempotency_key: str | None = None, **kw: Any
) -> Call[T]:
    return Call("POST", API + path, parse, json=body, idempotency_key=idempotency_key or new_idempotency_key(), **kw)


def delete(path: str, parse: Callable[[Any], T]) -> Call[T]:
    return Call("DELETE", API + path, parse)


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def none(_: Any) -> None:
    return None


def raw(value: Any) -> Any:
    return value


@dataclass
class Credentials:
    """A bearer credential (login token, API key ``capex_...`` or job token ``cxj_...``),
    or an email and password to log in with (again, before the token expires)."""

    token: str | None = None
    email: str | None = None
    password: str | None = None
    expires_at: datetime | None = None

    def needs_login(self) -> bool:
        if self.email is None or self.password is None:
            return False
        if self.token is None:
            return True
        if self.expires_at is None:
            return False
        return datetime.now(timezone.utc) + timedelta(seconds=60) >= self.expires_at

    def can_relogin(self) -> bool:
        return self.email is not None and self.password is not None

    def login_call(self) -> Call[dict[str, Any]]:
        body = {"email": self.email, "password": self.password}
        return Call("POST", API + "/auth/login", _identity, json=body, anonymous=True)

    def accept_login(self, answer: dict[str, Any]) -> None:
        self.token = str(answer["token"])
        expires = answer.get("expires_at")
        self.expires_at = datetime.fromisoformat(str(expires).replace("Z", "+00:00")) if expires else None


def credentials_from(
    api_key: str | None, token: str | None, email: str | None, password: str | None, env: bool
) -> Credentials:
    if env and api_key is None and token is None and email is None:
        api_key = os.environ.get("CAPEX_API_KEY")
        token = os.environ.get("CAPEX_TOKEN")
    given = [x for x in (api_key, token) if x]
    if len(given) > 1:
        raise ValueError("give one of api_key and token")
    if (email is None) != (password is None):
        raise ValueError("give both email and password")
    if given and email is not None:
        raise ValueError("give an api_key/token or an email and password, not both")
    return Credentials(token=given[0] if given else None, email=email, password=password)


def base_url_from(base_url: str | None) -> str:
    url = base_url or os.environ.get("CAPEX_EXCHANGE") or "http://127.0.0.1:8080"
    url = url.rstrip("/")
    if url.endswith(API):
        url = url[: -len(API)]
    return url


@dataclass
class RetryPolicy:
    """Retries of answers after which nothing was done (503 ``market_busy``,
    ``market_moving``, ``transaction_conflict``) and of connections that failed, with
    exponential backoff and full jitter. A POST is resent with the same Idempotency-Key."""

    max_retries: int = DEFAULT_MAX_RETRIES
    base_s: float = BACKOFF_BASE_S
    max_s: float = BACKOFF_MAX_S
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_s * 4)
            except ValueError:
                pass
        return self.rng.uniform(0, min(self.max_s, self.base_s * (2**attempt)))

    def retry_answer(self, attempt: int, response: httpx.Response) -> bool:
        if attempt >= self.max_retries or response.status_code != 503:
            return False
        return problem_code(response) in RETRY_CODES

    def retry_exception(self, attempt: int, call: Call[Any], exc: Exception) -> bool:
        if attempt >= self.max_retries:
            return False
        # Not sent at all: always safe.
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return True
        # Sent, answer lost: safe for reads, and for POSTs the exchange deduplicates by key.
        if isinstance(exc, (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError)):
            return call.method == "GET" or call.idempotency_key is not None
        return False


def problem_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def headers_for(call: Call[Any], credentials: Credentials) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if call.idempotency_key is not None:
        headers["Idempotency-Key"] = call.idempotency_key
    if not call.anonymous and credentials.token:
        headers["Authorization"] = f"Bearer {credentials.token}"
    return headers


def user_agent() -> str:
    return f"capex-python/{__version__} httpx/{httpx.__version__}"


def error_from(response: httpx.Response) -> ApiError:
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    request = response.request
    method, url = request.method, str(request.url)
    cls = error_class(response.status_code)
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return cls(
            response.status_code,
            body["code"],
            str(body.get("detail", "")),
            field=body.get("field"),
            title=str(body.get("title", "")),
            type=str(body.get("type", "")),
            body=body,
            method=method,
            url=url,
        )
    text = body if isinstance(body, str) else str(body)
    return cls(response.status_code, f"http_{response.status_code}", text[:500], body=body, method=method, url=url)


def decode(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise error_from(response)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    return call.parse(response.json())
