"""The live channel (console/live_channel.py) without a browser: who holds which token, and
what ``GET /_live/panel`` answers.

- ``Subscriptions`` with a stand-in for Streamlit's "is this session connected": one token
  per (session, panel), kept across redraws, forgotten with its session, at most
  ``MAX_PER_SESSION`` a session.
- The routes through Starlette's ``TestClient`` on ``Starlette(routes=live_routes(table))``:
  200 with the panel, 401 without a live token (the token never echoed), 304 on the ETag,
  gzip when asked, one build a tick for every subscription sharing it, 503 without a
  traceback when Redis does not answer, a fresh build after ``queue_changed``, and the
  Plotly library with a cache header.
- Signing out (console/frame.py) forgets the session's tokens, checked in ``AppTest``.
"""
from __future__ import annotations

import gzip
import json
import threading
from typing import Callable, Iterator

import pytest
import redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from console import live_channel, shared
from console.live_channel import (MAX_PER_SESSION, PANEL_PATH, PLOTLY_PATH, SEEN_HEADER,
                                  TOKEN_HEADER, TOKENS_HEADER, LiveChannelMiddleware,
                                  Subscription, Subscriptions, live_routes)
from console.panel import Panel, panel_values
from console.shared import queue_changed
from engine import AgentTask, TaskQueue

TICK = 30.0          # seconds: long enough that a test's polls all fall in one tick
BROKEN_REDIS = "Error 111 connecting to redis.internal.example:6380. Connection refused."


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def channel_flag(monkeypatch) -> Iterator[None]:
    """``live_routes()`` marks the process as serving the channel; put the flag back, or
    AppTest-based tests run later would subscribe instead of drawing fragments. Sharing is
    on here whatever another test's fixture left (the one-build-a-tick checks need it)."""
    monkeypatch.setattr(live_channel, "_serving", live_channel._serving)
    monkeypatch.setattr(live_channel, "_base", live_channel._base)
    monkeypatch.setattr(shared, "ENABLED", True)
    yield


class Alive:
    """The sessions a test says are connected (stands in for Streamlit's runtime)."""

    def __init__(self, *sessions: str) -> None:
        self.sessions = set(sessions)

    def __call__(self, session_id: str) -> bool:
        return session_id in self.sessions


class CountedBuild:
    """A panel build that counts its calls and shows ``value`` as a card."""

    def __init__(self, value: str = "1") -> None:
        self.value = value
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        return as_json(Panel().metrics([("Pending", self.value)], per_row=1))


