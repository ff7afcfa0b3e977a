"""The document-analysis tasks: one PDF in, one validated `Analysis` in the ledger out.

A PDF that fits one call is analysed in one call. A longer one becomes a chord: the parent
splits it (in the process pool) into page ranges, one `analyze_chunk` job per range runs in
parallel on any worker, and `reduce_analyses` merges their answers once all are done, as
data (tasks/merge.py): in code for the offline analyzer, and for Gemini with one merge call
that reads the parts' fields. Every call goes through `services.call`, so each is admitted
by the shared limiter, reserved against the budgets, recorded in the ledger, and never paid
for twice. The stored result (tasks/result.py) says what produced it, what it cost, which
pages went into which part and which pages had no text layer.

Job arguments are one JSON dict (sha256, names, model, prompt version, batch budget, and
`documents`: the digests the job lets go of when it ends); the PDF bytes wait in the
document store (pipeline/storage/), put by tasks/submission.py, with only the ids of the
jobs holding them in Redis (pipeline/storage/holds.py).

A job holds its PDF as a path, not as bytes (pipeline/storage/local.py): the pool process
that inspects it and finds its pages without text (one pass, before any paid call; a
split document's parent hands each part its pages) reads the file itself, and the call's
request carries the path and digest (`Part.pdf_file`), so the bytes are read, or streamed
to the Files API, only by the attempt that sends them. Parts split from a long document
are bytes until the parent puts them in the store; each part's job reads its own by path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from pipeline.errors import (
    BadDocument,
    DatabaseUnavailable,
    DocumentMissing,
    Permanent,
    Reason,
    RequestTooLarge,
)
from pipeline.llm.provider import LLMRequest, Part
from pipeline.queue.context import JobContext
from pipeline.queue.task import task
from pipeline.storage import open_store
from pipeline.storage.holds import hold
from pipeline.storage.local import local_file
from pipeline.words import retry_command
from tasks.analysis_call import analysis_call
from tasks.batch_mode import wait_for_batch  # and registers collect_batch_group
from tasks.fit import Fitted, plan_requests, source_of
from tasks.merge import (
    merge_document_type,
    merge_entities,
    merge_key_points,
    merge_language,
    merge_prompt_fields,
    summary_of_summaries,
)
from tasks.plan import (
    MAX_OUTPUT_TOKENS,
    THINKING_BUDGET_TOKENS,
    analyze_prompt,
    analyze_request,
    estimate_input_tokens,
    prompt_tokens,
)
from tasks.prompts import load_prompt
from tasks.result import (
    build_result,
    now_iso,
    part_outcome,
    provider_of,
    reusable,
)
from tasks.schema import MergedAnalysis, gemini_schema

log = logging.getLogger(__name__)

_RETRY = {"expected_duration_s": 60, "timeout_s": 900, "max_attempts": 3,
          "retry_delays_s": (10, 60, 300), "uses_services": True}  # fmt: skip


def _budget(args: dict[str, Any]) -> Decimal | None:
    return None if args.get("budget_usd") in (None, "") else Decimal(str(args["budget_usd"]))


async def load_pdf(ctx: JobContext, sha256: str) -> Part:
    """The stored PDF's bytes in memory (Batch Mode's group requests, which outlive a job's
    block); Permanent when it is gone."""
    store = open_store(ctx.client.settings)
    try:
        return Part.pdf(await asyncio.to_thread(store.get, sha256))
    except DocumentMissing as exc:
        raise Permanent(str(exc), reason=Reason.BAD_INPUT) from None


@contextlib.asynccontextmanager
async def stored_pdf(ctx: JobContext, sha256: str) -> AsyncIterator[Part]:
    """The stored PDF as a part read from a local file (the file store's own file, or a
    copy of an S3 object deleted when the block ends): the job holds its path, not its
    bytes. Permanent when it is gone, at the start or while the block reads it."""
    s = ctx.client.settings
    try:
        async with local_file(open_store(s), sha256, s.home / "scratch") as found:
            yield Part.pdf_file(str(found.path), sha256, found.size)
    except DocumentMissing as exc:
        raise Permanent(str(exc), reason=Reason.BAD_INPUT) from None


async def _inspect(ctx: JobContext, pdf: Part, name: str, find_blank: bool) -> dict[str, Any]:
    """tasks/pdf.py's validity rule, the same one submit applied (a refusal fails at once),
    and with `find_blank` the pages without text, in the same read of the file."""
    s = ctx.client.settings
    try:
        info: dict[str, Any] = await ctx.run_cpu(
            "tasks.pdf:inspect_for_analysis", source_of(pdf), s.max_upload_bytes,
            s.max_document_pages, name, find_blank,
        )  # fmt: skip
    except BadDocument as exc:
        raise Permanent(str(exc)) from None
    return info


async def _analyse_part(
    ctx: JobContext, args: dict[str, Any], pdf: Part, *, part: int, first: int, last: int,
    page_count: int, blank: list[int], request: LLMRequest | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One page range (the whole document when it fits one call) as a `part_outcome`;
    `blank`: its pages without text, found before the call (nothing reads the file after
    a paid, used answer); `request` when the caller already built (and size-checked) it."""
    started = now_iso()
    if request is None:
        request = analyze_request(args["model"], analyze_prompt(), pdf, filename=args["name"],
                                  page_count=page_count, first_page=first,
                                  last_page=last)  # fmt: skip
    # In Batch Mode the group's answer to this request came first: an unusable one decides
    # the remedy (tasks/analysis_call.py), as an interactive first call's would.
    group = args["batch_group"]["name"] if args.get("mode") == "batch" and \
        "batch_group" in args else None  # fmt: skip
    answered = await analysis_call(ctx, request, _budget(args), args["sha256"],
                                   batch_group=group)  # fmt: skip
    return part_outcome(
        answered.result, part=part, first_page=first, last_page=last,
        model_version=answered.model_version, cost=answered.cost,
        blank_pages=blank, started_at=started,
        provider=getattr(ctx.deps["services"].provider, "name", None),
    )  # fmt: skip


