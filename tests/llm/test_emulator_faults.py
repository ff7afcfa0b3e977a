"""The emulator's injected faults as google-genai sees them, its control endpoint, and the
bill it keeps whatever the response says (pipeline/llm/emulator/faults.py, stats.py)."""

from __future__ import annotations

from decimal import Decimal

import httpx
from google import genai
from google.genai import types

from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import set_faults

MODEL = "gemini-3.5-flash-lite"


def _sdk(emu: RunningEmulator) -> genai.Client:
    options = types.HttpOptions(base_url=emu.base_url, api_version="v1beta")
    return genai.Client(api_key=emu.api_key, http_options=options)


def _json_config(max_out: int) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        max_output_tokens=max_out, response_mime_type="application/json",
        response_json_schema={"type": "object", "properties": {"summary": {"type": "string"}}},
    )  # fmt: skip


def test_each_fault_reaches_the_sdk_as_the_real_api_sends_it() -> None:
    with start_emulator() as emu:
        client = _sdk(emu)
        set_faults(emu, {"kind": "verbose", "when": "V", "tokens": 500})
        ask = client.models.generate_content
        cut = ask(model=MODEL, contents="V report", config=_json_config(100))
        assert cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
        meta = cut.usage_metadata
        assert meta.candidates_token_count + meta.thoughts_token_count <= 100
        fits = ask(model=MODEL, contents="V report", config=_json_config(1000))
        assert fits.candidates[0].finish_reason == types.FinishReason.STOP

        set_faults(emu, {"kind": "think", "tokens": 10_000})
        empty = client.models.generate_content(model=MODEL, contents="x", config=_json_config(64))
        assert empty.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
        assert not empty.text and empty.usage_metadata.thoughts_token_count == 64

        set_faults(emu, {"kind": "block"})
        blocked = client.models.generate_content(model=MODEL, contents="x")
        assert not blocked.candidates
        assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT

        set_faults(emu, {"kind": "finish", "reason": "RECITATION"})
        stopped = client.models.generate_content(model=MODEL, contents="x")
        assert stopped.candidates[0].finish_reason == types.FinishReason.RECITATION

        set_faults(emu, {"kind": "no_usage"})
        assert client.models.generate_content(model=MODEL, contents="x").usage_metadata is None
        set_faults(emu, {"kind": "total_only"})
        meta = client.models.generate_content(model=MODEL, contents="x").usage_metadata
        assert meta.total_token_count and meta.prompt_token_count is None

        set_faults(emu, {"kind": "inflate", "tokens": 9000})
        pdf = types.Part.from_bytes(data=_one_page_pdf(), mime_type="application/pdf")
        counted = client.models.count_tokens(model=MODEL, contents=[pdf]).total_tokens
        assert counted == 9000
        set_faults(emu, {"kind": "overbill", "tokens": 7})
        billed = client.models.generate_content(model=MODEL, contents="abcd")
        assert billed.usage_metadata.prompt_token_count == 1 + 7
        stats = emu.stats()
    # Billed whatever the response said: every request above is on the bill.
    assert stats["billed_total"]["requests"] == stats["generate_requests"] == 8
    assert Decimal(stats["billed_total"]["cost_usd"]) == sum(
        Decimal(r["cost_usd"]) for r in stats["requests"]
    ) > 0


def _one_page_pdf() -> bytes:
    from tests.support.pdfs import make_pdf

    return make_pdf(1)


def test_faults_fire_only_when_and_as_often_as_asked_and_bad_ones_are_refused() -> None:
    with start_emulator() as emu:
        client = _sdk(emu)
        set_faults(emu, {"kind": "block", "when": "SECRET", "times": 1})
        assert client.models.generate_content(model=MODEL, contents="plain").candidates
        assert not client.models.generate_content(model=MODEL, contents="SECRET").candidates
        assert client.models.generate_content(model=MODEL, contents="SECRET").candidates
        listed = httpx.get(f"{emu.base_url}/_emulator/faults", timeout=10).json()["faults"]
        assert listed == [{"kind": "block", "when": "SECRET", "tokens": 0, "reason": "",
                           "times": 1}]  # fmt: skip
        for bad in ({"kind": "nonsense"}, {"kind": "block", "colour": "red"},
                    {"kind": "think", "tokens": -1}):  # fmt: skip
            response = httpx.post(f"{emu.base_url}/_emulator/faults",
                                  json={"faults": [bad]}, timeout=10)  # fmt: skip
            assert response.status_code == 400, bad
            assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_body_over_the_request_limit_is_refused_unbilled() -> None:
    with start_emulator(max_request_bytes=2000) as emu:
        client = _sdk(emu)
        try:
            client.models.generate_content(model=MODEL, contents="x" * 3000)
            raise AssertionError("a 3 kB body passed a 2 kB limit")
        except genai.errors.ClientError as exc:
            assert exc.code == 400 and "payload size exceeds the limit" in str(exc.message)
        stats = emu.stats()
    assert stats["billed_total"]["requests"] == 0 and stats["largest_request_bytes"] > 2000
