"""Capex: a Python SDK for the Capex GPU-capacity exchange (sync and async).

Ten lines to rent GPUs, watch the job and pay exactly for what it used::

    import capex

    client = capex.Client("http://127.0.0.1:8080", api_key="capex_...")
    job = client.jobs.submit(cls="H100-80GB", gpus=2, hours=1, max_price="2.5",
                             command=["python", "train.py"])
    for line in job.lines(follow=True):
        print(line)
    view = job.wait()
    print(view.state, view.exit_code, job.cost)   # cost is a Decimal, to the micro-credit

Inside a job, :class:`JobContext` (``JobContext.from_env()``) holds the attempt's job token.
"""

from ._calls import JobSpec, Restart
from ._sse import Event
from ._version import __version__
from .aio import AsyncClient, AsyncEventStream, AsyncJob, AsyncJobContext, AsyncPager
from .client import Client, EventStream, Job, JobContext, Pager
from .errors import (
    ApiError,
    BadRequest,
    CapexError,
    Conflict,
    Forbidden,
    JobNotPlaced,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from .money import Hours, Money, floor6, job_cost, job_fee
from . import models

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "Job",
    "AsyncJob",
    "JobContext",
    "AsyncJobContext",
    "Pager",
    "AsyncPager",
    "EventStream",
    "AsyncEventStream",
    "Event",
    "JobSpec",
    "Restart",
    "Money",
    "Hours",
    "floor6",
    "job_cost",
    "job_fee",
    "models",
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
