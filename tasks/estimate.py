"""`pipeline submit --dry-run`: what each document would cost at worst, in both modes,
enqueuing nothing.

Each document's worst case is its input (estimated at Gemini's documented 560 tokens a page,
or counted by countTokens when a key is set) plus every allowed output token, priced at the
model's rate of the day: interactively, and in Gemini Batch Mode at `batch_discount` of it
(config/pricing.toml). A document that needs several calls (a long PDF: parts and a merge)
has its parts in the batch job and its merge call interactive (tasks/batch_mode.py), and its
batch figure says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadDocument
from pipeline.llm.pricing import PriceTable, canonical_model

if TYPE_CHECKING:
    from pipeline.llm.provider import LLMRequest, Provider
    from pipeline.queue.client import QueueClient
    from pipeline.settings import Settings
    from tasks.submission import Upload


def _totals(est: dict[str, Any]) -> dict[str, Any]:
    """The per-mode totals over the documents that can run."""
    ok = [d for d in est["documents"] if d["status"] == "ok"]
    est["total_input_tokens"] = sum(int(d["input_tokens"]) for d in ok)
    est["total_worst_case_usd"] = sum((d["worst_case_usd"] for d in ok), Decimal(0))
    est["total_worst_case_batch_usd"] = sum((d["worst_case_batch_usd"] for d in ok), Decimal(0))
    return est


def estimate(
    uploads: list[Upload],
    model: str,
    *,
    context_budget_tokens: int | None = None,
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """Per-document and total input tokens and worst-case cost, enqueuing nothing (--dry-run).

    Returns {"model", "documents": [{name, status, pages, sha256, input_tokens,
    worst_case_usd, worst_case_batch_usd, calls, reason}], "total_input_tokens",
    "total_worst_case_usd" (interactive), "total_worst_case_batch_usd", "warnings"}; money
    as Decimal. Raises UnknownModel for a model without a price.
    """
    from pipeline.settings import get_settings
    from tasks.plan import analyze_prompt, estimate_document
    from tasks.submission import _inspect

    s = get_settings()
    prices = prices or PriceTable.load()
    model = canonical_model(model, prices)
    warnings = prices.check_model(model)
    budget_tokens = context_budget_tokens or s.context_budget_tokens
    prompt = analyze_prompt()
    now = datetime.now(UTC)
    docs: list[dict[str, Any]] = []
    for upload in uploads:
        try:
            pages, sha = _inspect(upload, s, model)
        except BadDocument as exc:
            docs.append({"name": upload.name, "status": "skipped", "reason": str(exc)})
            continue
        est = estimate_document(prices, model, prompt, pages, len(upload.data), budget_tokens, now)
        docs.append({"name": upload.name, "status": "ok", "pages": pages, "sha256": sha, **est})
    return _totals({"model": model, "documents": docs, "warnings": warnings})


async def mark_answered(est: dict[str, Any], client: QueueClient, recorder: Any,
                        provider: str) -> dict[str, Any]:  # fmt: skip
    """The estimate `est` with what a real submit would find for each document
    (tasks/resubmission.answered_before, read only): a document an earlier run answers
    becomes "duplicate" with that run's `job_id` and the submit's words, and leaves the
    totals (it is not paid again); one whose earlier run ended without a result stays
    priced, with a "reason" saying it would run again and that run's `earlier_job_id`.
    Every document is read before any is marked, so an error (RedisError) leaves `est` as
    it was. `provider`: pipeline.llm.factory.provider_kind, part of the key."""
    from tasks.plan import analyze_prompt
    from tasks.resubmission import DocumentKey, answered_before

    version = analyze_prompt().version
    docs = [doc for doc in est["documents"] if doc["status"] == "ok"]
    keys = [DocumentKey(doc["sha256"], est["model"], version, provider) for doc in docs]
    for doc, found in zip(docs, await answered_before(client, recorder, keys), strict=True):
        if found is None:
            continue
        kind, job_id, doc["reason"] = found
        if kind == "duplicate":
            doc["status"], doc["job_id"] = "duplicate", job_id
        else:  # not the job that will run: the submit queues a new one
            doc["earlier_job_id"] = job_id
    return _totals(est)


def mark_repeats(est: dict[str, Any]) -> dict[str, Any]:
    """The estimate `est` with a document whose content an earlier one in it has (a copy
    under another name) as the submit finds it: "duplicate", out of the totals, since one
    run answers both (the second's enqueue returns the first's job). When the first is
    itself a duplicate of an earlier run, the second is said in the same words."""
    first: dict[str, dict[str, Any]] = {}
    for doc in est["documents"]:
        if doc["status"] not in ("ok", "duplicate"):
            continue
        seen = first.setdefault(doc["sha256"], doc)
        if seen is doc:
            continue
        doc["status"] = "duplicate"
        if seen["status"] == "duplicate":
            doc["job_id"], doc["reason"] = seen["job_id"], seen["reason"]
        else:
            doc.pop("job_id", None)
            doc["reason"] = (f"same content as {seen['name']}, priced above: the submit queues "
                             "one run for both")  # fmt: skip
    return _totals(est)


def counts_with_provider(settings: Settings) -> bool:
    """Whether `--dry-run` should ask the provider's countTokens: only when a Gemini key is in
    play (gemini, the emulator, or auto with a key); the offline analyzer counts nothing."""
    from pipeline.llm.factory import _has_key

    if settings.provider in ("gemini", "emulator"):
        return True
    return settings.provider == "auto" and _has_key()


# How a call's input is counted: the provider's countTokens (a TokenCounter's `count`, which
# caches the figure where the worker's own count finds it, or `Provider.count_tokens`).
Count = Callable[["LLMRequest"], Awaitable[int]]


async def document_bound(
    upload: Upload, pages: int, model: str, count: Count, prices: PriceTable, at: datetime,
    *, context_budget_tokens: int, max_request_bytes: int,
) -> dict[str, Any]:  # fmt: skip
    """One document's worst case as the worker reserves it: its map requests planned by the
    worker's own planning (tasks/fit.plan_requests: the readable copy, the ranges, every part
    measured and re-split until it fits), each counted by `count`, priced by
    pipeline/llm/spend.bound_usd (the worker's reservation); a merge call's input (the map
    answers) cannot exist yet and is estimated. The dry run, the submit-time warning and the
    worker so quote one figure.

    Returns estimate_document's keys ("input_tokens", "worst_case_usd",
    "worst_case_batch_usd", "calls", "largest_call_usd", "largest_call_batch_usd",
    "batch_group_usd"), money as
    Decimal, with "token_source": "countTokens" and "largest_counted_call_usd" /
    "largest_counted_call_batch_usd" (the costliest call whose input was counted, the merge
    left out). Raises what `count` raises, and RequestTooLarge for a page no request can
    carry (submit refuses such a file first)."""
    from pipeline.llm.provider import Part
    from pipeline.llm.spend import bound_usd
    from tasks.fit import plan_requests, split_in_thread
    from tasks.pdf import is_encrypted
    from tasks.plan import MAX_OUTPUT_TOKENS, OUTPUT_BOUND_TOKENS, analyze_prompt, prompt_tokens

    encrypted = await asyncio.to_thread(is_encrypted, upload.data)
    fitted = await plan_requests(split_in_thread, Part.pdf(upload.data), pages, encrypted,
                                 model=model, name=upload.name,
                                 context_budget_tokens=context_budget_tokens,
                                 max_request_bytes=max_request_bytes)  # fmt: skip
    tokens, cost, batch_cost = 0, Decimal(0), Decimal(0)
    largest, largest_batch = Decimal(0), Decimal(0)
    for fit in fitted:
        counted = int(await count(fit.request))
        call = bound_usd(prices, fit.request, counted, at)
        batch_call = prices.worst_case_cost(model, counted, fit.request.output_bound_tokens, at,
                                            batch=True)  # fmt: skip
        tokens += counted
        cost, batch_cost = cost + call, batch_cost + batch_call
        largest, largest_batch = max(largest, call), max(largest_batch, batch_call)
    counted_largest, counted_largest_batch = largest, largest_batch
    group = batch_cost  # the requests that go in the Gemini batch job; not the merge
    if len(fitted) > 1:  # the merge reads the map answers: estimated; interactive either way
        t = len(fitted) * MAX_OUTPUT_TOKENS + prompt_tokens(analyze_prompt())
        tokens += t
        merge = prices.worst_case_cost(model, t, OUTPUT_BOUND_TOKENS, at)
        cost, batch_cost = cost + merge, batch_cost + merge
        largest, largest_batch = max(largest, merge), max(largest_batch, merge)
    return {"input_tokens": tokens, "worst_case_usd": cost, "worst_case_batch_usd": batch_cost,
            "calls": len(fitted) + (len(fitted) > 1), "largest_call_usd": largest,
            "largest_call_batch_usd": largest_batch, "batch_group_usd": group,
            "largest_counted_call_usd": counted_largest,
            "largest_counted_call_batch_usd": counted_largest_batch,
            "token_source": "countTokens"}  # fmt: skip


async def estimate_counted(
    uploads: list[Upload],
    model: str,
    provider: Provider,
    *,
    context_budget_tokens: int | None = None,
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """`estimate`, with every map call's input tokens counted by the provider's countTokens
    (`document_bound`, the figure the worker reserves).

    The estimator's 560 tokens a page is Gemini's documented charge, but a scanned page or
    a long prompt can differ; countTokens is free and answers with the real figure, so with
    a key the dry run uses it. A document whose count fails keeps its estimate, with a
    warning. Each document gets "token_source": "countTokens" or "estimate".
    """
    from pipeline.settings import get_settings

    s = get_settings()
    prices = prices or PriceTable.load()
    model = canonical_model(model, prices)
    budget_tokens = context_budget_tokens or s.context_budget_tokens
    est = estimate(uploads, model, context_budget_tokens=budget_tokens, prices=prices)
    now = datetime.now(UTC)
    for upload, doc in zip(uploads, est["documents"], strict=True):
        if doc["status"] != "ok":
            continue
        doc["token_source"] = "estimate"
        try:
            doc.update(await document_bound(
                upload, int(doc["pages"]), model, provider.count_tokens, prices, now,
                context_budget_tokens=budget_tokens,
                max_request_bytes=s.max_inline_request_bytes))  # fmt: skip
        except Exception as exc:  # an estimate still answers the question; say why
            est["warnings"].append(
                f"countTokens failed for {upload.name} ({type(exc).__name__}: {exc}); "
                "its figures are the local estimate"
            )
    return _totals(est)
