"""`LLMRequest.payload_bytes` is the size of the body google-genai really sends: checked
against what the emulator receives, byte for byte, for the shapes the pipeline sends."""

from __future__ import annotations

import pytest

from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import LLMRequest, Part
from tasks.plan import analyze_prompt, analyze_request
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"


def _requests() -> list[LLMRequest]:
    pdf = make_pdf(2)
    return [
        LLMRequest(model=MODEL, parts=(Part(text="Summarise: naïve café, “quotes” ✓"),)),
        LLMRequest(model=MODEL, parts=(Part(text="x"),), system="Be terse.", temperature=0.2,
                   max_output_tokens=64, thinking_budget=0),
        analyze_request(MODEL, analyze_prompt(), pdf, filename="Straße ünïcode.pdf",
                        page_count=2, first_page=1, last_page=2),
    ]


@pytest.mark.parametrize("index", range(3))
async def test_payload_bytes_is_what_the_sdk_sends(index: int) -> None:
    request = _requests()[index]
    with start_emulator() as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        try:
            await provider.generate(request)
        finally:
            await provider.aclose()
        (logged,) = emu.stats()["requests"]
    assert logged["bytes"] == request.payload_bytes()
