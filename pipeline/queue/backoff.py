"""The back-off before a failed job's next attempt: the task's schedule, with jitter.

Jitter spreads retries of jobs that failed together (a provider outage) so they do not come
back as one wave.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def retry_delay_s(
    schedule: Sequence[float], attempt: int, jitter: float = 0.2, rng: random.Random | None = None
) -> float:
    """Delay after failed attempt `attempt` (1-based); the last entry of the schedule repeats."""
    if not schedule:
        return 0.0
    base = float(schedule[min(attempt - 1, len(schedule) - 1)])
    spread = base * jitter
    return max(0.0, base + (rng or random).uniform(-spread, spread))
