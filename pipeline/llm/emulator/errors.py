"""Google's error bodies, as the emulator returns them: `{"error": {code, message, status,
details}}` with the RPC status names, and the 429 of an exceeded quota with its QuotaFailure,
Help and (optionally) RetryInfo details, as GEMINI.md §3.4 shows them."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from pipeline.llm.emulator.quota import Denial, format_duration

RATE_LIMIT_DOC = "https://ai.google.dev/gemini-api/docs/rate-limits"
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def error_response(
    code: int, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    """Google's error body with HTTP status `code` and its RPC status name."""
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": _STATUS.get(code, "UNKNOWN"),
    }
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=code)


def quota_error(denial: Denial, model: str, retry_info: bool) -> JSONResponse:
    """The 429 of an exceeded quota; `retry_info` adds the RetryInfo detail (not every
    429 of Google's carries one: GEMINI.md §3.4)."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": denial.quota_metric,
                    "quotaId": denial.quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(denial.limit),
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOC}],
        },
    ]
    if retry_info:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format_duration(denial.retry_delay_s),
            }
        )
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        f"For more information on this error, head to: {RATE_LIMIT_DOC}."
    )
    return error_response(429, message, details)


def parse_json(raw: bytes) -> dict[str, Any] | JSONResponse:
    """The request body as a JSON object, or the 400 Google answers for anything else."""
    try:
        body = json.loads(raw)
    except ValueError:
        return error_response(400, "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return error_response(400, "Invalid JSON payload received. Expected an object.")
    return body
