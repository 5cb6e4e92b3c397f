"""Console fixtures: the app pointed at this test's namespace on the session Redis."""
from __future__ import annotations

from typing import Iterator

import pytest
import streamlit as st


@pytest.fixture
def console_env(monkeypatch, redis_url: str, namespace: str) -> Iterator[None]:
    """Point the app at this test's namespace on the session Redis, with nothing shared
    between runs (each AppTest run reads what Redis holds now); caches cleared after."""
    for name in ("CONSOLE_PASSWORD", "REDIS_HOST", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    # The same short lease as the engine fixtures, so both agree on who is lost.
    monkeypatch.setenv("QUEUE_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("QUEUE_LEASE_TIMEOUT", "1.0")
    monkeypatch.setattr("console.shared.ENABLED", False)
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless Chromium (Debian's, through Playwright) for a test module; each test
    opens its own contexts. Skips without it, fails under CI (tests/support/browser.py)."""
    from tests.support.browser import launch_chromium, require_chromium
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()
