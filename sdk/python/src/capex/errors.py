"""Exceptions raised by the SDK.

Every error answer of the exchange is an RFC 9457 ``application/problem+json`` document
with a stable ``code`` and, for validation errors, the ``field`` it is about. The SDK
raises it as an :class:`ApiError` (a subclass per HTTP status) carrying both::

    try:
        client.jobs.submit(cls="H100-80GB", gpus=1, hours=1, max_price="2.1234567", command=["true"])
    except capex.ValidationError as err:
        print(err.code, err.field)   # invalid_precision price
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CapexError",
    "TransportError",
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "ValidationError",
    "ServiceUnavailable",
    "ServerError",
    "JobNotPlaced",
    "WaitTimeout",
]


class CapexError(Exception):
    """Base class of everything this SDK raises on purpose."""


class TransportError(CapexError):
    """The exchange could not be reached, or the connection broke (after retries)."""


class ApiError(CapexError):
    """An error answer of the exchange (a problem document).

    ``code`` is the stable machine-readable code (``insufficient_funds``, ``not_found``, ...),
    ``field`` the request field it is about (``price``, ``job.command[0]``,
    ``Idempotency-Key``) or ``None``.
    """

    status: int
    code: str
    field: str | None
    detail: str
    title: str
    type: str
    body: Any
    method: str | None
    url: str | None

    def __init__(
        self,
        status: int,
        code: str,
        detail: str = "",
        *,
        field: str | None = None,
        title: str = "",
        type: str = "",
        body: Any = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.field = field
        self.detail = detail
        self.title = title
        self.type = type
        self.body = body
        self.method = method
        self.url = url
        where = f" (field {field})" if field else ""
        super().__init__(f"{status} {code}{where}: {detail}" if detail else f"{status} {code}{where}")

    def __reduce__(self) -> Any:  # picklable, e.g. across multiprocessing
        return (
            _rebuild,
            (type(self), self.status, self.code, self.detail, self.field, self.title, self.type, self.body),
        )


def _rebuild(
    cls: type[ApiError], status: int, code: str, detail: str, field: str | None, title: str, type_: str, body: Any
) -> ApiError:
    return cls(status, code, detail, field=field, title=title, type=type_, body=body)


class BadRequest(ApiError):
    """400: a query parameter, header or body that does not parse."""


class Unauthorized(ApiError):
    """401: no, a wrong or an expired credential (``invalid_job_token``, ``job_token_revoked``, ...)."""


class Forbidden(ApiError):
    """403: the caller may not do this (``forbidden``, ``job_token_not_allowed``, ...)."""


class NotFound(ApiError):
    """404: no such thing, or someone else's (the exchange does not tell them apart)."""


class Conflict(ApiError):
    """409: the thing is not in a state that allows this (``job_ended``, ``order_not_open``, ...)."""


class PayloadTooLarge(ApiError):
    """413."""


class UnsupportedMediaType(ApiError):
    """415."""


class ValidationError(ApiError):
    """422: the request was understood but holds a refused value; ``field`` names it."""


class ServiceUnavailable(ApiError):
    """503: the exchange could not take the request now (``market_busy``, ...); nothing was done."""


class ServerError(ApiError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[ApiError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


class JobNotPlaced(CapexError):
    """The job's bid left the book without trading (cancelled, expired, or IOC unfilled)."""

    def __init__(self, job_id: str, status: str, reasons: list[str] | None = None) -> None:
        self.job_id = job_id
        self.status = status
        self.reasons = reasons or []
        why = f": {', '.join(self.reasons)}" if self.reasons else ""
        super().__init__(f"job {job_id} was never placed: its bid is {status}{why}")


class WaitTimeout(CapexError, TimeoutError):
    """``wait()`` ran out of time before the job ended."""
