"""LLM calls: providers (Gemini, offline, emulator), the shared limiter, pricing and retries."""
