"""Every Lua script's header agrees with the KEYS the store passes it, and binds them.

A script reads its keys by position; ``engine/store.py`` (SCRIPT_KEYS) builds them in the
order the header documents. Nothing else checks that the two agree: a key added to one and
not the other would make a script write to the wrong key. So each header entry is read here
and compared, by name, with the key the store passes in that position.
"""
from __future__ import annotations

import re

import pytest

from engine.keys import Keys
from engine.scripting import SCRIPT_DIR, script_names
from engine.store import SCRIPT_KEYS

RECORD = "rec-1"     # the task id / worker id / schedule name a per-record script is called for
BATCH_KEYS = ("task key prefix", "result key prefix", "waiter list prefix", "status:running",
              "status:completed", "status:cancelled", "events:log", "events (channel)",
              "batch children list prefix")
_ENTRY = re.compile(r"KEYS\[(-?\d+)(?:\.\.(-?\d+))?\]\s+(.+?)(?=\s+KEYS\[|\n|$)")


def header(name: str) -> str:
    source = (SCRIPT_DIR / f"{name}.lua").read_text(encoding="utf-8")
    assert source.startswith("--[["), f"{name}.lua has no header"
    return source[:source.index("]]")]


def declared_keys(name: str) -> list[str]:
    """The header's KEYS entries, in position order, one description each."""
    positive, batch = {}, []
    for first, last, text in _ENTRY.findall(header(name)):
        first, last = int(first), int(last or first)
        if first < 0:
            assert text.startswith("the nine batch keys"), f"{name}: {text!r}"
            batch = list(BATCH_KEYS)
            continue
        names = [part.strip() for part in text.split(",")] if last > first else [text.strip()]
        assert len(names) == last - first + 1, f"{name}: KEYS[{first}..{last}] names {names}"
        for position, description in zip(range(first, last + 1), names):
            assert position not in positive, f"{name}: KEYS[{position}] listed twice"
            positive[position] = description
    assert sorted(positive) == list(range(1, len(positive) + 1)), f"{name}: gaps in {sorted(positive)}"
    return [positive[i] for i in sorted(positive)] + batch


def key_name(k: Keys, key: str) -> str:
    """The header's words for ``key`` (as SCRIPT_KEYS built it for RECORD)."""
    names = {k.task_prefix: "task key prefix", k.task(RECORD): "task key",
             k.result_prefix: "result key prefix", k.result(RECORD): "result key",
             k.done_prefix: "waiter list prefix", k.done(RECORD): "waiter list",
             k.minute_stats_prefix: "minute stats prefix",
             k.idempotency_prefix: "idempotency key prefix",
             k.children_prefix: "batch children list prefix", k.worker(""): "worker hash prefix",
             k.worker(RECORD): "this worker's hash", k.schedule(RECORD): "the schedule's hash",
             k.events: "events (channel)", k.limit_prefix: "limit key prefix",
             k.conversation(RECORD): "conversation:<session id>"}
    if key in names:
        return names[key]
    assert key.startswith(k.prefix), key
    return key[len(k.prefix):]      # queue:urgent, status:pending, leases, marker, stats...


@pytest.mark.parametrize("name", script_names())
def test_the_header_names_every_key_the_store_passes_in_its_place(name):
    k = Keys("ns")
    passed = [key_name(k, key) for key in SCRIPT_KEYS[name](k, RECORD)]
    declared = declared_keys(name)
    assert len(passed) == len(declared), f"{name}: header lists {len(declared)} keys, store passes {len(passed)}"
    for position, (description, actual) in enumerate(zip(declared, passed), start=1):
        assert description.startswith(actual), \
            f"{name}.lua KEYS[{position}]: header says {description!r}, the store passes {actual!r}"


def test_every_script_has_a_key_list():
    assert sorted(SCRIPT_KEYS) == script_names()


@pytest.mark.parametrize("name", script_names())
def test_a_script_reads_its_keys_and_fixed_arguments_through_named_locals(name):
    """Positions appear once, in the bindings at the top; the body reads names."""
    source = (SCRIPT_DIR / f"{name}.lua").read_text(encoding="utf-8")
    body = source[source.index("]]") + 2:]
    lines = body.strip().splitlines()
    bindings = 0
    while bindings < len(lines) and re.match(r"local [\w, ]+ = (KEYS|ARGV)\[\d", lines[bindings]):
        bindings += 1
    if bindings < len(lines) and lines[bindings].startswith("local now = now_ms(now_arg)"):
        bindings += 1   # the clock, read from the override or Redis TIME
    assert bindings, f"{name}.lua does not open with its bindings"
    rest = "\n".join(lines[bindings:])
    assert not re.search(r"KEYS\[\d+\]", rest), f"{name}.lua reads KEYS by position below its bindings"
    assert not re.search(r"ARGV\[\d+\]", rest), f"{name}.lua reads ARGV by position below its bindings"
