"""A Gemini emulator that speaks the REST API google-genai uses (`pipeline emulator`).

app.py serves the routes, content.py writes the answers, quota.py enforces per-minute and
per-day quotas with the real 429 bodies, faults.py injects the answers a bad day brings
(MAX_TOKENS, blocked prompts, missing usage, inflated counts), stats.py keeps the bill.
"""
