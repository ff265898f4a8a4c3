"""The two request loops (sync on ``httpx.Client``, async on ``httpx.AsyncClient``):
credentials, retries with the same Idempotency-Key, problem documents to exceptions, and
the live feed's event stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import httpx

from ._base import (
    API,
    DEFAULT_TIMEOUT_S,
    Call,
    Credentials,
    RetryPolicy,
    decode,
    error_from,
    headers_for,
    user_agent,
)
from .errors import TransportError, Unauthorized

T = TypeVar("T")

# 401 codes after which a client that knows a password logs in again, once.
_RELOGIN_CODES = frozenset({"unauthorized", "token_expired", "invalid_token"})


def _timeout(call: Call[Any], default: float) -> httpx.Timeout:
    return httpx.Timeout(call.timeout if call.timeout is not None else default, connect=min(default, 10.0))


class SyncTransport:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url
        self.credentials = credentials
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self.http = http or httpx.Client(headers={"User-Agent": user_agent()})

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def _url(self, path: str) -> str:
        return self.base_url + path

    def login(self) -> None:
        self.credentials.accept_login(self._send(self.credentials.login_call()))

    def call(self, call: Call[T]) -> T:
        if not call.anonymous and self.credentials.needs_login():
            self.login()
        try:
            return self._send(call)
        except Unauthorized as err:
            if call.anonymous or not self.credentials.can_relogin() or err.code not in _RELOGIN_CODES:
                raise
            self.login()
            return self._send(call)

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    call.method,
                    self._url(call.path),
                    params=call.params,
                    json=call.json,
                    headers=headers_for(call, self.credentials),
                    timeout=_timeout(call, self.timeout),
                )
            except httpx.TransportError as exc:
                if self.retry.retry_exception(attempt, call, exc):
                    time.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
            if self.retry.retry_answer(attempt, response):
                time.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return decode(call, response)

    @contextmanager
    def stream(self, path: str, params: Mapping[str, Any]) -> Iterator[httpx.Response]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self.http.stream(
                "GET", self._url(API + path), params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from(response)
                yield response
        except httpx.TransportError as exc:
            raise TransportError(f"GET {path}: {exc!r}") from exc


class AsyncTransport:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url
        self.credentials = credentials
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(headers={"User-Agent": user_agent()})
        self._login_lock: asyncio.Lock | None = None

    async def close(self) -> None:
        if self._own_http:
            await self.http.aclose()

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def login(self) -> None:
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            self.credentials.accept_login(await self._send(self.credentials.login_call()))

    async def call(self, call: Call[T]) -> T:
        if not call.anonymous and self.credentials.needs_login():
            await self.login()
        try:
            return await self._send(call)
        except Unauthorized as err:
            if call.anonymous or not self.credentials.can_relogin() or err.code not in _RELOGIN_CODES:
                raise
            await self.login()
            return await self._send(call)

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self.http.request(
                    call.method,
                    self._url(call.path),
                    params=call.params,
                    json=call.json,
                    headers=headers_for(call, self.credentials),
                    timeout=_timeout(call, self.timeout),
                )
            except httpx.TransportError as exc:
                if self.retry.retry_exception(attempt, call, exc):
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
            if self.retry.retry_answer(attempt, response):
                await asyncio.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return decode(call, response)

    @asynccontextmanager
    async def stream(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[httpx.Response]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self.http.stream(
                "GET", self._url(API + path), params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from(response)
                yield response
        except httpx.TransportError as exc:
            raise TransportError(f"GET {path}: {exc!r}") from exc
