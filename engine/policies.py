"""Retry policy: how long to wait before the next attempt. Kept apart from the worker so
it can be read, replaced and tested on its own."""
from __future__ import annotations

import random

from .errors import PermanentError, RetryableError
from .models import Backoff

NO_RETRY = -1


def retry_delay_ms(error: BaseException, attempt: int, retry_delay: float, backoff: str,
                   max_retry_delay: float, rng: random.Random | None = None) -> int:
    """Delay before the next attempt in ms, or ``NO_RETRY`` for a permanent error.

    ``attempt`` is the attempt that just failed (1 for the first run). Exponential backoff
    doubles the delay per attempt and adds "full jitter" (a uniform draw between half and
    the whole delay), so a crowd of tasks failing together does not return together.
    Whether attempts are left is decided by the fail script, which holds the count.
    """
    if isinstance(error, PermanentError):
        return NO_RETRY
    if isinstance(error, RetryableError) and error.retry_after is not None:
        return int(max(0.0, error.retry_after) * 1000)
    delay = float(retry_delay)
    if backoff == Backoff.EXPONENTIAL.value:
        delay = min(max_retry_delay, delay * 2 ** max(0, attempt - 1))
        delay = (rng or random).uniform(delay / 2, delay)
    return int(delay * 1000)
