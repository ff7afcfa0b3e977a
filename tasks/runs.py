"""Starting a document's run in a batch: the first one at submission, or a new one when its
earlier run ended without a result (resubmitted in a new batch, or `pipeline retry`).

A new run is a new root job in *this* batch: its calls are booked to this batch and bounded
by this batch's budget, and the content's idempotency key is handed over to it atomically,
so a later submission of the same file finds the new run, not the failed one. The new run
makes fresh provider calls for whatever was not answered; an answer that was paid for and
used (a part that completed) is reused from the call store and shows in the ledger at $0.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.queue.client import JobHandle, QueueClient
from pipeline.queue.job import JobOptions
from pipeline.queue.task import Call

if TYPE_CHECKING:
    from tasks.prompts import Prompt
    from tasks.status import DocumentState

ANALYZE_TASK = "analyze_document"


@dataclass(frozen=True)
class RunSpec:
    """What a run of one document needs: the content (by hash), how it was named in this
    batch, its size for the admission hint, the model and prompt, and the batch's budget."""

    sha256: str
    name: str
    pages: int
    size_bytes: int
    model: str
    prompt_version: str
    batch_id: str
    provider: str  # who will answer: pipeline.llm.factory.provider_kind (in the job's key)
    budget_usd: Decimal | None = None
    priority: int | None = None
    expected_duration_s: float | None = None
    queue: str | None = None  # None: the task's own queue
    # The root job's id, chosen before the enqueue so the document store can count it as a
    # holder of the bytes before they are put (pipeline/storage/holds.py).
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Batch Mode (tasks/batch_mode.py): the submission's Gemini batch group, None for
    # interactive calls.
    batch_group: dict[str, Any] | None = None
    # The mode chosen for the submission and why, with its deadline (tasks/modes.py
    # ModeChoice.args; a retry keeps its document's, tasks/retry.kept_mode); None for a run
    # started without a choice (interactive).
    mode_args: dict[str, str] | None = None

    def args(self) -> dict[str, Any]:
        """The root job's argument. Kept small, as it waits in Redis with every queued
        document: no budget when there is none, and no `documents` list (the job lets go of
        its own `sha256`, storage/holds.py); the mode chosen and why (tasks/modes.py)."""
        args: dict[str, Any] = {"sha256": self.sha256, "name": self.name, "model": self.model,
                                "prompt_version": self.prompt_version}  # fmt: skip
        if self.budget_usd is not None:
            args["budget_usd"] = str(self.budget_usd)
        args.update(self.mode_args or {})
        if self.batch_group:
            args.update(mode="batch", batch_group=self.batch_group)
        return args

    def call(self, context_budget_tokens: int, prompt: Prompt | None = None) -> Call:
        """The root job as a Call, for QueueClient.enqueue_many."""
        from tasks.analyze import analyze_document  # placed by its own definition

        return Call(analyze_document.name, [self.args()], {},
                    self.options(context_budget_tokens, prompt), task=analyze_document)  # fmt: skip

    def options(self, context_budget_tokens: int, prompt: Prompt | None = None) -> JobOptions:
        """The root job's options; `prompt` is the analyze prompt (read from its file when
        not given: a submission reads it once for all its documents)."""
        from tasks.plan import admission_tokens, analyze_prompt, idempotency_key

        tokens = admission_tokens(self.pages, self.size_bytes, self.model,
                                  prompt or analyze_prompt(), context_budget_tokens)  # fmt: skip
        return JobOptions(
            idempotency_key=idempotency_key(self.sha256, self.model, self.prompt_version,
                                            self.provider),
            priority=self.priority,
            queue=self.queue,
            batch=self.batch_id,
            expected_duration_s=self.expected_duration_s,
            job_id=self.job_id,
            # A batch-mode job waits for its batch job first: it takes no bucket tokens (its
            # one call, answered from the call store, sends nothing).
            hints={} if self.batch_group else {"model": self.model, "tokens": tokens},
        )


async def enqueue_run(client: QueueClient, spec: RunSpec, *, replacing: str | None = None,
                      ) -> JobHandle:  # fmt: skip
    """Enqueue the root job of a run. Without `replacing`, an earlier job with the same
    content, model and prompt is returned instead (created=False); with it, that job (which
    ended without a result) hands its idempotency key to the new one."""
    from tasks.analyze import analyze_document  # placed by its own definition, not defaults

    options = spec.options(client.settings.context_budget_tokens)
    if replacing is None:
        return await client.enqueue(analyze_document, spec.args(), _options=options)
    return await client.enqueue_replacing(replacing, analyze_document, spec.args(),
                                          _options=options)  # fmt: skip


async def enqueue_runs(client: QueueClient, specs: list[RunSpec]) -> list[JobHandle]:
    """Enqueue the root jobs of many first runs in one round trip per thousand (`enqueue`
    one by one costs a round trip each); one handle per spec, in order, each exactly what
    `enqueue_run(client, spec)` would return (created=False: an earlier job with the same
    content, model and prompt, in Redis or earlier in `specs`)."""
    from tasks.plan import analyze_prompt

    budget, prompt = client.settings.context_budget_tokens, analyze_prompt()
    return await client.enqueue_many([spec.call(budget, prompt) for spec in specs])


async def earlier_run(client: QueueClient, root_id: str,
                      has_result: bool) -> tuple[DocumentState | None, list[str]]:  # fmt: skip
    """The state of the run rooted at `root_id` (tasks/status.py's derivation: complete,
    on its way, or ended without a result), and the ids of its jobs not ended yet (those
    that will still run). The state is None when the root's record is gone: taken as on
    its way, since the idempotency key that led here outlives job records only by accident,
    and a second run must never start by mistake."""
    from tasks.batches import read_runs
    from tasks.status import Surroundings, derive, not_ended

    runs = await read_runs(client, [root_id], {})
    run = runs[root_id]
    if run.root is None:
        return None, [root_id]
    return derive(run, has_result, Surroundings()), [j.id for j in run.jobs() if not_ended(j)]
