"""The live dashboard at `/`: what Flower is to Celery, served by `pipeline serve`.

Server-rendered: the page and its panels are Jinja2 templates, and a few lines of
JavaScript re-fetch the panels (`/dashboard/panels`, HTML) every couple of seconds and feed
the spend chart (Chart.js, vendored from its npm package under static/vendor with its
license). `/dashboard/state` serves the same picture as JSON for scripts.

Auth is the API's: with PIPELINE_API_KEYS set, a browser signs in once through a form
(rate limited per client address) and gets an HttpOnly, SameSite=Strict cookie holding a
signed session id, never the key (pipeline/api/security.py); a bearer header works too.
The one state-changing action, Retry in the failures panel, also demands a custom header,
which a page on another site cannot send without a CORS preflight this server never grants.
A failed or over-budget document's Retry starts a new run of it (fresh calls, the batch's
current budget); a dead job of no document is requeued.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pipeline.api.dashboard.state import dashboard_state
from pipeline.api.security import SESSION_TTL_S, LoginThrottle, Sessions
from pipeline.errors import BatchNotFound, JobNotFound

COOKIE = "pipeline_session"
ACTION_HEADER = "X-Pipeline-Action"
REFRESH_S = 2.0
_HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
router = APIRouter(include_in_schema=False)


def _key_ok(request: Request, given: str) -> bool:
    keys: list[str] = request.app.state.settings.api_key_list
    if not keys:
        return True  # no keys: `pipeline serve` then listens on loopback only
    return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


def _sessions(request: Request) -> Sessions:
    api = request.app.state.api
    return Sessions(api.client.redis, api.client.keys, request.app.state.settings.api_key_list)


async def _authorised(request: Request) -> bool:
    if not request.app.state.settings.api_key_list:
        return True
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return _key_ok(request, header[7:].strip())
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and await _sessions(request).valid(cookie)


def _unauthorised() -> JSONResponse:
    return JSONResponse(
        {"detail": "sign in at /login with one of the keys in PIPELINE_API_KEYS, or send "
                   "`Authorization: Bearer <key>`"},
        status_code=401,
    )  # fmt: skip


async def _state(request: Request) -> dict[str, Any]:
    api = request.app.state.api
    return await dashboard_state(api.client, api.services.engine, api.services.budget)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    if not await _authorised(request):
        return RedirectResponse("/login", status_code=303)
    state = await _state(request)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "s": state,
            "refresh_ms": int(REFRESH_S * 1000),
            "auth": bool(request.app.state.settings.api_key_list),
        },
    )


@router.get("/dashboard/panels", response_class=HTMLResponse)
async def panels(request: Request) -> Response:
    """The page's live part, re-rendered: the script swaps it in without a reload."""
    if not await _authorised(request):
        return _unauthorised()
    return templates.TemplateResponse(request, "_panels.html", {"s": await _state(request)})


@router.get("/dashboard/state")
async def state_json(request: Request) -> Response:
    if not await _authorised(request):
        return _unauthorised()
    return JSONResponse(await _state(request))


@router.post("/dashboard/jobs/{job_id}/retry")
async def retry(request: Request, job_id: str) -> Response:
    """Requeue a dead job with fresh attempts (the failures panel's button)."""
    if not await _authorised(request):
        return _unauthorised()
    if request.headers.get(ACTION_HEADER) != "retry":
        return JSONResponse(
            {"detail": f"send the header `{ACTION_HEADER}: retry` (the dashboard's button does)"},
            status_code=403,
        )
    client = request.app.state.api.client
    try:
        requeued = await client.requeue(job_id)
    except JobNotFound:
        return JSONResponse(
            {"detail": f"no job {job_id!r}: its record expired or the id is wrong"},
            status_code=404,
        )
    if not requeued:
        return JSONResponse(
            {"detail": f"job {job_id} is not dead or failed, so there is nothing to retry"},
            status_code=409,
        )
    return JSONResponse({"job_id": job_id, "status": "queued"})


@router.post("/dashboard/batches/{batch_id}/retry")
async def retry_documents(request: Request, batch_id: str) -> Response:
    """A new run with fresh calls, under the batch's current budget, for the failed or
    over-budget documents named in the JSON body `{"document_ids": [...]}` (the failures
    panel's button on a document)."""
    from tasks.retry import retry_batch

    if not await _authorised(request):
        return _unauthorised()
    if request.headers.get(ACTION_HEADER) != "retry":
        return JSONResponse(
            {"detail": f"send the header `{ACTION_HEADER}: retry` (the dashboard's button does)"},
            status_code=403,
        )
    try:
        body = await request.json()
        ids = {str(i) for i in body["document_ids"]}
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"detail": 'send JSON {"document_ids": ["..."]}'}, status_code=422)
    api = request.app.state.api
    try:
        view, retried = await retry_batch(
            api.client, api.services.recorder, api.services.engine, batch_id,
            {"failed", "over_budget", "cancelled"}, ids,
        )  # fmt: skip
    except BatchNotFound as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    if not retried:
        return JSONResponse(
            {"detail": "none of these documents ended failed, over budget or cancelled in "
                       f"batch {batch_id}, so there is nothing to retry"}, status_code=409,
        )  # fmt: skip
    return JSONResponse({"batch_id": view.facts.batch_id,
                         "documents": [r.__dict__ for r in retried]})  # fmt: skip


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    api = request.app.state.api
    throttle = LoginThrottle(api.client.redis, api.client.keys)
    client = request.client.host if request.client else "unknown"
    wait_s = await throttle.blocked_for_s(client)
    if wait_s:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": f"Too many failed sign-ins from this address; try again in {wait_s} s."},
            status_code=429,
            headers={"Retry-After": str(wait_s)},
        )
    form = await request.form()
    key = str(form.get("key") or "").strip()
    if not key or not _key_ok(request, key):
        await throttle.failed(client)
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "That key is not one of the server's PIPELINE_API_KEYS."},
            status_code=401,
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        await _sessions(request).start(key) if request.app.state.settings.api_key_list else "",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_TTL_S,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    cookie = request.cookies.get(COOKIE, "")
    if cookie and request.app.state.settings.api_key_list:
        await _sessions(request).end(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's routes and its static files (CSS, JS, the vendored chart library)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
