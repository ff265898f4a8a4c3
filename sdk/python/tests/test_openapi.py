"""The hand-written models, paths and request bodies against the OpenAPI document the
running server serves (``/api/v1/openapi.json``).

- every field of every model exists in the schema its ``__schema__`` names, with a
  compatible type (a ``Decimal`` is a decimal string, a non-optional field is required and
  never null, a nested model is a ``$ref`` to its schema, ...);
- every operation the SDK calls is in the document with its method;
- the bodies the SDK sends use only properties of the request schemas.

Schema fields the SDK does not model are reported as warnings (they are still readable,
as models keep unknown fields), so a new API field does not break this suite.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import capex
from capex import _calls as c
from capex import models as m
from capex._base import Call

from .conftest import Exchange

pytestmark = pytest.mark.server

Doc = dict[str, Any]


class UnmodelledField(UserWarning):
    pass


@pytest.fixture(scope="module")
def doc(exchange: Exchange) -> Doc:
    answer = httpx.get(exchange.url + "/api/v1/openapi.json", timeout=10)
    answer.raise_for_status()
    document: Doc = answer.json()
    return document


def resolve(doc: Doc, schema: Doc) -> Doc:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def alternatives(doc: Doc, schema: Doc) -> Iterator[Doc]:
    """The schema's alternatives (oneOf/anyOf and type lists flattened), each resolved."""
    for key in ("oneOf", "anyOf"):
        if key in schema:
            for option in schema[key]:
                yield from alternatives(doc, option)
            return
    if "$ref" in schema:
        yield {**resolve(doc, schema), "x-ref": schema["$ref"].rsplit("/", 1)[-1]}
        return
    kind = schema.get("type")
    if isinstance(kind, list):
        for one in kind:
            yield {**schema, "type": one}
        return
    yield schema


def nullable(doc: Doc, schema: Doc) -> bool:
    return any(a.get("type") == "null" for a in alternatives(doc, schema)) or schema.get("nullable") is True


def model_schemas() -> list[type[m.Model]]:
    found = []
    for name in m.__all__:
        obj = getattr(m, name)
        if isinstance(obj, type) and issubclass(obj, m.Model) and obj.__schema__:
            found.append(obj)
    return found