async def plan_document(
    ctx: JobContext, original: Part, name: str, model: str, find_blank: bool = True
) -> tuple[int, list[Fitted], list[int]]:
    """A submitted PDF's (by path or bytes) page count, the requests that analyse it
    (tasks/fit.plan_requests, split in the process pool) and, with `find_blank`, its pages
    without text (else []). Raises Permanent for a PDF that is gone, refused or too large."""
    s = ctx.client.settings
    info = await _inspect(ctx, original, name, find_blank)
    pages = int(info["page_count"])

    async def split(source: bytes | str, ranges: list[list[int]]) -> list[bytes]:
        parts: list[bytes] = await ctx.run_cpu("tasks.pdf:split_file", source, ranges)
        return parts

    try:  # each part's real request, not the average, is checked against the inline limit
        fitted = await plan_requests(split, original, pages, bool(info.get("encrypted")),
                                     model=model, name=name,
                                     context_budget_tokens=s.context_budget_tokens,
                                     max_request_bytes=s.max_inline_request_bytes)  # fmt: skip
    except RequestTooLarge as exc:
        raise Permanent(str(exc), reason=Reason.REQUEST_TOO_LARGE) from None
    return pages, fitted, list(info["pages_without_text"] or [])


@task(name="analyze_document", **_RETRY)  # type: ignore[arg-type]
async def analyze_document(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    """Analyse one submitted PDF, or split it into a chord when it is too long for one call."""
    services = ctx.deps["services"]
    s = ctx.client.settings
    sha, name, model, version = args["sha256"], args["name"], args["model"], args["prompt_version"]
    prompt = analyze_prompt()
    if prompt.version != version:
        raise Permanent(
            f"this job was submitted for prompt {version} but this worker has {prompt.version}; "
            "run workers with the same config/prompts as the submitter, or submit again"
        )
    try:
        stored = await services.recorder.get_result(sha, model, version,
                                                     services.provider.name)  # fmt: skip
    except DatabaseUnavailable as exc:
        # The stored result only saves work; the call store in Redis is what keeps a paid
        # answer from being paid again. So a ledger outage must not cost the job an attempt
        # and a long back-off (found by bench/chaos.py's database cut): carry on without it.
        log.warning("job %s: %s; analysing without the stored-result check", ctx.job_id, exc)
        stored = None
    if stored is not None and reusable(stored, getattr(services.provider, "name", None)):
        await ctx.progress({"stage": "done", "from": "ledger"})
        return dict(stored)
    if args.get("mode") == "batch":
        await wait_for_batch(ctx, args)  # returns once the batch answer is in the call store
    async with stored_pdf(ctx, sha) as original:
        pages, fitted, blank = await plan_document(ctx, original, name, model)
        if len(fitted) > 1:
            return await _fan_out(ctx, args, pages, fitted, blank)
        await ctx.progress({"stage": "analyzing", "pages": pages})
        part = await _analyse_part(ctx, args, fitted[0].part, part=1, first=1, last=pages,
                                   page_count=pages, blank=blank,
                                   request=fitted[0].request)  # fmt: skip
        analysis = {**part["analysis"], "page_count": pages}  # counted here, not by the model
        result = build_result(analysis, [part], model=model, prompt_version=version,
                              max_bytes=s.max_result_bytes)  # fmt: skip
    await services.recorder.save_result(sha, model, version, result)
    await ctx.progress({"stage": "done", "pages": pages})
    return result


async def _fan_out(
    ctx: JobContext, args: dict[str, Any], pages: int, fitted: list[Fitted], blank: list[int]
) -> dict[str, Any]:
    services = ctx.deps["services"]
    s, k = ctx.client.settings, ctx.client.keys
    model = args["model"]
    await ctx.progress({"stage": "splitting", "pages": pages, "chunks": len(fitted)})
    prompt = analyze_prompt()
    calls = []
    ranges = [(f.first, f.last) for f in fitted]
    store = open_store(s)
    reduce_id = f"{ctx.job_id}-reduce"
    chunk_shas: list[str] = []
    for index, fit in enumerate(fitted, start=1):
        first, last, part = fit.first, fit.last, fit.part.read()  # split parts: bytes
        chunk_sha = hashlib.sha256(part).hexdigest()
        # The reduce holds every part's PDF, so a part's retries find it; it lets go of
        # them when it ends (see _fail_partial for parts that failed).
        await hold(ctx.client.redis, k, [reduce_id], chunk_sha, s.document_retention_s)
        await asyncio.to_thread(store.put, chunk_sha, part)
        chunk_shas.append(chunk_sha)
        chunk_args = {**args, "chunk_sha256": chunk_sha, "part": index, "first_page": first,
                      "last_page": last, "page_count": pages, "documents": [chunk_sha],
                      "blank_pages": [n for n in blank if first <= n <= last]}  # fmt: skip
        hints = {"model": model,
                 "tokens": estimate_input_tokens(last - first + 1, model, prompt)}  # fmt: skip
        calls.append(analyze_chunk.call(chunk_args).with_options(hints=hints))
    # The reduce holds the whole document too: it is let go of only with the stored result,
    # so a document whose merge fails can still be retried (`pipeline retry`).
    await hold(ctx.client.redis, k, [reduce_id], args["sha256"], s.document_retention_s)
    reduce_args = {**args, "page_count": pages, "chunk_count": len(ranges),
                   "documents": [*chunk_shas, args["sha256"]]}  # fmt: skip
    reduce_hints = {"model": model,
                    "tokens": len(ranges) * MAX_OUTPUT_TOKENS + prompt_tokens(prompt)}  # fmt: skip
    # A fixed callback id makes the split idempotent: if this parent runs again (its worker
    # died after the split), it gets the same chord back instead of paying for a second one.
    then = reduce_analyses.call(reduce_args).with_options(hints=reduce_hints, job_id=reduce_id)
    if await ctx.client.redis.hget(k.job(ctx.job_id), "cancel") == "1":
        # Cancelled while splitting: queue no parts (the worker stops us at its next renewal).
        raise Permanent("cancelled before its parts were queued", reason=Reason.CANCELLED)
    group = await ctx.client.group(calls, then=then, batch=ctx.batch)
    for handle in [*group.members, group.callback]:
        await services.recorder.upsert_job(
            handle.id, batch_id=ctx.batch, document_id=args["sha256"]
        )
    await ctx.progress(
        {"stage": "chunked", "chunks": len(ranges), "callback_job": group.callback.id}
    )
    return {"chunks": len(ranges), "callback_job": group.callback.id}


@task(name="analyze_chunk", **_RETRY)  # type: ignore[arg-type]
async def analyze_chunk(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    """The map step: one page range of a long document."""
    first, last = int(args["first_page"]), int(args["last_page"])
    async with stored_pdf(ctx, args["chunk_sha256"]) as stored:
        pdf = dataclasses.replace(stored, pages=last - first + 1)
        blank = args.get("blank_pages")
        if blank is None:  # queued by a parent that did not find them: before the call
            found = await ctx.run_cpu("tasks.pdf:pages_without_text_file", source_of(pdf))
            blank = [first - 1 + n for n in found]
        await ctx.progress({"stage": "analyzing", "first_page": first, "last_page": last})
        return await _analyse_part(ctx, args, pdf, part=int(args["part"]), first=first,
                                   last=last, page_count=int(args["page_count"]),
                                   blank=blank)  # fmt: skip


@task(name="reduce_analyses", **_RETRY)  # type: ignore[arg-type]
async def reduce_analyses(
    ctx: JobContext, outcomes: list[dict[str, Any]], args: dict[str, Any]
) -> dict[str, Any]:
    """The reduce step of the chord: merge the chunk answers into one Analysis and save it."""
    services = ctx.deps["services"]
    failed = [o for o in outcomes if o.get("state") != "complete"]
    if failed:
        await _fail_partial(ctx, outcomes, failed)
    parts = sorted((o["result"] for o in outcomes), key=lambda r: int(r["source"]["part"]))
    analyses = [p["analysis"] for p in parts]
    pages = int(args["page_count"])
    language = merge_language(analyses)
    merged: dict[str, Any] = {"entities": merge_entities(analyses), "language": language,
                              "page_count": pages}  # fmt: skip
    await ctx.progress({"stage": "reducing", "chunks": len(outcomes)})
    merge_cost: Decimal | None = Decimal(0)
    if all(provider_of(p["source"]["model_version"]) == "offline" for p in parts):
        merged.update(_merge_offline(parts, analyses, language))
    else:
        answer, merge_cost = await _merge_call(ctx, args, parts)
        merged.update(answer)
    result = build_result(merged, parts, model=args["model"],
                          prompt_version=args["prompt_version"], extra_cost=merge_cost,
                          max_bytes=ctx.client.settings.max_result_bytes)  # fmt: skip
    await services.recorder.save_result(
        args["sha256"], args["model"], args["prompt_version"], result
    )
    return result


def _merge_offline(
    parts: list[dict[str, Any]], analyses: list[dict[str, Any]], language: str
) -> dict[str, Any]:
    """The offline analyzer's merge, in code: a summary of the summaries of the parts that
    had text; a document without any text keeps the note that says so."""
    from pipeline.llm.offline import no_text_note

    read = [a for p, a in zip(parts, analyses, strict=True) if _has_text(p)]
    if not read:
        blank = [n for p in parts for n in p["pages_without_text"]]
        summary = no_text_note(blank)
    else:
        summary = summary_of_summaries([a["summary"] for a in read], language)
    return {"summary": summary, "key_points": merge_key_points(read),
            "document_type": merge_document_type(analyses)}  # fmt: skip


def _has_text(part: dict[str, Any]) -> bool:
    source = part["source"]
    return len(part["pages_without_text"]) <= int(source["last_page"]) - int(source["first_page"])


async def _merge_call(
    ctx: JobContext, args: dict[str, Any], parts: list[dict[str, Any]]
) -> tuple[dict[str, Any], Decimal | None]:
    """Gemini's merge: one call that reads the parts' summaries, types and key points as
    labelled fields and writes the whole document's summary, key points and type."""
    reduce = load_prompt("reduce")
    ranges = [(int(p["source"]["first_page"]), int(p["source"]["last_page"])) for p in parts]
    text = reduce.render(
        filename=args["name"], page_count=int(args["page_count"]), chunk_count=len(parts),
        parts=merge_prompt_fields([p["analysis"] for p in parts], ranges),
    )  # fmt: skip
    request = LLMRequest(
        model=args["model"],
        parts=(Part(text=text),),
        system=reduce.system,
        response_schema=gemini_schema(MergedAnalysis),
        max_output_tokens=MAX_OUTPUT_TOKENS,
        thinking_budget=THINKING_BUDGET_TOKENS,
        prompt_version=reduce.version,
    )
    answered = await analysis_call(ctx, request, _budget(args), args["sha256"], MergedAnalysis)
    answer = answered.result
    answer["key_points"] = merge_key_points([answer])
    return answer, answered.cost


# Reasons a page range fails for that the same request would meet again: a requeue cannot
# help, so none is advised (field case 16).
_DETERMINISTIC = frozenset({
    Reason.ANSWER_BLOCKED, Reason.ANSWER_TRUNCATED, Reason.ANSWER_INVALID, Reason.BAD_INPUT,
    Reason.PROVIDER_REFUSED, Reason.REQUEST_TOO_LARGE,
})  # fmt: skip


async def _fail_partial(
    ctx: JobContext, outcomes: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> None:
    """End the merge of a document some page ranges failed for, saying whether a requeue
    can help: never for a failure the same request would meet again."""
    first = failed[0].get("error") or failed[0].get("state")
    head = f"{len(failed)} of {len(outcomes)} page ranges failed (first: {first})"
    reasons: list[Reason] = []
    kept: list[tuple[str, str]] = []  # (part job, its PDF)
    for outcome in failed:
        job = await ctx.client.get(str(outcome["id"]))
        reasons.append(Reason(job.reason) if job.reason in set(Reason) else Reason.ERROR)
        if job.args and isinstance(job.args[0], dict) and job.args[0].get("chunk_sha256"):
            kept.append((job.id, str(job.args[0]["chunk_sha256"])))
    if all(r in _DETERMINISTIC for r in reasons):
        raise Permanent(
            f"{head}; the same request would fail the same way, so requeueing cannot help: "
            "fix the cause named above (or the document) and submit it again",
            reason=reasons[0],
        )
    for job_id, chunk_sha in kept:  # a requeued part reads its PDF after this merge ends
        await hold(ctx.client.redis, ctx.client.keys, [job_id], chunk_sha,
                   ctx.client.settings.document_retention_s)  # fmt: skip
    raise Permanent(
        f"{head}; {retry_command(ctx.batch or 'BATCH', 'failed')} analyses the document "
        "again (answers already paid for and used are reused)"
    )
