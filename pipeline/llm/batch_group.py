"""A group of requests answered by one Gemini batch job: recorded before it is paid for,
created at most once, booked once.

`submit` writes the group to Redis (`keys.batch_group(display_name)`) and one ledger row per
request (`started`, mode=batch, costed at its worst case at the batch rate) *before*
`batches.create`, so a job that was created exists on the books even if the worker dies the
next instant. The display name is derived from the group's content (`display_name_for`); a
worker that died between `create` and recording the remote name finds the job again by
listing batches with that name, and never creates a second one.

`collect` reads the job once (the caller schedules the next look with back-off: nothing here
holds a worker for hours). When the job SUCCEEDED, each response goes through the same
booking and answer classification as an interactive call (`book_usage`, `judge`): a used
answer is put in the call store under its call key first (so any later run, batch or
interactive, gets it without paying), then its ledger row is settled at the batch price of
the day the job was created. An answer paid for but unusable is written down in the group's
record (`unusable:<call key>`) with what made it so, for its member's job to apply the
remedy an interactive call gets rather than send the same request again. Ledger rows have
deterministic ids, so a collect repeated after a crash rewrites the same rows instead of
adding any.

A group whose inline requests are over `inline_max_bytes` together goes as a JSONL input
file (batch_files.py), uploaded inside the create lock after `find` came back empty; a
request over `line_max_bytes` sends its PDF as an uploaded file of its own. Every upload is
written to the group's record (`file:<name>`) the moment it exists, so the files are
deleted once the job is booked, whoever uploaded them; an input file recorded by a worker
that died before `create` is used again while Google still has it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from pipeline.errors import (
    AnswerBlocked,
    AnswerInvalid,
    AnswerTruncated,
    PipelineError,
    UnusableAnswer,
)
from pipeline.llm.attempts import BATCH_MODE, CallAttempt, Outcome, Recorder
from pipeline.llm.batch_items import (
    JSONL,
    BatchItem,
    RemoteBatch,
    data_parts,
    display_name_for,
    inline_bytes,
    input_line,
)
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.failure import ProviderCallError
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, Usage
from pipeline.llm.stop import Accept, judge
from pipeline.llm.usage import book_usage

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from pipeline.llm.batch import GeminiBatches
    from pipeline.redis.keys import Keys

# Held while one worker lists and creates; longer than those calls take (the provider's
# timeout), and it is what a worker that died holding it makes others wait.
CREATE_LOCK_S = 300.0
GROUP_TTL_S = 7 * 86400  # Google's target is 24 h; the record outlives any job by far
MODE = BATCH_MODE
# The group record's field: when its budget holds were reserved (tasks/batch_holds.py), ISO.
BUDGET_AT_FIELD = "budget_at"
# Google's limit on a batch's inline requests together (GEMINI.md §3.6: "inline total <
# 20 MB"); an input file may hold 2 GB.
INLINE_MAX_BYTES = 20 * 1024 * 1024
_FILE = "file:"

log = logging.getLogger(__name__)
# `use:<document>` in a group's record: who answers that document (see _left). Decided per
# document, not per request: a long PDF's parts stay or leave together, so no part is paid
# both in the batch and again interactively.
USE = "use:"
# `unusable:<call key>` in a group's record: the batch's paid answer to that request was cut,
# blocked or invalid (JSON, see `unusable_answer`), so the member's job applies the remedy
# an interactive call gets (a larger output budget, no call, a repair) instead of sending
# the same request again.
UNUSABLE = "unusable:"
# `members` in a group's record: the documents it is made of (`seal`), JSON.
MEMBERS = "members"
# `candidates` in a group's record: every document its submission or retry grouped, each
# {"sha256", "name", "job_id"} (JSON list; `propose`), written once before its jobs are
# queued. Kept here, once per group, rather than in each member's job arguments: N members
# each carrying N would hold N x N entries in Redis (issue 16). The seal says which of them
# the batch job carries.
CANDIDATES = "candidates"


class BatchCreateBusy(PipelineError):
    """Another worker is creating this group's batch job right now; try again shortly."""


