"""The document-analysis tasks: one PDF in, one validated `Analysis` in the ledger out.

A PDF that fits one call is analysed in one call. A longer one becomes a chord: the parent
splits it (in the process pool) into page ranges, one `analyze_chunk` job per range runs in
parallel on any worker, and `reduce_analyses` merges their answers once all are done. Every
call goes through `services.call`, so each is admitted by the shared limiter, reserved
against the budgets, recorded in the ledger, and never paid for twice.

Job arguments are one JSON dict (sha256, names, model, prompt version, batch budget); the
PDF bytes wait in Redis under `keys.document(sha256)`, written by tasks/submission.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from pipeline.errors import BadDocument, DatabaseUnavailable, Permanent, Reason
from pipeline.llm.provider import LLMRequest, LLMResponse, Part
from pipeline.queue.context import JobContext
from pipeline.queue.task import task
from tasks.plan import (
    MAX_OUTPUT_TOKENS,
    analyze_prompt,
    analyze_request,
    chunk_ranges,
    decode_pdf,
    doc_key,
    encode_pdf,
    estimate_input_tokens,
    prompt_tokens,
)
from tasks.prompts import load_prompt
from tasks.schema import Analysis

log = logging.getLogger(__name__)

_RETRY = {"expected_duration_s": 60, "timeout_s": 900, "max_attempts": 3,
          "retry_delays_s": (10, 60, 300), "uses_services": True}  # fmt: skip


def _budget(args: dict[str, Any]) -> Decimal | None:
    return None if args.get("budget_usd") in (None, "") else Decimal(str(args["budget_usd"]))


async def _load_pdf(ctx: JobContext, sha256: str) -> bytes:
    text = await ctx.client.redis.get(doc_key(ctx.client.keys, sha256))
    if text is None:
        raise Permanent(
            f"the PDF {sha256[:12]}… is no longer in Redis (kept PIPELINE_DOC_TTL_S seconds); "
            "submit the file again"
        )
    return decode_pdf(str(text))


async def _inspect(ctx: JobContext, data: bytes, name: str) -> dict[str, Any]:
    s = ctx.client.settings
    try:
        info: dict[str, Any] = await ctx.run_cpu(
            "tasks.pdf:inspect_pdf", data, s.max_upload_bytes, s.max_document_pages, name
        )
    except BadDocument as exc:
        raise Permanent(str(exc)) from None
    return info


def _validate(data: Any, text: str) -> tuple[dict[str, Any] | None, str]:
    """The answer as a validated dict, or None and why it is not one."""
    if data is None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            return None, f"not JSON: {exc}"
    try:
        return Analysis.model_validate(data).model_dump(mode="json"), ""
    except ValidationError as exc:
        return None, str(exc).splitlines()[0] + " " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
        )


async def _analysis_call(
    ctx: JobContext, request: LLMRequest, budget: Decimal | None, document_id: str
) -> dict[str, Any]:
    """One call for an Analysis; an invalid answer gets one repair call, then fails for good
    (retrying would pay again for the same bad answer)."""
    services = ctx.deps["services"]
    response: LLMResponse = await services.call(
        ctx, request, batch_limit_usd=budget, document_id=document_id
    )
    result, error = _validate(response.data, response.text)
    if result is not None:
        return result
    await ctx.progress({"stage": "repairing", "error": error[:300]})
    repair = load_prompt("repair")
    schema = Analysis.json_schema_for_gemini()
    repair_text = repair.render(error=error, invalid_json=response.text, schema=json.dumps(schema))
    fix = LLMRequest(
        model=request.model,
        parts=(Part(text=repair_text),),
        system=repair.system,
        response_schema=schema,
        max_output_tokens=MAX_OUTPUT_TOKENS,
        prompt_version=repair.version,
    )
    fixed = await services.call(ctx, fix, batch_limit_usd=budget, document_id=document_id)
    result, error2 = _validate(fixed.data, fixed.text)
    if result is None:
        raise Permanent(f"model returned invalid JSON twice: {error2[:500]}")
    return result


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
        stored = await services.recorder.get_result(sha, model, version)
    except DatabaseUnavailable as exc:
        # The stored result only saves work; the call store in Redis is what keeps a paid
        # answer from being paid again. So a ledger outage must not cost the job an attempt
        # and a long back-off (found by bench/chaos.py's database cut): carry on without it.
        log.warning("job %s: %s; analysing without the stored-result check", ctx.job_id, exc)
        stored = None
    if stored is not None:
        await ctx.progress({"stage": "done", "from": "ledger"})
        return dict(stored)
    data = await _load_pdf(ctx, sha)
    info = await _inspect(ctx, data, name)
    pages = int(info["page_count"])
    ranges = chunk_ranges(pages, len(data), model, s.context_budget_tokens)
    if len(ranges) == 1:
        await ctx.progress({"stage": "analyzing", "pages": pages})
        request = analyze_request(model, prompt, data, filename=name, page_count=pages,
                                  first_page=1, last_page=pages)  # fmt: skip
        result = await _analysis_call(ctx, request, _budget(args), sha)
        await services.recorder.save_result(sha, model, version, result)
        await ctx.progress({"stage": "done", "pages": pages})
        return result
    return await _fan_out(ctx, args, data, pages, ranges)


async def _fan_out(
    ctx: JobContext, args: dict[str, Any], data: bytes, pages: int, ranges: list[tuple[int, int]]
) -> dict[str, Any]:
    services = ctx.deps["services"]
    s, k = ctx.client.settings, ctx.client.keys
    model = args["model"]
    await ctx.progress({"stage": "splitting", "pages": pages, "chunks": len(ranges)})
    parts: list[bytes] = await ctx.run_cpu("tasks.pdf:split_pages", data, [list(r) for r in ranges])
    prompt = analyze_prompt()
    calls = []
    for (first, last), part in zip(ranges, parts, strict=True):
        chunk_sha = hashlib.sha256(part).hexdigest()
        await ctx.client.redis.set(doc_key(k, chunk_sha), encode_pdf(part), ex=s.doc_ttl_s)
        chunk_args = {**args, "chunk_sha256": chunk_sha, "first_page": first,
                      "last_page": last, "page_count": pages}  # fmt: skip
        hints = {"model": model,
                 "tokens": estimate_input_tokens(last - first + 1, model, prompt)}  # fmt: skip
        calls.append(analyze_chunk.call(chunk_args).with_options(hints=hints))
    reduce_args = {**args, "page_count": pages, "chunk_count": len(ranges)}
    reduce_hints = {"model": model,
                    "tokens": len(ranges) * MAX_OUTPUT_TOKENS + prompt_tokens(prompt)}  # fmt: skip
    # A fixed callback id makes the split idempotent: if this parent runs again (its worker
    # died after the split), it gets the same chord back instead of paying for a second one.
    then = reduce_analyses.call(reduce_args).with_options(
        hints=reduce_hints, job_id=f"{ctx.job_id}-reduce"
    )
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
    data = await _load_pdf(ctx, args["chunk_sha256"])
    first, last = int(args["first_page"]), int(args["last_page"])
    await ctx.progress({"stage": "analyzing", "first_page": first, "last_page": last})
    request = analyze_request(args["model"], analyze_prompt(), data, filename=args["name"],
                              page_count=int(args["page_count"]), first_page=first,
                              last_page=last)  # fmt: skip
    return await _analysis_call(ctx, request, _budget(args), args["sha256"])


@task(name="reduce_analyses", **_RETRY)  # type: ignore[arg-type]
async def reduce_analyses(
    ctx: JobContext, outcomes: list[dict[str, Any]], args: dict[str, Any]
) -> dict[str, Any]:
    """The reduce step of the chord: merge the chunk answers into one Analysis and save it."""
    services = ctx.deps["services"]
    failed = [o for o in outcomes if o.get("state") != "complete"]
    if failed:
        raise Permanent(
            f"{len(failed)} of {len(outcomes)} page ranges failed "
            f"(first: {failed[0].get('error') or failed[0].get('state')}); "
            f"`pipeline retry {ctx.batch or 'BATCH'} --failed` analyses the document again "
            "(answers already paid for and used are reused)"
        )
    reduce = load_prompt("reduce")
    pages = int(args["page_count"])
    analyses = json.dumps([o["result"] for o in outcomes], indent=1)
    text = reduce.render(
        filename=args["name"], page_count=pages, chunk_count=len(outcomes), analyses=analyses
    )
    request = LLMRequest(
        model=args["model"],
        parts=(Part(text=text),),
        system=reduce.system,
        response_schema=Analysis.json_schema_for_gemini(),
        max_output_tokens=MAX_OUTPUT_TOKENS,
        prompt_version=reduce.version,
    )
    await ctx.progress({"stage": "reducing", "chunks": len(outcomes)})
    result = await _analysis_call(ctx, request, _budget(args), args["sha256"])
    result["page_count"] = pages
    await services.recorder.save_result(
        args["sha256"], args["model"], args["prompt_version"], result
    )
    return result
