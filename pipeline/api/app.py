"""The HTTP API: upload PDFs for analysis, follow jobs and batches, read costs and metrics.

It is a thin door onto the same parts the CLI uses — `submit_uploads` enqueues, Redis and
the ledger answer the reads — so the two surfaces cannot drift apart. Every error is JSON
`{"detail": "..."}` telling the caller what to do; bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.api.errors import HttpError, install_error_handlers
from pipeline.api.health import healthz
from pipeline.api.inspection import InspectionPool
from pipeline.api.security import SecurityHeaders
from pipeline.api.upload import FILE_FIELD, UploadForm, UploadGate, read_upload
from pipeline.errors import BadDeadline, InputError, JobNotFound, UploadRejected
from pipeline.ledger.budget import check_budget_usd
from pipeline.queue.client import QueueClient
from pipeline.queue.job import parse_priority
from pipeline.settings import Settings, get_settings
from tasks.modes import MODES, parse_deadline

# A request that holds an Idempotency-Key while it is being processed; long enough for a
# large upload, short enough that a crashed request does not block its retry for a day.
_IDEM_PENDING_TTL_S = 300
# How long POST /analyze waits for Redis to answer before telling the client to come back.
_QUEUE_CHECK_S = 2.0


@dataclass
class ApiState:
    client: QueueClient
    services: Any  # pipeline.services.Services
    uploads: UploadGate
    inspector: InspectionPool


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


_bearer = HTTPBearer(auto_error=False, description="One of PIPELINE_API_KEYS")


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every route but /healthz: a bearer key from PIPELINE_API_KEYS, when any are set."""
    keys = request.app.state.settings.api_key_list
    if not keys:
        return
    given = credentials.credentials if credentials else ""
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise HttpError(
            401,
            "missing or wrong API key: send `Authorization: Bearer <key>` with one of the "
            "keys in the server's PIPELINE_API_KEYS",
            {"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(dependencies=[Depends(require_key)])

_ANALYZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more PDF files.",
                        },
                        "model": {"type": "string", "description": "A model in pricing.toml."},
                        "priority": {"type": "string", "description": "0-9, low, normal, high."},
                        "budget": {"type": "string", "description": "Batch budget, USD."},
                        "label": {"type": "string", "maxLength": 200},
                        "mode": {"type": "string", "enum": ["interactive", "batch", "auto"],
                                 "description": "Gemini Batch Mode: see `--mode`."},
                        "deadline": {"type": "string", "description":
                                     "When results are needed: 6h, 90m or "
                                     "2026-12-01T12:00Z (see `--deadline`)."},
                    },
                }
            }
        },
    }
}


def _form_options(form: UploadForm, default_model: str) -> dict[str, Any]:
    """The optional form fields, validated: each error names its field."""
    f = form.fields
    out: dict[str, Any] = {"model": f.get("model") or default_model}
    out["label"] = f.get("label") or None
    if out["label"] is not None and len(out["label"]) > 200:
        raise UploadRejected("label: at most 200 characters")
    if f.get("priority"):
        try:
            out["priority"] = parse_priority(f["priority"])
        except ValueError as exc:
            raise UploadRejected(f"priority: {exc}") from None
    if f.get("budget"):
        try:
            out["budget_usd"] = check_budget_usd(f["budget"])
        except InputError as exc:
            raise UploadRejected(f"budget: {exc}") from None
    if f.get("mode"):
        if f["mode"] not in MODES:
            raise UploadRejected(f"mode: interactive, batch or auto, not {f['mode']!r}")
        out["mode"] = f["mode"]
    if f.get("deadline"):
        try:  # read here for the 422; the submission reads it again from the same text
            parse_deadline(f["deadline"])
        except BadDeadline as exc:
            raise UploadRejected(f"deadline: {exc}") from None
        out["deadline"] = f["deadline"]
    return out


def _response_for(submission: Any) -> dict[str, Any]:
    return {
        "batch_id": submission.batch_id,
        "model": submission.model,
        "documents": [
            {
                "name": d.name,
                "status": d.status,
                "job_id": d.job_id,
                "status_url": f"/jobs/{d.job_id}" if d.job_id else None,
                "reason": d.reason,
                "pages": d.pages,
            }
            for d in submission.documents
        ],
        "warnings": list(submission.warnings),
        "mode": submission.mode,
        "mode_why": submission.mode_why,
        "deadline": submission.deadline,
        # who will answer: `model` alone reads as Gemini even when the offline analyzer will
        "provider": submission.provider,
        "answered_by": submission.answered_by,
    }


