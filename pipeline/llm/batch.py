"""Gemini Batch Mode through google-genai: create, find, poll, cancel and delete a batch job.

A batch job answers many generateContent requests at half the price within a target of 24 h
(ai.google.dev/gemini-api/docs/batch-mode; /work/shared/GEMINI.md §3.6). Each request here
carries its own `key` in `metadata`, so a response is matched to its document or part by key,
never by position. Creating a job is a paid side effect that cannot be made idempotent on
Google's side; `display_name_for` gives a group a name derived from its content, so a worker
that died between `create` and recording the job finds it again with `find` instead of paying
for a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from google import genai
from google.genai import types

from pipeline.llm.batch_files import BatchFiles, parse_responses, to_response
from pipeline.llm.batch_items import (
    BatchItem,
    BatchOutcome,
    RemoteBatch,
)
from pipeline.llm.failure import ProviderCallError, ProviderFailure
from pipeline.llm.gemini import parse_api_error, to_llm_response
from pipeline.llm.provider import LLMRequest


def _state(job: types.BatchJob) -> str:
    raw = str(getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED")
    return raw.removeprefix("JOB_STATE_").removeprefix("BATCH_STATE_")


class GeminiBatches:
    """Batch jobs over a GeminiProvider's client (`GeminiProvider.batches`). Every method
    raises ProviderCallError (with `.failure`) when the API call fails. `provider` is the
    provider's name ("gemini", "emulator"), which keys the answers it brings in the call
    store."""

    def __init__(
        self,
        client: genai.Client,
        config: Callable[[LLMRequest], types.GenerateContentConfig],
        contents: Callable[[LLMRequest], list[types.Content]],
        provider: str,
    ) -> None:
        self.provider = provider
        self._client = client
        self._config = config
        self._contents = contents
        self.files = BatchFiles(client)

    async def create(self, model: str, items: Sequence[BatchItem], display_name: str,
                     input_file: str | None = None) -> RemoteBatch:  # fmt: skip
        """Create one batch job for `model` (every item's model must be it): of inline
        requests, or from `input_file` (files/…, the items' JSONL uploaded: batch_files.py).
        Raises ValueError for an empty group, duplicate keys or a foreign model."""
        if not items:
            raise ValueError("a batch needs at least one request")
        keys = [i.key for i in items]
        if len(set(keys)) != len(keys):
            raise ValueError("batch keys must be unique")
        if any(i.request.model != model for i in items):
            raise ValueError(f"every request of a batch for {model} must use {model}")
        named = types.CreateBatchJobConfig(display_name=display_name)
        src: str | list[types.InlinedRequest] = input_file or [
            types.InlinedRequest(
                contents=self._contents(i.request),
                config=self._config(i.request),
                metadata={"key": i.key},
            )
            for i in items
        ]
        try:
            job = await self._client.aio.batches.create(model=model, src=src, config=named)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        return self._remote(job, {})

    async def get(self, name: str, requests: dict[str, LLMRequest] | None = None) -> RemoteBatch:
        """The job now; with its outcomes when it SUCCEEDED. `requests` (by key) lets an
        answer be read as its request asked (JSON schema); a key not in it is read as text.
        A job fed by an input file answers in a responses file, downloaded only when
        `requests` is given: a look at the state alone downloads nothing."""
        try:
            job = await self._client.aio.batches.get(name=name)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        remote = self._remote(job, requests or {})
        if requests is not None and job.dest is not None and job.dest.file_name \
                and remote.state == "SUCCEEDED":  # fmt: skip
            data = await self.files.download(job.dest.file_name)
            lines, unreadable = parse_responses(data)
            outcomes = tuple(_outcome(key, to_response(r) if r is not None else None, error,
                                      requests.get(key), job.model or "")
                             for key, r, error in lines)  # fmt: skip
            remote = replace(remote, outcomes=outcomes, responses_file=job.dest.file_name,
                             unreadable=unreadable)  # fmt: skip
        return remote

    async def find(self, display_name: str) -> RemoteBatch | None:
        """The newest job with this display name, or None: how a group whose job was created
        but not recorded is found again. Reads every page of `batches.list`."""
        try:
            pager = await self._client.aio.batches.list(config=types.ListBatchJobsConfig(
                page_size=100))  # fmt: skip
            async for job in pager:
                if job.display_name == display_name:
                    return self._remote(job, {})
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        return None

    async def cancel(self, name: str) -> None:
        """Ask Google to cancel the job; requests not yet run are not billed."""
        try:
            await self._client.aio.batches.cancel(name=name)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc

    async def delete(self, name: str) -> None:
        try:
            await self._client.aio.batches.delete(name=name)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc

    def _remote(self, job: types.BatchJob, requests: dict[str, LLMRequest]) -> RemoteBatch:
        inlined = job.dest.inlined_responses if job.dest and job.dest.inlined_responses else []
        outcomes = [_outcome((a.metadata or {}).get("key", ""), a.response, a.error,
                             requests.get((a.metadata or {}).get("key", "")), job.model or "")
                    for a in inlined]  # fmt: skip
        return RemoteBatch(
            name=job.name or "",
            display_name=job.display_name or "",
            state=_state(job),
            create_time=job.create_time,
            outcomes=tuple(outcomes),
        )


def _outcome(key: str, response: types.GenerateContentResponse | None, error: Any,
             request: LLMRequest | None, model: str) -> BatchOutcome:  # fmt: skip
    """One request's answer: a response read as its request asked (JSON schema; a key
    without a request is read as text), or the failure Google gave for it (`error`: a
    Status, as the SDK's type or as JSON)."""
    if response is not None:
        asked = request or LLMRequest(model=model, parts=())
        return BatchOutcome(key, response=to_llm_response(response, asked, 0.0))

    def read(name: str) -> Any:
        return error.get(name) if isinstance(error, dict) else getattr(error, name, None)

    code = int(read("code") or 0) if error else 0
    return BatchOutcome(key, failure=ProviderFailure(
        code=code, status="BATCH_REQUEST_FAILED",
        message=(read("message") if error else None) or "the batch gave no answer",
        retryable=code in (0, 429, 500, 503, 504)))  # fmt: skip
