"""Tests of pipeline.llm: the caller (store, retries, permits, ledger order), the shared
limiter, pricing, the Gemini provider and the offline provider, and the Gemini emulator.

Nothing here is shared by these tests alone. What they use from other folders is in
tests/support/: `emulator.start_emulator` (the emulator over real HTTP), `scripted`
(a provider that plays back answers where the seam under test is not HTTP), `pdfs.make_pdf`.
Multi-process limiter tests are in tests/scenarios/.
"""
