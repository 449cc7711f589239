"""Quota limits as people read and type them: a cost quota is money ("$5.00", typed "5.00"),
a request or token quota a whole number. Stored as integers (cost in nanos) either way."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from core.money import format_money, input_str, to_nanos

COST = "cost"
MAX_LIMIT = 10**18
_COUNT_RE = re.compile(r"^\d{1,19}$")
_AMOUNT_RE = re.compile(r"^\d{1,10}(\.\d{1,9})?$")


def limit_parse(*, metric: str, text: str) -> int:
    """``"5.00"`` for a cost quota (nanos out), ``"1000"`` otherwise; ValidationError if not."""
    text = str(text).strip().replace(",", "")
    if metric == COST:
        text = text.removeprefix("$")
        if not _AMOUNT_RE.match(text):
            raise ValidationError("Enter an amount such as 5.00 (at most 9 decimals).", code="invalid")
        return to_nanos(text)
    if not _COUNT_RE.match(text) or int(text) > MAX_LIMIT:
        raise ValidationError("Enter a whole number of requests or tokens.", code="invalid")
    return int(text)


def limit_input(*, metric: str, value: int) -> str:
    """What a form shows for a stored limit: ``"5"`` dollars or ``"1000"``."""
    return input_str(value) if metric == COST else str(value)


def limit_display(*, metric: str, value: int) -> str:
    """``"$5.00"`` of spending, or ``"1,000"`` requests/tokens, for messages and pages."""
    return format_money(value) if metric == COST else f"{value:,}"


def quota_phrase(*, metric: str, limit: int, period: str) -> str:
    """``"$5.00 of spending per day"``, ``"1,000 requests per minute"``."""
    amount = limit_display(metric=metric, value=limit)
    what = "of spending" if metric == COST else metric
    return f"{amount} {what} per {period}" if period != "lifetime" else f"{amount} {what} in total"
