"""Tests of pipeline.api: the HTTP endpoints, their error responses, `pipeline serve`, the
dashboard, and /metrics after real work.

Nothing here is shared by these tests alone. The app in-process or under uvicorn
(`api_settings`, `api_client`, `live_server`) is in tests/support/api.py, because the end to
end scenarios use it too. The dashboard in a real browser is in tests/scenarios/.
"""