def compatible(doc: Doc, annotation: Any, schema: Doc, where: str) -> list[str]:
    """Problems with reading a value of ``schema`` into ``annotation`` (empty: fits)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return [f"{where}: unions other than Optional are not checked"]
        annotation, origin, args = inner[0], typing.get_origin(inner[0]), typing.get_args(inner[0])
    if annotation is Any:
        return []
    options = [a for a in alternatives(doc, schema) if a.get("type") != "null"]
    if not options:
        return [f"{where}: the schema allows only null"]
    problems: list[str] = []
    for option in options:
        kind = option.get("type")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            wanted = getattr(annotation, "__schema__", None)
            if option.get("x-ref") != wanted and kind != "object":
                problems.append(f"{where}: {annotation.__name__} but the schema is {option.get('x-ref') or kind}")
        elif annotation is Decimal:
            if kind not in ("string", "number"):
                problems.append(f"{where}: Decimal but the schema type is {kind}")
        elif annotation is bool:
            if kind != "boolean":
                problems.append(f"{where}: bool but the schema type is {kind}")
        elif annotation is int:
            if kind != "integer":
                problems.append(f"{where}: int but the schema type is {kind}")
        elif annotation is float:
            if kind not in ("number", "integer"):
                problems.append(f"{where}: float but the schema type is {kind}")
        elif annotation is str:
            if kind not in ("string",) and "enum" not in option:
                problems.append(f"{where}: str but the schema type is {kind}")
        elif annotation is datetime:
            if kind != "string" or option.get("format") != "date-time":
                problems.append(f"{where}: datetime but the schema is {kind}/{option.get('format')}")
        elif origin is list:
            if kind != "array":
                problems.append(f"{where}: list but the schema type is {kind}")
            else:
                problems += compatible(doc, args[0], option.get("items", {}), f"{where}[]")
        elif origin is dict:
            if kind != "object":
                problems.append(f"{where}: dict but the schema type is {kind}")
            elif isinstance(option.get("additionalProperties"), dict):
                problems += compatible(doc, args[1], option["additionalProperties"], f"{where}{{}}")
        else:
            problems.append(f"{where}: no rule for {annotation!r}")
    return problems


def test_every_model_field_is_in_the_schema_with_a_compatible_type(doc: Doc) -> None:
    schemas = doc["components"]["schemas"]
    problems: list[str] = []
    unmodelled: list[str] = []
    checked = 0
    for model in model_schemas():
        name = model.__schema__
        assert name is not None
        if name not in schemas:
            problems.append(f"{model.__name__}: no schema {name} in the document")
            continue
        schema = resolve(doc, schemas[name])
        props: dict[str, Doc] = schema.get("properties", {})
        required = set(schema.get("required", []))
        hints = typing.get_type_hints(model)
        seen = set()
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name
            seen.add(key)
            where = f"{model.__name__}.{field_name} ({name}.{key})"
            if key not in props:
                problems.append(f"{where}: not in the schema")
                continue
            checked += 1
            annotation = hints[field_name]
            optional = type(None) in typing.get_args(annotation)
            if not optional and (key not in required or nullable(doc, props[key])) and info.is_required():
                problems.append(f"{where}: required and non-null in the SDK, optional or nullable in the schema")
            problems += compatible(doc, annotation, props[key], where)
        unmodelled += [f"{name}.{key}" for key in props if key not in seen]
    assert checked > 150, checked
    assert not problems, "\n".join(problems)
    if unmodelled:
        warnings.warn(UnmodelledField("schema fields the SDK does not model: " + ", ".join(unmodelled)))


def _paths(doc: Doc) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for path, ops in doc["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        for method in ops:
            out.append((method.upper(), pattern))
    return out


def sdk_calls() -> list[Call[Any]]:
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    job = c.JobSpec(command=["python", "train.py"], env={"A": "1"}, image="img",
                    restart=c.Restart(on=["failed"], max_attempts=2, max_price="1"), budget="1")
    bid = c.bid_body(gpus=1, hours=1, max_price="1", job=job, min_verification="reported", min_uptime_7d="0.9")
    ask = c.ask_body(host_id="h", gpus=1, price="1", available_until=until)
    return [
        c.register("e@x.test", "pw", ["buyer"]), c.login("e", "p"), c.me(), c.create_api_key("k"),
        c.list_api_keys(), c.revoke_api_key("k"), c.wallet(), c.ledger("1.debit", 2),
        c.transfer("u", "1", "m", None), c.markets(), c.book("X"), c.trades("X", "1", 2), c.candles("X", "1m"),
        c.estimate("X", 1, "1", 1), c.place_order("X", bid, None), c.place_order("X", ask, None),
        c.get_order("o"), c.cancel_order("o"), c.list_orders("all", "1", 2), c.get_job("j"),
        c.list_jobs("running", "j", 2), c.job_logs("j", 1, 0, True), c.job_telemetry("j", until, 2),
        c.cancel_job("j"), c.release_job("j"), c.place_child("j", "X", bid, None), c.cancel_child("j", "k"),
        c.list_hosts("h", 2), c.get_host("h"), c.host_telemetry("h", until, 2), c.host_reports("h", "1", 2),
        c.host_reliability("h"), c.host_verification("h"), c.capacity(), c.mint("u", "1", "m", None),
        c.invariants(), c.users(), c.fees(),
    ]


def test_every_sdk_operation_is_in_the_document(doc: Doc) -> None:
    paths = _paths(doc)
    calls = sdk_calls()
    builders = [name for name, fn in inspect.getmembers(c, inspect.isfunction)
                if fn.__module__ == c.__name__ and "return" in fn.__annotations__
                and str(fn.__annotations__["return"]).startswith("Call[")]
    assert len(calls) >= len(builders) - 1, "a new call builder in capex._calls is missing here"
    missing = [f"{call.method} {call.path}" for call in calls
               if not any(method == call.method and pattern.match(call.path) for method, pattern in paths)]
    assert not missing, missing
    # Query parameters the SDK sends are documented for the operation.
    for call in calls:
        for path, ops in doc["paths"].items():
            op = ops.get(call.method.lower())
            pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            if op is None or not pattern.match(call.path):
                continue
            # The served document (utoipa 6, handlers taking the server's own `ApiQuery`
            # extractor) lists query parameters as `in: path`; a "path" parameter that is not in
            # the path template is taken for the query parameter it is.
            documented = {p["name"] for p in op.get("parameters", [])
                          if p.get("in") == "query" or (p.get("in") == "path" and "{" + p["name"] + "}" not in path)}
            unknown = set(call.params or {}) - documented
            assert not unknown, f"{call.method} {path}: undocumented query parameters {unknown}"


def _props(doc: Doc, name: str) -> set[str]:
    return set(resolve(doc, doc["components"]["schemas"][name]).get("properties", {}))


def test_request_bodies_use_documented_properties(doc: Doc) -> None:
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    job = c.JobSpec(command=["x"], env={"A": "1"}, image="img", restart=c.Restart(max_price="2", max_attempts=2),
                    budget="3")
    bid = c.bid_body(gpus=1, hours=1, max_price="1", job=job, tif="ioc", min_verification="reported",
                     min_uptime_7d="0.99")
    assert set(bid) <= _props(doc, "BidOrder")
    assert set(bid["job"]) <= _props(doc, "JobSpec")
    assert set(bid["job"]["restart"]) <= _props(doc, "RestartPolicy")
    assert set(bid["min_reliability"]) <= _props(doc, "MinReliability")
    ask = c.ask_body(host_id="h", gpus=1, price="1", available_until=until)
    assert set(ask) <= _props(doc, "AskOrder")
    transfer = c.transfer("u", "1", "m", None).json
    assert set(transfer) <= _props(doc, "TransferRequest")
    mint = c.mint("u", "1", "m", None).json
    assert set(mint) <= _props(doc, "MintRequest")
    # The pass-through fields, once the API documents them, go where it says.
    if "priority" in _props(doc, "BidOrder"):
        assert "priority" in c.bid_body(gpus=1, hours=1, max_price="1", job=job, priority="interruptible")
    if "interruptible_price" in _props(doc, "AskOrder"):
        assert "interruptible_price" in c.ask_body(host_id="h", gpus=1, price="1", available_until=until,
                                                   interruptible_price="0.5")


def test_every_model_is_exported() -> None:
    assert all(hasattr(capex.models, name) for name in m.__all__)
