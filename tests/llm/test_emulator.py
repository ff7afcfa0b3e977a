"""The Gemini emulator over real HTTP: auth, token rules, quotas, faults and statistics.

Raw httpx where the wire format itself is under test (error bodies, snake_case parts, /v1),
the real google-genai client where the SDK's view matters.
"""

from __future__ import annotations

import base64
import json
import math
import time

import httpx
import pytest
from google import genai
from google.genai import types

from pipeline.llm.emulator.quota import RPD_QUOTA, RPM_QUOTA, TPM_QUOTA, QuotaTracker
from tests.support.emulator import start_emulator, wait_http
from tests.support.pdfs import make_pdf
from tests.support.waiting import until

MODEL = "gemini-2.5-flash-lite"


def _post(emu, path: str, body: dict, key: str | None = "default") -> httpx.Response:
    headers = {"x-goog-api-key": emu.api_key if key == "default" else key} if key else {}
    return httpx.post(f"{emu.base_url}{path}", json=body, headers=headers, timeout=30)


def _text_body(text: str, **config) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], "generationConfig": config}


def _sdk(emu, api_version: str = "v1beta") -> genai.Client:
    return genai.Client(
        api_key=emu.api_key,
        http_options=types.HttpOptions(base_url=emu.base_url, api_version=api_version),
    )


def test_api_key_required() -> None:
    with start_emulator() as emu:
        path = f"/v1beta/models/{MODEL}:generateContent"
        missing = _post(emu, path, _text_body("hi"), key=None)
        assert missing.status_code == 403
        assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
        wrong = _post(emu, path, _text_body("hi"), key="nope")
        assert wrong.status_code == 401
        assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        by_query = httpx.post(
            f"{emu.base_url}{path}?key={emu.api_key}", json=_text_body("hi"), timeout=30
        )
        assert by_query.status_code == 200
        assert emu.stats()["by_status"] == {"200": 1, "401": 1, "403": 1}


def test_text_usage_and_v1_path() -> None:
    text = "The quarterly report shows revenue growth. Costs fell sharply in March."
    system = "You are terse."
    with start_emulator() as emu:
        client = _sdk(emu, api_version="v1")
        response = client.models.generate_content(
            model=MODEL,
            contents=text,
            config=types.GenerateContentConfig(system_instruction=system),
        )
        usage = response.usage_metadata
        assert usage.prompt_token_count == math.ceil(len(text) / 4) + math.ceil(len(system) / 4)
        assert usage.candidates_token_count == math.ceil(len(response.text) / 4)
        assert usage.thoughts_token_count == 0  # 2.x without a thinking budget
        assert usage.cached_content_token_count == 0
        assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
        assert response.model_version == MODEL
        assert "revenue growth" in response.text


@pytest.mark.parametrize(
    ("model", "per_page"), [("gemini-2.5-flash-lite", 258), ("gemini-3.8-flash", 560)]
)
def test_pdf_pages_counted_per_model_family(model: str, per_page: int) -> None:
    pdf = base64.b64encode(make_pdf(3)).decode()
    body = {
        "contents": [
            {
                "parts": [
                    {"inline_data": {"mime_type": "application/pdf", "data": pdf}},
                    {"text": "Sum"},
                ]
            }
        ]
    }
    camel = {
        "contents": [
            {
                "parts": [
                    {"inlineData": {"mimeType": "application/pdf", "data": pdf}},
                    {"text": "Sum"},
                ]
            }
        ]
    }
    with start_emulator(thinking_tokens=7) as emu:
        snake_resp = _post(emu, f"/v1beta/models/{model}:generateContent", body).json()
        camel_resp = _post(emu, f"/v1/models/{model}:generateContent", camel).json()
        counted = _post(emu, f"/v1beta/models/{model}:countTokens", body).json()
    assert snake_resp["usageMetadata"]["promptTokenCount"] == 3 * per_page + 1
    assert camel_resp["usageMetadata"] == snake_resp["usageMetadata"]
    assert counted == {"totalTokens": 3 * per_page + 1}
    thinking = snake_resp["usageMetadata"]["thoughtsTokenCount"]
    assert thinking == (7 if model.startswith("gemini-3") else 0)


