"""The console in a real headless Chromium, against a real Streamlit server and worker.

- ``test_submit_query_and_csv_end_to_end``: a query and a CSV submitted from the Submit page
  are run by a real ``worker.py``, reach *completed* in the live tables, the results CSV is
  downloaded and checked, and every page is saved as a screenshot
  (``test-artifacts/screenshots/``).
- ``test_every_page_deep_link_shows_login_first``: on a freshly started server with
  ``CONSOLE_PASSWORD`` set, every page opened by its URL shows the password form and none of
  its content; signing in shows the page and the sidebar summary.
- ``test_live_parts_refresh_without_reload``: a task submitted through the engine shows up in
  the Overview numbers, the sidebar summary and the Tasks table without a reload or a click.

Every wait is Playwright's auto-waiting ``expect`` with a deadline; nothing sleeps.
Chromium is Debian's ``/usr/bin/chromium`` (skipped when missing, an error under CI).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Callable, Iterator

import pytest

from engine.agent import AgentExecutor
from tests.support.browser import (REPO_ROOT, ConsoleServer, WorkerProcess, console_env,
                                   screenshot, settle, wait_idle, worker_env)

pytestmark = pytest.mark.browser

PASSWORD = "secret"
VIEWPORT = {"width": 1400, "height": 1000}
LOAD = 30_000       # ms: first render of a page (a fresh server imports pandas, plotly...)
LIVE = 15_000       # ms: a live part catching up (refresh every 1 s)
TASK = 30_000       # ms: a task run by the worker, seen through a live part
CSV_ROWS = [
    {"id": "1", "question": "What is Redis?"},
    {"id": "2", "question": "Name three colours, please"},
    {"id": "3", "question": "Why is the sky \"blue\"?"},
]


def _page_title(stem: str) -> str:
    return re.sub(r"^\d+_", "", stem).replace("_", " ")


# Every page: (title as the console shows it, URL path). Streamlit's folder mode serves
# pages/<n>_<Name>.py at /<Name>; read from the folder so a new page is covered too.
PAGES: list[tuple[str, str]] = [("Overview", "/")] + [
    (_page_title(path.stem), "/" + re.sub(r"^\d+_", "", path.stem))
    for path in sorted((REPO_ROOT / "pages").glob("*.py"), key=lambda p: p.name)]


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture
def new_page(chromium, request) -> Iterator[Callable[[], object]]:
    """Open a page in a fresh browser context (a fresh Streamlit session). When the test
    fails, every page still open is saved as ``failed-<test>-<n>.png`` next to the other
    screenshots."""
    contexts = []
    failures_before = request.session.testsfailed

    def open_page():
        context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(LOAD)
        contexts.append(context)
        return context.new_page()

    yield open_page
    # The call phase is reported before teardown runs: a new failure is this test's.
    failed = request.session.testsfailed > failures_before
    shot = 0
    for context in contexts:
        for page in context.pages if failed else ():
            shot += 1
            try:
                screenshot(page, f"failed-{request.node.name}-{shot}")
            except Exception as exc:   # a closed or crashed page: the report matters more
                print(f"no failure screenshot: {exc}")
        context.close()


@pytest.fixture
def start_console(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[..., ConsoleServer]]:
    """Start ``streamlit run app.py`` on the test's Redis and namespace (``extra`` env on
    top); the server's log is printed at teardown, so a failure report shows it."""
    servers: list[ConsoleServer] = []

    def start(**extra: str) -> ConsoleServer:
        server = ConsoleServer(console_env(redis_url, namespace, **extra),
                               tmp_path / f"streamlit-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        print(f"--- streamlit log ({server.url})\n{server.output()}")


@pytest.fixture
def start_worker(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``python worker.py --concurrency 4`` (demo agent, 0.05 s per answer)."""
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(worker_env(redis_url, namespace),
                               tmp_path / f"worker-{len(workers)}.log", concurrency=4)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        code = worker.stop()
        print(f"--- worker log (exit {code})\n{worker.output()}")


# -- page helpers ----------------------------------------------------------------------------------
def expect(*args, **kwargs):
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(*args, **kwargs)


def exactly(text: str) -> re.Pattern:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def title_heading(page, title: str):
    """The page's ``st.title``."""
    return page.locator("h1").filter(has_text=exactly(title))


def metric(scope, label: str):
    """The value of the card labelled ``label`` inside ``scope``: an ``st.metric``, or a
    live panel's card (console/static/live_panel.js)."""
    page = getattr(scope, "page", scope)     # ``has=`` takes a locator relative to the match
    labelled = scope.locator('[data-testid="stMetric"], [data-testid="lp-metric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"], .lp-metric-label').filter(
            has_text=exactly(label)))
    return labelled.locator('[data-testid="stMetricValue"], .lp-metric-value')


def sidebar_summary(page):
    """The live queue summary in the sidebar (``st.container(key="sidebar_summary")``)."""
    return page.locator('[data-testid="stSidebar"] .st-key-sidebar_summary')


def table_row(scope, task_id: str):
    """The table row holding ``task_id``: in a live panel's table, or in an
    ``st.dataframe``. That grid is drawn on a canvas; Streamlit keeps an accessible copy
    of the visible rows in the DOM, read here (it is not "visible" to Playwright, so rows
    are checked for their text, never for visibility)."""
    return scope.locator('[data-testid="stDataFrame"] tr[role="row"], .lp-table tbody tr').filter(
        has_text=task_id)


def no_errors_shown(page) -> None:
    """No exception box (``st.exception``, redacted or not), no ``st.error`` and no "page
    not found" dialog on the page."""
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(page.locator('[data-testid="stAlertContentError"]')).to_have_count(0)
    expect(page.get_by_text("Page not found")).to_have_count(0)


def no_tracebacks_logged(server: ConsoleServer) -> None:
    """The console hides error details from browsers (``showErrorDetails``): its log is
    where an exception in a page or a live part would show."""
    log = server.output(last=10**7)
    assert "Traceback" not in log, log


def go_to(page, title: str, path: str) -> None:
    """Follow the sidebar link to a page (same session), and wait for its title."""
    href = path.lstrip("/")     # the console's links are relative: "" is the Overview
    page.locator(f'[data-testid="stSidebar"] a[data-testid="stPageLink-NavLink"][href="{href}"]').click()
    expect(title_heading(page, title)).to_be_visible(timeout=LOAD)
    expect(sidebar_summary(page)).to_be_visible()
    settle(page)            # the rest of the page drawn, as far as live parts allow
    no_errors_shown(page)


def wait_for_charts(page) -> None:
    """Plotly charts drawn (their SVG exists), so screenshots do not show empty boxes."""
    charts = page.locator('[data-testid="stPlotlyChart"], .lp-figure')
    for index in range(charts.count()):
        expect(charts.nth(index).locator(".main-svg").first).to_be_visible(timeout=LIVE)


# -- the end-to-end flow -------------------------------------------------------------------------------
def test_submit_query_and_csv_end_to_end(start_console, start_worker, new_page, queue,
                                         tmp_path: Path) -> None:
    """A query and a CSV from the Submit page, run by a real worker, completed in the live
    tables; the results CSV downloaded and checked; every page saved as a screenshot."""
    server = start_console()
    worker = start_worker()
    server.wait_healthy()
    worker_id = worker.wait_ready()

    page = new_page()
    page.goto(server.url + "/")
    expect(title_heading(page, "Overview")).to_be_visible(timeout=LOAD)
    expect(page.get_by_text("Connected to")).to_be_visible()
    # The real worker's heartbeat reaches the live numbers.
    expect(metric(page.locator(".st-key-overview_live"), "Active workers")).to_have_text("1", timeout=LIVE)

    # -- one query, watched until completed --------------------------------------------------
    go_to(page, "Submit", "/Submit")
    question = "What is the capital of France?"
    page.get_by_label("Query", exact=True).fill(question)
    page.get_by_role("button", name="Submit query").click()
    # The answer shows twice: as a toast, and as a line under the form (this one).
    flash = page.get_by_test_id("stTabs").get_by_text(re.compile(r"Submitted task [0-9a-f]+ to run now"))
    expect(flash).to_be_visible(timeout=LIVE)
    task_id = re.search(r"Submitted task ([0-9a-f]+)", flash.inner_text()).group(1)
    row = table_row(page, task_id)
    expect(row).to_contain_text("completed", timeout=TASK)
    expect(row).to_contain_text(question)          # the demo agent's answer quotes the query
    record = queue.get_task(task_id)
    assert record["status"] == "completed" and record["worker_id"] == worker_id

    # -- a CSV: upload, choose the query column, submit, follow, download ---------------------
    source = tmp_path / "questions.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "question"])
        writer.writeheader()
        writer.writerows(CSV_ROWS)
    page.get_by_role("tab", name="CSV upload").click()
    page.locator('.st-key-submit_csv_file input[type="file"]').set_input_files(str(source))
    expect(page.get_by_text(f"of {source.name}: {len(CSV_ROWS)} rows, 2 columns")).to_be_visible(timeout=LIVE)
    column = page.get_by_role("combobox", name="Query column")
    column.click()
    page.get_by_role("option", name="question", exact=True).click()
    expect(column).to_have_value("question")
    expect(page.get_by_text(f"{len(CSV_ROWS)} queries from column question")).to_be_visible()
    page.get_by_role("button", name="Submit CSV batch").click()
    flash = page.get_by_test_id("stTabs").get_by_text(
        re.compile(rf"Submitted batch [0-9a-f]+: {len(CSV_ROWS)} queries"))
    expect(flash).to_be_visible(timeout=LIVE)
    batch_id = re.search(r"Submitted batch ([0-9a-f]+)", flash.inner_text()).group(1)
    batch = page.locator(f".st-key-submit_batch_{batch_id}")
    expect(batch).to_contain_text(f"{len(CSV_ROWS)} of {len(CSV_ROWS)} done", timeout=TASK)
    download_button = batch.get_by_role("button", name="Download results CSV")
    expect(download_button).to_be_visible(timeout=LIVE)
    with page.expect_download(timeout=LIVE) as download_info:
        download_button.click()
    download = download_info.value
    assert download.failure() is None, download.failure()
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    results = list(csv.DictReader(io.StringIO(text, newline="")))
    header = next(csv.reader(io.StringIO(text)))
    assert header[:2] == ["id", "question"], header
    assert {"answer", "status"} <= set(header), header
    assert [(r["id"], r["question"]) for r in results] == [(r["id"], r["question"]) for r in CSV_ROWS]
    assert [r["status"] for r in results] == ["completed"] * len(CSV_ROWS)
    for result in results:
        assert result["question"] in result["answer"], result   # the demo agent quotes it
    # Nothing left in flight, batch parent included, as the live sidebar sees it.
    expect(metric(sidebar_summary(page), "Running")).to_have_text("0", timeout=LIVE)
    expect(metric(sidebar_summary(page), "Pending")).to_have_text("0")
    screenshot(page, "02_submit")

    # -- the task in the Tasks table, then a screenshot of every page --------------------------
    go_to(page, "Tasks", "/Tasks")
    expect(table_row(page, task_id)).to_contain_text("completed", timeout=LIVE)
    screenshot(page, "03_tasks")
    go_to(page, "Workers", "/Workers")
    expect(table_row(page, worker_id)).to_contain_text("running", timeout=LIVE)
    expect(metric(page.locator('[data-testid="stMain"]'), "Running")).to_have_text("1")
    screenshot(page, "04_workers")
    go_to(page, "Overview", "/")
    expect(metric(page.locator(".st-key-overview_live"), "Completed")).not_to_have_text("0", timeout=LIVE)
    wait_for_charts(page)
    screenshot(page, "01_overview")
    numbered = {title: f"{index:02d}_{title.lower().replace(' ', '_')}"
                for index, (title, _) in enumerate(PAGES, 1)}
    for title, path in PAGES:
        if title in ("Overview", "Submit", "Tasks", "Workers"):
            continue
        go_to(page, title, path)
        no_errors_shown(page)
        screenshot(page, numbered[title])
    no_tracebacks_logged(server)


# -- login before any page ---------------------------------------------------------------------------
def test_every_page_deep_link_shows_login_first(start_console, new_page, queue) -> None:
    """Each page opened by its URL on a fresh server with a password shows only the login;
    after signing in, the page itself and the sidebar summary."""
    task_id = AgentExecutor(queue=queue).execute_async("A task the login must keep hidden")
    server = start_console(CONSOLE_PASSWORD=PASSWORD, CONSOLE_REFRESH_SECONDS="5")
    server.wait_healthy()
    # Deep links first: the very first request to the fresh server is not the entry page.
    ordered = [p for p in PAGES if p[1] != "/"] + [p for p in PAGES if p[1] == "/"]
    for number, (title, path) in enumerate(ordered):
        page = new_page()
        page.goto(server.page_url(path))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=LOAD)
        password = page.get_by_label("Password", exact=True)
        expect(password).to_be_visible()
        # The run has ended (at the login's st.stop): nothing else of it is coming, so the
        # absence checks below cannot pass merely because the page is still loading.
        wait_idle(page, LOAD)
        expect(title_heading(page, title)).to_have_count(0)
        expect(sidebar_summary(page)).to_have_count(0)
        expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(0)
        expect(page.locator('[data-testid="stMetric"]')).to_have_count(0)
        expect(page.locator("body")).not_to_contain_text(task_id)
        expect(page.locator("body")).not_to_contain_text("Connected to")
        no_errors_shown(page)
        if number == 0:
            screenshot(page, "00_login")
            # A wrong password is refused and still shows nothing.
            password.fill("not-the-password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Wrong password.")).to_be_visible(timeout=LIVE)
            expect(title_heading(page, title)).to_have_count(0)
            expect(sidebar_summary(page)).to_have_count(0)
        password.fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(title_heading(page, title)).to_be_visible(timeout=LOAD)
        summary = sidebar_summary(page)
        expect(summary).to_be_visible()
        expect(metric(summary, "Pending")).to_have_text("1", timeout=LIVE)
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)
        if title == "Tasks":
            expect(table_row(page, task_id)).to_contain_text("pending", timeout=LIVE)
        no_errors_shown(page)
        page.context.close()
    no_tracebacks_logged(server)


