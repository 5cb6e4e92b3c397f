"""Loads the Lua scripts in ``engine/scripts`` and registers them on a Redis client.

A script file may not include another (Redis has no such thing), so the shared helpers in
``lib.lua`` are prepended to every script here; the SHA Redis caches is that of the whole.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import redis

SCRIPT_DIR = Path(__file__).with_name("scripts")
LIBRARY = "lib.lua"


@lru_cache(maxsize=None)
def script_source(name: str) -> str:
    """The full source of one script, shared helpers included."""
    lib = (SCRIPT_DIR / LIBRARY).read_text(encoding="utf-8")
    body = (SCRIPT_DIR / f"{name}.lua").read_text(encoding="utf-8")
    return lib + "\n" + body


def script_names() -> list[str]:
    """Every state-transition script (one file each)."""
    return sorted(p.stem for p in SCRIPT_DIR.glob("*.lua") if p.name != LIBRARY)


def register_all(client: redis.Redis) -> dict[str, "redis.commands.core.Script"]:
    """Register every script on ``client``; each call is an EVALSHA that reloads the script
    by itself if the server lost it (a restart, SCRIPT FLUSH)."""
    return {name: client.register_script(script_source(name)) for name in script_names()}
