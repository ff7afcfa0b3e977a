"""What a Gemini batch job is made of, as plain data: its requests (`BatchItem`), the job as
last seen (`RemoteBatch`), each key's answer (`BatchOutcome`), the names that let a group be
found again, and the input-file lines and inline bytes its requests make. Kept apart from
`batch.py` and `batch_files.py` (the google-genai calls) so the code that plans, holds and
shows batches does not load the SDK (about a second of CPU per process).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.llm.failure import ProviderFailure
from pipeline.llm.provider import LLMRequest, LLMResponse, Part

JSONL = "application/jsonl"  # the MIME type of a batch input file

DISPLAY_PREFIX = "pipeline-"
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch job and the key (document/part) its response answers;
    `document` is the ledger's document id when the key names a part of one, `job_id` the
    job of that document's run (its ledger row's job: `GET /jobs/{id}` and the run's calls
    count it there), None to book it under the job that submits or collects the group."""

    key: str
    request: LLMRequest
    document: str | None = None
    job_id: str | None = None


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
    responses_file: str | None = None  # files/… the outcomes were read from (file input)
    # Lines of that file that were not JSON: answers sent (and billed) with no readable key.
    unreadable: int = 0

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


def group_name(model: str, prompt_version: str, keys: Sequence[str], provider: str,
               run: str = "") -> str:  # fmt: skip
    """The display name of a group known before its requests are built: the model, the
    prompt version, the sorted content keys of its members (documents' sha256) and the
    provider ("gemini", "emulator"), so a rehearsal's group is never taken for a real one's
    (its record names a batch job the other service never had); and `run`, what makes
    this group of these documents another than an earlier one (a submission's batch id, a
    retry's new jobs), whose record may name a batch job cancelled or booked already."""
    material: list[object] = [model, prompt_version, sorted(keys), provider]
    if run:
        material.append(run)
    digest = hashlib.sha256(json.dumps(material).encode())
    return DISPLAY_PREFIX + digest.hexdigest()[:40]


def data_parts(request: LLMRequest) -> dict[str, Part]:
    """The request's data parts (PDFs) by sha256: what `LLMRequest.rest_body(file_uris)`
    maps to uploaded files."""
    return {p.digest().hex(): p for p in request.parts if p.has_bytes and p.byte_size}


def input_line(key: str, request: LLMRequest, file_uris: dict[str, str]) -> bytes:
    """One line of a batch input file."""
    body = {"key": key, "request": request.rest_body(file_uris)}
    return json.dumps(body).encode() + b"\n"


def inline_bytes(items: Sequence[tuple[str, LLMRequest]]) -> int:
    """Bytes of a group's inline requests as batchGenerateContent carries them (each request
    body plus its metadata key): what the inline limit is checked against."""
    return sum(len(json.dumps({"request": r.rest_body(), "metadata": {"key": k}}).encode())
               for k, r in items)  # fmt: skip
