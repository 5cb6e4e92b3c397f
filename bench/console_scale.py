"""How fast the console's pages render with many finished tasks stored.

``python -m bench.console_scale [-n 1000000]``: fills a private redis-server with N
finished tasks (1% failed) through the engine, then times (a) the Redis reads one live
refresh makes and (b) whole page runs of the Overview and the Tasks page with Streamlit's
AppTest (warm: the second run of each), and with ``--browser`` (c) the time a real headless
Chromium takes from opening each page until its script run has finished drawing.
Figures go in the README; nothing here asserts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

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


def _drawn(page, action, ready: str) -> float:
    """Seconds from ``action()`` until ``ready`` shows and the page's run has finished."""
    from tests.support.browser import wait_idle
    started = time.perf_counter()
    action()
    page.get_by_text(ready).first.wait_for(timeout=30_000)
    wait_idle(page, timeout=30_000)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1_000_000, help="finished tasks to store")
    parser.add_argument("--browser", action="store_true", help="also time the pages in Chromium")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
