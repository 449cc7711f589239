"""Cost arithmetic, exact in integers.

cost = ceil( (uncached_prompt x input + cached x cached_input + completion x output) x multiplier
             / 1M tokens )  +  ceil(per_request x multiplier)

Prices are nanos per 1M tokens, the multiplier is in parts per million (1.0 = 1_000_000),
so every step is an integer product and the only rounding is the final ceiling to a whole
nano, never in the customer's disfavour by more than one nano per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PPM = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    id: int | None
    input_per_1m: int
    output_per_1m: int
    cached_input_per_1m: int
    per_request: int


def multiplier_ppm(multiplier: Decimal | int | str | None) -> int:
    if multiplier is None:
        return PPM
    value = Decimal(str(multiplier)) * PPM
    if value != value.to_integral_value():
        raise ValueError(f"multiplier {multiplier!r} has more than 6 decimal places")
    return int(value)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def token_cost(
    price: Price | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    multiplier: int = PPM,
    requests: int = 1,
) -> int:
    """Nanos for one request. ``cached_tokens`` is the part of ``prompt_tokens`` served from
    cache; it is clamped to [0, prompt_tokens] so a confused upstream can never make a
    charge negative."""
    if price is None:
        return 0
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    uncached = max(prompt_tokens, 0) - cached
    tokens_part = (
        uncached * price.input_per_1m
        + cached * price.cached_input_per_1m
        + max(completion_tokens, 0) * price.output_per_1m
    )
    cost = _ceil_div(tokens_part * multiplier, TOKENS_PER_PRICE_UNIT * PPM) if tokens_part else 0
    if price.per_request and requests:
        cost += _ceil_div(price.per_request * requests * multiplier, PPM)
    return cost
