"""Exact money: every amount is an integer number of nanos (1e-9 of the currency unit).

Integers add, subtract and compare exactly on SQLite and PostgreSQL alike, inside ``F()``
updates too; a float or a SQLite NUMERIC would not. One dollar is 1_000_000_000 nanos, and
a BigIntegerField holds about 9.2 billion dollars.

Rounding rules (the only ones):
- billing: a computed cost is rounded *up* to the next whole nano, once, at the end of the
  calculation (see ``billing.pricing``);
- display: an amount shown to a person is rounded *away from zero* to ``places`` decimals
  (``format_money``), so a charge and its ledger row (the same amount, negated) read the same
  digits, and a charge is never shown as zero. Every page and template filter uses it.
- machines (APIs, CSV): the exact amount as a plain decimal string with 9 places, never an
  exponent (``decimal_str``).
"""

from __future__ import annotations

from decimal import ROUND_UP, Decimal, InvalidOperation

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


def decimal_str(nanos: int) -> str:
    """The exact amount for machines, always 9 places and no exponent: ``"0.000000000"``."""
    return f"{from_nanos(nanos):f}"


def input_str(nanos: int) -> str:
    """The exact amount as a person types it in a form: ``"0.15"``, ``"100"``, ``"0"``."""
    text = f"{from_nanos(nanos):f}".rstrip("0")
    return text.rstrip(".") if text.endswith(".") else text


def format_money(nanos: int | None, places: int = 6, *, symbol: str = "$") -> str:
    """Human display: ``$0.15``, ``$1,250.00``, ``$0.000103``, ``-$0.000103``; rounded away
    from zero to ``places`` decimals, trailing zeros trimmed down to cents. Never used for
    arithmetic."""
    if nanos is None:
        return "-"
    value = abs(from_nanos(nanos)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_UP)
    text = f"{value:,f}"
    if "." in text:
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0").ljust(2, "0")
        text = f"{whole}.{fraction}"
    else:
        text += ".00"
    sign = "-" if nanos < 0 else ""
    return f"{sign}{symbol}{text}"


def format_price(nanos: int | None, unit: str = "1M") -> str:
    """A price as a person reads it: ``$0.15 per 1M``; 9 places, so no price is hidden."""
    return "-" if nanos is None else f"{format_money(nanos, places=9)} per {unit}"
