"""How the API answers when something goes wrong: always JSON `{"detail": "..."}` whose
message says what to do, mapped from the project's error tree, never a bare traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import (
    DatabaseUnavailable,
    DocumentStoreError,
    InputError,
    JobNotFound,
    PipelineError,
    RedisUnavailable,
    UnknownModel,
    UploadRejected,
)

log = logging.getLogger("pipeline.api.app")


class HttpError(Exception):
    """An answer other than 2xx, raised from anywhere in a handler."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = " ".join(loc) if loc else "request"
        msg = str(err.get("msg", "invalid"))
        # a validator's own sentence, without pydantic's "Value error, " in front of it
        parts.append(f"{where}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HttpError)
    async def _http(_: Request, exc: HttpError) -> JSONResponse:
        return _error(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe_validation(exc))

    @app.exception_handler(PipelineError)
    async def _pipeline(_: Request, exc: PipelineError) -> JSONResponse:
        if isinstance(exc, UploadRejected):
            return _error(exc.status_code, str(exc))
        if isinstance(exc, UnknownModel):
            return _error(422, f"model: {exc}")
        if isinstance(exc, InputError):
            return _error(422, str(exc))
        if isinstance(exc, JobNotFound):
            return _error(404, str(exc))
        if isinstance(exc, RedisUnavailable | DatabaseUnavailable):
            return _error(503, str(exc))
        if isinstance(exc, DocumentStoreError):  # unreachable, no bucket, credentials refused
            log.warning("document store: %s", exc)
            return _error(503, str(exc))
        log.exception("request failed", exc_info=exc)
        return _error(500, f"{exc.__class__.__name__}: {exc}")

    @app.exception_handler(RedisError)
    async def _redis(_: Request, exc: RedisError) -> JSONResponse:
        # The queue is down or unreachable: a temporary condition the client can retry.
        log.warning("redis error: %s: %s", exc.__class__.__name__, exc)
        return _error(
            503,
            f"the job queue (Redis) is unavailable: {exc.__class__.__name__}; "
            "try again shortly",
            {"Retry-After": "5"},
        )

    @app.exception_handler(SQLAlchemyError)
    async def _database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database error: %s: %s", exc.__class__.__name__, exc)
        return _error(
            503,
            f"the ledger database is unavailable: {exc.__class__.__name__}; try again shortly",
            {"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, "internal error; the server log has the details")
