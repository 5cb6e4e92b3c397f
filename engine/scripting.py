"""Loads the Lua scripts in ``engine/scripts`` and registers them on a Redis client.

A script file may not include another (Redis has no such thing), so helpers from
``lib.lua`` are prepended to each script here, and only those it uses (directly or through
another helper): every helper defined costs time on every call, measured at several
microseconds a call for the whole library. The SHA Redis caches is that of the result.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import redis

SCRIPT_DIR = Path(__file__).with_name("scripts")
LIBRARY = "lib.lua"
_DEFINITION = re.compile(r"^local (?:function )?([A-Za-z_][A-Za-z0-9_, ]*?)\s*(?:=|\()", re.M)


@lru_cache(maxsize=None)
def library_blocks() -> list[tuple[frozenset[str], str]]:
    """lib.lua cut into top-level definitions: (names defined, source) in file order.
    A block runs from one ``local`` definition (with the comments just above it) to the
    next."""
    source = (SCRIPT_DIR / LIBRARY).read_text(encoding="utf-8")
    starts = [m.start() for m in _DEFINITION.finditer(source)]
    blocks = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(source)
        text = source[start:end]
        names = frozenset(n.strip() for n in _DEFINITION.match(text).group(1).split(","))
        blocks.append((names, text))
    return blocks


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


@lru_cache(maxsize=None)
def script_source(name: str) -> str:
    """The full source of one script: the helpers it needs, then its body."""
    body = (SCRIPT_DIR / f"{name}.lua").read_text(encoding="utf-8")
    blocks = library_blocks()
    needed = _words(body)
    changed = True
    while changed:  # helpers that the needed helpers use are needed too
        changed = False
        for names, text in blocks:
            if names & needed and not _words(text) <= needed:
                needed |= _words(text)
                changed = True
    chosen = [text for names, text in blocks if names & needed]
    return "".join(chosen) + "\n" + body


def script_names() -> list[str]:
    """Every state-transition script (one file each)."""
    return sorted(p.stem for p in SCRIPT_DIR.glob("*.lua") if p.name != LIBRARY)


def register_all(client: redis.Redis) -> dict[str, "redis.commands.core.Script"]:
    """Register every script on ``client``; each call is an EVALSHA that reloads the script
    by itself if the server lost it (a restart, SCRIPT FLUSH)."""
    return {name: client.register_script(script_source(name)) for name in script_names()}
