"""What the emulator saw and what it billed: `GET /_emulator/stats`.

The bill is the emulator's own truth, kept whatever the response told the client: an
answer sent without usageMetadata is billed all the same, as Google bills it. Tests compare
the ledger with it to the token and to the nano-dollar (`billed`, `billed_total`), and read
the request log (`requests`) to see what each call carried and how it ended.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline.money import format_usd

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "thinking_tokens")


@dataclass
class Throttle:
    at: float
    retry_delay_s: float
    quota_id: str


@dataclass
class Bill:
    """What one generateContent request was billed."""

    model_version: str
    input_tokens: int
    output_tokens: int
    thinking_tokens: int
    cost_usd: Decimal


def price(model_version: str, input_tokens: int, output_tokens: int, thinking_tokens: int,
          prices: Any, batch: bool = False) -> Decimal:  # fmt: skip
    """USD for a bill from config/pricing.toml (long-context tier by prompt size; every rate
    times `batch_discount` when `batch`); 0 for a model the table does not know."""
    from pipeline.errors import UnknownModel
    from pipeline.llm.provider import Usage

    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                  thinking_tokens=thinking_tokens)  # fmt: skip
    try:
        return Decimal(prices.cost(model_version, usage, datetime.now(UTC), batch=batch))
    except UnknownModel:
        return Decimal(0)


@dataclass
class EmulatorStats:
    """Everything `GET /_emulator/stats` reports; reset by `POST /_emulator/reset`."""

    requests_total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    generate_requests: int = 0
    count_requests: int = 0
    repeats: int = 0  # generate requests whose content was seen before (any outcome)
    billed_repeats: int = 0  # 200 answers to content already answered 200: paid twice
    billed: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)  # one per generate request
    timestamps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    throttled: dict[str, list[Throttle]] = field(default_factory=lambda: defaultdict(list))
    seen: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    largest_request_bytes: int = 0
    # generate requests admitted and not yet answered, and their body bytes: what a client
    # holds open at once (bench/documents.py reads these against the worker's memory)
    in_flight: int = 0
    in_flight_bytes: int = 0
    peak_in_flight: int = 0
    peak_in_flight_bytes: int = 0
    # the decoded document bytes (PDFs inline or by uploaded file) of those requests
    in_flight_data_bytes: int = 0
    peak_in_flight_data_bytes: int = 0
    count_inline_bytes: int = 0  # decoded inline data countTokens requests carried
    count_file_parts: int = 0  # fileData parts countTokens requests cited
    batch_requests: int = 0  # inline requests of batch jobs answered (or refused)
    batch_billed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def bill(self, bill: Bill, batch: bool = False) -> None:
        """Add a bill to the interactive bill, or to the batch bill (kept apart)."""
        row = (self.batch_billed if batch else self.billed).setdefault(
            bill.model_version,
            {"requests": 0, **dict.fromkeys(_TOKEN_FIELDS, 0), "cost_usd": Decimal(0)},
        )
        row["requests"] += 1
        row["input_tokens"] += bill.input_tokens
        row["output_tokens"] += bill.output_tokens
        row["thinking_tokens"] += bill.thinking_tokens
        row["cost_usd"] += bill.cost_usd

    def enter(self, size: int, data_bytes: int = 0) -> None:
        """A generate request of `size` body bytes citing `data_bytes` of documents."""
        self.in_flight += 1
        self.in_flight_bytes += size
        self.in_flight_data_bytes += data_bytes
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, self.in_flight_bytes)
        self.peak_in_flight_data_bytes = max(self.peak_in_flight_data_bytes,
                                             self.in_flight_data_bytes)  # fmt: skip

    def leave(self, size: int, data_bytes: int = 0) -> None:
        self.in_flight -= 1
        self.in_flight_bytes -= size
        self.in_flight_data_bytes -= data_bytes

    def log(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)

    def as_json(self) -> dict[str, Any]:
        """Interactive work in the top-level keys; Batch Mode work under "batch" with its own
        `billed`/`billed_total` (already at the batch rate)."""
        billed, total = _bill_json(self.billed)
        batch_billed, batch_total = _bill_json(self.batch_billed)
        return {
            "batch": {
                "requests": self.batch_requests,
                "billed": batch_billed,
                "billed_total": batch_total,
            },
            "requests_total": self.requests_total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rate_limited": self.by_status.get(429, 0),
            "generate_requests": self.generate_requests,
            "count_requests": self.count_requests,
            "repeats": self.repeats,
            "billed_repeats": self.billed_repeats,
            "billed": billed,
            "billed_total": total,
            "requests": list(self.requests),
            "largest_request_bytes": self.largest_request_bytes,
            "in_flight": self.in_flight,
            "in_flight_bytes": self.in_flight_bytes,
            "peak_in_flight": self.peak_in_flight,
            "peak_in_flight_bytes": self.peak_in_flight_bytes,
            "in_flight_data_bytes": self.in_flight_data_bytes,
            "peak_in_flight_data_bytes": self.peak_in_flight_data_bytes,
            "count_inline_bytes": self.count_inline_bytes,
            "count_file_parts": self.count_file_parts,
            "timestamps": dict(self.timestamps),
            "arrivals": dict(self.arrivals),
            "throttled": {k: [vars(t) for t in v] for k, v in self.throttled.items()},
        }


def _bill_json(rows: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    billed = {m: {**row, "cost_usd": format_usd(row["cost_usd"])} for m, row in rows.items()}
    total: dict[str, Any] = {name: sum(r[name] for r in rows.values())
                             for name in ("requests", *_TOKEN_FIELDS)}  # fmt: skip
    cost = sum((r["cost_usd"] for r in rows.values()), Decimal(0))
    total["cost_usd"] = format_usd(cost)
    return billed, total
