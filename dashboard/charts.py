"""Bar charts with axes, drawn by the server as inline SVG (no JavaScript, no CDN): the
Usage page's requests, tokens or cost per day or per hour."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from core.money import format_money

METRICS = {
    "requests": ("Requests", "count"),
    "tokens": ("Tokens", "count"),
    "cost": ("Cost", ""),  # the unit is the currency, in each label
}
PLOT_WIDTH, PLOT_HEIGHT = 720, 180
LEFT, BOTTOM, TOP = 64, 40, 12
TICKS = 4  # steps on the y axis  # room for the y labels, the x labels and the axis title


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    error_y: float
    error_height: float
    title: str


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n at or above ``value`` (a readable axis top)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _label(metric: str, value: float) -> str:
    if metric == "cost":
        return format_money(round(value), places=4 if value >= 10**6 else 6)
    return f"{value:,.0f}" if value >= 1 or value == 0 else f"{value:.1f}"


def bar_chart(series: list[dict], *, metric: str, period: str) -> dict:
    """Everything the template needs to draw ``series`` (from billing.selectors.usage_series):
    bars (errors in red on request charts), y ticks with units, x labels with dates."""
    title, unit = METRICS[metric]
    values = [row[metric] for row in series]
    step = nice_ceiling(max(values, default=0) / TICKS)  # four readable steps up to the top
    if metric != "cost":
        step = max(1, math.ceil(step))  # whole requests and tokens
    top = step * TICKS
    slot = PLOT_WIDTH / max(len(series), 1)
    bars = []
    for index, row in enumerate(series):
        height = row[metric] / top * PLOT_HEIGHT
        errors = row["errors"] / top * PLOT_HEIGHT if metric == "requests" else 0
        start = timezone.localtime(row["start"])
        when = f"{start:%Y-%m-%d}" if period == "day" else f"{start:%Y-%m-%d %H:00}"
        detail = (
            f"{row['requests']} requests, {row['errors']} errors, {row['tokens']:,} tokens, "
            f"{format_money(row['cost'])}"
        )
        bars.append(
            Bar(
                x=round(LEFT + index * slot + slot * 0.1, 1),
                width=round(slot * 0.8, 1),
                y=round(TOP + PLOT_HEIGHT - height, 1),
                height=round(height, 1),
                error_y=round(TOP + PLOT_HEIGHT - errors, 1),
                error_height=round(errors, 1),
                title=f"{when}: {detail}",
            )
        )
    ticks = [
        {
            "y": round(TOP + PLOT_HEIGHT - index / TICKS * PLOT_HEIGHT, 1),
            "label": _label(metric, step * index),
        }
        for index in range(TICKS + 1)
    ]
    every = 5 if period == "day" else 6
    x_labels = []
    for index, row in enumerate(series):
        start = timezone.localtime(row["start"])
        if period == "day" and (index % every == 0 or index == len(series) - 1):
            x_labels.append(
                {"x": round(LEFT + (index + 0.5) * slot, 1), "text": f"{start:%b} {start.day}", "sub": ""}
            )
        elif period == "hour" and start.hour % every == 0:
            sub = f"{start:%b} {start.day}" if start.hour == 0 or not x_labels else ""
            x_labels.append(
                {"x": round(LEFT + (index + 0.5) * slot, 1), "text": f"{start:%H}:00", "sub": sub}
            )
    zone = timezone.get_current_timezone_name()
    span = f"last {len(series)} {'days' if period == 'day' else 'hours'}"
    return {
        "title": f"{title} per {period}, {span}",
        "y_title": f"{title} ({unit or settings.BILLING_CURRENCY})",
        "x_title": f"{'Day' if period == 'day' else 'Hour'} ({zone})",
        "bars": bars,
        "ticks": ticks,
        "x_labels": x_labels,
        "width": LEFT + PLOT_WIDTH + 8,
        "height": TOP + PLOT_HEIGHT + BOTTOM,
        "left": LEFT,
        "right": LEFT + PLOT_WIDTH,
        "top": TOP,
        "baseline": TOP + PLOT_HEIGHT,
        "errors": metric == "requests" and any(row["errors"] for row in series),
        "requests": sum(row["requests"] for row in series),
        "tokens": f"{sum(row['tokens'] for row in series):,}",
        "cost": format_money(sum(row["cost"] for row in series)),
    }