# -- live parts ---------------------------------------------------------------------------------------
def test_live_parts_refresh_without_reload(start_console, new_page, queue) -> None:
    """Submitting through the engine changes the open Overview and Tasks pages by themselves."""
    server = start_console(CONSOLE_REFRESH_SECONDS="1")
    server.wait_healthy()
    overview = new_page()
    overview.goto(server.url + "/")
    live = overview.locator(".st-key-overview_live")
    expect(metric(live, "Pending")).to_have_text("0", timeout=LOAD)
    expect(metric(sidebar_summary(overview), "Pending")).to_have_text("0")
    tasks = overview.context.new_page()
    tasks.goto(server.page_url("/Tasks"))
    expect(tasks.get_by_text("No tasks match these filters.")).to_be_visible(timeout=LOAD)
    # A reload or a navigation would drop these markers.
    for page in (overview, tasks):
        page.evaluate("window.__not_reloaded = true")

    executor = AgentExecutor(queue=queue)
    first = executor.execute_async("Live refresh check one", priority="high")
    expect(metric(live, "Pending")).to_have_text("1", timeout=LIVE)
    expect(metric(live, "High")).to_have_text("1")
    expect(metric(sidebar_summary(overview), "Pending")).to_have_text("1", timeout=LIVE)
    expect(table_row(tasks, first)).to_contain_text("pending", timeout=LIVE)

    second = executor.execute_async("Live refresh check two")
    expect(metric(live, "Pending")).to_have_text("2", timeout=LIVE)
    expect(table_row(tasks, second)).to_contain_text("pending", timeout=LIVE)
    expect(tasks.get_by_text(re.compile(r"of 2 entries: 2 tasks and 0 batches"))).to_be_visible(timeout=LIVE)
    for page in (overview, tasks):
        assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"
        no_errors_shown(page)
    no_tracebacks_logged(server)


