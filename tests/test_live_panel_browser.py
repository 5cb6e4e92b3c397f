"""The live panels (console/live_panel.py) in a real headless Chromium, against a real
``streamlit run app.py`` that serves the live channel (console/live_channel.py).

- ``test_live_numbers_change_by_polling_not_by_rerunning``: tasks submitted to Redis
  change the Overview's and the sidebar's "Pending" cards, while the page's script is
  never run again (see ``Wire`` for how that is told); the Overview is saved as
  ``test-artifacts/screenshots/overview-live-panel.png``.
- ``test_markup_in_a_failure_is_drawn_as_text``: an error holding HTML and Markdown shows
  literally in "Most recent failures", in the first drawing and in a polled one, and its
  ``onerror`` never runs.
- ``test_a_closed_pages_tokens_are_refused``: once the page is closed, the tokens its
  panels polled with get 401.

Every wait is Playwright's ``expect``/``expect_response`` or a poll against a deadline.
"""
from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from engine import PermanentError, Task
from engine.agent import AgentExecutor
from tests.support.browser import ConsoleServer, console_env, screenshot, wait_idle

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1400, "height": 1000}
LOAD = 30_000       # ms: a page's first drawing (a fresh server imports pandas, plotly...)
LIVE = 15_000       # ms: a live panel catching up (refresh every 1 s)
PANEL_PATH = "/_live/panel"
TOKEN_HEADER = "X-Live-Token"
TOKENS_HEADER = "X-Live-Tokens"
MARKUP = ('<img src=x onerror="window.__pwned=1"> **bold** '
          '<script>window.__pwned=2</script>')