def as_json(panel: Panel) -> bytes:
    """A panel's JSON, as console/live_panel.py encodes it."""
    return json.dumps(panel.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def subscription(session_id: str, build: Callable[[], bytes], queue: TaskQueue | None = None,
                 *share: object, what: str = "the test panel",
                 used: float | None = None) -> Subscription:
    """A subscription as live_panel() makes one (``queue`` unused by the table alone);
    ``used`` sets when it was last polled."""
    made = Subscription(session_id, queue, what, build, share, TICK)   # type: ignore[arg-type]
    if used is not None:
        made.used = used
    return made


@pytest.fixture
def alive() -> Alive:
    """Sessions s1 and s2 connected."""
    return Alive("s1", "s2")


@pytest.fixture
def table(alive: Alive) -> Subscriptions:
    """A token table of its own (not the process's), on the ``alive`` stand-in."""
    return Subscriptions(alive)


@pytest.fixture
def client(table: Subscriptions) -> Iterator[TestClient]:
    """The channel's routes alone, served from ``table``."""
    with TestClient(Starlette(routes=live_routes(table))) as test_client:
        yield test_client


def poll(client: TestClient, token: str | None, **headers: str):
    """One poll of the panel route, as the component sends it (no gzip unless asked)."""
    sent = {"Accept-Encoding": "identity", **headers}
    if token is not None:
        sent[TOKEN_HEADER] = token
    return client.get(PANEL_PATH, headers=sent)


# -- the token table ----------------------------------------------------------------------------
def test_a_token_per_session_and_panel(table: Subscriptions) -> None:
    build = CountedBuild()
    tokens = {(s, k): table.subscribe(k, subscription(s, build))
              for s in ("s1", "s2") for k in ("overview_live", "sidebar_summary_panel")}
    assert len(set(tokens.values())) == 4
    assert all(len(token) >= 32 for token in tokens.values())      # not guessable
    for (session_id, _), token in tokens.items():
        assert table.find(token).session_id == session_id
    assert table.find("not-a-token") is None
    assert table.find("") is None


def test_redrawing_a_panel_keeps_its_token_and_answers_the_new_view(table, queue) -> None:
    first, second = CountedBuild("first"), CountedBuild("second")
    token = table.subscribe("overview_live", subscription("s1", first, queue, "filter A"))
    assert panel_values(json.loads(table.find(token).answer().body)) == {"Pending": "first"}
    # A rerun with new filters: the page keeps polling the same token.
    again = table.subscribe("overview_live", subscription("s1", second, queue, "filter B"))
    assert again == token
    assert len(table) == 1
    assert panel_values(json.loads(table.find(token).answer().body)) == {"Pending": "second"}
    assert (first.calls, second.calls) == (1, 1)


def test_a_closed_session_loses_its_tokens(table: Subscriptions, alive: Alive) -> None:
    build = CountedBuild()
    mine = [table.subscribe(k, subscription("s1", build)) for k in ("a", "b")]
    theirs = table.subscribe("a", subscription("s2", build))
    alive.sessions.discard("s1")
    assert table.find(mine[0]) is None
    # Forgotten, not merely refused: the session coming back does not revive them.
    alive.sessions.add("s1")
    assert table.find(mine[1]) is None
    assert len(table) == 1
    assert table.find(theirs) is not None


def test_forget_session_drops_only_that_sessions_tokens(table: Subscriptions) -> None:
    build = CountedBuild()
    mine = [table.subscribe(k, subscription("s1", build)) for k in ("a", "b", "c")]
    theirs = table.subscribe("a", subscription("s2", build))
    table.forget_session("s1")
    assert [table.find(token) for token in mine] == [None, None, None]
    assert table.find(theirs).session_id == "s2"
    # Drawing the panel again (signed in anew) hands out a new token.
    assert table.subscribe("a", subscription("s1", build)) not in mine


def test_a_session_keeps_at_most_max_per_session_panels(table: Subscriptions) -> None:
    build = CountedBuild()
    tokens = []
    for index in range(MAX_PER_SESSION):       # polled in this order, whatever the clock
        tokens.append(table.subscribe(f"panel{index}", subscription("s1", build,
                                                                    used=float(index))))
    other = table.subscribe("panel0", subscription("s2", build))
    assert table.find(tokens[0]) is not None        # polled now: the most recently used
    tokens.append(table.subscribe("one_more", subscription("s1", build)))
    assert len(table) == MAX_PER_SESSION + 1        # s1's sixteen, and s2's one
    assert table.find(tokens[1]) is None            # the least recently used was dropped
    assert all(table.find(token) is not None for token in [tokens[0], *tokens[2:]])
    assert table.find(other) is not None


def test_the_periodic_sweep_drops_sessions_that_closed(table, alive, monkeypatch) -> None:
    build = CountedBuild()
    table.subscribe("a", subscription("s1", build))
    kept = table.subscribe("a", subscription("s2", build))
    alive.sessions.discard("s1")
    monkeypatch.setattr(live_channel, "SWEEP_EVERY", 0.0)   # every subscribe sweeps
    table.subscribe("b", subscription("s2", build))
    assert len(table) == 2
    assert table.find(kept) is not None


# -- the panel route ----------------------------------------------------------------------------
def test_a_live_token_gets_the_panel_as_json(table, client, queue) -> None:
    token = table.subscribe("overview_live", subscription("s1", CountedBuild("7"), queue))
    answer = poll(client, token)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["etag"].startswith('"')
    assert "content-encoding" not in answer.headers
    assert panel_values(answer.json()) == {"Pending": "7"}


def test_the_real_summary_panel_shows_what_redis_holds(table, client, queue) -> None:
    from console.widgets import summary_panel

    token = table.subscribe("sidebar_summary_panel", subscription(
        "s1", lambda: as_json(summary_panel(queue)), queue, "Queue", what="the queue summary"))
    assert panel_values(poll(client, token).json())["Pending"] == "0"
    queue.submit_task(AgentTask({"query": "counted by the live summary"}))
    queue_changed(queue)            # as an action taken from the console does
    assert panel_values(poll(client, token).json())["Pending"] == "1"


@pytest.mark.parametrize("token", [None, "", "made-up-token-0123456789abcdef"])
def test_no_live_token_is_401(client, token) -> None:
    answer = poll(client, token)
    assert answer.status_code == 401
    assert answer.headers["cache-control"] == "no-store"
    assert "reload the page" in answer.json()["error"]
    if token:
        assert token not in answer.text


def test_a_closed_sessions_token_is_401_and_not_echoed(table, client, alive, queue) -> None:
    token = table.subscribe("overview_live", subscription("s1", CountedBuild(), queue))
    assert poll(client, token).status_code == 200
    alive.sessions.discard("s1")
    answer = poll(client, token)
    assert answer.status_code == 401
    assert token not in answer.text and token not in str(answer.headers)
    assert poll(client, token).status_code == 401


def test_an_unchanged_panel_is_304(table, client, queue) -> None:
    token = table.subscribe("overview_live", subscription("s1", CountedBuild(), queue))
    etag = poll(client, token).headers["etag"]
    again = poll(client, token, **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    # A stale tag gets the whole panel.
    assert poll(client, token, **{"If-None-Match": '"stale"'}).status_code == 200


def test_gzip_when_the_browser_accepts_it(table, client, queue) -> None:
    build = CountedBuild("x" * 2000)        # compresses well
    token = table.subscribe("overview_live", subscription("s1", build, queue))
    answer = poll(client, token, **{"Accept-Encoding": "gzip, deflate"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["vary"] == "Accept-Encoding"
    body = build()
    assert answer.content == body                       # httpx undid the gzip
    assert answer.num_bytes_downloaded == len(gzip.compress(body, compresslevel=5))
    assert answer.num_bytes_downloaded < len(body) / 10


def test_twenty_pages_share_one_build_a_tick(table, client, alive, queue) -> None:
    build = CountedBuild("shared")
    sessions = [f"page{n}" for n in range(20)]
    alive.sessions.update(sessions)
    tokens = [table.subscribe("overview_live", subscription(s, build, queue, "UTC"))
              for s in sessions]
    assert len(set(tokens)) == 20
    answers = [poll(client, token) for token in tokens]
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.headers["etag"] for a in answers}) == 1
    assert build.calls == 1
    # Another time zone is another view: its own build.
    other = table.subscribe("overview_live", subscription("s1", build, queue, "Europe/Paris"))
    assert poll(client, other).status_code == 200
    assert build.calls == 2


def test_concurrent_polls_wait_for_the_one_build(table, client, alive, queue) -> None:
    entered, release = threading.Event(), threading.Event()
    calls = []

    def slow_build() -> bytes:
        calls.append(1)
        entered.set()
        release.wait(10)            # held until every poll has been sent
        return as_json(Panel().caption("built once"))

    sessions = [f"page{n}" for n in range(20)]
    alive.sessions.update(sessions)
    tokens = [table.subscribe("overview_live", subscription(s, slow_build, queue))
              for s in sessions]
    start = threading.Barrier(len(tokens) + 1)
    statuses: list[int] = []

    def poll_after_start(token: str) -> None:
        start.wait(10)
        statuses.append(poll(client, token).status_code)

    threads = [threading.Thread(target=poll_after_start, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    start.wait(10)
    assert entered.wait(10), "no poll reached the build"
    release.set()
    for thread in threads:
        thread.join(20)
    assert statuses == [200] * 20
    assert len(calls) == 1


def test_redis_down_is_503_without_a_traceback(table, client, queue) -> None:
    failing = {"now": True}

    def build() -> bytes:
        if failing["now"]:
            raise redis.exceptions.ConnectionError(BROKEN_REDIS)
        return as_json(Panel().caption("back"))

    token = table.subscribe("overview_live", subscription("s1", build, queue,
                                                          what="the queue overview"))
    answer = poll(client, token)
    assert answer.status_code == 503
    assert answer.headers["cache-control"] == "no-store"
    error = answer.json()["error"]
    assert error.startswith("Could not read the queue overview: Redis did not answer")
    assert "ConnectionError" in error
    for secret in ("Traceback", "redis.internal.example", "File \"", "line "):
        assert secret not in answer.text
    # A failed build is not kept: the next tick reads again.
    failing["now"] = False
    assert poll(client, token).status_code == 200


def test_another_failed_read_is_503_too(table, client, queue) -> None:
    def build() -> bytes:
        raise KeyError("task:secret-id")

    token = table.subscribe("overview_live", subscription("s1", build, queue))
    answer = poll(client, token)
    assert answer.status_code == 503
    assert "the read failed (KeyError)" in answer.json()["error"]
    assert "secret-id" not in answer.text and "Traceback" not in answer.text


def test_a_console_action_makes_the_next_answer_fresh(table, client, queue) -> None:
    build = CountedBuild("before")
    token = table.subscribe("overview_live", subscription("s1", build, queue))
    etag = poll(client, token).headers["etag"]
    build.value = "after"
    assert poll(client, token, **{"If-None-Match": etag}).status_code == 304   # same tick
    assert build.calls == 1
    queue_changed(queue)
    answer = poll(client, token, **{"If-None-Match": etag})
    assert answer.status_code == 200
    assert panel_values(answer.json()) == {"Pending": "after"}
    assert build.calls == 2


def test_plotly_is_served_as_cached_javascript(client) -> None:
    answer = client.get(PLOTLY_PATH)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert "max-age=86400" in answer.headers["cache-control"]
    assert b"plotly" in answer.content[:2000].lower()
    assert len(answer.content) > 1_000_000          # the whole library, not a stub


def test_live_routes_serves_an_empty_table_it_is_given(queue) -> None:
    table = Subscriptions(Alive("s1"))
    with TestClient(Starlette(routes=live_routes(table))) as test_client:
        token = table.subscribe("overview_live", subscription("s1", CountedBuild(), queue))
        assert poll(test_client, token).status_code == 200


def test_live_routes_marks_the_channel_served() -> None:
    live_channel._serving = False
    live_routes(Subscriptions(Alive()))
    assert live_channel.serving()
    # channel_flag puts the flag back after this test.


def test_the_routes_live_under_the_servers_base_url_path(queue) -> None:
    """Behind a proxy that forwards only the console's prefix (``server.baseUrlPath``),
    the channel is under the same prefix, and pages are told to poll it there."""
    from streamlit import config
    saved = config.get_option("server.baseUrlPath")
    config.set_option("server.baseUrlPath", "/ops/queue/")
    try:
        table = Subscriptions(Alive("s1"))
        routes = live_routes(table)
    finally:
        config.set_option("server.baseUrlPath", saved)
    assert [r.path for r in routes] == ["/ops/queue/_live/panel", "/ops/queue/_live/plotly.min.js"]
    assert live_channel.url_path(PANEL_PATH) == "/ops/queue/_live/panel"
    with TestClient(Starlette(routes=routes)) as test_client:
        token = table.subscribe("overview_live", subscription("s1", CountedBuild(), queue))
        answer = test_client.get("/ops/queue/_live/panel", headers={TOKEN_HEADER: token})
        assert answer.status_code == 200
        assert test_client.get(PANEL_PATH, headers={TOKEN_HEADER: token}).status_code == 404


def test_the_middleware_answers_the_channel_and_passes_everything_else_on(queue) -> None:
    """``app.py`` serves the channel with :class:`LiveChannelMiddleware`: the panel and
    the Plotly paths never reach the app it wraps (Streamlit's), every other path does."""
    from starlette.responses import PlainTextResponse

    reached: list[str] = []

    async def streamlit_stand_in(scope, receive, send) -> None:
        reached.append(scope["path"])
        await PlainTextResponse("from the app")(scope, receive, send)
    table = Subscriptions(Alive("s1"))
    test_client = TestClient(LiveChannelMiddleware(streamlit_stand_in, table))   # no lifespan
    token = table.subscribe("overview_live", subscription("s1", CountedBuild(), queue))
    assert poll(test_client, token).status_code == 200
    assert poll(test_client, "not-a-token").status_code == 401
    assert test_client.get(PLOTLY_PATH).status_code == 200
    assert reached == []
    assert test_client.get("/_stcore/health").text == "from the app"
    assert test_client.get(PANEL_PATH + "/more").text == "from the app"
    assert reached == ["/_stcore/health", PANEL_PATH + "/more"]


def test_a_page_polls_all_its_panels_in_one_request(table: Subscriptions, client: TestClient,
                                                    queue) -> None:
    """``X-Live-Tokens`` asks for every panel of a page at once: one answer per token,
    in order; a panel whose ETag the page holds is a 304 part, an unknown token a 401
    part, a failed build a 503 part, and each panel's JSON is the one built for all."""
    def broken() -> bytes:
        raise redis.exceptions.ConnectionError(BROKEN_REDIS)
    summary, overview = CountedBuild("7"), CountedBuild("8")
    tokens = [table.subscribe("summary", subscription("s1", summary, queue, "summary")),
              table.subscribe("overview", subscription("s1", overview, queue, "overview")),
              "not-a-token",
              table.subscribe("failing", subscription("s1", broken, queue, "failing"))]

    def page_poll(seen: list[str]) -> list[dict]:
        answer = client.get(PANEL_PATH, headers={TOKENS_HEADER: " ".join(tokens),
                                                 SEEN_HEADER: " ".join(seen)})
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        return answer.json()["answers"]

    first = page_poll(["-"] * len(tokens))
    assert [part["status"] for part in first] == [200, 200, 401, 503]
    assert [panel_values(part["panel"])["Pending"] for part in first[:2]] == ["7", "8"]
    assert "reload the page" in first[2]["error"] and "not-a-token" not in first[2]["error"]
    assert "Redis did not answer" in first[3]["error"] and BROKEN_REDIS not in first[3]["error"]
    again = page_poll([first[0]["etag"], "-", "-", "-"])
    assert [part["status"] for part in again] == [304, 200, 401, 503]
    assert again[1]["etag"] == first[1]["etag"]
    assert summary.calls == overview.calls == 1          # one build a tick, for every poll


# -- signing out --------------------------------------------------------------------------------
class Recording(Subscriptions):
    """A token table that keeps every token it handed out, with all sessions connected."""

    def __init__(self) -> None:
        super().__init__(lambda session_id: True)
        self.handed: list[str] = []

    def subscribe(self, key: str, subscription: Subscription) -> str:
        token = super().subscribe(key, subscription)
        self.handed.append(token)
        return token


def test_signing_out_ends_the_sessions_live_panels(monkeypatch, redis_url, namespace) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from console.testing import APP, button

    monkeypatch.delenv("REDIS_HOST", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setenv("CONSOLE_PASSWORD", "sign-out test")
    recording = Recording()
    monkeypatch.setattr(live_channel, "SUBSCRIPTIONS", recording)
    monkeypatch.setattr(live_channel, "_serving", True)
    try:
        at = AppTest.from_file(str(APP), default_timeout=30).run()
        at.text_input(key="login_password").input("sign-out test")
        button(at, "Sign in").click().run()
        assert [t.value for t in at.title] == ["Overview"]
        live = set(recording.handed)
        assert len(live) >= 2, "the Overview and the sidebar summary subscribe"
        assert all(recording.find(token) is not None for token in live)
        button(at, "Sign out").click().run()
        assert at.text_input(key="login_password") is not None
        assert [token for token in live if recording.find(token) is not None] == []
    finally:
        st.cache_resource.clear()