# -- text from a URL is text ----------------------------------------------------------------------------
# Closes and reopens the code span the console once put an id in.
INJECTED_LINK = "x` **[Session expired: sign in again](https://evil.example/login)** `x"


def test_markdown_in_a_link_is_drawn_as_text(start_console, new_page, queue) -> None:
    """``/Tasks?task=<markdown>`` names the task as text: no link to the injected site, no
    bold, inside the console's own warning box."""
    from urllib.parse import quote

    server = start_console()
    server.wait_healthy()
    page = new_page()
    page.goto(server.page_url("/Tasks?task=" + quote(INJECTED_LINK)))
    expect(title_heading(page, "Tasks")).to_be_visible(timeout=LOAD)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("Session expired: sign in again", exact=False).first).to_be_visible(timeout=LIVE)
    wait_idle(page, LOAD)
    expect(page.locator('a[href*="evil.example"]')).to_have_count(0)
    expect(main.locator("strong").filter(has_text="Session expired")).to_have_count(0)
    no_tracebacks_logged(server)


# -- nothing cut off, at two window sizes ------------------------------------------------------------
SIZES = ({"width": 1400, "height": 900}, {"width": 1024, "height": 768})


@pytest.fixture
def busy_queue(queue, make_worker):
    """Something on every page: done, failed, waiting and scheduled tasks with long names,
    a finished batch with a failure, a recurring schedule."""
    from engine import AgentTask, PermanentError, Task, TaskScheduler
    from engine.agent import DemoBackend
    from engine.batch_reads import child_ids

    queue.submit_tasks([AgentTask({"query": f"What is the capital of country number {i}?"},
                                  session_id="customer-support-session-0042")
                        for i in range(6)]
                       + [Task(task_type="summarise_quarterly_report", payload={"n": 1},
                               max_retries=0)])
    batch_id = queue.submit_task(Task(task_type="batch_query", payload={
        "queries": ["first question", "a question that fails", "third question"],
        "source": "quarterly-questions.csv"}))
    worker = make_worker(concurrency=1, name="long-running-worker-name")
    agent = AgentExecutor(queue=queue, backend=DemoBackend(0))

    def agent_or_fail(task):
        if "fails" in str(task.payload.get("query")):
            raise PermanentError("the upstream model refused this query")
        return agent.handle(task)
    worker.register_handler("agent_query", agent_or_fail)
    worker.register_handler("summarise_quarterly_report", lambda task: (_ for _ in ()).throw(
        PermanentError("quota exceeded for this project")))
    worker.start(burst=True)
    queue.submit_task(AgentTask({"query": "waiting in line"}, priority="high"))
    queue.submit_task(AgentTask({"query": "later"}, delay=3600))
    TaskScheduler(queue).add_schedule("nightly-report", cron="0 3 * * *",
                                      task=AgentTask(payload={"query": "nightly report"}))
    done = [t["task_id"] for t in queue.search_tasks(status="completed", limit=5)["tasks"]
            if t["task_type"] == "agent_query"]
    # Tokens, cost, a limit key and a budget, for the Overview's spend, the Limits page and
    # the task's and the batch's details.
    children = child_ids(queue, batch_id)
    queue.store.usage([(task_id, "gpt-4o-mini-2024-07-18", 123_456, 7_890, 131_346, 23_252_400)
                       for task_id in [done[0], *children]]
                      + [(done[1], "meta-llama/Llama-3.1-70B-Instruct-Turbo", 900, 100, 1000, None)])
    queue.set_limit("openai|https://api.openai.example/v1|gpt-4o-mini-2024-07-18", rpm=5000,
                    tpm=2_000_000, concurrency=64)
    queue.set_budget(session_id="customer-support-session-0042", tokens=5_000_000, cost=125.5)
    return {"task": done[0], "batch": batch_id}


