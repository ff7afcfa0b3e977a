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

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from google import genai
from google.genai import types

from pipeline.llm.failure import ProviderCallError, ProviderFailure
from pipeline.llm.gemini import parse_api_error, to_llm_response
from pipeline.llm.provider import LLMRequest, LLMResponse

DISPLAY_PREFIX = "pipeline-"
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch job and the key (document/part) its response answers."""

    key: str
    request: LLMRequest


@dataclass(frozen=True)
class BatchOutcome:
    """The answer to one key: a response (billed at the batch rate), or the failure Google
    gave for that request alone (not billed)."""

    key: str
    response: LLMResponse | None = None
    failure: ProviderFailure | None = None


@dataclass(frozen=True)
class RemoteBatch:
    """A batch job as last seen: `state` without prefix (PENDING, RUNNING, SUCCEEDED,
    FAILED, CANCELLED, EXPIRED); `outcomes` filled once it SUCCEEDED."""

    name: str
    display_name: str
    state: str
    create_time: datetime | None = None
    outcomes: tuple[BatchOutcome, ...] = field(default_factory=tuple)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


def display_name_for(model: str, items: Sequence[BatchItem]) -> str:
    """A name that only this group of requests has: a hash of the model and of each key with
    its request's settings, in key order. Keys are content keys (a document's hash and its
    prompt version), so the same group submitted twice gets the same name."""
    digest = hashlib.sha256(model.encode())
    for item in sorted(items, key=lambda i: i.key):
        request = item.request
        digest.update(json.dumps([item.key, request.prompt_version, request.max_output_tokens,
                                  request.thinking_budget]).encode())  # fmt: skip
    return DISPLAY_PREFIX + digest.hexdigest()[:40]


def group_name(model: str, prompt_version: str, keys: Sequence[str]) -> str:
    """The display name of a group known before its requests are built: the model, the
    prompt version and the sorted content keys of its members (documents' sha256)."""
    digest = hashlib.sha256(json.dumps([model, prompt_version, sorted(keys)]).encode())
    return DISPLAY_PREFIX + digest.hexdigest()[:40]


def _state(job: types.BatchJob) -> str:
    raw = str(getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED")
    return raw.removeprefix("JOB_STATE_").removeprefix("BATCH_STATE_")


class GeminiBatches:
    """Batch jobs over a GeminiProvider's client (`GeminiProvider.batches`). Every method
    raises ProviderCallError (with `.failure`) when the API call fails."""

    def __init__(
        self,
        client: genai.Client,
        config: Callable[[LLMRequest], types.GenerateContentConfig],
        contents: Callable[[LLMRequest], list[types.Content]],
    ) -> None:
        self._client = client
        self._config = config
        self._contents = contents

    async def create(self, model: str, items: Sequence[BatchItem],
                     display_name: str) -> RemoteBatch:  # fmt: skip
        """Create one batch job of inline requests for `model` (every item's model must be
        it). Raises ValueError for an empty group, duplicate keys or a foreign model."""
        if not items:
            raise ValueError("a batch needs at least one request")
        keys = [i.key for i in items]
        if len(set(keys)) != len(keys):
            raise ValueError("batch keys must be unique")
        if any(i.request.model != model for i in items):
            raise ValueError(f"every request of a batch for {model} must use {model}")
        inlined = [
            types.InlinedRequest(
                contents=self._contents(i.request),
                config=self._config(i.request),
                metadata={"key": i.key},
            )
            for i in items
        ]
        named = types.CreateBatchJobConfig(display_name=display_name)
        try:
            job = await self._client.aio.batches.create(model=model, src=inlined, config=named)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        return self._remote(job, {})

    async def get(self, name: str, requests: dict[str, LLMRequest] | None = None) -> RemoteBatch:
        """The job now; with its outcomes when it SUCCEEDED. `requests` (by key) lets an
        answer be read as its request asked (JSON schema); a key not in it is read as text."""
        try:
            job = await self._client.aio.batches.get(name=name)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        return self._remote(job, requests or {})

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
        outcomes: list[BatchOutcome] = []
        inlined = job.dest.inlined_responses if job.dest and job.dest.inlined_responses else []
        now = time.perf_counter()
        for answer in inlined:
            key = (answer.metadata or {}).get("key", "")
            if answer.response is not None:
                request = requests.get(key) or LLMRequest(model=job.model or "", parts=())
                outcomes.append(BatchOutcome(key, response=to_llm_response(
                    answer.response, request, time.perf_counter() - now)))  # fmt: skip
            else:
                error = answer.error
                code = int(error.code or 0) if error else 0
                outcomes.append(BatchOutcome(key, failure=ProviderFailure(
                    code=code, status="BATCH_REQUEST_FAILED",
                    message=(error.message if error else None) or "the batch gave no answer",
                    retryable=code in (0, 429, 500, 503, 504))))  # fmt: skip
        return RemoteBatch(
            name=job.name or "",
            display_name=job.display_name or "",
            state=_state(job),
            create_time=job.create_time,
            outcomes=tuple(outcomes),
        )
