"""Gemini Batch Mode in the emulator: `batchGenerateContent` and the `batches` resource.

Shapes follow google-genai's converters (`google/genai/batches.py`:
`_CreateBatchJobParameters_to_mldev`, `_InlinedRequest_to_mldev`, `_BatchJob_from_mldev`,
`_ListBatchJobsResponse_from_mldev`) and
ai.google.dev/api/batch-mode (see /work/shared/GEMINI.md §3.6): a job is a long-running
Operation `{"name": "batches/…", "metadata": {"displayName", "state", "createTime", …,
"output": {"inlinedResponses": {"inlinedResponses": [...]}}}, "done"}`.

A job stays BATCH_STATE_PENDING for the first third of `delay_s` (or `pending_s`), RUNNING
until `delay_s` has passed, then ends in `end_state` (SUCCEEDED by default; FAILED or
EXPIRED for tests of those paths). Requests are answered, and billed, once, when a
SUCCEEDED job is first seen after its delay: a cancelled, failed or expired job bills
nothing.

Input comes inline (`inputConfig.requests.requests[]`, answers in
`output.inlinedResponses`) or as a JSONL file uploaded through the Files API
(`inputConfig.fileName`, one `{"key", "request"}` a line; answers written to a generated
file named in `output.responsesFile`, one `{"key", "response"|"error"}` a line, downloaded
with `files.download`). The file store (files.py) also resolves `fileData` parts.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.llm.emulator.content import BadRequest, pick
from pipeline.llm.emulator.files import FileStore

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})
END_STATES = frozenset({"SUCCEEDED", "FAILED", "EXPIRED"})

# (model, request body) -> {"response": {...}} or {"error": {...}}; bills as a side effect.
# With GARBLED set (the `garbled` fault), its line of a responses file is cut mid-JSON; an
# inline answer is sent whole (cutting one would cut the whole job's body).
Answerer = Callable[[str, dict[str, Any]], dict[str, Any]]
GARBLED = "_garbled"


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BatchJob:
    """One remote batch: its inline requests, and their outcomes once it ran."""

    name: str
    model: str
    display_name: str
    requests: list[dict[str, Any]]
    created_at: float
    delay_s: float
    end_state: str
    cancelled_at: float | None = None
    outputs: list[dict[str, Any]] | None = None
    ended_at: float | None = None
    from_file: bool = False  # input from a file: answers go to a responses file
    responses_file: str | None = None
    pending_s: float | None = None  # None: a third of delay_s
    cancelled_while: str | None = None  # the state a cancel found it in

    def state(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "CANCELLED"
        if now >= self.created_at + self.delay_s:
            return self.end_state
        pending = self.delay_s / 3 if self.pending_s is None else self.pending_s
        if now >= self.created_at + pending:
            return "RUNNING"
        return "PENDING"


@dataclass
class BatchStore:
    """The emulator's batch jobs. Thread-safe: route handlers run answers in threads."""

    delay_s: float = 2.0
    end_state: str = "SUCCEEDED"
    files: FileStore = field(default_factory=FileStore)
    pending_s: float | None = None  # seconds a job stays PENDING (None: a third of delay_s)
    jobs: dict[str, BatchJob] = field(default_factory=dict)
    created: int = 0  # batchGenerateContent calls that made a job
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.end_state not in END_STATES:
            raise ValueError(f"batch end_state must be one of {sorted(END_STATES)}")

    def create(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """A new job from a batchGenerateContent body. Raises BadRequest for a body
        without requests, or naming an input file that is missing or malformed."""
        batch = body.get("batch")
        if not isinstance(batch, dict):
            raise BadRequest("batch is required")
        config = pick(batch, "inputConfig", "input_config") or {}
        file_name = pick(config, "fileName", "file_name")
        requests: Any
        if file_name:
            requests = self._file_requests(str(file_name))
        else:
            inner = config.get("requests") or {}
            requests = inner.get("requests") if isinstance(inner, dict) else None
        if not isinstance(requests, list) or not requests:
            raise BadRequest("batch.inputConfig needs requests.requests or a fileName "
                             "with at least one request")  # fmt: skip
        for item in requests:
            if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
                raise BadRequest("each inline request needs a request object")
        now = time.time()
        job = BatchJob(
            name=f"batches/{secrets.token_hex(8)}",
            model=model,
            display_name=str(pick(batch, "displayName", "display_name") or ""),
            requests=requests,
            created_at=now,
            delay_s=self.delay_s,
            end_state=self.end_state,
            from_file=bool(file_name),
            pending_s=self.pending_s,
        )
        with self.lock:
            self.jobs[job.name] = job
            self.created += 1
        return self.operation(job, answer=None)

    def _file_requests(self, name: str) -> list[dict[str, Any]]:
        """The requests of a JSONL input file, each as an inline request with its key in
        `metadata` (the shape the answers are matched by)."""
        data, _ = self.files.resolve(name)
        requests: list[dict[str, Any]] = []
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise BadRequest(f"{name} line {number} is not JSON") from None
            if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
                raise BadRequest(f"{name} line {number} needs a request object")
            requests.append({"request": item["request"], "metadata": {"key": item.get("key")}})
        return requests

    def find(self, name: str) -> BatchJob | None:
        with self.lock:
            return self.jobs.get(name)

    def cancel(self, job: BatchJob) -> None:
        with self.lock:
            state = job.state(time.time())
            if state not in TERMINAL:
                job.cancelled_while = state
                job.cancelled_at = time.time()
                job.ended_at = job.cancelled_at

    def finish(self, job: BatchJob) -> None:
        """End the job now (its delay is cut to what has passed); a cancelled job stays so."""
        with self.lock:
            job.delay_s = min(job.delay_s, max(0.0, time.time() - job.created_at))

    def summary(self) -> dict[str, dict[str, int]]:
        """Jobs by state now, and cancelled jobs by the state the cancel found them in."""
        now = time.time()
        with self.lock:
            jobs = list(self.jobs.values())
        by_state: dict[str, int] = {}
        cancelled: dict[str, int] = {}
        for job in jobs:
            by_state[job.state(now)] = by_state.get(job.state(now), 0) + 1
            if job.cancelled_while:
                cancelled[job.cancelled_while] = cancelled.get(job.cancelled_while, 0) + 1
        return {"by_state": by_state, "cancelled_while": cancelled}

    def delete(self, job: BatchJob) -> None:
        with self.lock:
            self.jobs.pop(job.name, None)

    def listing(self, page_size: int, page_token: str | None,
                answer: Answerer) -> dict[str, Any]:  # fmt: skip
        """Newest first, `page_size` per page; the token is the offset of the next page."""
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
        start = int(page_token) if page_token and page_token.isdigit() else 0
        page = jobs[start : start + page_size]
        body: dict[str, Any] = {"operations": [self.operation(j, answer) for j in page]}
        if start + page_size < len(jobs):
            body["nextPageToken"] = str(start + page_size)
        return body

    def operation(self, job: BatchJob, answer: Answerer | None) -> dict[str, Any]:
        """The job as the API returns it; runs its requests first if it just succeeded."""
        now = time.time()
        state = job.state(now)
        if state in END_STATES and job.ended_at is None:
            job.ended_at = job.created_at + job.delay_s
        if state == "SUCCEEDED" and answer is not None:
            self._run(job, answer)
        count = len(job.requests)
        metadata: dict[str, Any] = {
            "@type": BATCH_TYPE,
            "model": f"models/{job.model}",
            "displayName": job.display_name,
            "state": f"BATCH_STATE_{state}",
            "createTime": _rfc3339(job.created_at),
            "updateTime": _rfc3339(job.ended_at or now),
            "batchStats": {"requestCount": str(count), "pendingRequestCount": str(count)},
        }
        if job.ended_at is not None:
            metadata["endTime"] = _rfc3339(job.ended_at)
        if job.outputs is not None:
            failed = sum(1 for o in job.outputs if "error" in o)
            metadata["batchStats"] = {
                "requestCount": str(count),
                "successfulRequestCount": str(count - failed),
                "failedRequestCount": str(failed),
            }
            if job.responses_file is not None:
                metadata["output"] = {"responsesFile": job.responses_file}
            else:
                metadata["output"] = {"inlinedResponses": {"inlinedResponses": job.outputs}}
        return {"name": job.name, "metadata": metadata, "done": state in TERMINAL}

    def _run(self, job: BatchJob, answer: Answerer) -> None:
        # One thread answers a job; the others wait and then see its outputs.
        with self.lock:
            if job.outputs is not None:
                return
            outputs, garbled = [], []
            for item in job.requests:
                outcome = answer(job.model, item["request"])
                garbled.append(bool(outcome.pop(GARBLED, False)))
                if isinstance(item.get("metadata"), dict):
                    outcome["metadata"] = item["metadata"]
                outputs.append(outcome)
            if job.from_file:  # one {"key", "response"|"error"} a line
                lines = [json.dumps({"key": (o.pop("metadata", None) or {}).get("key"), **o})
                         for o in outputs]  # fmt: skip
                lines = [line[: len(line) // 2] if cut else line
                         for line, cut in zip(lines, garbled, strict=True)]  # fmt: skip
                job.responses_file = self.files.add(("\n".join(lines) + "\n").encode(),
                                                    "application/jsonl",
                                                    f"{job.name}-responses", True).name
            job.outputs = outputs
