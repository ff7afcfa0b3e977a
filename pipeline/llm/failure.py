"""What a provider tells the call layer when an attempt fails.

Providers translate their own exceptions (google-genai's `APIError`, timeouts, the
emulator's bodies) into one `ProviderFailure` so that retry.py and the limiter decide on
plain fields — code, retryDelay, per-day quota — and never on SDK types. A provider raises
`ProviderCallError` carrying it. (pipeline/llm/gemini.py builds these with
`parse_api_error(exc)`; this module only defines the shape so the call layer does not
depend on one provider.)
"""

from __future__ import annotations

from dataclasses import dataclass

# HTTP codes worth another attempt: rate limit, server trouble, and timeouts.
RETRYABLE_CODES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ProviderFailure:
    code: int  # HTTP status (429, 503 …); 0 when no response came back at all
    status: str  # e.g. "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"
    message: str  # the provider's own words, shown to the user on a 4xx
    retry_delay_s: float | None = None  # RetryInfo.retryDelay: never retry sooner than this
    per_day: bool = False  # a per-day QuotaFailure: nothing helps until the quota resets
    retryable: bool = False
    # The request may have reached the provider, and been billed, without an answer we could
    # read: no answer in time, the connection cut after it was made, an answer the client
    # could not parse. The caller books such an attempt at its worst case, never at $0.
    maybe_billed: bool = False
    # The provider answered (HTTP 200) but its body is not the JSON its API sends: billed,
    # unreadable, not a refusal (the next answer may be read). Always maybe_billed too.
    malformed: bool = False

    @classmethod
    def timeout(cls, message: str = "the request timed out") -> ProviderFailure:
        """A call that got no answer in time: retryable, and it may or may not have been billed."""
        return cls(code=504, status="DEADLINE_EXCEEDED", message=message, retryable=True,
                   maybe_billed=True)  # fmt: skip

    @property
    def rate_limited(self) -> bool:
        return self.code == 429


class ProviderCallError(Exception):
    """Raised by `Provider.generate` for one failed attempt; `.failure` says what happened."""

    def __init__(self, failure: ProviderFailure) -> None:
        super().__init__(f"{failure.code} {failure.status}: {failure.message}")
        self.failure = failure


def malformed(provider: str, exc: BaseException) -> ProviderFailure:
    """The failure of an answer `provider` sent (HTTP 200) that is not JSON (`exc`, the
    decoder's error), in words a user can act on."""
    return ProviderFailure(
        code=200, status="MALFORMED_ANSWER",
        message=f"the model's answer was not valid JSON ({exc!r}); {answered_words(provider)}",
        maybe_billed=True, malformed=True,
    )  # fmt: skip


def answered_words(provider: str) -> str:
    """What an answer `provider` sent but nobody could read cost, in words: Gemini billed
    it (its usage unreadable, so booked at its worst case); the emulator bills nothing."""
    if provider == "emulator":  # maybe_billed_words' wording, and counted as wasted
        return ("the emulator's: a rehearsal, booked at its worst case, never billed, counted "
                "as wasted")
    return ("it was paid for (booked at its worst case: its usage is unreadable) and is "
            "counted as wasted")


def maybe_billed_words(provider: str) -> str:
    """What a request that may have reached `provider` ("gemini", "emulator", "offline")
    without a readable answer may have cost, in words: Gemini may have billed it; the
    emulator bills nothing (a rehearsal); the offline analyzer asks no provider."""
    if provider == "offline":
        return "the offline analyzer's: no provider asked, $0"
    if provider == "emulator":
        return "the emulator's: a rehearsal, booked at its worst case, never billed"
    return "the request may have been billed"
