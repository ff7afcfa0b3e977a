"""Every Redis key of one prefix hashes to one Cluster slot (the `{prefix}` hash tag), so every
Lua script and transaction of the queue, the limiter, the budgets and the ledger buffer can
run on a Redis Cluster; and every Lua script touches only the keys it is given."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from redis.crc import key_slot

from pipeline.redis.keys import Keys

ROOT = Path(__file__).resolve().parents[2]


# Members of Keys that name no key of the prefix: a parser of key names, a SCAN pattern over
# every prefix (the document store's upgrade check), a model-name helper.
NOT_KEYS = {"bucket_model", "held_document", "every_prefix_document"}


def every_key(keys: Keys) -> list[str]:
    out = []
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            out.append(getattr(keys, name))
        elif callable(member):
            params = len(inspect.signature(member).parameters) - 1
            out.append(getattr(keys, name)(*["x"] * max(params, 1)))
    return out


def test_every_key_of_a_prefix_is_in_one_slot() -> None:
    keys = Keys("acme-prod")
    found = every_key(keys)
    assert len(found) >= 25  # jobs, queues, limiter buckets, budgets, ledger buffer, registry
    assert {key_slot(k.encode()) for k in found} == {key_slot(b"{acme-prod}")}
    assert keys.bucket_leases("m") in found or any(":leases" in k for k in found)
    assert keys.ledger_buffer in found and keys.budget("x") in found


def test_lua_scripts_only_use_keys_they_are_given() -> None:
    """A key built inside a script (a literal or a concatenation in the key slot of a command)
    could land in another slot; keys arrive in KEYS, by the rule in keys.py."""
    scripts = sorted((ROOT / "pipeline").rglob("lua/*.lua"))
    assert len(scripts) >= 15
    call = re.compile(r"redis\.call\(\s*'([A-Z]+)'\s*,\s*([^,)]+)")
    # locals that the scripts assign from KEYS (or receive as KEYS through a _lib function)
    from_keys = {"job", "job_key", "queue_key", "wake_key", "group_key", "results_key",
                 "cb_key", "totals", "holds", "active_key", "fence_key",
                 # _create.lua's, from its ctx and job tables (enqueue.lua and
                 # enqueue_many.lua fill them from KEYS)
                 "idle_key", "idle_workers_key", "idem_key", "legacy_key", "seq_key",
                 "queues_key", "delayed_key",
                 # enqueue.lua's hand-off: the idle worker's own wake list, named by the worker
                 # itself (Keys.worker_wake, this prefix's hash tag); never on a Cluster
                 "wake"}  # fmt: skip
    assigned = re.compile(r"local\s+(\w+)\s*=\s*KEYS\[")
    for path in scripts:
        source = path.read_text()
        local_keys = from_keys | set(assigned.findall(source))
        for command, first in call.findall(source):
            if command in {"TIME", "INFO"}:
                continue
            name = first.strip()
            assert name.startswith("KEYS[") or name in local_keys, (path.name, command, name)
