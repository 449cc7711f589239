"""Exact money: every amount is an integer number of nanos (1e-9 of the currency unit).

Integers add, subtract and compare exactly on SQLite and PostgreSQL alike, inside ``F()``
updates too; a float or a SQLite NUMERIC would not. One dollar is 1_000_000_000 nanos, and
a BigIntegerField holds about 9.2 billion dollars.

Rounding rule (the only one): a computed cost is rounded *up* to the next whole nano, once,
at the end of the calculation (see ``billing.pricing``).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

NANOS = 1_000_000_000
_NANO = Decimal(1) / NANOS


def to_nanos(amount: Decimal | int | str) -> int:
    """Parse a currency amount ("1.25", Decimal, int dollars) into nanos; exact or ValueError."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    nanos = value * NANOS
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{amount!r} has more than 9 decimal places")
    return int(nanos)


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS).quantize(_NANO)


def format_money(nanos: int | None, places: int = 6) -> str:
    """Human display, e.g. ``$1.250000``; never used for arithmetic."""
    if nanos is None:
        return "-"
    value = from_nanos(nanos).quantize(Decimal(1).scaleb(-places), rounding=ROUND_CEILING)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value)}"
