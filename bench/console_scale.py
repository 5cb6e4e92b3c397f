"""How fast the console's pages render with many finished tasks stored.

``python -m bench.console_scale [-n 1000000]``: fills a private redis-server with N
finished tasks (1% failed) through the engine, then times (a) the Redis reads one live
refresh makes and (b) whole page runs of the Overview and the Tasks page with Streamlit's
AppTest (warm: the second run of each), and with ``--browser`` (c) the time a real headless
Chromium takes from opening each page until its script run has finished drawing.

``python -m bench.console_scale --sessions 1,5,10,20 -n 60000``: a team keeping the console
open. With a trickle of ``--trickle`` tasks/s (20) run by a worker in this process, it
opens that many sessions (half Overview, half Tasks) on one console server: one headless
Chromium page, on which navigation is timed, and browserless websocket sessions that
speak Streamlit's protocol and poll the pages' live panels for the others
(bench/streamlit_sessions.py: to the server they are open pages; twenty Chromiums would
take the two cores for themselves). For each
count it prints the server's CPU (per cent of one core, per page, and as a multiple of
one page's), its memory, the health check's answer time and the time to navigate
(sidebar link, then a filter) on the Chromium page. ``--chromium-sessions`` makes every
session a Chromium page, as this benchmark first did. ``--seconds`` sets each measuring
window (60), ``--gc`` runs the server with Streamlit's full garbage collection after
every rerun (``runner.postScriptGC``, which ``.streamlit/config.toml`` turns off).

Figures go in the README; nothing here asserts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from engine import PermanentError, Settings, Task, TaskQueue, TaskWorker
from engine.connection import connect
from engine.embedded import RedisServerProcess

NAMESPACE = "scale"
ROOT = Path(__file__).resolve().parent.parent
CHUNK = 20_000


def fill(queue: TaskQueue, n: int) -> float:
    """Submit and run ``n`` tasks (every hundredth fails); returns the seconds it took."""
    worker = TaskWorker(queue, max_batch=512, handlers={
        "ok": lambda task: {"answer": "fine"},
        "boom": lambda task: (_ for _ in ()).throw(PermanentError("upstream said no"))})
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        queue.submit_tasks([Task(task_type="boom" if (start + i) % 100 == 0 else "ok",
                                 payload={"query": f"question {start + i}"}, max_retries=0,
                                 session_id=f"s{(start + i) % 50}") for i in range(size)])
        worker.start(burst=True)
    return time.perf_counter() - started


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``fn()`` over ``repeat`` warm runs."""
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def page_run(path: str) -> float:
    """Seconds for a warm AppTest run of a console page (the whole script, all its reads)."""
    from streamlit.testing.v1 import AppTest
    app = AppTest.from_file(str(ROOT / path), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    return timed(app.run, repeat=3)


def _drawn(page, action, ready: str, timeout: float = 180_000) -> float:
    """Seconds from ``action()`` until ``ready`` shows and the page's run has finished."""
    from tests.support.browser import wait_idle
    started = time.perf_counter()
    action()
    page.get_by_text(ready).first.wait_for(timeout=timeout)
    wait_idle(page, timeout=timeout)
    return time.perf_counter() - started


def browser_page_times(url: str, log_dir: Path) -> dict[str, float]:
    """Seconds until each page has drawn everything in Chromium, opened by URL (a full
    load of Streamlit's frontend) and from the sidebar link; medians of three warm runs."""
    from playwright.sync_api import sync_playwright

    from tests.support.browser import ConsoleServer, console_env, launch_chromium, wait_idle
    server = ConsoleServer.start(console_env(url, NAMESPACE, CONSOLE_REFRESH_SECONDS="60"),
                                 log_dir / "console.log")
    times: dict[str, float] = {}
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            pages = (("Overview", "/", "Completed"), ("Tasks", "/Tasks", "Showing"))
            for name, path, ready in pages:
                times[f"{name} page, full load"] = statistics.median(
                    [_drawn(page, lambda: page.goto(server.page_url(path)), ready) for _ in range(4)][1:])
            for name, path, ready in pages:   # the sidebar link: what an operator clicks
                link = page.locator('[data-testid="stSidebar"] a').filter(has_text=name).first
                samples = []
                for _ in range(4):
                    page.goto(server.page_url(pages[1][1] if name == "Overview" else pages[0][1]))
                    wait_idle(page, timeout=30_000)
                    samples.append(_drawn(page, link.click, ready))
                times[f"{name} page, from the sidebar"] = statistics.median(samples[1:])
            browser.close()
    finally:
        server.stop()
    return times


# -- many sessions on one server ----------------------------------------------------------------
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of the process, in MB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Trickle:
    """Submit ``rate`` tasks a second and run them with a worker, in threads of this process."""

    def __init__(self, queue: TaskQueue, rate: float):
        self.queue, self.rate = queue, rate
        self.stopping = threading.Event()
        self.worker = TaskWorker(queue, concurrency=2, handlers={
            "ok": lambda task: {"answer": "fine"},
            "boom": lambda task: (_ for _ in ()).throw(PermanentError("upstream said no"))})
        self.threads = [threading.Thread(target=self._submit, daemon=True),
                        threading.Thread(target=self.worker.start, daemon=True)]

    def _submit(self) -> None:
        n = 0
        while not self.stopping.wait(1.0 / self.rate):
            n += 1
            self.queue.submit_task(Task(task_type="boom" if n % 50 == 0 else "ok",
                                        payload={"query": f"trickle {n}"}, max_retries=0))

    def __enter__(self) -> "Trickle":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.worker.stop()
        for thread in self.threads:
            thread.join(10)


def health_ms(url: str, samples: int = 5) -> float:
    """Median time for ``/_stcore/health`` to answer, in ms."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/_stcore/health", timeout=60) as response:
            response.read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def navigation_seconds(page, server) -> dict[str, float]:
    """On one open page: the sidebar link to Tasks, a status filter there, the link back
    to the Overview; each until the page's run has drawn. Medians of three."""
    from tests.support.browser import wait_idle

    def link(name: str):
        return page.locator('[data-testid="stSidebar"] a').filter(has_text=name).first

    def choose_status(name: str) -> None:
        page.get_by_role("combobox", name="Status").first.click()
        page.get_by_role("option", name=name, exact=True).click()

    samples: dict[str, list[float]] = {"sidebar link": [], "filter": []}
    for _ in range(3):
        page.goto(server.page_url("/"))
        wait_idle(page, timeout=120_000)
        samples["sidebar link"].append(_drawn(page, link("Tasks").click, "Showing"))
        samples["filter"].append(_drawn(page, lambda: choose_status("completed"), "of"))
        choose_status("All")
        wait_idle(page, timeout=120_000)
    return {name: statistics.median(values) for name, values in samples.items()}


def _open_session(browser, wire, server, index: int) -> tuple[Any, float]:
    """Open page number ``index`` (even: the Overview, odd: Tasks), in Chromium when
    ``wire`` is None, else as a browserless session; returns it and the seconds it took."""
    path, ready, name = ("/", "Completed", "") if index % 2 == 0 else ("/Tasks", "Showing", "Tasks")
    if wire is not None:
        return None, wire.open(server.url, name)
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(180_000)     # a saturated server is slow, not gone
    return page, _drawn(page, lambda: page.goto(server.page_url(path)), ready)


def session_bench(url: str, counts: list[int], seconds: float, gc: bool, log_dir: Path,
                  chromium_only: bool = False) -> None:
    """Open ``counts`` sessions in turn and print what the server spends on them.

    The first session is a headless Chromium page, on which navigation is timed; the
    others are browserless websocket sessions (bench/streamlit_sessions.py), which cost
    the server what a browser's do while costing the machine little, so the navigation
    figure is the server's and not that of N Chromiums sharing the cores with it. With
    ``chromium_only`` every session is a Chromium page."""
    from playwright.sync_api import sync_playwright

    from bench.streamlit_sessions import WireSessions
    from tests.support.browser import ConsoleServer, console_env, launch_chromium, wait_idle
    extra = () if gc else ("--runner.postScriptGC", "false")
    env = console_env(url, NAMESPACE, CONSOLE_REFRESH_SECONDS="3")
    server = ConsoleServer.start(env, log_dir / "console-sessions.log", extra_args=extra)
    pid = server.proc.pid
    kind = ("every page a headless Chromium page" if chromium_only else
            "1 headless Chromium page (navigation timed there) + browserless sessions")
    print(f"# sessions: {kind}; postScriptGC {'on' if gc else 'off'}, refresh 3 s, "
          f"window {seconds:g} s")
    print(f"{'pages':>5} {'server CPU':>10} {'per page':>9} {'x 1 page':>8} {'RSS MB':>14} "
          f"{'health':>8} {'open':>7} {'nav link':>9} {'filter':>7}")
    wire = None
    one_page = None
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            pages: list[Any] = []
            opened_count = 0
            for count in counts:
                opened = []
                while opened_count < count:
                    if not chromium_only and pages and wire is None:
                        wire = WireSessions()
                    page, took = _open_session(browser, wire if pages else None, server,
                                               opened_count)
                    if page is not None:
                        pages.append(page)
                    opened.append(took)
                    opened_count += 1
                time.sleep(5)                       # let the new pages settle into their ticks
                rss_start = rss_mb(pid)
                cpu_start, started = cpu_seconds(pid), time.monotonic()
                peak = rss_start
                while time.monotonic() - started < seconds:
                    time.sleep(min(5.0, seconds))
                    peak = max(peak, rss_mb(pid))
                cpu = (cpu_seconds(pid) - cpu_start) / (time.monotonic() - started) * 100
                one_page = cpu if count == 1 else one_page
                health = health_ms(server.url)
                try:
                    nav = navigation_seconds(pages[0], server)
                    wait_idle(pages[0], timeout=180_000)
                except Exception as exc:      # a figure missing says more than a crash
                    print(f"# navigation with {count} pages failed: {type(exc).__name__}")
                    nav = {"sidebar link": float("nan"), "filter": float("nan")}
                ratio = f"{cpu / one_page:>7.1f}x" if one_page else f"{'—':>8}"
                print(f"{count:>5} {cpu:>9.1f}% {cpu / count:>8.2f}% {ratio} "
                      f"{rss_start:>6.0f}→{rss_mb(pid):>4.0f}/{peak:<4.0f}"
                      f"{health:>7.1f}ms {max(opened or [0]):>6.2f}s {nav['sidebar link']:>8.2f}s "
                      f"{nav['filter']:>6.2f}s", flush=True)
            browser.close()
    finally:
        if wire is not None:
            wire.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1_000_000, help="finished tasks to store")
    parser.add_argument("--browser", action="store_true", help="also time the pages in Chromium")
    parser.add_argument("--sessions", help="comma-separated page counts, e.g. 1,5,10,20")
    parser.add_argument("--seconds", type=float, default=60.0, help="each measuring window")
    parser.add_argument("--trickle", type=float, default=20.0, help="tasks/s submitted meanwhile")
    parser.add_argument("--gc", action="store_true", help="keep runner.postScriptGC on")
    parser.add_argument("--chromium-sessions", action="store_true",
                        help="with --sessions: every session a Chromium page (default: one "
                             "Chromium page, the others browserless websocket sessions)")
    args = parser.parse_args()
    if args.sessions:
        run_sessions(args)
        return
    server = RedisServerProcess().start()
    try:
        settings = Settings.from_mapping({}, max_finished_index=0)
        queue = TaskQueue(connect(server.url), settings=settings, namespace=NAMESPACE)
        seconds = fill(queue, args.n)
        memory = queue.client.info("memory")["used_memory_human"]
        stats = queue.get_queue_stats()
        print(f"# {time.strftime('%Y-%m-%d')}: {stats.completed_tasks:,} completed + "
              f"{stats.failed_tasks:,} failed stored ({memory} in Redis), filled in {seconds:.0f} s")
        from console import data
        reads = {
            "overview refresh": lambda: data.load_overview(queue),
            "tasks page, all statuses": lambda: data.load_task_page(queue, data.TaskFilters(), 0, 50),
            "tasks page, completed, page 1000": lambda: data.load_task_page(
                queue, data.TaskFilters(status="completed"), 999 * 50, 50),
            "tasks page, text search": lambda: data.load_task_page(
                queue, data.TaskFilters(search="question 99"), 0, 50),
            "failed tasks grouped": lambda: queue.failed_task_groups(scan_limit=2000),
        }
        for name, read in reads.items():
            print(f"{name:<34}: {timed(read) * 1000:8.1f} ms of Redis reads")
        os.environ.update(REDIS_URL=server.url, QUEUE_NAMESPACE=NAMESPACE)
        for name, path in (("Overview page", "app.py"), ("Tasks page", "pages/2_Tasks.py")):
            print(f"{name + ' (whole script, AppTest)':<34}: {page_run(path) * 1000:8.1f} ms")
        if args.browser:
            import tempfile
            for name, seconds in browser_page_times(server.url, Path(tempfile.mkdtemp())).items():
                print(f"{name + ' (Chromium)':<34}: {seconds * 1000:8.1f} ms")
    finally:
        server.stop()


def run_sessions(args: argparse.Namespace) -> None:
    """``--sessions``: fill, start the trickle, measure each session count."""
    import tempfile
    server = RedisServerProcess(data_dir=tempfile.mkdtemp(prefix="console-scale-")).start()
    try:
        settings = Settings.from_mapping({}, max_finished_index=0)
        queue = TaskQueue(connect(server.url), settings=settings, namespace=NAMESPACE)
        seconds = fill(queue, args.n)
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC: {args.n:,} finished tasks stored in "
              f"{seconds:.0f} s; trickle {args.trickle:g} tasks/s")
        counts = [int(c) for c in args.sessions.split(",")]
        with Trickle(queue, args.trickle):
            session_bench(server.url, counts, args.seconds, args.gc, Path(tempfile.mkdtemp()),
                          chromium_only=args.chromium_sessions)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
