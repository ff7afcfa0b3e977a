"""Answers the real Gemini API gives that a healthy emulator never would, on demand.

Each fault reproduces a reported behaviour (the field cases in /work/shared/field/):

    verbose        the answer needs `tokens` output tokens; a smaller maxOutputTokens cuts it
                   (finishReason MAX_TOKENS, truncated JSON) — case 08, instructor#2210
    think          the model thinks `tokens` tokens whatever thinkingBudget says, inside
                   maxOutputTokens; at or past it there is no answer, MAX_TOKENS — case 08b
    block          promptFeedback.blockReason = `reason` (PROHIBITED_CONTENT), no candidates
                   — case 09, tracker#543
    finish         one candidate with finishReason = `reason` (SAFETY, RECITATION...) and no
                   content — case 09, python-genai#774
    no_usage       a billed answer without usageMetadata — case 10, openclaw#51743
    total_only     usageMetadata with only totalTokenCount — case 10
    inflate        each PDF page counts (and bills) `tokens` tokens, as a scan at high media
                   resolution does — case 12, api-examples#94
    overbill       generateContent bills `tokens` more prompt tokens than countTokens counts
                   (a provider billing beyond its own count) — the budget-overrun path
    unavailable    503 UNAVAILABLE "The model is overloaded" before answering, not billed
                   (GEMINI.md §3.4), for a chosen request rather than at `fail_rate`
    garbled        the request is answered and billed, but the 200 body is cut mid-JSON (a
                   proxy or the stream gave out after the status line): no client can read it;
                   in a batch job fed by a file, its line of the responses file is cut

A fault applies to requests whose prompt (text parts, PDF text, system instruction)
contains `when` ("" = every request), at most `times` times (None = always). Faults are set
in EmulatorConfig.faults or at run time with `POST /_emulator/faults`
{"faults": [{"kind": ..., "when": ..., "tokens": ..., "reason": ..., "times": ...}]}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = frozenset(
    {"verbose", "think", "block", "finish", "no_usage", "total_only", "inflate", "overbill",
     "unavailable", "garbled"}
)
_DEFAULT_REASON = {"block": "PROHIBITED_CONTENT", "finish": "SAFETY"}


@dataclass(frozen=True)
class Fault:
    """One injected behaviour; see the module docstring for the kinds."""

    kind: str
    when: str = ""
    tokens: int = 0
    reason: str = ""
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(sorted(KINDS))}")
        if self.tokens < 0 or (self.times is not None and self.times < 0):
            raise ValueError("fault tokens and times must not be negative")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fault:
        allowed = {"kind", "when", "tokens", "reason", "times"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; use {sorted(allowed)}")
        return cls(**raw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Active:
    """The faults that apply to one request, resolved to plain values."""

    verbose_tokens: int | None = None
    think_tokens: int | None = None
    block_reason: str | None = None
    finish_reason: str | None = None
    usage: str = "full"  # full | none | total_only
    page_tokens: int | None = None
    overbill_tokens: int = 0
    unavailable: bool = False
    garbled: bool = False
    applied: list[str] = field(default_factory=list)


class FaultBook:
    """The configured faults and how often each has fired (not thread-safe: callers lock)."""

    def __init__(self, faults: tuple[Fault, ...] = ()) -> None:
        self.faults = list(faults)
        self.used = [0] * len(self.faults)

    def replace(self, faults: list[Fault]) -> None:
        self.faults = list(faults)
        self.used = [0] * len(self.faults)

    def match(self, prompt_text: str, *, counting: bool = False) -> Active:
        """The faults for a request with this prompt text; `counting` (countTokens) only
        sees `inflate` and does not use up `times`."""
        active = Active()
        for i, fault in enumerate(self.faults):
            if fault.when and fault.when not in prompt_text:
                continue
            if counting:
                if fault.kind == "inflate":
                    active.page_tokens = fault.tokens
                continue
            if fault.times is not None and self.used[i] >= fault.times:
                continue
            self.used[i] += 1
            active.applied.append(fault.kind)
            _apply(active, fault)
        return active


def _apply(active: Active, fault: Fault) -> None:
    reason = fault.reason or _DEFAULT_REASON.get(fault.kind, "")
    if fault.kind == "verbose":
        active.verbose_tokens = fault.tokens
    elif fault.kind == "think":
        active.think_tokens = fault.tokens
    elif fault.kind == "block":
        active.block_reason = reason
    elif fault.kind == "finish":
        active.finish_reason = reason
    elif fault.kind == "no_usage":
        active.usage = "none"
    elif fault.kind == "total_only":
        active.usage = "total_only"
    elif fault.kind == "inflate":
        active.page_tokens = fault.tokens
    elif fault.kind == "overbill":
        active.overbill_tokens = fault.tokens
    elif fault.kind == "unavailable":
        active.unavailable = True
    elif fault.kind == "garbled":
        active.garbled = True