@router.post("/analyze", status_code=202, openapi_extra=_ANALYZE_BODY)
async def analyze(
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    """Upload PDFs for analysis: 202 with one job per document, queued for the workers; 422
    with each file's reason when none of them could be queued."""
    st = _state(request)
    settings: Settings = request.app.state.settings
    await _queue_reachable(st)
    form = await read_upload(dict(request.headers), request.stream(), settings.max_upload_bytes,
                             st.uploads, str(settings.home / "uploads"))  # fmt: skip
    try:
        return await _submit(st, settings, form, idempotency_key)
    finally:
        form.close(st.uploads)


async def _queue_reachable(st: ApiState) -> None:
    """503 at once while Redis is away, rather than after the client's retries time out."""
    try:
        await asyncio.wait_for(st.client.redis.ping(), _QUEUE_CHECK_S)
    except Exception as exc:
        raise HttpError(
            503,
            f"the job queue (Redis) is unavailable ({exc.__class__.__name__}); nothing was "
            "received or queued: try again shortly",
            {"Retry-After": "5"},
        ) from None


async def _submit(
    st: ApiState, settings: Settings, form: UploadForm, idempotency_key: str | None
) -> JSONResponse:
    from tasks.submission import Upload, submit_uploads

    options = _form_options(form, settings.model)
    idem = None
    if idempotency_key:
        idem = st.client.keys.api_idempotency(idempotency_key)
        replay = await _claim_idempotency(st, idem, form.fingerprint())
        if replay is not None:  # the first answer, with each document's state now
            from pipeline.api.views import replayed

            body = await replayed(st.client, st.services.engine, replay)
            return JSONResponse(body, status_code=202, headers={"Idempotent-Replayed": "true"})
    try:
        submission = await submit_uploads(
            st.client,
            [Upload(f.name, f.read_bytes(), f.path) for f in form.files],
            services=st.services,
            inspector=st.inspector.inspect,
            # A retried request after a crash lands in the same batch, not a new one.
            batch_id=hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
            if idempotency_key
            else None,
            **options,
        )
    except BaseException:
        if idem is not None:
            await st.client.redis.delete(idem)  # let the client retry with the same key
        raise
    body = _response_for(submission)
    if submission.batch_id is None:
        # every file was refused: nothing queued, no batch (the CLI exits 1 here); the key
        # is not used up, so the same request with fixed files may reuse it
        if idem is not None:
            await st.client.redis.delete(idem)
        n = len(submission.documents)
        refused = ("the file could not be queued" if n == 1
                   else f"none of the {n} files could be queued")  # fmt: skip
        body["detail"] = (f"{refused} (the reasons are under documents); nothing was queued, "
                          "so no batch was made")  # fmt: skip
        return JSONResponse(body, status_code=422)
    if idem is not None:
        stored = {"state": "done", "fingerprint": form.fingerprint(), "response": body}
        await st.client.redis.set(idem, json.dumps(stored), ex=settings.idempotency_ttl_s)
    return JSONResponse(body, status_code=202)


async def _claim_idempotency(st: ApiState, key: str, fingerprint: str) -> dict[str, Any] | None:
    """None when this request owns the key now; the stored answer when it was seen before."""
    pending = json.dumps({"state": "pending", "fingerprint": fingerprint})
    if await st.client.redis.set(key, pending, nx=True, ex=_IDEM_PENDING_TTL_S):
        return None
    raw = await st.client.redis.get(key)
    if raw is None:  # expired between the two calls: a fresh start
        return await _claim_idempotency(st, key, fingerprint)
    seen = json.loads(raw)
    if seen.get("fingerprint") != fingerprint:
        raise HttpError(
            422,
            "this Idempotency-Key was already used for a different upload (other files or "
            "fields): use a new key for a new request",
        )
    if seen.get("state") != "done":
        raise HttpError(
            409,
            "a request with this Idempotency-Key is still being processed: retry in a few "
            "seconds to get its answer",
            {"Retry-After": "2"},
        )
    response: dict[str, Any] = seen["response"]
    return response


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    """A job's state, result, attempts, error and what its LLM calls cost."""
    from pipeline.api.views import job_view, ledger_job
    from pipeline.ledger.db import session_factory

    st = _state(request)
    try:
        job = await st.client.get(job_id)
    except JobNotFound:
        job = None

    def read() -> Any:
        with session_factory(st.services.engine)() as session:
            return ledger_job(session, job_id)

    row, cost = await asyncio.to_thread(read)
    if job is None and row is None:
        raise HttpError(404, f"no job {job_id!r}: check the id (job records expire after "
                             "PIPELINE_RESULT_TTL_S)")  # fmt: skip
    view = job_view(job, row, cost)
    if job is not None:
        view["state"] = await _job_state(st, job_id, cost)
    return view


async def _job_state(st: ApiState, job_id: str, cost: dict[str, Any]) -> dict[str, Any]:
    """What the job does or waits for, by the rules a document's state follows (tasks/status):
    a job still `active` in the queue while its worker's heartbeat has stopped is `waiting`,
    kind `worker_lost`, with when its lease runs out and the money held for its call."""
    from decimal import Decimal

    from tasks.batches import surroundings
    from tasks.status import JobView, Run, job_state

    raw = await st.client.redis.hgetall(st.client.keys.job(job_id))
    job = JobView.from_hash({str(k): str(v) for k, v in raw.items()})
    around = await surroundings(st.client, [Run(job)])
    around.held_usd[job_id] = Decimal(cost.get("held_usd", "0"))
    s = job_state(job, around)
    return {"status": s.status, "reason": s.reason, "kind": s.kind, "until": s.until}


@router.get("/costs", response_model=None)
async def get_costs(
    request: Request,
    since: Annotated[str | None, Query(description="YYYY-MM-DD or ISO datetime")] = None,
    until: Annotated[str | None, Query(description="last day, inclusive")] = None,
    by: Annotated[str, Query(
        description="day, model, batch, document, status, mode or provider")] = "day",
    format: Annotated[str, Query(description="json or csv")] = "json",
) -> dict[str, Any] | Response:
    """Exactly `pipeline costs --format json` (or `--format csv`)."""
    from pipeline.ledger.cost_exports import name_documents, report_csv
    from pipeline.ledger.db import session_factory
    from pipeline.ledger.report import cost_report, parse_when

    if format not in ("json", "csv"):
        raise HttpError(422, f"format {format!r}: use json or csv")
    st = _state(request)
    start = parse_when(since) if since else None
    end = parse_when(until, end=True) if until else None
    if start is not None and end is not None and start >= end:
        raise HttpError(422, f"since {since} is not before the end of until {until}: give a "
                             "since on or before the until day")  # fmt: skip

    def read() -> dict[str, Any]:
        with session_factory(st.services.engine)() as session:
            return name_documents(session, cost_report(session, start, end, by))

    report = await asyncio.to_thread(read)
    if format == "csv":
        return Response(report_csv(report), media_type="text/csv; charset=utf-8")
    return report


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text: queue, workers and LLM spend, read fresh on every scrape."""
    from pipeline.api.metrics import CONTENT_TYPE, scrape

    st = _state(request)
    return Response(await scrape(st.client, st.services.engine), media_type=CONTENT_TYPE)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="pipeline API")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the environment). Its lifespan opens the queue
    client and services once; each request borrows them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from pipeline.services import open_services

        s = app.state.settings
        client = await QueueClient.connect(s, long_lived=True)
        try:
            services = await open_services(client)
        except BaseException:
            await client.aclose()
            raise
        (s.home / "uploads").mkdir(parents=True, exist_ok=True)
        inspector = InspectionPool(s)
        app.state.api = ApiState(client, services, UploadGate(s.max_concurrent_upload_bytes),
                                 inspector)  # fmt: skip
        try:
            yield
        finally:
            await asyncio.to_thread(inspector.close)
            await services.aclose()
            await client.aclose()

    app = FastAPI(
        title="pipeline",
        summary="Cost-aware batch analysis of PDFs with Gemini.",
        lifespan=lifespan,
        openapi_url=None,  # served by `router` instead, behind the API key
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings or get_settings()
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Health check (no auth)")
    app.include_router(router)
    from pipeline.api.batches import router as batches_router

    app.include_router(batches_router, dependencies=[Depends(require_key)])
    from pipeline.api.dashboard import install_dashboard

    install_dashboard(app)  # `/` and /dashboard/*, behind the same keys (cookie or bearer)
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    return app
