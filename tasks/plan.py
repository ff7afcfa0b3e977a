"""What one document's analysis will send, decided in one place for both sides of the queue.

`submit` needs the same numbers the worker will use — input tokens for the limiter's
admission hint, worst-case cost for `--dry-run`, the idempotency key — and if the two sides
computed them separately, a changed prompt or page charge would make estimates lie and
duplicate checks miss. So both import these functions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline.errors import BudgetTooSmall
from pipeline.llm.pricing import PriceTable, canonical_model
from pipeline.llm.provider import LLMRequest, Part
from pipeline.money import dollars
from tasks.pdf import MAX_INLINE_BYTES, plan_chunks, tokens_per_page
from tasks.prompts import Prompt, load_prompt
from tasks.schema import Analysis

# Room for the summary, ten key points and the entities, plus 3.x thinking tokens.
MAX_OUTPUT_TOKENS = 4096
# The thinking cap every analysis request sends with maxOutputTokens, so the two together
# bound what an answer can be billed (LLMRequest.output_bound_tokens).
THINKING_BUDGET_TOKENS = 1024
OUTPUT_BOUND_TOKENS = MAX_OUTPUT_TOKENS + THINKING_BUDGET_TOKENS


def analyze_prompt() -> Prompt:
    return load_prompt("analyze")


def idempotency_key(sha256: str, model: str, prompt_version: str, provider: str) -> str:
    """Same bytes, model, prompt and provider → same job, whatever the file is called and
    however the model is spelled ("models/x", an alias): the key holds its canonical id.
    `provider` is pipeline.llm.factory.provider_kind ("gemini", "emulator", "offline"): the
    offline analyzer's or the emulator's answer never stands for Gemini's (a demo run, then
    a run with a key, found the demo's job "already submitted" and showed its offline result).
    Raises UnknownModel for a model config/pricing.toml does not know."""
    return f"analyze:{sha256}:{canonical_model(model)}:{prompt_version}:{provider}"


def analyze_request(
    model: str, prompt: Prompt, pdf: bytes | Part, *, filename: str, page_count: int,
    first_page: int, last_page: int,
) -> LLMRequest:  # fmt: skip
    """The map call: the PDF as a native part (its bytes, or a `Part` that may read them
    from a file when sent), the analyze prompt, the Analysis schema."""
    text = prompt.render(
        filename=filename, page_count=page_count, first_page=first_page, last_page=last_page
    )
    return LLMRequest(
        model=model,
        parts=(pdf if isinstance(pdf, Part) else Part.pdf(pdf), Part(text=text)),
        system=prompt.system,
        response_schema=Analysis.json_schema_for_gemini(),
        max_output_tokens=MAX_OUTPUT_TOKENS,
        thinking_budget=THINKING_BUDGET_TOKENS,
        prompt_version=prompt.version,
    )


def part_room_bytes(model: str, prompt: Prompt, filename: str, max_request_bytes: int) -> int:
    """How many base64 bytes of PDF one analysis request has room for under the inline
    limit: the limit minus the request without its PDF (prompt, schema, framing), measured
    with six-digit page numbers so no real document needs more."""
    empty = analyze_request(model, prompt, b"", filename=filename, page_count=999_999,
                            first_page=999_999, last_page=999_999)  # fmt: skip
    return max_request_bytes - empty.payload_bytes()


def prompt_tokens(prompt: Prompt) -> int:
    """Tokens of everything but the PDF, at the usual ~4 characters per token."""
    text = prompt.system + prompt.user_template + json.dumps(Analysis.json_schema_for_gemini())
    return len(text) // 4 + 1


def estimate_input_tokens(pages: int, model: str, prompt: Prompt) -> int:
    return pages * tokens_per_page(model) + prompt_tokens(prompt)


def chunk_ranges(
    page_count: int, size_bytes: int, model: str, context_budget_tokens: int,
    max_inline_bytes: int = MAX_INLINE_BYTES,
) -> list[tuple[int, int]]:  # fmt: skip
    """Page ranges for the map calls; one range when the whole PDF fits a single call.
    Sizes here are averages: the worker checks each part's real request (tasks/fit.py)."""
    return plan_chunks(
        page_count,
        size_bytes,
        tokens_per_page=tokens_per_page(model),
        max_inline_bytes=max_inline_bytes,
        max_tokens=max(tokens_per_page(model), context_budget_tokens - 4096),
    )


