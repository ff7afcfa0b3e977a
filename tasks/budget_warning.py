"""What a submission's budget means for its documents, said before anything runs: which
documents *will* end over budget (one counted call bounded above it), which *may* (by an
estimate, or only together), and the `pipeline budget` command that lets every one run.
Each document is priced as the dry run prices it (tasks/estimate.document_bound), with the
worker's own token count where one can be made (`counter`).

In Batch Mode a submission's requests are one group, reserved together, all or none
(tasks/batch_holds.reserve_group): a group whose worst case passes the budget makes *every*
document end over budget, nothing answered, whatever the calls would really cost
(`group_words`, said by the dry run too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.ledger.budget_words import set_command
from pipeline.money import at_least_usd, dollars
from pipeline.words import counted, retry_command
from tasks.estimate import counts_with_provider

if TYPE_CHECKING:
    from pipeline.llm.pricing import PriceTable
    from pipeline.queue.client import QueueClient
    from pipeline.services import Services
    from pipeline.settings import Settings
    from tasks.estimate import Count
    from tasks.submission import Upload


log = logging.getLogger(__name__)
# countTokens requests in flight at once for the budget warning: a submission of thousands
# of documents is counted in a few seconds, not one round trip after another.
_COUNTS_AT_ONCE = 8


async def over_budget_warnings(
    checked: list[tuple[int, Upload, int, str]], budget_usd: Decimal, prices: PriceTable,
    model: str, s: Settings, batch: bool, batch_ref: str, at: datetime,
    count: Count | None, used_usd: Decimal = Decimal(0),
) -> list[str]:  # fmt: skip
    """What the budget means for these documents, each priced by the dry run's figure
    (tasks/estimate.document_bound, counted by `count`; the local estimate without it or
    when a count fails). A document with one call bounded above the budget *will* end over
    budget, nothing answered: its reservation is refused outright. The others *may* when
    their bounds add up past the budget: which ones depends on what the calls really cost.
    `batch_ref` names the batch in the command shown; `used_usd` is what the batch has spent
    and holds for calls in flight already (a submission landing in an existing batch), which
    the amount shown must admit these documents beside."""
    from tasks.estimate import document_bound
    from tasks.plan import analyze_prompt, estimate_document

    suffix = "_batch_usd" if batch else "_usd"
    gate = asyncio.Semaphore(_COUNTS_AT_ONCE)

    async def priced(upload: Upload, pages: int) -> tuple[dict[str, Any], bool]:
        """(the document's figures, whether they are counted, as the worker's are)."""
        if count is not None:
            try:
                async with gate:
                    return await document_bound(
                        upload, pages, model, count, prices, at,
                        context_budget_tokens=s.context_budget_tokens,
                        max_request_bytes=s.max_inline_request_bytes), True  # fmt: skip
            except Exception as exc:  # the worker counts again before any call
                log.warning("could not count %s's tokens for the budget warning (%s); "
                            "its figure is the local estimate", upload.name, exc)
        return estimate_document(prices, model, analyze_prompt(), pages, len(upload.data),
                                 s.context_budget_tokens, at), False  # fmt: skip

    figures = await asyncio.gather(*(priced(up, pages) for _, up, pages, _ in checked))
    if batch:
        said = group_words([est for est, _ in figures], budget_usd, used_usd,
                           all(is_counted for _, is_counted in figures))  # fmt: skip
        if said is not None:
            words, needed = said
            beside = f" beside {dollars(used_usd)} spent or held" if used_usd > 0 else ""
            return [f"{words}. {set_command(batch_ref, needed)} (the worst case{beside}) "
                    f"admits the group before its documents run, or afterwards with "
                    f"{retry_command(batch_ref, 'over-budget')}."]  # fmt: skip
    sure: list[tuple[str, Decimal]] = []
    unsure: list[tuple[str, Decimal]] = []  # above the budget by the local estimate only
    rest = Decimal(0)
    for (_, upload, _, _), (est, is_counted) in zip(checked, figures, strict=True):
        worst, largest = est["worst_case" + suffix], est["largest_call" + suffix]
        certain = est.get("largest_counted_call" + suffix) if is_counted else None
        if certain is not None and certain > budget_usd:  # a counted call alone: certain
            sure.append((upload.name, worst))
        elif largest > budget_usd:  # by an estimate (the local one, or a merge's input)
            unsure.append((upload.name, worst))
        else:
            rest += worst

    def shown(docs: list[tuple[str, Decimal]]) -> str:
        named = ", ".join(f"{name} ({dollars(usd)})" for name, usd in docs[:3])
        return named + (f" and {len(docs) - 3} more" if len(docs) > 3 else "")

    total = rest + sum((usd for _, usd in sure + unsure), Decimal(0))
    needed = at_least_usd(used_usd + total)
    spent = f" beside {dollars(used_usd)} spent or held" if used_usd > 0 else ""
    fix = f"{set_command(batch_ref, needed)} (the batch's worst case{spent}) lets every one run."
    warnings = []
    if sure:
        warnings.append(f"{counted(len(sure), 'document')} will end over budget unanswered: "
                        f"each needs a call bounded above the budget {dollars(budget_usd)}: "
                        f"{shown(sure)}. {fix}")  # fmt: skip
    if unsure:
        warnings.append(f"{counted(len(unsure), 'document')} may end over budget unanswered: "
                        f"each one's estimated worst case is above the budget "
                        f"{dollars(budget_usd)}: {shown(unsure)}. {fix}")  # fmt: skip
    if rest > budget_usd:
        others = "the other documents'" if sure or unsure else "the documents'"
        warnings.append(f"budget {dollars(budget_usd)} is below {others} worst cases together "
                        f"({dollars(rest)}): some may end over budget unanswered, depending on "
                        f"what their calls really cost. {fix}")  # fmt: skip
    return warnings


def group_words(figures: list[dict[str, Any]], budget_usd: Decimal, used_usd: Decimal,
                certain: bool) -> tuple[str, Decimal] | None:  # fmt: skip
    """In Batch Mode, the words saying every document will end over budget, and the budget
    (USD) that lets every one run, when the group's worst case beside `used_usd` (spent, and
    held by calls in flight) passes `budget_usd`; else None. `figures` are the documents'
    (tasks/plan.estimate_document or tasks/estimate.document_bound: "batch_group_usd" their
    requests in the batch job at the batch rate, "calls", "worst_case_batch_usd" with a long
    PDF's interactive merge); `certain` when every figure's input was counted as the worker
    counts it (else the group's figure is an estimate, and "may" is said)."""
    group = sum((Decimal(str(f["batch_group_usd"])) for f in figures), Decimal(0))
    if used_usd + group <= budget_usd:
        return None
    requests = sum(int(f["calls"]) - (int(f["calls"]) > 1) for f in figures)
    total = sum((Decimal(str(f["worst_case_batch_usd"])) for f in figures), Decimal(0))
    everyone = "the document" if len(figures) == 1 else f"all {len(figures)} documents"
    merges = (f" (with the long documents' interactive merge calls, {dollars(total)} in all)"
              if total > group else "")  # fmt: skip
    beside = f" beside {dollars(used_usd)} spent or held" if used_usd > 0 else ""
    what = "worst case" if certain else "estimated worst case"
    words = (f"{everyone} {'will' if certain else 'may'} end over budget unanswered: in Batch "
             f"Mode their {counted(requests, 'request')} are reserved together, all or none, and "
             f"the group's {what} {dollars(group)}{beside} is above the budget "
             f"{dollars(budget_usd)}{merges}")  # fmt: skip
    return words, at_least_usd(used_usd + total)


@contextlib.asynccontextmanager
async def counter(
    client: QueueClient, services: Services | None, s: Settings
) -> AsyncIterator[Count | None]:
    """The worker's token count for the budget warning: the services' caller's (the API's,
    `pipeline run`'s), else one on the provider these settings make; None when nothing
    counts (no key). Its figures are cached where the worker's first attempt finds them, so
    the document is counted once."""
    from pipeline.llm.counting import TokenCounter
    from pipeline.llm.factory import make_provider

    if services is not None:
        counter = getattr(services.caller, "counter", None)
        yield None if counter is None else counter.count
        return
    if not counts_with_provider(s):
        yield None
        return
    provider = make_provider(s)
    try:
        yield TokenCounter(provider, client.redis, client.keys).count
    finally:
        await provider.aclose()
