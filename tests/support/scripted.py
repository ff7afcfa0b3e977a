"""A provider that plays back scripted answers and failures, for tests whose seam is the caller,
the limiter, the budget or the store rather than HTTP (HTTP is covered against the emulator)."""

from __future__ import annotations

from pipeline.llm.attempts import MemoryRecorder, Outcome
from pipeline.llm.failure import ProviderCallError, ProviderFailure
from pipeline.llm.provider import LLMRequest, LLMResponse


class ScriptedProvider:
    """Plays back outcomes in order and notes what the recorder held at each send."""

    name = "scripted"

    def __init__(self, recorder: MemoryRecorder, *outcomes: LLMResponse | ProviderFailure) -> None:
        self.recorder = recorder
        self.outcomes = list(outcomes)
        self.sent: list[LLMRequest] = []
        self.seen_at_send: list[list[Outcome]] = []

    async def generate(self, request: LLMRequest) -> LLMResponse:
        self.sent.append(request)
        self.seen_at_send.append([c.outcome for c in self.recorder.calls.values()])
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, ProviderFailure):
            raise ProviderCallError(outcome)
        return outcome

    async def count_tokens(self, request: LLMRequest) -> int:
        return 100

    async def aclose(self) -> None:
        return None
