"""The API's side of broken input and unreachable services: a JSON 503 when Redis refuses, a
JSON 422 for a date past the calendar's end; never a 500 or a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import api_client, api_settings
from tests.support.backends import redis_refusing


async def test_api_answers_503_json_on_a_redis_error(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    settings = api_settings(tmp_path, redis_refusing(redis_url), key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.get("/jobs/0123abcd")
        assert r.status_code == 503, r.text
        assert "Redis" in r.json()["detail"]


async def test_costs_until_end_of_calendar_is_422(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    async with api_client(api_settings(tmp_path, redis_url, key_prefix)) as (client, _):
        r = await client.get("/costs", params={"until": "9999-12-31"})
        assert r.status_code == 422, r.text
        assert "too late" in r.json()["detail"]
