"""Raising budgets' spend in Redis to the ledger's, counting each call once.

The SQL ledger is the book of record: when Redis lost spend (its data, a settle it never
got), the reconciler (reconcile.py) raises each budget scope's spend to the ledger's sum.
But a ledger row's cost may be on its way into Redis all the same: the row is settled
before the budget is (pipeline/llm/caller.py), and a Batch Mode row is written at its worst
case before its job runs while its hold is open (tasks/batch_holds.py). Counting such a
cost in the floor *and* in the hold's close booked it twice (issue 11: after a Redis outage
the batch budget ended above the ledger by the cost of every answer that arrived while
Redis was away).

So a call the ledger has is counted by its hold's token (a call's ledger id is its hold's
token): an open hold counts 0 (its close books it); an abandoned one what Redis booked for
it (a settle still corrects that); a lapsed hold, or a token Redis does not know, is booked
by the floor and marked (settled, or abandoned at that cost while the row's cost may still
change; a hold is lapsed only when none of the call's scopes holds it any more) so that
a settle arriving later adds nothing, or only its correction; a closed one
(settled, cancelled) counts the ledger's cost, as nothing more is booked for it.
budget_floor.lua does this atomically with the raise; before it, `raise_spent` reads the
states of recent calls in chunks and keeps only the open and abandoned ones, so a pass over
a day of calls sends the script the few in question.

Calls older than RECENT_S are counted at the ledger's figure only: their token states
(kept STATE_TTL_S, 3 days) may be gone, and a hold that old is long closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.ledger.budget import SCOPE_TTL_S, STATE_TTL_S, Budget, to_nanos
from pipeline.redis.connection import text
from pipeline.redis.scripts import register

RECENT_S = 2 * 86400
_LUA = Path(__file__).with_name("lua")
_CHUNK = 500


@dataclass(frozen=True)
class LedgerCall:
    """One ledger row as the floor needs it: `token` its id (its hold's token), `cost_usd`
    its booked cost, `final` False while its cost may still change (`started`,
    `abandoned`), and the budget scopes it counts in ("batch:<id>", "day:2026-11-30",
    "month:2026-11"): its hold's, the day and month of the row's budget_at (the moment
    its reservation named them), not of its started_at, which may be past midnight."""

    token: str
    cost_usd: Decimal
    final: bool
    scopes: tuple[str, ...]
    mine: bool = True  # made under the reconciling worker's key prefix (reconcile.py)


async def raise_spent(
    budget: Budget, floors: Mapping[str, Decimal], calls: Sequence[LedgerCall] = ()
) -> int:
    """Raise each scope's spend (scope name -> the ledger's USD for it) to at least the
    ledger's, with each of `calls` (recent ledger rows of those scopes) counted as Redis has
    it (see the module docstring); never lowers a scope. Returns how many scopes rose."""
    names = sorted(name for name, usd in floors.items() if usd > 0)
    if not names:
        return 0
    index = {name: n for n, name in enumerate(names, start=1)}
    in_question = await _in_question(budget, [c for c in calls if c.cost_usd > 0], index)
    keys: list[str] = []
    args: list[Any] = [len(names), STATE_TTL_S]
    for name in names:
        keys += [budget.keys.budget(name), budget.keys.budget(name + ":holds")]
        args += [to_nanos(floors[name]), SCOPE_TTL_S[name.split(":", 1)[0]]]
    for call in in_question:
        keys.append(budget.state_key(call.token))
        args += [call.token, to_nanos(call.cost_usd), "1" if call.final else "0",
                 ",".join(str(index[s]) for s in call.scopes if s in index)]  # fmt: skip
    script = register(budget.redis, _LUA, "budget_floor")["budget_floor"]
    return int(await script(keys=keys, args=args))


async def _in_question(
    budget: Budget, calls: list[LedgerCall], index: Mapping[str, int]
) -> list[LedgerCall]:
    """The calls whose token is open or abandoned (closed ones count at the ledger's cost
    as they are). A token Redis does not know is marked booked here (only if still
    unknown), before the raise that books it: a settle arriving in between then corrects
    rather than adds."""
    out = []
    calls = [c for c in calls if any(s in index for s in c.scopes)]
    for start in range(0, len(calls), _CHUNK):
        chunk = calls[start : start + _CHUNK]
        states = await budget.redis.mget([budget.state_key(c.token) for c in chunk])
        unknown = []
        for call, raw in zip(chunk, states, strict=True):
            state = None if raw is None else text(raw)
            if state is None:
                unknown.append(call)
            elif state == "held" or state.startswith("abandoned:"):
                out.append(call)
        if not unknown:
            continue
        async with budget.redis.pipeline(transaction=False) as pipe:
            for call in unknown:
                mark = "settled" if call.final else f"abandoned:{to_nanos(call.cost_usd)}"
                pipe.set(budget.state_key(call.token), mark, nx=True, ex=STATE_TTL_S)
            marked = await pipe.execute()
        out += [call for call, ok in zip(unknown, marked, strict=True) if not ok]
    return out
