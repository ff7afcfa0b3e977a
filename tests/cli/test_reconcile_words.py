"""What `pipeline run` says of the ledger's reconcile pass: nothing on a new key prefix whose
budgets only needed the ledger's spend, and in words when Redis had lost spend. The real CLI
against the emulator, Redis and one SQLite ledger shared by two prefixes."""

from __future__ import annotations

import redis

from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator


def test_reconcile_is_quiet_on_a_new_prefix_and_says_in_words_what_it_repaired(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    doc = next(p for p in EXAMPLES if p.endswith("invoice.pdf"))
    fresh = f"{pipeline_env['PIPELINE_KEY_PREFIX']}-b"
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        first = run_cli(env, "run", doc)
        assert first.returncode == 0, first.stdout + first.stderr
        # Another prefix over the same ledger: Redis has no budgets, the ledger has spend.
        other = run_cli({**env, "PIPELINE_KEY_PREFIX": fresh}, "run", doc)
        # The first prefix's Redis loses its day budget's spend (and the pass's spacing).
        prefix = env["PIPELINE_KEY_PREFIX"]
        lost = [k for k in sredis.scan_iter(match="{" + prefix + "}:budget:day:*", count=1000)
                if not k.endswith(":holds")]  # fmt: skip
        assert lost
        sredis.hset(lost[0], "spent", 0)
        sredis.delete(*sredis.keys("{" + prefix + "}:*reconcile*"))
        again = run_cli(env, "run", doc)
    for k in sredis.scan_iter(match="{" + fresh + "}*", count=1000):
        sredis.delete(k)
    out = other.stdout + other.stderr
    assert other.returncode == 0, out
    assert "ReconcileReport" not in out and "ledger reconcile" not in out, out
    said = again.stdout + again.stderr
    assert "ReconcileReport" not in said and "HoldsSettled" not in said
    assert "raised to the ledger's spend: Redis had less" in said, said
