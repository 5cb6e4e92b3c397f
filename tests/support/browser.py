"""Helpers for the browser tests: a Streamlit server, a worker process and headless Chromium.

- :class:`ConsoleServer` runs ``python -m streamlit run app.py`` on a free loopback port with
  the environment a test gives it, waits for ``/_stcore/health`` against a deadline, and
  keeps its output in a log file (so a failure can show the server's traceback).
- :class:`LoggedProcess` runs any command (here ``python worker.py``) the same way.
- :func:`require_chromium` skips when Debian's Chromium is missing, but fails under CI.
- :func:`launch_chromium` starts that Chromium through Playwright's sync API; a browser is
  never downloaded.
- :func:`screenshot` saves ``test-artifacts/screenshots/<name>.png`` at the repository root.

Nothing here sleeps for a fixed time: every wait polls a condition until a deadline.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Mapping

import pytest

from engine.embedded import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# The closed network refuses Chromium's background connections; without these flags it
# retries them for the whole run (docs/ARCHITECTURE.md, "Console").
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
)
# Variables the console or the engine read: none of the caller's may leak into a test server.
OWNED_PREFIXES = ("QUEUE_", "REDIS_", "AGENT_", "OPENAI_", "CONSOLE_")
SERVER_START_TIMEOUT = 60.0


# -- Chromium --------------------------------------------------------------------------------------
def _unavailable(reason: str) -> None:
    """Skip the test, or fail it when ``CI`` is set (a silent skip in CI would hide every
    browser test)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_chromium() -> str:
    """The Chromium path, once Playwright and Debian's Chromium are both there; skips the
    test otherwise (fails it under CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright; "
                     "no browser download is needed)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} not found: install Debian's chromium package "
                     "(apt-get install chromium) to run the browser tests")
    return CHROMIUM


EXPECT_TIMEOUT_MS = 15_000   # an expect() assertion's wait (Playwright's default: 5 s)


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium through Playwright (never a downloaded browser). Its
    assertions wait up to EXPECT_TIMEOUT_MS: with the whole suite loading a 2-core machine
    (load average ~11), a page's redraw was seen to take longer than Playwright's 5 s."""
    from playwright.sync_api import expect
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright.chromium.launch(executable_path=require_chromium(), headless=True,
                                      args=list(CHROMIUM_ARGS))


# Streamlit scrolls inside its main area and its sidebar, not the document, so a plain
# full-page screenshot stops at the window's height: measure the tallest of them instead.
_CONTENT_HEIGHT_JS = """() => Math.max(document.documentElement.scrollHeight, ...Array.from(
    document.querySelectorAll('[data-testid="stMain"], [data-testid="stSidebarContent"]'),
    (el) => el.scrollHeight))"""
MAX_SCREENSHOT_HEIGHT = 8000


def wait_idle(page: Any, timeout: float = 10_000) -> None:
    """Wait until no script run is under way (``stApp``'s ``data-test-script-state``):
    once it holds after a page opened, that page's run has drawn all it will draw."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stApp"]')).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=timeout)


def settle(page: Any, timeout: float = 10_000) -> bool:
    """Best effort: wait (up to ``timeout`` ms) for a quiet moment, when no script run is
    under way and nothing is drawn as stale (greyed out, waiting for a rerun). Live parts
    rerun every few seconds, so this can only catch a moment between two runs; returns
    whether it did."""
    from playwright.sync_api import expect

    try:
        wait_idle(page, timeout)
        expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout)
        expect(page.locator(SKELETONS)).to_have_count(0, timeout=timeout)
        return True
    except AssertionError:
        return False


# What Streamlit draws in place of an element whose code has not loaded yet (each kind of
# widget's code is fetched on first use): a page is not drawn while one shows.
SKELETONS = '[data-testid="stSkeleton"], [data-testid="stSkeletonElement"]'


def wait_drawn(page: Any, timeout: float = 30_000) -> None:
    """Wait until the page's run has ended and every element is drawn (no placeholder)."""
    from playwright.sync_api import expect

    wait_idle(page, timeout)
    expect(page.locator(SKELETONS)).to_have_count(0, timeout=timeout)


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/screenshots/<name>.png``: the window
    is made as tall as the page's content for the shot, then restored."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "page"
    path = SCREENSHOT_DIR / f"{safe}.png"
    viewport = page.viewport_size
    height = min(int(page.evaluate(_CONTENT_HEIGHT_JS)), MAX_SCREENSHOT_HEIGHT)
    try:
        if viewport and height > viewport["height"]:
            page.set_viewport_size({"width": viewport["width"], "height": height})
        settle(page)
        page.screenshot(path=str(path), full_page=True)
    finally:
        if viewport:
            page.set_viewport_size(viewport)
    return path


