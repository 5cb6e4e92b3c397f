"""Helpers for testing the console (used by ``tests/test_console_*.py``). No pytest here."""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import redis

from .registry import PAGES

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
# Every page but the entry script, by title (from the one registry, console/registry.py).
PAGE_FILES = {page.title: page.path for page in PAGES if page.path != "app.py"}


@dataclass
class RedisCalls:
    """Round trips (a command, or a whole pipeline) and commands sent, with their names."""

    round_trips: int = 0
    commands: int = 0
    names: list[str] = field(default_factory=list)


@contextlib.contextmanager
def count_redis_calls(client: redis.Redis) -> Iterator[RedisCalls]:
    """Count what goes through ``client`` and the pipelines built from it: a command sent
    on its own is one round trip; a pipeline is one round trip carrying many commands."""
    calls = RedisCalls()
    original_command = client.execute_command
    original_execute = redis.client.Pipeline.execute
    pool = client.connection_pool

    def command(*args, **kwargs):
        calls.round_trips += 1
        calls.commands += 1
        calls.names.append(str(args[0]))
        return original_command(*args, **kwargs)

    def execute(pipe, *args, **kwargs):
        # An empty pipeline sends nothing (redis-py returns at once), so it is not counted.
        if pipe.connection_pool is pool and pipe.command_stack:
            calls.round_trips += 1
            calls.commands += len(pipe.command_stack)
            calls.names.append(f"pipeline[{len(pipe.command_stack)}]")
        return original_execute(pipe, *args, **kwargs)

    client.execute_command = command
    redis.client.Pipeline.execute = execute
    try:
        yield calls
    finally:
        del client.execute_command
        redis.client.Pipeline.execute = original_execute


def button(at, label: str):
    """The (form submit) button labelled ``label`` on the AppTest page."""
    matches = [b for b in at.button if b.label == label]    # includes form submit buttons
    if not matches:
        raise LookupError(f"no button {label!r}; buttons: {[b.label for b in at.button]}")
    return matches[0]


def panels(node, key: str | None = None) -> list[dict]:
    """The live panels (console/live_panel.py) drawn under ``node`` (an AppTest page, or
    its ``main`` or ``sidebar``), as the browser gets them: their data's ``panel``; only
    those whose component key starts with ``key``, when given."""
    import json
    found = []
    for element in node.get("bidi_component"):
        data = json.loads(element.proto.json or "{}")
        if key is not None and not (element.key or "").startswith(key):
            continue
        if element.proto.component_name.endswith("live_panel") and "panel" in data:
            found.append(data["panel"])
    return found


def cards(node) -> dict[str, str]:
    """``label -> value`` of every card under ``node``: ``st.metric`` elements and the
    cards of live panels."""
    from .panel import panel_values
    values = {m.label: m.value for m in node.get("metric")}
    for panel in panels(node):
        values.update(panel_values(panel))
    return values


def panel_table(node, column: str | None = None, key: str | None = None):
    """The first table of a live panel under ``node`` (whose component key starts with
    ``key``, when given) that has ``column``, as a DataFrame of its cells' text. The row ids are the frame's
    ``attrs["ids"]``."""
    import pandas as pd

    from .panel import walk_blocks
    for panel in panels(node, key):
        for block in walk_blocks(panel["blocks"]):
            if block["kind"] == "table" and (column is None or column in block["columns"]):
                rows = [[c["text"] if isinstance(c, dict) else c for c in row]
                        for row in block["rows"]]
                frame = pd.DataFrame(rows, columns=block["columns"])
                frame.attrs["ids"] = block["ids"] or []
                return frame
    raise LookupError(f"no live table with a {column!r} column (key {key!r})")


def table(at, key: str):
    """The table ``key`` on the AppTest page, as a DataFrame: a selectable ``st.dataframe``
    (its widget key starts with ``key``), a read-only one (inside the container keyed
    ``key``) or a live panel's table (its component key starts with ``key``)."""
    frames = [d for d in at.dataframe if (d.key or "").startswith(key)]
    if not frames:
        try:
            frames = list(at.get_by_key(key).dataframe)
        except KeyError:
            frames = []
    if frames:
        return frames[0].value
    return panel_table(at, key=key)


def select_rows(at, key: str, rows: list[int]):
    """Select rows (by position) of the selectable table ``key`` as a click in the browser
    would, and run the page."""
    if any((d.key or "").startswith(key) for d in at.dataframe):
        generation = (at.session_state[f"{key}__generation"]
                      if f"{key}__generation" in at.session_state else 0)
        at.session_state[f"{key}_table_{generation}"] = {
            "selection": {"rows": rows, "columns": [], "cells": []}}
    else:       # a live panel: its on-change callback keeps the ticked ids here
        ids = panel_table(at, key=f"{key}_table").attrs["ids"]
        at.session_state[f"{key}__selected"] = [ids[r] for r in rows]
    return at.run()


def texts(at) -> str:
    """Every piece of text on the AppTest page, joined: to assert what is (not) shown."""
    from .panel import panel_text
    parts = [panel_text(panel) for panel in panels(at)]
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "code", "info",
                 "success", "warning", "error", "exception"):
        parts.extend(str(getattr(node, "value", "")) for node in at.get(kind))
    for node in at.get("metric"):
        parts.append(f"{node.label} {node.value}")
    for node in at.get("expander"):
        parts.append(str(getattr(node, "label", "")))
    return "\n".join(parts)


# -- every page against one queue ----------------------------------------------------------------
PAGE_PROBLEM_PREFIXES = ("Could not read",)    # a redis_guard warning: that part drew nothing