@dataclass(frozen=True)
class Collected:
    """A finished job's bookings: `answers` used (key -> response text), `unusable` keys
    whose answer was paid for but refused, `failed` keys Google gave no answer for."""

    remote: RemoteBatch
    answers: dict[str, str]
    unusable: dict[str, str]
    failed: dict[str, str]
    cost_usd: Decimal
    costs: dict[str, Decimal]  # booked per key (0 for a key without an answer)


async def recorded(store: CallStore, name: str) -> dict[str, str]:
    """The group's Redis record: model, keys, remote (once created), booked (once
    collected, the job's end state); empty for a group never submitted."""
    raw = await store.redis.hgetall(store.keys.batch_group(name))
    return {_text(k): _text(v) for k, v in raw.items()}


async def seal(redis: Redis, keys: Keys, name: str, documents: Sequence[str]) -> list[str]:
    """Say which documents (sha256) the group `name` is made of: those whose runs were
    queued in it, never one a submission or retry answered "duplicate" for (another run
    answers it: sending it too would pay for it twice). The first word stands (HSETNX), so
    whoever builds the group and whoever sealed it agree. Returns the documents sealed."""
    group = keys.batch_group(name)
    if await redis.hsetnx(group, MEMBERS, json.dumps(sorted(set(documents)))):
        await redis.expire(group, GROUP_TTL_S)
    return list(json.loads(_text(await redis.hget(group, MEMBERS) or "[]")))


async def propose(redis: Redis, keys: Keys, name: str,
                  members: Sequence[Mapping[str, str]]) -> None:  # fmt: skip
    """Write the group `name`'s candidates (each member's sha256, name and root job id),
    before any of its jobs is queued, so no member reads a group without them. The first
    word stands (HSETNX): a submission made again under its batch id (the same group) names
    new job ids that never became jobs; the first one's are those queued. The record lives
    GROUP_TTL_S from here (longer than any of its jobs waits: a job looks at least every
    batch_poll_max_s, and each look keeps it)."""
    group = keys.batch_group(name)
    await redis.hsetnx(group, CANDIDATES, json.dumps([dict(m) for m in members]))
    await redis.expire(group, GROUP_TTL_S)


def candidates(record: Mapping[str, str],
               group: Mapping[str, object] | None = None) -> list[dict[str, str]]:  # fmt: skip
    """The group's candidates (`propose`): from its record, else from `group` (a job's
    `batch_group` argument: a job queued before the record kept them carried them all, as
    `members`); empty when neither says (the record expired: its members go interactive)."""
    if record.get(CANDIDATES):
        return list(json.loads(record[CANDIDATES]))
    members = (group or {}).get("members")
    return [dict(m) for m in members] if isinstance(members, list) else []


def sealed_members(record: Mapping[str, str]) -> list[str] | None:
    """The documents (sha256) a group's record says it is made of: those its job carries
    once it was submitted (`keys`, one per document or part of one: `sha256[:first-last]`),
    else those sealed (`seal`); None while neither was said."""
    if record.get("keys"):
        return sorted({key.split(":")[0] for key in json.loads(record["keys"])})
    if record.get(MEMBERS):
        return list(json.loads(record[MEMBERS]))
    return None


def attempt_id(display_name: str, key: str) -> str:
    """The ledger row of one request of a group: the same id on every run, so bookings are
    upserts."""
    return "b-" + hashlib.sha256(f"{display_name}\n{key}".encode()).hexdigest()[:40]