def estimate_document(
    prices: PriceTable, model: str, prompt: Prompt, pages: int, size_bytes: int,
    context_budget_tokens: int, at: datetime | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Input tokens and worst-case USD for one document, chunk calls and reduce included:
    {"input_tokens", "worst_case_usd" (interactive), "worst_case_batch_usd" (in Batch Mode:
    the chunk calls at the batch rate, the reduce call interactive, as tasks/batch_mode.py
    runs it), "calls", "largest_call_usd" / "largest_call_batch_usd" (its dearest one call:
    a budget below it cannot admit that call), "batch_group_usd" (the chunk calls at the
    batch rate: what its requests add to a Batch Mode group's reservation)}; money as
    Decimal."""
    at = at or datetime.now(UTC)
    ranges = chunk_ranges(pages, size_bytes, model, context_budget_tokens)
    tokens = 0
    cost = batch_cost = largest = largest_batch = Decimal(0)
    for first, last in ranges:
        t = estimate_input_tokens(last - first + 1, model, prompt)
        tokens += t
        call = prices.worst_case_cost(model, t, OUTPUT_BOUND_TOKENS, at)
        batch_call = prices.worst_case_cost(model, t, OUTPUT_BOUND_TOKENS, at, batch=True)
        cost, batch_cost = cost + call, batch_cost + batch_call
        largest, largest_batch = max(largest, call), max(largest_batch, batch_call)
    group = batch_cost
    if len(ranges) > 1:  # the reduce call reads every chunk's answer
        t = len(ranges) * MAX_OUTPUT_TOKENS + prompt_tokens(prompt)
        tokens += t
        reduce = prices.worst_case_cost(model, t, OUTPUT_BOUND_TOKENS, at)
        cost += reduce
        batch_cost += reduce
        largest, largest_batch = max(largest, reduce), max(largest_batch, reduce)
    return {
        "input_tokens": tokens,
        "worst_case_usd": cost,
        "worst_case_batch_usd": batch_cost,
        "calls": len(ranges) + (len(ranges) > 1),
        "largest_call_usd": largest,
        "largest_call_batch_usd": largest_batch,
        "batch_group_usd": group,
    }


def least_call_usd(prices: PriceTable, model: str, at: datetime, batch: bool = False) -> Decimal:
    """The least any one analysis call reserves against a budget before it is sent: its
    output bound (OUTPUT_BOUND_TOKENS, answer + thoughts) at `model`'s price on `at`'s day,
    with no input at all (the batch rate with `batch`). Certain, not an estimate: a budget
    below it admits no call (the reservation is counted input + this bound, llm/spend.py)."""
    return prices.worst_case_cost(model, 0, OUTPUT_BOUND_TOKENS, at, batch=batch)


def cannot_pay_for_one_call(budget_usd: Decimal, model: str, floor: Decimal, batch: bool) -> str:
    """Why `budget_usd` admits no call of `model` (each reserves at least `floor` USD): the
    first clause of every such refusal, at submit and at `pipeline budget --set`."""
    rate = " at the batch rate" if batch else ""
    return (f"budget {dollars(budget_usd)} cannot pay for one call: every call to {model} "
            f"reserves at least {dollars(floor)}{rate} before it is sent (its "
            f"{OUTPUT_BOUND_TOKENS:,} output tokens, thoughts included), so no document could "
            "start")  # fmt: skip


def check_budget_fits_a_call(
    budget_usd: Decimal, prices: PriceTable, model: str, at: datetime, batch: bool = False
) -> None:
    """Raise BudgetTooSmall when `budget_usd` cannot admit even one call of `model`
    (`least_call_usd`): every document would wait and end over budget, nothing answered."""
    floor = least_call_usd(prices, model, at, batch)
    if budget_usd < floor:
        raise BudgetTooSmall(
            f"{cannot_pay_for_one_call(budget_usd, model, floor, batch)}; nothing was queued. "
            f"Give a budget of at least {dollars(floor)}; `pipeline submit --dry-run` prints "
            "each document's worst case.",
            floor,
        )


def admission_tokens(pages: int, size_bytes: int, model: str, prompt: Prompt,
                     context_budget_tokens: int) -> int:  # fmt: skip
    """The hint for the limiter's admission gate: the job's *first* call only, which for
    a split document is a chunk call made by another job — so at most one chunk."""
    ranges = chunk_ranges(pages, size_bytes, model, context_budget_tokens)
    if len(ranges) > 1:
        return 0  # the parent job only splits; its chunk jobs carry their own hints
    return estimate_input_tokens(pages, model, prompt)