@contextlib.contextmanager
def _console_env(redis_url: str, namespace: str, extra: dict[str, str] | None) -> Iterator[None]:
    """Point ``Settings.from_env`` at ``redis_url``/``namespace`` (and ``extra``) for the
    block, then restore the environment and drop the cached connections."""
    import os

    import streamlit as st

    values = {"REDIS_URL": redis_url, "QUEUE_NAMESPACE": namespace, "CONSOLE_PASSWORD": "",
              **(extra or {})}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        st.cache_resource.clear()
        st.cache_data.clear()


def _page_problems(at, where: str) -> list[str]:
    problems = [f"{where}: {getattr(e, 'value', e)}" for e in at.exception]
    problems += [f"{where}: {w.value}" for w in at.warning
                 if str(w.value).startswith(PAGE_PROBLEM_PREFIXES)]
    return problems


def page_exceptions(redis_url: str, namespace: str, *, task_ids: Sequence[str] = (),
                    env: dict[str, str] | None = None, timeout: float = 60) -> list[str]:
    """Render every console page with Streamlit's AppTest against the queue in
    ``namespace`` on ``redis_url``, and return what went wrong, one line each
    (``"<page>: <message>"``): exceptions, and parts of a page that could not read Redis
    (their ``redis_guard`` warning). An empty list means every page drew.

    Each page is drawn twice (a first run and one live refresh); the Tasks page is also
    drawn with each of ``task_ids`` opened (``/Tasks?task=<id>``, as a shared link does),
    and filtered on each status. ``env`` adds environment variables (e.g.
    ``{"QUEUE_LEASE_TIMEOUT": "1"}``) for the duration; the environment is restored after.
    """
    problems: list[str] = []

    def run(where: str, at) -> None:
        try:
            at.run()
            at.run()
        except Exception as exc:    # AppTest itself failing (a timeout) is a problem too
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
            return
        problems.extend(_page_problems(at, where))

    from streamlit import config

    from . import shared

    # The console hides error details from browsers; a test wants the message. Every
    # run reads Redis as it is now (no read shared from a run a moment ago).
    shown, sharing = config.get_option("client.showErrorDetails"), shared.ENABLED
    config.set_option("client.showErrorDetails", "full")
    shared.ENABLED = False
    try:
        with _console_env(redis_url, namespace, env):
            _run_every_page(run, task_ids, timeout)
    finally:
        config.set_option("client.showErrorDetails", shown)
        shared.ENABLED = sharing
    return problems


def _run_every_page(run, task_ids: Sequence[str], timeout: float) -> None:
    from streamlit.testing.v1 import AppTest

    from engine.keys import STATUS_NAMES

    run("Overview", AppTest.from_file(str(APP), default_timeout=timeout))
    for name, path in PAGE_FILES.items():
        run(name, AppTest.from_file(str(ROOT / path), default_timeout=timeout))
    tasks_page = str(ROOT / PAGE_FILES["Tasks"])
    for status in STATUS_NAMES:
        at = AppTest.from_file(tasks_page, default_timeout=timeout)
        at.query_params["status"] = status
        run(f"Tasks (status {status})", at)
    for task_id in task_ids:
        at = AppTest.from_file(tasks_page, default_timeout=timeout)
        at.query_params["task"] = task_id
        run(f"Tasks (task {task_id!r})", at)


# -- what Markdown a source would draw ------------------------------------------------------------
_ESCAPED = re.compile(r"\\[!-/:-@\[-`{-~]")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)[^)]*\)")
_BOLD = re.compile(r"(\*\*|__)(.+?)\1", re.S)
_BARE_URL = re.compile(r"(?:https?://|www\.)\S+")


def markup_in(source: str) -> dict[str, list]:
    """The links (``(text, target)``, bare URLs included) and bold spans that the Markdown
    ``source`` would draw: escaped characters and code spans draw as themselves, so they
    are left out. A small reader of the CommonMark rules these pages rely on, for tests."""
    # Two copies of one length: in ``masked`` an escaped character is gone (it pairs with
    # nothing), in ``kept`` it is there as drawn. Code spans draw as themselves.
    masked = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), _ESCAPED.sub("\x00\x00", source))
    kept = _ESCAPED.sub(lambda m: "\x00" + m.group(0)[1], source)
    kept = "".join(k if m != " " or k == " " else " " for k, m in zip(kept, masked))
    found = list(_LINK.finditer(masked))
    links = [(kept[m.start(1):m.end(1)].replace("\x00", ""),
              kept[m.start(2):m.end(2)].replace("\x00", "")) for m in found]
    # Bare URLs are found in the text as drawn, escapes read: GitHub-flavoured Markdown
    # links them after parsing, so escaping their punctuation does not stop it.
    drawn = list(kept)
    for m in found:
        drawn[m.start():m.end()] = " " * (m.end() - m.start())
    bare = [(u.group(0), u.group(0)) for u in _BARE_URL.finditer("".join(drawn).replace("\x00", ""))]
    bold = [kept[m.start(2):m.end(2)].replace("\x00", "") for m in _BOLD.finditer(masked)]
    return {"links": links + bare, "bold": bold}


def plain_texts(at) -> str:
    """:func:`texts` with Markdown escapes removed: the words as an operator reads them."""
    return unescape(texts(at))


def unescape(text: str) -> str:
    """Markdown source as it reads: escapes removed (see ``console.text.md``)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(text)).replace("\u2060", "")


def facts_of(at) -> dict[str, str]:
    """The label → value pairs drawn by ``console.components.facts`` on the page."""
    out = {}
    for column in at.columns:
        captions, markdowns = list(column.caption), list(column.markdown)
        if len(captions) == 1 and len(markdowns) == 1:
            out[unescape(captions[0].value)] = unescape(markdowns[0].value)
    return out