class BatchGroups:
    """Submit and collect batch groups for one provider (`GeminiProvider.batches`).

    `redis`/`keys` are the call store's; `recorder` is the ledger (SqlRecorder); `prices`
    prices worst cases and answers at the batch rate (config/pricing.toml batch_discount).
    `create_lock_s` bounds how long a dead worker's create lock delays the next one.
    `inline_max_bytes`: a larger group goes as an input file; `line_max_bytes`: a larger
    request of an input file sends its PDF as an uploaded file (both in bytes).
    """

    def __init__(self, batches: GeminiBatches, store: CallStore, recorder: Recorder,
                 prices: PriceTable,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 create_lock_s: float = CREATE_LOCK_S,
                 inline_max_bytes: int = INLINE_MAX_BYTES,
                 line_max_bytes: int = INLINE_MAX_BYTES) -> None:  # fmt: skip
        self.batches = batches
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.recorder = recorder
        self.prices = prices
        self.clock = clock
        self.create_lock_ms = max(1, int(create_lock_s * 1000))
        self.inline_max_bytes = inline_max_bytes
        self.line_max_bytes = line_max_bytes

    async def _budget_at(self, name: str) -> datetime | None:
        """When the group's budget holds were reserved (their day and month), for its
        ledger rows; None when it holds nothing (no budget)."""
        raw = await self.redis.hget(self.keys.batch_group(name), BUDGET_AT_FIELD)
        return None if raw is None else datetime.fromisoformat(_text(raw))

    def worst_case_usd(self, request: LLMRequest, input_tokens: int, at: datetime) -> Decimal:
        """The most one request of a batch can be billed: its counted input and its output
        bound, at the batch rate of `at`'s day."""
        usage = Usage(input_tokens=input_tokens, output_tokens=request.output_bound_tokens)
        return self.prices.cost(request.model, usage, at, batch=True)

    async def submit(self, model: str, items: Sequence[BatchItem],
                     input_tokens: Mapping[str, int], *, job_id: str | None = None,
                     batch_id: str | None = None,
                     name: str | None = None) -> RemoteBatch:  # fmt: skip
        """The group's remote job: the recorded one, else one found by display name, else a
        new one. `input_tokens` is each key's counted prompt (countTokens), for the worst
        case booked before create. Each request's row is booked under its item's `job_id`
        (its document's run), else under `job_id` (the submitting job). Raises
        BatchCreateBusy while another worker creates it, ProviderCallError when the API
        fails (nothing created, or found next time). `name` overrides the display name
        (default: `display_name_for` the items)."""
        name = name or display_name_for(model, items)
        group = self.keys.batch_group(name)
        now = self.clock()
        created = await self.redis.hsetnx(group, "model", model)
        if created:
            await self.redis.hset(group, mapping={
                "keys": json.dumps(sorted(i.key for i in items)),
                "recorded_at": now.isoformat(), "job_id": job_id or "",
                "batch_id": batch_id or ""})  # fmt: skip
            await self.redis.expire(group, GROUP_TTL_S)
        remote_name = await self.redis.hget(group, "remote")
        if remote_name:
            return await self.batches.get(_text(remote_name))
        budget_at = await self._budget_at(name)
        for item in items:  # on the books before anything is paid
            await self.recorder.started(CallAttempt(
                attempt_id=attempt_id(name, item.key),
                call_key=call_key(item.request, self.batches.provider),
                model=model, attempt=1, started_at=now, batch_id=batch_id,
                job_id=item.job_id or job_id, document_id=item.document or item.key, mode=MODE,
                provider=self.batches.provider, budget_at=budget_at,
                estimated_cost_usd=self.worst_case_usd(item.request,
                                                       input_tokens.get(item.key, 0), now),
                cost_usd=self.worst_case_usd(item.request, input_tokens.get(item.key, 0), now),
            ))  # fmt: skip
        token = secrets.token_hex(8)
        lock = self.keys.batch_group_creating(name)
        if not await self.redis.set(lock, token, nx=True, px=self.create_lock_ms):
            raise BatchCreateBusy(f"batch group {name} is being created by another worker; "
                                  "it is retried shortly")  # fmt: skip
        try:
            remote = await self.batches.find(name)
            if remote is None:
                source = await self._input_file(group, name, items)
                remote = await self.batches.create(model, items, name, source)
            await self.redis.hset(group, "remote", remote.name)
        finally:
            if _text(await self.redis.get(lock) or "") == token:
                await self.redis.delete(lock)
        return remote

    async def collect(self, model: str, items: Sequence[BatchItem],
                      input_tokens: Mapping[str, int], *, accept: Accept | None = None,
                      job_id: str | None = None, batch_id: str | None = None,
                      name: str | None = None) -> Collected | None:  # fmt: skip
        """Look at the group's job once: None while it runs, else its bookings, each row
        under its item's `job_id` as `submit` booked it (`job_id`, the collecting job, only
        for an item without one). Raises KeyError for a group never submitted,
        ProviderCallError when the API fails."""
        name = name or display_name_for(model, items)
        remote_name = await self.redis.hget(self.keys.batch_group(name), "remote")
        if not remote_name:
            raise KeyError(f"batch group {name} has no remote job; submit it first")
        requests = {i.key: i.request for i in items}
        remote = await self.batches.get(_text(remote_name), requests)
        if not remote.done:
            return None
        at = remote.create_time or self.clock()
        budget_at = await self._budget_at(name)
        answers: dict[str, str] = {}
        unusable: dict[str, str] = {}
        failed: dict[str, str] = {}
        total = Decimal(0)
        costs: dict[str, Decimal] = {}
        outcomes = {o.key: o for o in remote.outcomes}
        for item in items:
            record = CallAttempt(
                attempt_id=attempt_id(name, item.key),
                call_key=call_key(item.request, self.batches.provider),
                model=model, attempt=1, started_at=at, batch_id=batch_id,
                job_id=item.job_id or job_id, document_id=item.document or item.key, mode=MODE,
                provider=self.batches.provider, finished_at=self.clock(), budget_at=budget_at,
                estimated_cost_usd=self.worst_case_usd(item.request,
                                                       input_tokens.get(item.key, 0), at),
                price_version=self.prices.version,
            )  # fmt: skip
            outcome = outcomes.get(item.key)
            if outcome is None or outcome.response is None:
                why = (outcome.failure.message if outcome and outcome.failure
                       else f"the batch job ended {remote.state} without an answer")  # fmt: skip
                # Google bills a batch per response; a request without one cost nothing,
                # unless its response may be one that could not be read: then it may have
                # been billed, and is booked at its worst case, never at $0.
                cost = Decimal(0)
                if outcome is None and remote.unreadable:
                    cost = record.estimated_cost_usd
                    why = unreadable_words(remote)
                record.outcome, record.error, record.cost_usd = Outcome.ERROR, why, cost
                failed[item.key] = why
                costs[item.key] = cost
                total += cost
                await self.recorder.settled(record)
                continue
            response = outcome.response
            booked = book_usage(response.reported, response.usage,
                                counted_input_tokens=input_tokens.get(item.key, 0),
                                output_bound_tokens=item.request.output_bound_tokens,
                                answered=bool(response.text))  # fmt: skip
            usage = booked.usage
            cost = self.prices.cost(response.model_version or model, usage, at, batch=True)
            verdict = judge(item.request, response, usage, accept)
            kind = verdict.outcome
            error = None if verdict.error is None else str(verdict.error)
            left = None if verdict.error else await self._left(name, item.document or item.key)
            if left is not None:  # billed, but its document went on without it
                kind, error = Outcome.ABANDONED, left
                unusable[item.key] = left
            elif error is None:  # kept first, so it is never paid for again
                kept = replace(response, raw={**response.raw, "mode": MODE})
                await self.store.put(record.call_key, kept)
                answers[item.key] = response.text
            else:
                unusable[item.key] = error
                await self._keep_unusable(name, record.call_key, verdict.error, remote.name)
            record.outcome = kind
            record.model_version = response.model_version
            record.input_tokens = usage.input_tokens
            record.output_tokens = usage.output_tokens
            record.thinking_tokens = usage.thinking_tokens
            record.cached_tokens = usage.cached_tokens
            record.cost_usd = cost
            record.usage_missing = booked.usage_missing
            record.error = error
            await self.recorder.settled(record)
            total += cost
            costs[item.key] = cost
        await self.redis.hset(self.keys.batch_group(name), "booked", remote.state)
        await self._delete_files(self.keys.batch_group(name))
        return Collected(remote, answers, unusable, failed, total, costs)

    async def _keep_unusable(self, name: str, key: str, error: UnusableAnswer | None,
                             remote: str) -> None:  # fmt: skip
        """Write down why the batch's answer to call `key` cannot be used, for its member's
        job (`unusable_answer`); the same fields on a repeated collect."""
        if error is None:
            return
        said: dict[str, str | int] = {"kind": type(error).__name__, "message": str(error),
                                      "remote": remote, "stop_reason": error.stop_reason}
        if isinstance(error, AnswerTruncated):
            said.update(max_output_tokens=error.max_output_tokens,
                        thoughts_tokens=error.thoughts_tokens)  # fmt: skip
        elif isinstance(error, AnswerInvalid):
            said.update(text=error.text, problem=error.problem)
        await self.redis.hset(self.keys.batch_group(name), UNUSABLE + key, json.dumps(said))

    async def _input_file(self, group: str, name: str, items: Sequence[BatchItem]) -> str | None:
        """None when the group fits inline; else its JSONL input file (files/…), uploaded
        now or by a worker that died before `create`. Raises ProviderCallError."""
        if inline_bytes([(i.key, i.request) for i in items]) <= self.inline_max_bytes:
            return None
        files = self.batches.files
        recorded = await self.redis.hget(group, "input_file")
        if recorded and await files.exists(_text(recorded)):
            return _text(recorded)
        uris: dict[str, str] = {}
        lines: list[bytes] = []
        for item in sorted(items, key=lambda i: i.key):
            if item.request.payload_bytes() > self.line_max_bytes:
                for digest, part in data_parts(item.request).items():
                    if digest not in uris:
                        up = await files.upload(part.path or part.data or b"",
                                                part.mime_type or "",
                                                f"{name}-{digest[:16]}")  # fmt: skip
                        await self.redis.hset(group, _FILE + up.name, up.uri)
                        uris[digest] = up.uri
            lines.append(input_line(item.key, item.request, uris))
        up = await files.upload(b"".join(lines), JSONL, f"{name}-input")
        await self.redis.hset(group, mapping={_FILE + up.name: up.uri, "input_file": up.name})
        return up.name

    async def _delete_files(self, group: str) -> None:
        """Delete the group's uploads (its job is booked: nothing reads them again). A
        failed delete is logged and left to Google's 48 h expiry."""
        for field in await self.redis.hkeys(group):
            field = _text(field)
            if not field.startswith(_FILE):
                continue
            try:
                await self.batches.files.delete(field[len(_FILE) :])
            except ProviderCallError as exc:
                log.warning("batch group %s: could not delete %s (%s); Google deletes it "
                            "after 48 h", group, field[len(_FILE) :], exc)  # fmt: skip
                continue
            await self.redis.hdel(group, field)
    async def _left(self, name: str, document: str) -> str | None:
        """Why the answers for `document` (its sha256; every part of it alike) must not be
        used, or None once the batch holds them. Whoever writes `use:<document>` first
        decides (HSETNX): this collect ("batch"), or a document taken out of the batch for
        its deadline or a cancel (tasks/batch_fallback.py), so an answer is never stored for
        a document that went on with another one."""
        field = USE + document
        group = self.keys.batch_group(name)
        if await self.redis.hsetnx(group, field, "batch"):
            return None
        taken = _text(await self.redis.hget(group, field) or "batch")
        if taken == "batch":
            return None
        return (f"answered by the batch job after its document left it ({taken}); booked as "
                "billed, not used")  # fmt: skip


