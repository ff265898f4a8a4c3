"""Money is :class:`decimal.Decimal`, never ``float``.

Amounts go on the wire as decimal strings (the exchange refuses more than 6 decimals
with a clear error rather than rounding); they come back as ``Decimal``. :func:`job_cost`
is the exchange's metering formula, so a buyer can check a bill to the micro-credit.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation, localcontext
from typing import Union

__all__ = ["Money", "Hours", "to_wire", "hours_to_wire", "floor6", "job_cost", "job_fee", "MICRO"]

#: What the SDK takes for an amount: a Decimal, a decimal string or an int. Not a float.
Money = Union[Decimal, str, int]
#: What the SDK takes for a duration in hours (not money: a float is accepted here).
Hours = Union[Decimal, str, int, float]

#: One micro-credit: the exchange's smallest amount (6 decimal places).
MICRO = Decimal("0.000001")


def _plain(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def to_wire(value: Money, name: str = "amount") -> str:
    """An amount as the decimal string the API takes; refuses floats (and bools)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            f"{name} must be a Decimal, a decimal string or an int, not {type(value).__name__}: "
            f"floats cannot hold credits exactly (use Decimal({str(value)!r}) or {str(value)!r})"
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _plain(value)
    if isinstance(value, str):
        try:
            Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{name} is not a decimal number: {value!r}") from None
        # Sent as written: the exchange names the field if it refuses it.
        return value.strip()
    raise TypeError(f"{name} must be a Decimal, a decimal string or an int, not {type(value).__name__}")


def hours_to_wire(value: Hours, name: str = "hours") -> str:
    """A duration in hours as a decimal string; a float is taken by its shortest repr."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of hours")
    if isinstance(value, float):
        return _plain(Decimal(repr(value)))
    return to_wire(value, name)


def floor6(value: Decimal) -> Decimal:
    """Rounds toward zero to the micro-credit, as the exchange's metering does."""
    return value.quantize(MICRO, rounding=ROUND_DOWN)


def job_cost(price: Decimal, gpus: int, billed_seconds: Decimal, escrow_total: Decimal | None = None) -> Decimal:
    """What a lease costs the buyer: ``floor6(price x gpus x billed time in hours)``.

    The exchange recomputes the total from the total billed time on every report (never
    sums rounded pieces) and never bills more than the lease escrow held
    (``escrow_total``: cost so far plus escrow left), so this is exact.
    """
    with localcontext() as ctx:
        ctx.prec = 60  # the division's digits far past the sixth decimal: the floor is exact
        gross = floor6(price * Decimal(gpus) * billed_seconds / Decimal(3600))
    if escrow_total is not None:
        gross = min(gross, escrow_total)
    return max(gross, Decimal(0))


def job_fee(cost: Decimal, fee_rate: Decimal) -> Decimal:
    """The operator's part of a lease's cost: ``floor6(cost x fee_rate)``."""
    return floor6(cost * fee_rate)