def test_max_output_tokens_is_never_exceeded() -> None:
    long_text = " ".join(f"Sentence number {i} talks about budgets and queues." for i in range(200))
    with start_emulator(thinking_tokens=10) as emu:
        data = _post(
            emu,
            "/v1beta/models/gemini-3.8-flash:generateContent",
            _text_body(long_text, maxOutputTokens=40),
        ).json()
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] + usage["thoughtsTokenCount"] <= 40
    assert usage["thoughtsTokenCount"] == 10
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_json_schema_output_and_bad_json_fault() -> None:
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "severity": {"type": "string", "enum": ["low", "high"]},
            "count": {"type": "integer", "minimum": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["summary", "severity", "count", "tags"],
    }
    text = "Acme Widgets GmbH reported an outage. The outage lasted two hours."
    with start_emulator() as emu:
        good = _post(
            emu,
            f"/v1beta/models/{MODEL}:generateContent",
            _text_body(text, responseMimeType="application/json", responseJsonSchema=schema),
        ).json()
    answer = json.loads(good["candidates"][0]["content"]["parts"][0]["text"])
    assert answer["severity"] in ("low", "high") and answer["count"] >= 3
    assert answer["summary"] in text and answer["tags"]
    with start_emulator(bad_json_rate=1.0) as emu:
        bad = _post(
            emu,
            f"/v1beta/models/{MODEL}:generateContent",
            _text_body(text, responseMimeType="application/json", responseSchema=schema),
        ).json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad["candidates"][0]["content"]["parts"][0]["text"])


def test_rpm_quota_returns_google_429_body() -> None:
    with start_emulator(rpm=2) as emu:
        path = f"/v1beta/models/{MODEL}:generateContent"
        assert [_post(emu, path, _text_body(f"q{i}")).status_code for i in range(2)] == [200, 200]
        refused = _post(emu, path, _text_body("q3"))
        other_model = _post(emu, "/v1beta/models/gemini-3.8-flash:generateContent", _text_body("x"))
        stats = emu.stats()
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and error["code"] == 429
    kinds = {d["@type"].rsplit(".", 1)[1]: d for d in error["details"]}
    assert kinds["QuotaFailure"]["violations"][0]["quotaId"] == RPM_QUOTA
    assert kinds["QuotaFailure"]["violations"][0]["quotaDimensions"]["model"] == MODEL
    delay = float(kinds["RetryInfo"]["retryDelay"].rstrip("s"))
    assert 0 < delay <= 60
    assert other_model.status_code == 200  # quotas are per model
    assert stats["rate_limited"] == 1
    throttled = stats["throttled"][f"{emu.api_key}/{MODEL}"]
    assert throttled[0]["quota_id"] == RPM_QUOTA and throttled[0]["retry_delay_s"] == pytest.approx(
        delay, abs=0.002
    )
    assert len(stats["timestamps"][MODEL]) == 3


def test_tpm_and_rpd_quotas_and_no_retry_info() -> None:
    with start_emulator(tpm=30, retry_info=False) as emu:
        path = f"/v1beta/models/{MODEL}:generateContent"
        assert _post(emu, path, _text_body("x" * 80)).status_code == 200  # 20 tokens
        refused = _post(emu, path, _text_body("y" * 80)).json()["error"]
    assert refused["details"][0]["violations"][0]["quotaId"] == TPM_QUOTA
    assert not any(d["@type"].endswith("RetryInfo") for d in refused["details"])
    with start_emulator(rpd=1) as emu:
        path = f"/v1beta/models/{MODEL}:generateContent"
        assert _post(emu, path, _text_body("a")).status_code == 200
        refused = _post(emu, path, _text_body("b")).json()["error"]
    assert refused["details"][0]["violations"][0]["quotaId"] == RPD_QUOTA
    retry = next(d for d in refused["details"] if d["@type"].endswith("RetryInfo"))
    assert 0 < float(retry["retryDelay"].rstrip("s")) <= 25 * 3600  # until midnight Pacific


def test_sliding_window_frees_up() -> None:
    # A window long enough that the second request lands inside it on a busy machine.
    with start_emulator(rpm=1, window_s=5.0) as emu:
        path = f"/v1beta/models/{MODEL}:generateContent"
        assert _post(emu, path, _text_body("a")).status_code == 200
        first = _post(emu, path, _text_body("b"))
        assert first.status_code == 429
        # Poll until the window lets one through; never assert how long it took.
        status, deadline = 429, time.monotonic() + 60
        while status == 429 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = _post(emu, path, _text_body("b")).status_code
        assert status == 200


