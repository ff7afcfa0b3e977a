"""The emulator's quotas: requests/min and input tokens/min over a sliding window, requests/day.

Google counts per project and model; the emulator counts per API key and model, which is
the same thing for a test that uses one key per "project". RPM and TPM use a sliding window
(every admitted request is remembered for `window_s`), so the retry delay it answers is
exact: the moment the oldest request that blocks this one leaves the window. RPD resets at
midnight Pacific like Google's, unless `day_window_s` asks for a short sliding day in tests.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
_LATE_S = 30.0  # how much earlier than the last recorded arrival a request may be recorded

RPM_QUOTA = "GenerateRequestsPerMinutePerProjectPerModel"
TPM_QUOTA = "GenerateContentInputTokensPerModelPerMinute"
RPD_QUOTA = "GenerateRequestsPerDayPerProjectPerModel"
_METRIC = {
    RPM_QUOTA: "generativelanguage.googleapis.com/generate_requests_per_model",
    TPM_QUOTA: "generativelanguage.googleapis.com/generate_content_input_token_count",
    RPD_QUOTA: "generativelanguage.googleapis.com/generate_requests_per_model_per_day",
}


@dataclass(frozen=True)
class Denial:
    """Why a request was refused and when the window frees up enough for it."""

    quota_id: str
    retry_delay_s: float
    limit: int

    @property
    def quota_metric(self) -> str:
        return _METRIC[self.quota_id]

    @property
    def per_day(self) -> bool:
        return "PerDay" in self.quota_id


class QuotaTracker:
    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        rpd: int | None,
        window_s: float = 60.0,
        day_window_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.rpm, self.tpm, self.rpd = rpm, tpm, rpd
        self.window_s = window_s
        self.day_window_s = day_window_s
        self.clock = clock or time.time
        self._minute: dict[tuple[str, str], list[tuple[float, int]]] = {}  # sorted
        self._day: dict[tuple[str, str], deque[float]] = {}

    def reset(self) -> None:
        self._minute.clear()
        self._day.clear()

    def admit(
        self, key: str, model: str, input_tokens: int, at: float | None = None
    ) -> Denial | None:
        """Record the request if every quota has room, else say which one is full and until when.

        `at` is when the request arrived (default: now). The app counts a request at its
        arrival, the moment it reports in its stats, not after its own parsing: that took a
        thread-pool hop, which on a loaded machine lagged the arrival by up to seconds, so
        the emulator refused requests that its reported arrivals showed within quota.
        Requests can then be recorded out of arrival order (a small body parsed before an
        earlier large one); the window is kept sorted, and a request is checked against
        everything that arrived after `at` - window, later arrivals included, so no
        window of arrivals ever holds more than the limit.
        """
        now = self.clock() if at is None else at
        minute = self._minute.setdefault((key, model), [])
        # Kept a little beyond the window: a request still being parsed may have arrived
        # earlier than the last one recorded.
        del minute[: bisect.bisect_right(minute, (now - self.window_s - _LATE_S, math.inf))]
        day = self._day.setdefault((key, model), deque())
        day_start = self._day_start(now)
        while day and day[0] <= day_start:
            day.popleft()

        recent = minute[bisect.bisect_right(minute, (now - self.window_s, math.inf)) :]
        denial = (
            self._check_day(day, now)
            or self._check_rpm(recent, now)
            or self._check_tpm(recent, now, input_tokens)
        )
        if denial is None:
            bisect.insort(minute, (now, input_tokens))
            day.append(now)
        return denial

    def _check_day(self, day: deque[float], now: float) -> Denial | None:
        if self.rpd is None or len(day) < self.rpd:
            return None
        if self.day_window_s is not None:
            frees_at = day[len(day) - self.rpd] + self.day_window_s
        else:
            frees_at = _next_pacific_midnight(now)
        return Denial(RPD_QUOTA, max(frees_at - now, 0.001), self.rpd)

    def _check_rpm(self, minute: list[tuple[float, int]], now: float) -> Denial | None:
        if self.rpm is None or len(minute) < self.rpm:
            return None
        # The request that must leave the window before one more fits.
        frees_at = minute[len(minute) - self.rpm][0] + self.window_s
        return Denial(RPM_QUOTA, max(frees_at - now, 0.001), self.rpm)

    def _check_tpm(
        self, minute: list[tuple[float, int]], now: float, tokens: int
    ) -> Denial | None:
        if self.tpm is None:
            return None
        used = sum(t for _, t in minute)
        if used + tokens <= self.tpm:
            return None
        if tokens > self.tpm:  # can never fit; Google keeps refusing it too
            return Denial(TPM_QUOTA, self.window_s, self.tpm)
        for at, spent in minute:
            used -= spent
            if used + tokens <= self.tpm:
                return Denial(TPM_QUOTA, max(at + self.window_s - now, 0.001), self.tpm)
        return Denial(TPM_QUOTA, self.window_s, self.tpm)  # unreachable: an empty window fits

    def _day_start(self, now: float) -> float:
        if self.day_window_s is not None:
            return now - self.day_window_s
        local = datetime.fromtimestamp(now, PACIFIC)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _next_pacific_midnight(now: float) -> float:
    local = datetime.fromtimestamp(now, PACIFIC)
    tomorrow = (local + timedelta(days=1)).date()
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=PACIFIC).timestamp()


def format_duration(seconds: float) -> str:
    """A protobuf Duration string as Google sends it: "12s", "0.5s" (rounded up to 1 ms)."""
    ms = max(math.ceil(seconds * 1000 - 1e-6), 1)
    whole, frac = divmod(ms, 1000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:03d}".rstrip("0") + "s"
