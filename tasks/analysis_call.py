"""One Analysis from the model: the call, and the one remedy each kind of unusable answer has.

The LLM layer classifies every answer by its stop reason before anything parses it
(pipeline/llm/stop.py) and books an unusable one as wasted spend without storing it. What is
left to decide here is the remedy, per kind (field cases 08 and 09):

- cut at maxOutputTokens (MAX_TOKENS, including thinking that used the whole budget): one
  retry with a larger output budget, up to the model's limit (config/pricing.toml), the
  thinking budget capped so the answer has room; if that is cut too, the document fails
  "answer truncated at max_output_tokens=N". A repair call would be cut at the same cap.
- blocked (blockReason, no candidate, SAFETY, RECITATION, ...): no remedy, the document
  fails naming the reason (failure_policy.failed_call).
- finished (STOP) but failing the Analysis schema: one repair call that carries the
  document (or part, or the chunk answers) it repairs, with the answer and the error. A
  repair without the document could only invent content.

A document in Batch Mode whose batch answer was one of these (booked by the group's
collect, pipeline/llm/batch_group.py) gets the same remedy, as if the batch answer had come
back from its first call: a larger output budget, no call at all, or the repair call; never
the same request again, which would be paid for the same answer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.errors import (
    AnswerBlocked,
    AnswerInvalid,
    AnswerTruncated,
    Permanent,
    Reason,
    UnusableAnswer,
)
from pipeline.failure_policy import failed_call
from pipeline.llm.provider import LLMRequest, LLMResponse, Part
from pipeline.queue.context import JobContext
from tasks.prompts import load_prompt
from tasks.result import call_cost
from tasks.schema import Analysis, gemini_schema

# A truncated answer is retried with this many times its output budget (model limit caps it).
GROWTH = 4


@dataclass(frozen=True)
class Answered:
    """A validated answer: the `shape` as a JSON-ready dict, the model version that answered
    it, and what the answer that was used cost (None without a price; the ledger holds every
    call, wasted ones included)."""

    result: dict[str, Any]
    model_version: str
    cost: Decimal | None


def validate(
    data: Any, text: str, shape: type[BaseModel] = Analysis
) -> tuple[dict[str, Any] | None, str]:
    """The answer as a validated dict of `shape`, or None and why it is not one."""
    if data is None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            return None, f"not JSON: {exc}"
    try:
        return shape.model_validate(data).model_dump(mode="json"), ""
    except ValidationError as exc:
        return None, str(exc).splitlines()[0] + " " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
        )


def accept_analysis(response: LLMResponse, shape: type[BaseModel] = Analysis) -> str | None:
    """The caller's check: None for an answer that is a valid `shape`, else the problem."""
    result, problem = validate(response.data, response.text, shape)
    return None if result is not None else problem


def larger_budget(request: LLMRequest, model_max_output_tokens: int) -> LLMRequest | None:
    """`request` with GROWTH times the output budget (at most the model's limit), the
    thinking budget kept to at most half of it so the answer has room; None when the budget
    is already at the limit."""
    new_max = min(model_max_output_tokens, request.max_output_tokens * GROWTH)
    if new_max <= request.max_output_tokens:
        return None
    thinking = request.thinking_budget
    if thinking is not None and thinking > new_max // 2:
        thinking = new_max // 2
    return dataclasses.replace(request, max_output_tokens=new_max, thinking_budget=thinking)


def repair_request(
    request: LLMRequest, answer: str, problem: str, shape: type[BaseModel] = Analysis
) -> LLMRequest:
    """The repair call for an invalid answer to `request`: the same parts (the document, or
    the part answers a merge call reads), then the answer, the error and the schema."""
    repair = load_prompt("repair")
    schema = gemini_schema(shape)
    text = repair.render(error=problem, invalid_json=answer, schema=json.dumps(schema))
    return dataclasses.replace(
        request,
        parts=(*request.parts, Part(text=text)),
        system=repair.system,
        response_schema=schema,
        prompt_version=f"{request.prompt_version}/{repair.version}",
    )


