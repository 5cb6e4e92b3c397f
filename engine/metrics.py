"""Reading the per-minute counters and latency histograms the scripts keep.

The scripts bucket latencies on a 1.25 geometric scale (see ``bucket`` in lib.lua); the
functions here turn buckets back into milliseconds and percentiles.
"""
from __future__ import annotations

from typing import Mapping

BUCKET_BASE = 1.25


def bucket_upper_ms(bucket: int) -> float:
    """Upper bound in ms of a histogram bucket (bucket 0 holds everything under 1 ms)."""
    return BUCKET_BASE ** (bucket + 1) - 1 if bucket > 0 else 1.0


def histogram(fields: Mapping[str, str], prefix: str) -> dict[int, int]:
    """The ``prefix:<bucket>`` fields of a minute hash as {bucket: count}."""
    out: dict[int, int] = {}
    for name, count in fields.items():
        if name.startswith(prefix):
            out[int(name[len(prefix):])] = out.get(int(name[len(prefix):]), 0) + int(count)
    return out


def percentile_ms(hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` (0..1) percentile of a bucket histogram, as the bucket's upper bound."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bucket_upper_ms(b)
    return bucket_upper_ms(max(hist))
