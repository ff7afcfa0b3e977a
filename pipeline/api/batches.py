"""The batch routes: read a batch as `pipeline status BATCH --json` shows it, list batches,
export results, and steer (cancel, budget, retry, cancel one job) — the CLI's doors, over HTTP.

Every answer comes from the same functions the CLI calls (tasks/batches.py, tasks/control.py,
tasks/retry.py), so the two cannot disagree. A batch is named by its id, a unique id prefix
or its label.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, field_validator

from pipeline.api.errors import HttpError
from pipeline.errors import AmbiguousBatch, BatchNotFound, InputError, JobNotFound

router = APIRouter()  # app.py includes it behind the API key
_LIST_CHUNK = 20
_MAX_OFFSET = 1_000_000_000


class BudgetPatch(BaseModel):
    """`PATCH /batches/{id}`: the batch's new budget, USD as a decimal string."""

    model_config = ConfigDict(extra="forbid")
    budget_usd: str

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _a_string(cls, value: Any) -> Any:
        # A JSON number is read as a binary float by most clients (0.1 is not 0.1): money
        # crosses the API as a decimal string, and a number gets the exact way to send it.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'send the amount as a JSON string, e.g. {{"budget_usd": '
                             f'"{value}"}}: money is exact decimal, a JSON number may not be')
        return value


class RetryRequest(BaseModel):
    """`POST /batches/{id}/retry`: which documents (no flag: all that ended without a
    result), optionally only these document ids."""

    model_config = ConfigDict(extra="forbid")
    failed: bool = False
    over_budget: bool = False
    document_ids: list[str] | None = None


def _api(request: Request) -> Any:
    return request.app.state.api


@asynccontextmanager
async def _batch_errors() -> AsyncIterator[None]:
    try:
        yield
    except BatchNotFound as exc:
        raise HttpError(404, f"{exc} — use the batch_id POST /analyze returned, a unique "
                             "prefix of it, or the batch's label") from None  # fmt: skip


@router.get("/batches")
async def list_batches(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    # Bounded so the database's 64-bit OFFSET never overflows (an unbounded one answered 500).
    offset: Annotated[int, Query(ge=0, le=_MAX_OFFSET)] = 0,
    label: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(description="only batches with a document in this "
                                       "state: queued, running, waiting, complete, failed, "
                                       "over_budget, cancelled")] = None,
) -> dict[str, Any]:
    """Batches, newest first: documents by state, spend, held (calls in flight, not in the
    spend) and budget, as `GET /batches/{id}` counts them. `next_offset` pages on."""
    from tasks.batches import batch_view, recent_batches
    from tasks.status import STATES

    if state is not None and state not in STATES:
        raise HttpError(422, f"state {state!r}: use one of {', '.join(STATES)}")
    api = _api(request)
    engine = api.services.engine
    found: list[dict[str, Any]] = []
    position = offset
    while len(found) < limit:
        page = await asyncio.to_thread(recent_batches, engine, _LIST_CHUNK, position, label)
        for entry in page:
            position += 1
            view = await batch_view(api.client, engine, entry["batch_id"])
            if state is None or state in view.by_state:
                found.append({**entry, "by_state": view.by_state})
            if len(found) == limit:
                break
        if len(page) < _LIST_CHUNK:
            position = -1 if len(found) < limit else position
            break
    more = position >= 0 and bool(await asyncio.to_thread(recent_batches, engine, 1, position,
                                                           label))  # fmt: skip
    return {"batches": found, "limit": limit, "offset": offset,
            "next_offset": position if more else None}  # fmt: skip


@router.get("/batches/{batch_id}")
async def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """Every document's state, reason, pages, cost and result, and the batch's spend against
    its budget: exactly `pipeline status BATCH --json`."""
    from tasks.batches import batch_view

    api = _api(request)
    async with _batch_errors():
        view = await batch_view(api.client, api.services.engine, batch_id)
    return view.as_json()


@router.get("/batches/{batch_id}/results")
async def get_results(
    request: Request,
    batch_id: str,
    format: Annotated[str, Query(description="json, jsonl or csv")] = "json",
) -> Response:
    """Each document's analysis (summary, key points, entities) with its status: exactly
    `pipeline results BATCH --format FORMAT`."""
    from tasks.batches import batch_view
    from tasks.export import FORMATS, MEDIA_TYPES, export, results_of

    if format not in FORMATS:
        raise HttpError(422, f"format {format!r}: use one of {', '.join(FORMATS)}")
    api = _api(request)
    async with _batch_errors():
        view = await batch_view(api.client, api.services.engine, batch_id)
    body = export(results_of(view), format)
    name = f"{view.facts.batch_id}.{format}"
    return Response(body, media_type=MEDIA_TYPES[format],
                    headers={"Content-Disposition": f'inline; filename="{name}"'})  # fmt: skip


@router.patch("/batches/{batch_id}")
async def patch_batch(request: Request, batch_id: str, patch: BudgetPatch) -> dict[str, Any]:
    """Change the batch's budget: every call from now on, queued work too, is bounded by it."""
    from tasks.control import set_budget

    api = _api(request)
    async with _batch_errors():
        try:
            return await set_budget(api.client, api.services.recorder, api.services.engine,
                                    batch_id, patch.budget_usd)  # fmt: skip
        except (BatchNotFound, AmbiguousBatch):  # about the batch named, not the amount
            raise
        except InputError as exc:
            raise HttpError(422, f"budget_usd: {exc}") from None


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """Cancel the batch: queued jobs at once, running ones within a liveness tick (~1 s)."""
    from tasks.control import cancel_batch as cancel

    api = _api(request)
    async with _batch_errors():
        done = await cancel(api.client, api.services.recorder, api.services.engine, batch_id,
                            api.services.provider)  # fmt: skip
    return done.as_json(request.app.state.settings.min_lease_s)


@router.post("/batches/{batch_id}/retry")
async def retry_batch(
    request: Request, batch_id: str, body: Annotated[RetryRequest | None, Body()] = None
) -> dict[str, Any]:
    """A new run, with fresh calls, under the batch's current budget, for each failed and/or
    over-budget document (all that ended without a result when no flag is set)."""
    from tasks.retry import retry_batch as retry
    from tasks.retry import retry_states

    body = body or RetryRequest()
    api = _api(request)
    ids = set(body.document_ids) if body.document_ids is not None else None
    async with _batch_errors():
        view, retried = await retry(api.client, api.services.recorder, api.services.engine,
                                    batch_id, retry_states(body.failed, body.over_budget),
                                    ids)  # fmt: skip
    return {"batch_id": view.facts.batch_id, "documents": [r.__dict__ for r in retried]}


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Cancel one job (a document's root job takes its parts and merge along)."""
    from tasks.control import cancel_job as cancel

    api = _api(request)
    try:
        done = await cancel(api.client, api.services.recorder, job_id, api.services.provider)
    except JobNotFound:
        raise HttpError(404, f"no job {job_id!r}: check the id (job records expire after "
                             "PIPELINE_RESULT_TTL_S)") from None  # fmt: skip
    return done.as_json(request.app.state.settings.min_lease_s)