# The columns of each table that must show in full at both sizes (the rest may scroll), by
# the key of the table's container; a table not listed here must show all its columns.
NEEDED_COLUMNS = {
    "overview_failures_table": ("Failed at", "Task id", "Error"),
    "tasks_table": ("Status", "Task id", "Query", "Error"),
    "workers_table": ("State", "Name", "Last heartbeat", "In hand", "Processed", "Failed"),
    "schedules_table": ("Due in", "Status", "Task id", "Query", "Error"),
    "recurring_table": ("Name", "State", "Next run", "Last error"),
    "failed_groups_table": ("Error", "Count", "Task types", "Last failed"),
    "failed_tasks_table": ("Task id", "Error", "Worker", "Failed at"),
    "events_table": ("Time", "Event", "Task id", "Status", "Worker"),
    "batches_table": ("Status", "Batch id", "Progress", "Queries", "Failed"),
    "batches_children": ("Status", "Task id", "Query", "Error", "Worker"),
    "batches_failures": ("Row", "Status", "Task id", "Query", "Error"),
    "tasks_timeline": ("Time", "What", "Status"),
}
# Views with a table in a tab that is not open at first: the tab the fit test opens too.
OTHER_TABS = {"Task detail": "Timeline", "Batch": re.compile(r"^Failures")}


