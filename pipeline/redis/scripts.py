"""The one loader for every Lua folder: each layer keeps its scripts in a `lua/` folder beside
its own code, one atomic script per operation, KEYS and ARGV documented at the top.

Redis Lua has no `require`, so a script names what it needs in its first line,
`-- uses: clock, _lib`, and the loader prepends those files (and what they use, each once):
first from the script's own folder, then from the shared `pipeline/redis/lua/` (`clock.lua`,
Redis TIME in milliseconds). redis-py's `Script` sends EVALSHA and falls back to EVAL on
NOSCRIPT, so a restarted Redis with an empty script cache needs nothing from us.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SHARED_LUA_DIR = Path(__file__).parent / "lua"
_USES = "-- uses:"


def _find(lua_dir: Path, name: str) -> Path:
    for folder in (lua_dir, SHARED_LUA_DIR):
        path = folder / f"{name}.lua"
        if path.exists():
            return path
    raise FileNotFoundError(f"Lua script {name}.lua is in neither {lua_dir} nor {SHARED_LUA_DIR}")


def _uses(text: str) -> list[str]:
    first = text.splitlines()[0] if text else ""
    if not first.startswith(_USES):
        return []
    return [name.strip() for name in first[len(_USES) :].split(",") if name.strip()]


@cache
def lua_source(lua_dir: Path, name: str) -> str:
    """The text of `lua_dir/name.lua` with every file it uses prepended, dependencies first.

    Raises FileNotFoundError naming both folders when a script or a library is missing.
    """
    order: list[str] = []

    def visit(script: str) -> None:
        if script in order:
            return
        for dep in _uses(_find(lua_dir, script).read_text()):
            visit(dep)
        order.append(script)

    visit(name)
    return "\n".join(_find(lua_dir, part).read_text() for part in order)


def register(redis: Redis, lua_dir: Path, *names: str) -> dict[str, AsyncScript]:
    """Register `names` (files in `lua_dir`, without `.lua`) on `redis`: name -> callable script."""
    return {name: redis.register_script(lua_source(lua_dir, name)) for name in names}