# -- environments ----------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any queue/console setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(OWNED_PREFIXES) and k != "USE_REDIS_QUEUE"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def console_env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The environment of a test console: the test's Redis and namespace (never the
    embedded mode, never 127.0.0.1:6379), no login, a quick refresh, and ``extra``.
    Values are set even when empty: a developer's ``.env`` (read by the console too) must
    not turn the login on or point the console elsewhere."""
    values = {"REDIS_URL": redis_url, "QUEUE_NAMESPACE": namespace, "CONSOLE_PASSWORD": "",
              "CONSOLE_REFRESH_SECONDS": "1", "AGENT_BACKEND": "demo"}
    values.update(extra)
    return clean_env(**values)


def worker_env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The environment of a real ``worker.py`` with the demo agent answering quickly (set
    explicitly: a developer's ``.env`` may name a real LLM backend)."""
    values = {"REDIS_URL": redis_url, "QUEUE_NAMESPACE": namespace, "AGENT_BACKEND": "demo",
              "AGENT_DEMO_LATENCY": "0.05", "AGENT_DEMO_FAILURE_RATE": "0",
              "QUEUE_HEARTBEAT_INTERVAL": "0.5", "QUEUE_LEASE_TIMEOUT": "5"}
    values.update(extra)
    return clean_env(**values)


# -- processes -------------------------------------------------------------------------------------
class LoggedProcess:
    """A subprocess in its own session whose stdout and stderr go to one log file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path = REPO_ROOT):
        self.args = args
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.proc.poll() is None

    def output(self, last: int = 12000) -> str:
        """The tail of what the process printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-last:]

    def wait_for_output(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first match of ``pattern`` in the output; fails after ``timeout`` or when the
        process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output(last=10**7))
            if match:
                return match
            if not self.running:
                raise AssertionError(f"{self.args[1:3]} exited ({self.proc.returncode}) before "
                                     f"printing {pattern!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no output matching {pattern!r} within {timeout} s:\n"
                                     f"{self.output()}")
            time.sleep(0.05)   # polling interval, not a wait for an outcome

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        try:
            if self.running:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            return self.proc.returncode
        finally:
            self._log.close()


class WorkerProcess(LoggedProcess):
    """``python worker.py --concurrency N`` with the agent handlers (the demo backend)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, concurrency: int = 4):
        super().__init__([sys.executable, "worker.py", "--concurrency", str(concurrency)], env,
                         log_path)

    def wait_ready(self, timeout: float = 30.0) -> str:
        """The worker id, once the worker says it is ready."""
        return self.wait_for_output(r"Worker (\S+) ready", timeout).group(1)


class ConsoleServer(LoggedProcess):
    """``python -m streamlit run app.py`` headless on a free loopback port."""

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.headless", "true", "--server.port", str(self.port),
            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false", *extra_args,
        ], env, log_path)

    def page_url(self, path: str = "/") -> str:
        """The absolute URL of a page path such as ``/Tasks``."""
        return self.url + (path if path.startswith("/") else "/" + path)

    def wait_healthy(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Wait until ``/_stcore/health`` answers ``ok``; fails with the server's output
        when the deadline passes or the process exits."""
        deadline = time.monotonic() + timeout
        health = self.url + "/_stcore/health"
        last_error: object = None
        while True:
            if not self.running:
                raise AssertionError(f"streamlit exited ({self.proc.returncode}) before it was "
                                     f"healthy:\n{self.output()}")
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200 and response.read().strip() == b"ok":
                        return
                    last_error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"streamlit at {self.url} not healthy within {timeout} s "
                                     f"(last: {last_error}):\n{self.output()}")
            time.sleep(0.1)   # polling interval

    @classmethod
    def start(cls, env: Mapping[str, str], log_path: Path,
              timeout: float = SERVER_START_TIMEOUT,
              extra_args: tuple[str, ...] = ()) -> "ConsoleServer":
        """Start a server and return it once healthy (stopped again if it never is);
        ``extra_args`` go to ``streamlit run`` (e.g. ``("--runner.postScriptGC", "false")``)."""
        server = cls(env, log_path, extra_args=extra_args)
        try:
            server.wait_healthy(timeout)
        except BaseException:
            server.stop()
            raise
        return server