def hidden_columns(page) -> list[str]:
    """The tables on the page whose needed columns (``NEEDED_COLUMNS``) do not all show."""
    from tests.support.browser import table_columns

    problems = []
    for table in table_columns(page):
        if not table["shown"] and not table["scrolls"]:
            continue                # in a tab that is not open: nothing drawn
        needed = NEEDED_COLUMNS.get(table["key"])
        missing = ([c for c in needed if c not in table["shown"]] if needed is not None
                   else ["(columns to the right)"] if table["scrolls"] else [])
        if missing:
            problems.append(f"table {table['key']} hides {', '.join(missing)} "
                            f"(shows {', '.join(table['shown'])})")
    return problems


def test_every_page_fits_at_1400_and_1024(start_console, new_page, busy_queue) -> None:
    """Every page, a task's details and a batch, at 1400×900 and 1024×768: no label or
    value is cut off (the browser's ``scrollWidth > clientWidth``), each table shows its
    needed columns in full (``NEEDED_COLUMNS``); each view is saved as a screenshot."""
    from tests.support.browser import overflowing_labels, wait_drawn

    server = start_console(CONSOLE_REFRESH_SECONDS="30")
    server.wait_healthy()
    views = PAGES + [("Task detail", f"/Tasks?task={busy_queue['task']}"),
                     ("Batch", f"/Batches?batch={busy_queue['batch']}")]
    problems = []
    for size in SIZES:
        page = new_page()
        page.set_viewport_size(size)
        for index, (title, path) in enumerate(views, 1):
            page.goto(server.page_url(path))
            heading = {"Task detail": "Tasks", "Batch": "Batches"}.get(title, title)
            expect(title_heading(page, heading)).to_be_visible(timeout=LOAD)
            expect(sidebar_summary(page)).to_be_visible()
            settle(page)
            wait_drawn(page, LOAD)          # every widget drawn: nothing left to measure later
            wait_for_charts(page)
            no_errors_shown(page)
            found = overflowing_labels(page) + hidden_columns(page)
            if title in OTHER_TABS:         # a table in a tab is drawn once the tab opens
                page.get_by_role("tab", name=OTHER_TABS[title]).click()
                found += [item for item in hidden_columns(page) if item not in found]
            for item in found:
                problems.append(f"{size['width']}x{size['height']} {title}: {item}")
            screenshot(page, f"{size['width']}x{size['height']}-{index:02d}_"
                             f"{title.lower().replace(' ', '_')}")
    assert problems == [], "\n".join(problems)
    no_tracebacks_logged(server)


