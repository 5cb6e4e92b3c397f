"""OpenID Connect sign-in through Streamlit's st.login against a local provider
(oidc-provider-mock), roles from configuration, in headless Chromium.

A viewer does not see the operator's buttons, and a forged click on one (the hidden button
made visible in the page) is refused by the engine: the task is unchanged and the audit
stream records the refusal. An operator's click works and is audited under its email.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from engine import Task
from engine.access import read_audit
from tests.support.browser import LoggedProcess, console_env, free_port, screenshot, wait_idle
from tests.support.steps import wait_until

pytestmark = pytest.mark.browser
LOAD = 30_000


@pytest.fixture(scope="module")
def provider() -> Iterator[int]:
    """A local OpenID Connect provider with two users a click signs in."""
    oidc = pytest.importorskip("oidc_provider_mock")
    users = [oidc.User(sub="vera", claims={"email": "vera@example.com"}),
             oidc.User(sub="otto", claims={"email": "otto@example.com", "groups": ["ops"]}),
             oidc.User(sub="nobody", claims={"email": "nobody@elsewhere.org"})]
    with oidc.run_server_in_thread(user_claims=users) as server:
        yield server.server_port


@pytest.fixture
def console(provider, redis_url, namespace, tmp_path) -> Iterator[str]:
    """The console with [auth] in a secrets file of its own; viewers: vera, operators:
    the group ops."""
    port = free_port()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "test-cookie-secret-0123456789abcdef0123456789abcdef"
client_id = "agent-task-queue-console"
client_secret = "test-client-secret"
server_metadata_url = "http://localhost:{provider}/.well-known/openid-configuration"
""")
    env = console_env(redis_url, namespace, CONSOLE_VIEWERS="vera@example.com",
                      CONSOLE_OPERATORS="group:ops", CONSOLE_ADMINS="ada@example.com")
    server = LoggedProcess([sys.executable, "-m", "streamlit", "run", "app.py",
                            "--server.headless", "true", "--server.port", str(port),
                            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
                            "--server.fileWatcherType", "none", "--secrets.files", str(secrets)],
                           env, tmp_path / "streamlit.log")
    try:
        server.wait_for_output(r"Local URL|You can now view", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        print(f"--- streamlit log\n{server.output()}")


def sign_in(chromium, url: str, user: str):
    """A fresh browser session signed in as ``user`` at the provider."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(LOAD)
    page = context.new_page()
    page.goto(url + "/")
    page.get_by_role("button", name="Sign in with single sign-on").click()
    page.get_by_role("button", name=user, exact=True).click()      # the provider's form
    page.wait_for_url(url + "/**")
    return page


def open_task(page, url: str, task_id: str) -> None:
    page.goto(f"{url}/Tasks?task={task_id}")
    wait_idle(page)


def test_a_viewer_sees_no_operator_buttons_and_a_forged_click_is_refused(chromium, console, queue):
    from playwright.sync_api import expect
    task_id = queue.submit_task(Task(task_type="echo", delay=3600))
    page = sign_in(chromium, console, "vera")
    expect(page.get_by_text("vera@example.com · viewer")).to_be_visible()
    open_task(page, console, task_id)
    cancel = page.locator(".st-key-tasks_detail_cancel")
    expect(cancel).to_have_count(1)          # drawn, as for everyone...
    expect(cancel).to_be_hidden()            # ...but not shown to a viewer
    expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()
    screenshot(page, "oidc-viewer-task")
    # Forge the click: undo the hiding in the page and press the button.
    page.evaluate("""() => document.querySelectorAll('style').forEach(s => {
        if (s.textContent.includes('st-key-tasks_detail_')) s.remove(); })""")
    page.get_by_role("button", name="Cancel task").click()
    wait_until(lambda: read_audit(queue), timeout=15, what="the refusal to be audited")
    [entry] = read_audit(queue)
    assert queue.get_task_status(task_id)["status"] == "scheduled"          # unchanged
    assert (entry["who"], entry["role"], entry["action"], entry["outcome"], entry["tasks"]) == (
        "vera@example.com", "viewer", "cancel_task", "denied", [task_id])
    page.goto(console + "/Submit")
    expect(page.get_by_text("This page needs the operator role")).to_be_visible()
    expect(page.get_by_role("button", name="Submit query")).to_have_count(0)
    page.context.close()


def test_an_operator_cancels_and_the_audit_page_shows_it(chromium, console, queue):
    from playwright.sync_api import expect
    task_id = queue.submit_task(Task(task_type="echo", delay=3600))
    page = sign_in(chromium, console, "otto")
    expect(page.get_by_text("otto@example.com · operator")).to_be_visible()
    open_task(page, console, task_id)
    expect(page.get_by_role("button", name="Cancel task")).to_be_visible()
    expect(page.locator(".st-key-tasks_detail_delete")).to_be_hidden()   # an admin's
    page.get_by_role("button", name="Cancel task").click()
    wait_until(lambda: read_audit(queue), timeout=15, what="the cancel to be audited")
    [entry] = read_audit(queue)
    assert queue.get_task_status(task_id)["status"] == "cancelled"
    assert (entry["who"], entry["role"], entry["action"], entry["outcome"]) == (
        "otto@example.com", "operator", "cancel_task", "ok")
    page.goto(console + "/Audit")
    wait_idle(page)
    expect(page.get_by_role("button", name="Export CSV")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    text = Path(download.value.path()).read_text()
    assert "otto@example.com,operator,oidc,cancel_task,ok,1," + task_id in text
    page.context.close()


def test_an_identity_without_a_role_gets_no_access(chromium, console, queue):
    from playwright.sync_api import expect
    queue.submit_task(Task(task_type="echo", payload={"query": "private work"}))
    page = sign_in(chromium, console, "nobody")
    expect(page.get_by_text("no role is configured for you")).to_be_visible()
    page.goto(console + "/Tasks")
    expect(page.get_by_text("no role is configured for you")).to_be_visible()
    expect(page.get_by_text("private work")).to_have_count(0)
    page.context.close()
