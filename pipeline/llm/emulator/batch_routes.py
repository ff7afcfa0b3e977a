"""The emulator's Batch Mode routes: `GET/DELETE {version}/batches/{id}`, `GET {version}/batches`,
`POST {version}/batches/{id}:cancel`, and `models/{model}:batchGenerateContent` (registered by
app.py's model route through `app.state.batch_create`); for tests, `POST
/_emulator/batches/{id}/finish` ends a job now. The jobs live in batches.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline.llm.emulator import content
from pipeline.llm.emulator.errors import parse_json

# app.py's `_error(code, message)`: Google's error body for an HTTP status.
ErrorFn = Callable[..., JSONResponse]


def add_batch_routes(app: FastAPI, emulator: Any, error: ErrorFn) -> None:
    """Serve `emulator.batches` (a BatchStore) on `app`; answers come from
    `emulator.answer_batch_request`, so they are billed like any answer, at the batch rate."""

    async def batch_create(request: Request, model: str) -> JSONResponse:
        response: JSONResponse = await _batch_create(emulator, error, request, model)
        return response

    app.state.batch_create = batch_create

    @app.get("/{version}/batches")
    async def batch_list(version: str, request: Request) -> JSONResponse:
        denied: JSONResponse | None = emulator.check_key(request)
        if denied is not None:
            return denied
        size = request.query_params.get("pageSize", "50")
        page_size = int(size) if size.isdigit() and int(size) > 0 else 50
        body = await asyncio.to_thread(emulator.batches.listing, page_size,
                                       request.query_params.get("pageToken"),
                                       emulator.answer_batch_request)  # fmt: skip
        return JSONResponse(body)

    @app.get("/{version}/batches/{batch_id}")
    async def batch_get(version: str, batch_id: str, request: Request) -> JSONResponse:
        job, denied = _batch_job(emulator, error, request, batch_id)
        if job is None:
            return denied
        body = await asyncio.to_thread(emulator.batches.operation, job,
                                       emulator.answer_batch_request)  # fmt: skip
        return JSONResponse(body)

    @app.post("/{version}/batches/{target}")
    async def batch_cancel(version: str, target: str, request: Request) -> JSONResponse:
        batch_id, _, method = target.rpartition(":")
        if method != "cancel":
            return error(404, f"Method {target!r} is not served by the emulator.")
        job, denied = _batch_job(emulator, error, request, batch_id)
        if job is None:
            return denied
        emulator.batches.cancel(job)
        return JSONResponse({})

    @app.post("/_emulator/batches/{batch_id}/finish")
    async def batch_finish(batch_id: str) -> JSONResponse:
        """A test's clock: the job reaches its end state now instead of after its delay."""
        job = emulator.batches.find(f"batches/{batch_id}")
        if job is None:
            return error(404, f"Batch batches/{batch_id} not found.")
        emulator.batches.finish(job)
        return JSONResponse({"finished": job.name})

    @app.delete("/{version}/batches/{batch_id}")
    async def batch_delete(version: str, batch_id: str, request: Request) -> JSONResponse:
        job, denied = _batch_job(emulator, error, request, batch_id)
        if job is None:
            return denied
        emulator.batches.delete(job)
        return JSONResponse({})


async def _batch_create(
    emulator: Any, error: ErrorFn, request: Request, model: str
) -> JSONResponse:
    raw = await request.body()
    if len(raw) > emulator.config.max_request_bytes:
        return error(400, "Request payload size exceeds the limit: "
                           f"{emulator.config.max_request_bytes} bytes.")  # fmt: skip
    body = parse_json(raw)
    if isinstance(body, JSONResponse):
        return body
    try:
        operation: dict[str, Any] = emulator.batches.create(model, body)
    except content.BadRequest as exc:
        return error(400, str(exc))
    return JSONResponse(operation)


def _batch_job(emulator: Any, error: ErrorFn, request: Request,
               batch_id: str) -> tuple[Any, JSONResponse]:  # fmt: skip
    """The job named batches/{batch_id}, or None and the error to answer."""
    denied = emulator.check_key(request)
    if denied is not None:
        return None, denied
    job = emulator.batches.find(f"batches/{batch_id}")
    if job is None:
        return None, error(404, f"Batch batches/{batch_id} not found.")
    return job, error(500, "unused")