# -- links you can share -----------------------------------------------------------------------------
def test_filters_live_in_the_url_and_back_restores_them(start_console, new_page, queue) -> None:
    """Choosing a status filter puts it in the URL; Back returns to the unfiltered table;
    the link opens the same view in a new session."""
    task_id = AgentExecutor(queue=queue).execute_async("A task to link to")
    server = start_console(CONSOLE_REFRESH_SECONDS="30")
    server.wait_healthy()
    page = new_page()
    page.goto(server.page_url("/Tasks"))
    expect(table_row(page, task_id)).to_contain_text("pending", timeout=LOAD)
    status = page.get_by_role("combobox", name="Status")
    status.click()
    page.get_by_role("option", name="completed", exact=True).click()
    expect(page).to_have_url(re.compile(r"status=completed"), timeout=LIVE)
    expect(page.get_by_text("No tasks match these filters.")).to_be_visible(timeout=LIVE)
    linked = page.url
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"status=completed"), timeout=LIVE)
    expect(table_row(page, task_id)).to_contain_text("pending", timeout=LIVE)
    other = new_page()
    other.goto(linked)
    expect(other.get_by_text("No tasks match these filters.")).to_be_visible(timeout=LOAD)
    expect(other.get_by_role("combobox", name="Status")).to_have_value("completed")
    no_tracebacks_logged(server)