def test_quota_counts_arrivals_even_when_recorded_out_of_order() -> None:
    """The window counts requests at their arrival (the time the stats report). B arrived at
    5 s and was parsed first, A arrived at 4 s: both count, the window (3, 13] is full, and
    a place frees when A (not B) leaves, at 14 s."""
    quota = QuotaTracker(rpm=2, tpm=None, rpd=None, window_s=10.0, clock=lambda: 100.0)
    assert quota.admit("k", MODEL, 1, at=5.0) is None
    assert quota.admit("k", MODEL, 1, at=4.0) is None
    refused = quota.admit("k", MODEL, 1, at=13.0)
    assert refused is not None and refused.retry_delay_s == pytest.approx(1.0)
    assert quota.admit("k", MODEL, 1, at=14.5) is None
    assert quota.admit("k", MODEL, 1, at=14.6) is not None  # B (5 s) and the last one


def test_fault_injection_503_and_sdk_error() -> None:
    with start_emulator(fail_rate=1.0, fail_codes=(503,)) as emu:
        client = _sdk(emu)
        with pytest.raises(genai.errors.ServerError) as info:
            client.models.generate_content(model=MODEL, contents="hello")
        assert info.value.code == 503 and info.value.status == "UNAVAILABLE"
        stats = emu.stats()
    assert stats["by_status"] == {"503": 1}
    assert stats["billed"] == {}


def test_stats_count_repeats_and_billing() -> None:
    with start_emulator() as emu:
        client = _sdk(emu)
        for text in ("same prompt", "same prompt", "other prompt"):
            client.models.generate_content(model=MODEL, contents=text)
        client.models.count_tokens(model=MODEL, contents="same prompt")
        stats = emu.stats()
        assert stats["repeats"] == 1 and stats["billed_repeats"] == 1
        assert stats["requests_total"] == 4 and stats["generate_requests"] == 3
        billed = stats["billed"][MODEL]
        assert billed["requests"] == 3
        assert billed["input_tokens"] == 3 + 3 + 3  # ceil(11/4), ceil(11/4), ceil(12/4)
        emu.reset()
        assert emu.stats()["requests_total"] == 0


def test_retired_model_answered_by_successor() -> None:
    with start_emulator(model_aliases={"gemini-2.5-pro": "gemini-3.8-flash"}) as emu:
        client = _sdk(emu)  # keep a reference: a collected Client closes its connection
        response = client.models.generate_content(model="gemini-2.5-pro", contents="hello")
        stats = emu.stats()
    assert response.model_version == "gemini-3.8-flash"
    assert list(stats["billed"]) == ["gemini-3.8-flash"]


@pytest.mark.slow
def test_cli_emulator_subprocess() -> None:
    with start_emulator(subprocess=True, rpm=1, api_keys=("k-sub",)) as emu:
        assert emu.api_key == "k-sub"
        assert emu.env["GOOGLE_GEMINI_BASE_URL"] == emu.base_url
        path = f"/v1beta/models/{MODEL}:generateContent"
        assert _post(emu, path, _text_body("a")).status_code == 200
        assert _post(emu, path, _text_body("b")).status_code == 429
        assert emu.stats()["rate_limited"] == 1


@pytest.mark.slow
def test_stopping_the_emulator_does_not_wait_out_a_calls_latency() -> None:
    """`pipeline emulator` stopped (SIGTERM) with a call sleeping out a 60 s simulated
    latency ends within seconds, cutting that call: a rehearsal's Ctrl-C does not hang."""
    import contextlib
    import signal
    import subprocess as sp
    import sys
    import threading

    proc = sp.Popen([sys.executable, "-m", "pipeline", "emulator", "--host", "127.0.0.1",
                     "--port", "0", "--latency", "60,60"], stdout=sp.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().split(" on ")[1].split()[0]
        hints = [proc.stdout.readline() for _ in range(5)]  # what to export, the prefix too
        assert "  export PIPELINE_KEY_PREFIX=rehearsal\n" in hints, hints
        wait_http(base_url)

        def call() -> None:  # cut by the stop: its error is no concern of the test
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{base_url}/v1beta/models/{MODEL}:generateContent",
                           json=_text_body("slow"), timeout=90,
                           headers={"x-goog-api-key": "emulator-key"})  # fmt: skip

        threading.Thread(target=call, daemon=True).start()
        until(lambda: httpx.get(f"{base_url}/_emulator/stats").json()["in_flight"] >= 1, 30,
              "the call on the emulator")  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        # within seconds, not the 60 s the call would have slept (uvicorn ends a stop it was
        # sent by raising the same signal again, after its shutdown)
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