# -- text that does not fit ------------------------------------------------------------------------
# Elements that hold a label or a short value: the widget labels, metric labels and values,
# the value a select box shows, tab and button labels, page links, badges, captions in
# columns. Each must show its whole text: an element whose content is wider than its box
# (``scrollWidth > clientWidth``) is cut off ("comple…", "agent_…").
LABEL_SELECTORS = (
    '[data-testid="stWidgetLabel"]', '[data-testid="stMetricLabel"]',
    '[data-testid="stMetricValue"]', '[data-baseweb="select"] [value]',
    '[data-baseweb="select"] div[title]', '[data-baseweb="tab"]',
    '[data-testid="stBaseButton-secondary"]', '[data-testid="stBaseButton-primary"]',
    '[data-testid="stPageLink-NavLink"]', '[data-testid="stCaptionContainer"]',
    '.lp-metric-label', '.lp-metric-value',       # a live panel's cards
)
_OVERFLOW_JS = """(selectors) => {
    const out = [];
    for (const selector of selectors) {
        for (const el of document.querySelectorAll(selector)) {
            const boxes = [el, ...el.querySelectorAll('*')];
            for (const box of boxes) {
                if (box.clientWidth > 0 && box.scrollWidth > box.clientWidth + 1
                        && getComputedStyle(box).overflowX !== 'visible') {
                    out.push({selector, text: (el.innerText || el.getAttribute('value') || '').slice(0, 80),
                              scroll: box.scrollWidth, client: box.clientWidth});
                    break;
                }
            }
        }
    }
    return out;
}"""


def overflowing_labels(page: Any) -> list[dict]:
    """The label and value elements whose text is cut off (see ``LABEL_SELECTORS``)."""
    return page.evaluate(_OVERFLOW_JS, list(LABEL_SELECTORS))


# -- tables whose columns do not fit -----------------------------------------------------------
# A table (``st.dataframe``, drawn on a canvas) keeps an accessible copy of the cells it
# draws: its header lists the columns at least partly in view, in order. Its scroller is
# narrower than its content when columns are hidden to the right; the last column listed
# may then be cut.
_TABLES_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"]'), (df) => {
    const keyed = df.closest('[class*="st-key-"]');
    const key = keyed ? Array.from(keyed.classList).find((c) => c.startsWith('st-key-')) : '';
    const scroller = df.querySelector('.dvn-scroller');
    const stack = df.querySelector('.dvn-stack > div');
    return {key: key.replace(/^st-key-/, ''),
            columns: Array.from(df.querySelectorAll('th[role="columnheader"]'), (h) => h.innerText.trim()),
            scrolls: !!(scroller && stack && stack.getBoundingClientRect().width > scroller.clientWidth + 1)};
})"""


# A live panel's table (console/static/live_panel.js) is HTML in a scrolling box: a column
# shows in full when its header's right edge is inside the box.
_PANEL_TABLES_JS = """() => Array.from(document.querySelectorAll('.lp-table-wrap'), (wrap) => {
    const keyed = wrap.closest('[class*="st-key-"]');
    const key = keyed ? Array.from(keyed.classList).find((c) => c.startsWith('st-key-')) : '';
    const right = wrap.getBoundingClientRect().right;
    const headers = Array.from(wrap.querySelectorAll('thead th'));
    return {key: wrap.dataset.table || key.replace(/^st-key-/, ''),
            columns: headers.filter((h) => h.innerText.trim() && h.getBoundingClientRect().right <= right + 1)
                            .map((h) => h.innerText.trim()),
            scrolls: wrap.scrollWidth > wrap.clientWidth + 1};
})"""


def table_columns(page: Any) -> list[dict]:
    """Each table on the page: ``{"key", "shown", "scrolls"}``: its container's key (a
    selectable table's generation suffix dropped), the columns shown in full (left to
    right), and whether more columns are hidden to the right. A table in a tab not open
    shows no column."""
    from playwright.sync_api import expect

    grids = page.locator('[data-testid="stDataFrame"]')
    for index in range(grids.count()):
        # The accessible copy comes a moment after the canvas, for a table in view.
        grid = grids.nth(index)
        if grid.is_visible():
            grid.scroll_into_view_if_needed()
            expect(grid.locator('th[role="columnheader"]').first).to_be_attached(timeout=15_000)
    out = [{"key": re.sub(r"_\d+$", "", t["key"]), "shown": t["columns"], "scrolls": t["scrolls"]}
           for t in page.evaluate(_PANEL_TABLES_JS)]
    for table in page.evaluate(_TABLES_JS):
        columns = table["columns"]
        out.append({"key": re.sub(r"_\d+$", "", table["key"]),
                    "shown": columns[:-1] if table["scrolls"] else columns,
                    "scrolls": table["scrolls"]})
    return out