def test_event_and_failed_task_filters_live_in_the_url(start_console, new_page, busy_queue) -> None:
    """On Events and Failed tasks a filter goes in the URL, Back and Forward step through
    the filters, and leaving the page and coming back by the sidebar keeps them."""
    server = start_console(CONSOLE_REFRESH_SECONDS="30")
    server.wait_healthy()
    page = new_page()
    page.goto(server.page_url("/Events"))
    expect(title_heading(page, "Events")).to_be_visible(timeout=LOAD)
    text = page.get_by_label("Filter by task or worker id", exact=True)
    text.fill("long-running-worker-name")
    text.press("Enter")
    expect(page).to_have_url(re.compile(r"q=long-running-worker-name"), timeout=LIVE)
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"q="), timeout=LIVE)
    expect(text).to_have_value("", timeout=LIVE)
    page.go_forward()
    expect(text).to_have_value("long-running-worker-name", timeout=LIVE)

    go_to(page, "Failed tasks", "/Failed_tasks")
    task_type = page.get_by_label("Task type", exact=True)
    task_type.fill("summarise_quarterly_report")
    task_type.press("Enter")
    expect(page).to_have_url(re.compile(r"type=summarise_quarterly_report"), timeout=LIVE)
    expect(page.get_by_text("1 error groups matching the filters", exact=False)).to_be_visible(timeout=LIVE)
    go_to(page, "Events", "/Events")
    expect(page).to_have_url(re.compile(r"q=long-running-worker-name"), timeout=LIVE)
    go_to(page, "Failed tasks", "/Failed_tasks")
    expect(page).to_have_url(re.compile(r"type=summarise_quarterly_report"), timeout=LIVE)
    expect(page.get_by_label("Task type", exact=True)).to_have_value("summarise_quarterly_report")
    no_tracebacks_logged(server)
