"""A rehearsal never says it may have been billed: the emulator prices its calls as Gemini
bills them but bills no one, so the words a user reads of a call whose answer came back
unreadable say so. Gemini's own (PIPELINE_PROVIDER=gemini, here pointed at the emulator)
still may have been billed. Real `pipeline run` processes, real Redis, SQLite, the real
google-genai client against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.scenarios.helpers import batch_id_of
from tests.support.cli import run_cli
from tests.support.emulator import start_emulator
from tests.support.paid_rig import set_faults
from tests.support.pdfs import make_pdf

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("provider", "said", "unsaid"), [
    ("emulator", "the emulator's: a rehearsal, booked at its worst case, never billed",
     "paid for"),
    ("gemini", "it was paid for", "rehearsal"),
])  # fmt: skip
def test_an_unreadable_answer_says_who_may_have_billed_it(
    pipeline_env: dict[str, str], sredis: redis.Redis, tmp_path: Path, provider: str,
    said: str, unsaid: str,
) -> None:  # fmt: skip
    doc = tmp_path / "garbled.pdf"
    doc.write_bytes(make_pdf(1, "GARBLED page {n}. Revenue rose."))
    with start_emulator() as emu:
        set_faults(emu, {"kind": "garbled", "when": "GARBLED"})
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", "PIPELINE_PROVIDER": provider}
        done = run_cli(env, "run", str(doc), columns=1000, timeout_s=180)
    assert done.returncode == 1, done.stdout + done.stderr  # the document failed
    st = run_cli(env, "status", batch_id_of(done.stdout), "--json")
    (reason,) = [d["reason"] for d in json.loads(st.stdout)["documents"]]
    assert "the model's answer was not valid JSON" in reason, reason  # not a refusal
    assert said in reason and unsaid not in reason, reason