POLLED_MARKUP = '<img src=y onerror="window.__pwned=3"> **late bold**'


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture
def console(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[ConsoleServer]:
    """``streamlit run app.py`` on the test's namespace, refreshing every second; its log
    is printed at teardown, so a failure report shows the server's side."""
    server = ConsoleServer.start(console_env(redis_url, namespace, CONSOLE_REFRESH_SECONDS="1"),
                                 tmp_path / "streamlit.log")
    yield server
    server.stop()
    print(f"--- streamlit log ({server.url})\n{server.output()}")


@pytest.fixture
def new_page(chromium, request) -> Iterator[Callable[[], object]]:
    """A page in a fresh browser context (a fresh Streamlit session); saved as
    ``failed-<test>.png`` when the test fails."""
    contexts = []
    failures_before = request.session.testsfailed

    def open_page():
        context = chromium.new_context(viewport=VIEWPORT)
        context.set_default_timeout(LOAD)
        contexts.append(context)
        return context.new_page()

    yield open_page
    failed = request.session.testsfailed > failures_before
    for context in contexts:
        for page in context.pages if failed else ():
            try:
                screenshot(page, f"failed-{request.node.name}")
            except Exception as exc:   # a closed page: the report matters more
                print(f"no failure screenshot: {exc}")
        context.close()


class Wire:
    """What a page and the console's server say to each other, as the browser sees it.

    A run of the page's script, whole or a fragment, is always asked for by the browser
    (a ``rerun_script`` BackMsg on the websocket: on opening, on a widget change, on a
    fragment's timer; the server reruns by itself only on a file change, turned off by
    ``--server.runOnSave false``), and every run ends with a ``script_finished``
    ForwardMsg. Counting both on the websocket is exact; the status widget or the
    ``data-test-script-state`` attribute only show a run while it lasts. The panels'
    polls are plain HTTP requests to ``/_live/panel``, counted with their tokens."""

    def __init__(self, page) -> None:
        self.reruns_asked = 0
        self.runs_finished = 0
        self.panel_answers: list[int] = []       # status of each answered poll
        self.tokens: set[str] = set()
        self.polls_with_tokens: list[list[str]] = []    # the tokens each poll carried
        page.on("websocket", self._watch_socket)
        page.on("request", self._watch_request)
        page.on("response", self._watch_response)

    def _watch_socket(self, socket) -> None:
        socket.on("framesent", self._sent)
        socket.on("framereceived", self._received)

    def _sent(self, payload) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        if isinstance(payload, bytes):
            message = BackMsg()
            message.ParseFromString(payload)
            if message.WhichOneof("type") == "rerun_script":
                self.reruns_asked += 1

    def _received(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, bytes):
            message = ForwardMsg()
            message.ParseFromString(payload)
            if message.WhichOneof("type") == "script_finished":
                self.runs_finished += 1

    def _watch_request(self, request) -> None:
        if request.url.endswith(PANEL_PATH):      # a page polls all its panels at once
            self.polls_with_tokens.append(request.headers[TOKENS_HEADER.lower()].split())
            self.tokens.update(self.polls_with_tokens[-1])

    def _watch_response(self, response) -> None:
        if response.url.endswith(PANEL_PATH):
            self.panel_answers.append(response.status)

    def runs(self) -> tuple[int, int]:
        """(reruns the browser asked for, script runs the server finished)."""
        return self.reruns_asked, self.runs_finished


# -- page helpers ----------------------------------------------------------------------------------
def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(*args, **kwargs)


def exactly(text: str) -> re.Pattern:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def overview_panel(page):
    """The Overview's live panel (its component's key is ``overview_live``)."""
    return page.locator('[data-testid="stMain"] .st-key-overview_live .lp-root')


def sidebar_panel(page):
    """The live queue summary in the sidebar (``st.container(key="sidebar_summary")``)."""
    return page.locator('[data-testid="stSidebar"] .st-key-sidebar_summary .lp-root')


def card(scope, label: str):
    """The value of the live panel's card labelled ``label`` inside ``scope``."""
    page = getattr(scope, "page", scope)
    labelled = scope.locator('[data-testid="lp-metric"]').filter(
        has=page.locator(".lp-metric-label").filter(has_text=exactly(label)))
    return labelled.locator(".lp-metric-value")


def open_overview(page, server: ConsoleServer) -> None:
    """Open the Overview and wait until its first run is over and both panels show. A
    panel whose script threw shows Streamlit's component error instead of its cards:
    that ends the wait at once, and fails with the error's text."""
    page.goto(server.url + "/")
    broken = page.get_by_role("alert").filter(has_text="Component Error")
    for panel in (overview_panel(page), sidebar_panel(page)):
        expect(card(panel, "Pending").or_(broken).first).to_be_visible(timeout=LOAD)
    wait_idle(page, LOAD)
    assert broken.count() == 0, broken.first.inner_text()


def wait_for_polls(page, count: int) -> None:
    """Wait for ``count`` more answered polls of a live panel."""
    for _ in range(count):
        with page.expect_response(lambda r: r.url.endswith(PANEL_PATH), timeout=LIVE):
            pass


def fail_tasks(queue, make_worker, *errors: str) -> list[str]:
    """One task per error, run by a worker that fails each with that error, for good."""
    ids = [queue.submit_task(Task(task_type="markup_probe", payload={"error": e},
                                  max_retries=0)) for e in errors]
    worker = make_worker(concurrency=1)

    def fail(task):
        raise PermanentError(task.payload["error"])
    worker.register_handler("markup_probe", fail)
    worker.start(burst=True)
    assert [queue.get_task(i)["status"] for i in ids] == ["failed"] * len(ids)
    return ids


def status_with_token(server: ConsoleServer, token: str) -> tuple[int, str]:
    """The panel route's status and body for ``token``, asked as the component asks."""
    request = urllib.request.Request(server.url + PANEL_PATH, headers={TOKEN_HEADER: token})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def no_tracebacks_logged(server: ConsoleServer) -> None:
    """Errors in a panel's build or in a route would show in the server's log."""
    log = server.output(last=10**7)
    assert "Traceback" not in log, log


# -- the tests -------------------------------------------------------------------------------------
def test_live_numbers_change_by_polling_not_by_rerunning(console, new_page, queue) -> None:
    """Both "Pending" cards follow Redis while the page's script is not run again."""
    page = new_page()
    wire = Wire(page)
    open_overview(page, console)
    main, side = overview_panel(page), sidebar_panel(page)
    expect(card(main, "Pending")).to_have_text("0")
    expect(card(side, "Pending")).to_have_text("0")
    page.evaluate("window.__not_reloaded = true")
    runs = wire.runs()
    assert runs == (1, 1), f"one run to open the page, not {runs}"
    answered = len(wire.panel_answers)

    executor = AgentExecutor(queue=queue)
    for number in range(3):
        executor.execute_async(f"Counted by the live panels, {number}")
    expect(card(main, "Pending")).to_have_text("3", timeout=LIVE)
    expect(card(side, "Pending")).to_have_text("3", timeout=LIVE)
    expect(card(main, "Normal")).to_have_text("3")
    assert wire.runs() == runs, "the page's script ran again to show the change"
    # Still polling after the change, each panel with its own token.
    wait_for_polls(page, 4)
    assert len(wire.panel_answers) - answered >= 4
    assert set(wire.panel_answers) <= {200, 304}, wire.panel_answers
    assert len(wire.tokens) == 2, "the Overview's panel and the sidebar's, one token each"
    assert all(sorted(tokens) == sorted(wire.tokens) for tokens in wire.polls_with_tokens[-4:]), \
        "one poll a tick carries both panels"
    assert wire.runs() == runs, "the page's script ran again while polling"
    assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"
    drawn = main.locator(".lp-figure").filter(has=page.locator(".main-svg"))
    expect(drawn).to_have_count(2, timeout=LIVE)        # both charts, for the screenshot
    screenshot(page, "overview-live-panel")
    no_tracebacks_logged(console)


def test_markup_in_a_failure_is_drawn_as_text(console, new_page, queue, make_worker) -> None:
    """HTML and Markdown in an error are shown as typed, in the page's first drawing and
    in a polled one; no element is made from them and no script of theirs runs."""
    fail_tasks(queue, make_worker, MARKUP)
    page = new_page()
    open_overview(page, console)
    main = overview_panel(page)
    cells = main.locator(".lp-table td")
    expect(cells.filter(has_text=MARKUP)).to_have_count(1)
    expect(card(main, "Failed")).to_have_text("1")

    fail_tasks(queue, make_worker, POLLED_MARKUP)      # drawn from a poll's answer
    expect(cells.filter(has_text=POLLED_MARKUP)).to_have_count(1, timeout=LIVE)
    expect(card(main, "Failed")).to_have_text("2")
    for root in (main, sidebar_panel(page)):
        expect(root.locator("img, script")).to_have_count(0)
        expect(root.locator("strong").filter(has_text=re.compile("bold"))).to_have_count(0)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    no_tracebacks_logged(console)


def test_a_closed_pages_tokens_are_refused(console, new_page) -> None:
    """The tokens an open page polls with answer 200; once it is closed, 401 (the
    session is gone), and the refusal does not repeat the token."""
    page = new_page()
    wire = Wire(page)
    open_overview(page, console)
    wait_for_polls(page, 2)
    tokens = sorted(wire.tokens)
    assert len(tokens) == 2
    for token in tokens:
        assert status_with_token(console, token)[0] == 200

    page.context.close()            # the websocket closes with it: the session ends
    deadline = time.monotonic() + LIVE / 1000
    pending = list(tokens)
    while pending:
        status, body = status_with_token(console, pending[0])
        if status == 401:
            assert pending[0] not in body
            assert "reload the page" in body
            pending.pop(0)
            continue
        assert status == 200, (status, body)
        assert time.monotonic() < deadline, "a closed page's token is still answered"
        time.sleep(0.1)             # polling interval, not a wait for an outcome
    no_tracebacks_logged(console)


def test_a_ticked_row_opens_its_task_and_stays_ticked_as_the_table_moves(console, new_page,
                                                                         queue) -> None:
    """Ticking a row of the Tasks table opens the task under it with the selection's
    buttons; tasks submitted afterwards push the row down the live table, and it stays
    ticked (rows are selected by task id); Clear selection unticks it."""
    executor = AgentExecutor(queue=queue)
    first = executor.execute_async("The task ticked in the table")
    page = new_page()
    page.goto(console.url + "/Tasks")
    row = page.locator(".lp-table tbody tr").filter(has_text=first)
    expect(row).to_contain_text("pending", timeout=LOAD)
    row.get_by_role("checkbox", name="Select row").check()
    expect(page.get_by_role("heading", name=f"Task {first}")).to_be_visible(timeout=LIVE)
    expect(page.get_by_text("1 selected")).to_be_visible()

    later = [executor.execute_async(f"Submitted after the tick, {n}") for n in range(2)]
    for task_id in later:       # newest first: the ticked row moves down
        expect(page.locator(".lp-table tbody tr").filter(has_text=task_id)).to_have_count(
            1, timeout=LIVE)
    rows = page.locator(".lp-table tbody tr")
    assert rows.nth(0).inner_text().find(first) < 0, "the ticked row did not move down"
    expect(row.get_by_role("checkbox", name="Select row")).to_be_checked()
    for task_id in later:
        box = page.locator(".lp-table tbody tr").filter(has_text=task_id).get_by_role(
            "checkbox", name="Select row")
        expect(box).not_to_be_checked()

    page.get_by_role("button", name="Clear selection").click()
    expect(page.get_by_text("1 selected")).to_have_count(0, timeout=LIVE)
    expect(row.get_by_role("checkbox", name="Select row")).not_to_be_checked(timeout=LIVE)
    no_tracebacks_logged(console)
