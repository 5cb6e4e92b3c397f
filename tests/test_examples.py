"""Every ```python example in the README and docs/AGENTS.md runs as written, against the
test queue (a ```py block is an illustration that is not run, such as Streamlit code).

The examples take their queue from the environment, as a user's script would: the test sets
``REDIS_URL`` / ``QUEUE_NAMESPACE`` (this test's own namespace), resets the process-wide
queue, and runs a worker with the demo agent in a thread so submitted work completes. Each
example runs in a fresh namespace dict, in a temporary directory (it may write files).
"""
from __future__ import annotations

import os
import re
import shlex
import threading
from pathlib import Path

import pytest

import engine
from engine import Settings, TaskWorker, get_task_queue
from engine.agent import build_backend, register_handlers
from tests.support.processes import OWNED_PREFIXES

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "AGENTS.md"
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str, doc: Path = DOC) -> list[tuple[str, str]]:
    """(heading above it, code) of every fenced block of ``language``, in order."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        if match.group(1) == language:
            headings = re.findall(r"^#+ (.+)$", text[:match.start()], re.M)
            found.append((headings[-1] if headings else "top", match.group(2)))
    return found


PYTHON = blocks("python")
README_PYTHON = blocks("python", README)


@pytest.fixture
def docs_env(redis_url, namespace, monkeypatch, tmp_path):
    """The environment a user's script sees, plus a demo worker running in a thread."""
    for name in list(os.environ):
        if name.startswith(OWNED_PREFIXES) or name == "USE_REDIS_QUEUE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setenv("AGENT_DEMO_LATENCY", "0")
    monkeypatch.chdir(tmp_path)                       # examples write files; no stray .env
    engine.reset_task_queue()
    queue = get_task_queue()
    worker = TaskWorker(queue, concurrency=4)
    register_handlers(worker, queue.settings)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    yield queue
    worker.stop()
    queue.client.zadd(queue.keys.marker, {"0": 0})   # wake it from its blocking wait at once
    thread.join(15)
    queue.client.close()
    engine.reset_task_queue()


def test_the_doc_has_examples_of_every_feature():
    headings = {heading for heading, _ in PYTHON}
    for wanted in ("Running an agent query", "Your own agent", "Batches", "CSV jobs",
                   "Recurring schedules"):
        assert wanted in headings, f"no python example under {wanted!r}"


@pytest.mark.parametrize("code", [code for _, code in PYTHON],
                         ids=[f"{i}-{heading}" for i, (heading, _) in enumerate(PYTHON)])
def test_example_runs_as_written(docs_env, code):
    exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})


def test_the_one_line_daily_report_is_stored(docs_env):
    [code] = [code for _, code in PYTHON if '"daily-report"' in code]
    exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    [schedule] = engine.TaskScheduler(docs_env).list_schedules()
    assert (schedule["name"], schedule["cron"], schedule["timezone"]) == ("daily-report", "0 9 * * *", "UTC")


def test_the_ollama_example_configures_the_openai_backend():
    [command] = [line for _, code in blocks("bash") for line in code.splitlines()
                 if line.startswith("AGENT_BACKEND=openai")]
    words = shlex.split(command)
    env = dict(word.split("=", 1) for word in words[:words.index("python")])
    assert words[words.index("python"):] == ["python", "worker.py"]
    backend = build_backend(Settings.from_mapping(env))
    assert (backend.name, backend.model, backend.base_url) == ("openai", "llama3.2",
                                                               "http://localhost:11434/v1")


def test_the_docs_describe_every_setting_they_add():
    text = DOC.read_text(encoding="utf-8")
    for name in ("QUEUE_CSV_MAX_BYTES", "QUEUE_CSV_MAX_ROWS", "QUEUE_SCHEDULE_TIMEZONE",
                 "QUEUE_SCHEDULE_MISFIRE_GRACE", "AGENT_OPENAI_BASE_URL", "AGENT_OPENAI_API_KEY",
                 "AGENT_TIMEOUT", "AGENT_SYSTEM_PROMPT"):
        assert f"`{name}`" in text
        Settings.from_mapping({name: "1" if "MAX" in name or "GRACE" in name or "TIMEOUT" in name
                               else "UTC" if "TIMEZONE" in name else "x"})


def test_the_readme_shows_the_agent_batch_csv_and_schedule_examples():
    code = "\n".join(block for _, block in README_PYTHON)
    for wanted in ("execute_async(", "TaskType.BATCH_QUERY", "submit_csv(", "add_schedule("):
        assert wanted in code, f"the README has no example using {wanted}"


@pytest.mark.parametrize("code", [code for _, code in README_PYTHON],
                         ids=[f"readme-{i}-{heading}" for i, (heading, _) in enumerate(README_PYTHON)])
def test_readme_example_runs_as_written(docs_env, code):
    exec(compile(code, str(README), "exec"), {"__name__": "__docs__"})
