"""Garbage-collector settings for a long-lived server worker.

Measured under `make bench` (docs/decisions.md, "Where the p99 tail came from"): with
CPython's defaults a gateway worker ran a full (generation 2) collection every second or
two under load, each 40-85 ms long because it walked every object Django, the providers'
adapters and the tokenizer had made at start-up; those pauses were the whole p99 tail.
Two settings remove them:

* ``gc.freeze()`` once the app is loaded moves every object that exists then into the
  permanent generation, which collections never walk (objects there are still freed by
  reference counting);
* a generation-0 threshold of ``GC_GEN0_THRESHOLD`` (default 20,000 instead of 700): the
  relay frees almost everything it allocates by reference counting, so the young
  generation rarely holds garbage, and with the default threshold the 32-odd requests in
  flight were scanned and promoted dozens of times a second, which is what filled
  generation 2 and triggered the full collections.
"""

from __future__ import annotations

import gc

DEFAULT_THRESHOLDS = gc.get_threshold()


def tune_gc(gen0_threshold: int) -> None:
    """Called once per worker process after start-up (RelayApp.startup). 0 keeps CPython's
    defaults."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = DEFAULT_THRESHOLDS
    gc.set_threshold(gen0_threshold, gen1, gen2)