async def analysis_call(
    ctx: JobContext, request: LLMRequest, budget: Decimal | None, document_id: str,
    shape: type[BaseModel] = Analysis, batch_group: str | None = None,
) -> Answered:  # fmt: skip
    """A validated `shape` for `request`, with the remedies above; raises the JobError
    failure_policy.failed_call chooses when a remedy fails too. `batch_group`: the name of the
    Batch Mode group that answered `request` first, if any."""
    try:
        earlier = await _batch_answer(ctx, batch_group, request)
        response = await _within_output_budget(ctx, request, budget, document_id, shape,
                                               earlier)  # fmt: skip
        used = request
    except AnswerInvalid as exc:
        await ctx.progress({"stage": "repairing", "error": exc.problem[:300]})
        used = repair_request(request, exc.text, exc.problem, shape)
        try:
            response = await _within_output_budget(ctx, used, budget, document_id, shape)
        except AnswerInvalid as again:
            raise Permanent(
                f"model returned invalid JSON twice (the repair call saw the document too): "
                f"{again.problem[:500]}",
                reason=Reason.ANSWER_INVALID,
            ) from again
    result, _ = validate(response.data, response.text, shape)
    assert result is not None  # accept_analysis let it through
    prices = ctx.deps["services"].prices
    cost = call_cost(prices, used, response, datetime.now(UTC))
    return Answered(result, response.model_version, cost)


async def _batch_answer(
    ctx: JobContext, batch_group: str | None, request: LLMRequest
) -> UnusableAnswer | None:
    """What made the batch's paid answer to `request` unusable, when its group booked one."""
    from pipeline.llm.batch_group import unusable_answer
    from pipeline.llm.callstore import call_key

    if batch_group is None:
        return None
    services = ctx.deps["services"]
    # The key the group's collect booked it under (the member's exact request).
    key = call_key(request, services.provider.name)
    return await unusable_answer(services.caller.store, batch_group, key)


async def _within_output_budget(
    ctx: JobContext, request: LLMRequest, budget: Decimal | None, document_id: str,
    shape: type[BaseModel], earlier: UnusableAnswer | None = None,
) -> LLMResponse:  # fmt: skip
    """The call; a truncated answer gets one retry with a larger output budget. Raises
    AnswerInvalid for the caller's repair, or the JobError failed_call chooses. `earlier`:
    the batch's unusable answer to `request`, which stands for the first call's."""
    services = ctx.deps["services"]
    kwargs: dict[str, Any] = {"batch_limit_usd": budget, "document_id": document_id,
                              "accept": lambda r: accept_analysis(r, shape)}  # fmt: skip
    if isinstance(earlier, AnswerBlocked):  # refused in the batch: refused again, unpaid
        steer = failed_call(earlier)
        raise (steer or earlier) from earlier
    try:
        if earlier is not None:  # cut or invalid in the batch: its remedy, not a repeat
            raise earlier
        response: LLMResponse = await services.call(
            ctx, request, handles=(AnswerTruncated, AnswerInvalid), **kwargs
        )
        return response
    except AnswerTruncated as exc:
        larger = larger_budget(request, services.prices.max_output_tokens(request.model))
        if larger is None:
            raise _steer(exc) from exc
        await ctx.progress({"stage": "retrying", "max_output_tokens": larger.max_output_tokens,
                            "why": str(exc)[:200]})  # fmt: skip
    try:
        response = await services.call(ctx, larger, handles=(AnswerTruncated, AnswerInvalid),
                                       **kwargs)  # fmt: skip
        return response
    except AnswerTruncated as exc:
        raise _steer(exc) from exc


def _steer(exc: AnswerTruncated) -> Exception:
    steer = failed_call(exc)
    return steer if steer is not None else exc
