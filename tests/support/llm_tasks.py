"""Tasks for the multi-process LLM tests: one paid call per job through the real services.

Imported by `pipeline worker --import tests.support.llm_tasks` subprocesses. `t.ask` declares
`uses_services=True`, so the worker it runs in has the shared limiter as its admission gate,
the ledger hooks, and `ctx.deps["services"]`; the call goes through `Services.call` (budget,
the gate's permit, ledger rows) to the google-genai client and, over HTTP, to the emulator.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pipeline.llm.provider import LLMRequest, Part
from pipeline.queue import JobContext, task

MODEL = "gemini-3.5-flash-lite"


@task(
    name="t.ask",
    uses_services=True,
    expected_duration_s=2.0,
    timeout_s=120.0,
    max_attempts=3,
    retry_delays_s=(1.0,),
)
async def ask(
    ctx: JobContext,
    prompt: str,
    model: str = MODEL,
    max_output_tokens: int = 64,
    batch_limit_usd: str | None = None,
) -> dict[str, Any]:
    """Ask once; the usage comes back so a test can compare it with the ledger and emulator."""
    request = LLMRequest(
        model=model, parts=(Part(text=prompt),), max_output_tokens=max_output_tokens
    )
    limit = None if batch_limit_usd is None else Decimal(batch_limit_usd)
    response = await ctx.deps["services"].call(ctx, request, batch_limit_usd=limit)
    return {
        "model_version": response.model_version,
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "thinking_tokens": response.usage.thinking_tokens,
    }