def unreadable_words(remote: RemoteBatch) -> str:
    """Why a request of `remote` without an answer is booked as possibly billed."""
    lines = "1 line was" if remote.unreadable == 1 else f"{remote.unreadable} lines were"
    return (f"no readable answer: {lines} not JSON in the batch's responses file "
            f"{remote.responses_file} (answered, billed, unreadable) and this request's answer "
            "may be one of them; booked at its worst case and counted as wasted; the document "
            "is asked again interactively")  # fmt: skip


async def unusable_answer(store: CallStore, name: str, key: str) -> UnusableAnswer | None:
    """The error of group `name`'s paid but unusable answer to call `key`, as the
    interactive call would have raised it (AnswerTruncated, AnswerBlocked, AnswerInvalid),
    or None when the batch answered it usably or not at all."""
    raw = await store.redis.hget(store.keys.batch_group(name), UNUSABLE + key)
    if raw is None:
        return None
    said = json.loads(_text(raw))
    message = f"{said['message']} (its answer in Gemini batch job {said['remote']})"
    if said["kind"] == AnswerTruncated.__name__:
        return AnswerTruncated(message, int(said["max_output_tokens"]),
                               int(said.get("thoughts_tokens") or 0))  # fmt: skip
    if said["kind"] == AnswerInvalid.__name__:
        return AnswerInvalid(message, str(said["text"]), str(said["problem"]))
    return AnswerBlocked(message, str(said.get("stop_reason") or ""))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
