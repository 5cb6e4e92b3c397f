"""Configuration where platforms run the worker: Kubernetes service links, other software's
``OPENAI_*`` variables, typos of our own settings, and malformed ``REDIS_URL`` values."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from engine import ConfigurationError, Settings, Task
from engine import config as config_module
from tests.support.processes import REPO_ROOT, worker_env

# What a pod gets in a namespace with a Service named "redis" (port 6379, named "redis"),
# and what LangChain and Azure OpenAI users have set.
KUBERNETES = {
    "REDIS_SERVICE_HOST": "10.0.0.5", "REDIS_SERVICE_PORT": "6379",
    "REDIS_SERVICE_PORT_REDIS": "6379", "REDIS_PORT": "tcp://10.0.0.5:6379",
    "REDIS_PORT_6379_TCP": "tcp://10.0.0.5:6379", "REDIS_PORT_6379_TCP_PROTO": "tcp",
    "REDIS_PORT_6379_TCP_PORT": "6379", "REDIS_PORT_6379_TCP_ADDR": "10.0.0.5",
    # A Service named "queue" puts its links under a prefix only we use.
    "QUEUE_SERVICE_HOST": "10.0.0.9", "QUEUE_PORT": "tcp://10.0.0.9:8080",
    "QUEUE_PORT_8080_TCP_ADDR": "10.0.0.9",
}
LANGCHAIN_AZURE = {"OPENAI_API_BASE": "https://example.openai.azure.com/",
                   "OPENAI_API_VERSION": "2024-02-01", "OPENAI_API_TYPE": "azure",
                   "OPENAI_MODEL": "gpt-4o"}


@pytest.fixture(autouse=True)
def _forget_logged(monkeypatch):
    # The "ignoring" line is said once per process: each test starts with a clean slate.
    monkeypatch.setattr(config_module, "_logged_ignored", set(), raising=False)


def test_kubernetes_and_langchain_variables_do_not_stop_settings_when_redis_url_is_set(caplog):
    with caplog.at_level(logging.INFO, logger="engine.config"):
        settings = Settings.from_mapping({"REDIS_URL": "redis://redis:6379/0", **KUBERNETES,
                                          **LANGCHAIN_AZURE})
    assert settings.connection_url() == "redis://redis:6379/0"
    assert settings.redis_port == 6379          # the link was not read as a port
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.config"]
    assert lines == ["REDIS_URL is set: ignoring REDIS_PORT"]


def test_the_ignoring_line_is_logged_once_per_process(caplog):
    values = {"REDIS_URL": "redis://redis:6379/0", "REDIS_HOST": "elsewhere", "REDIS_DB": "x"}
    with caplog.at_level(logging.INFO, logger="engine.config"):
        for _ in range(3):
            settings = Settings.from_mapping(values)
    assert settings.redis_host == "localhost" and settings.redis_db == 0   # never parsed
    assert [r.getMessage() for r in caplog.records if r.name == "engine.config"] == [
        "REDIS_URL is set: ignoring REDIS_HOST, REDIS_DB"]


def test_parts_are_still_read_and_checked_without_redis_url():
    settings = Settings.from_mapping({"REDIS_HOST": "db", "REDIS_PORT": "6380", **LANGCHAIN_AZURE})
    assert settings.connection_url() == "redis://db:6380/0"
    with pytest.raises(ConfigurationError, match="REDIS_PORT must be an int"):
        Settings.from_mapping({"REDIS_PORT": "63 79"})


def test_a_service_link_in_redis_port_without_redis_url_says_what_to_set():
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping({"REDIS_PORT": "tcp://10.0.0.5:6379"})
    message = str(info.value)
    assert "Kubernetes service link" in message and "set REDIS_URL" in message


@pytest.mark.parametrize(("typo", "meant"), [
    ("QUEUE_LEASE_TIMOUT", "QUEUE_LEASE_TIMEOUT"), ("REDIS_PASWORD", "REDIS_PASSWORD"),
    ("REDIS_CLUSTR", "REDIS_CLUSTER"), ("OPENAI_API_KY", "OPENAI_API_KEY"),
    ("AGENT_MODLE", "AGENT_MODEL"), ("CONSOLE_PASSWD", "CONSOLE_PASSWORD"),
])
def test_a_typo_of_our_setting_is_an_error_naming_the_setting_it_resembles(typo, meant):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping({"REDIS_URL": "redis://redis:6379/0", typo: "1", **KUBERNETES})
    assert f"{typo} (did you mean {meant}?)" in str(info.value)


def test_unknown_names_under_a_prefix_only_we_use_are_still_errors():
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\): AGENT_FOO, QUEUE_X\."):
        Settings.from_mapping({"QUEUE_X": "1", "AGENT_FOO": "2"})


def test_other_software_s_redis_and_openai_variables_are_left_alone():
    settings = Settings.from_mapping({"REDIS_VERSION": "7.2", "OPENAI_DEPLOYMENT_NAME": "d",
                                      "OPENAI_EMBEDDINGS_ENDPOINT": "https://x"})
    assert settings.connection_url() == "redis://localhost:6379/0"


def test_worker_starts_and_runs_tasks_in_a_kubernetes_pod_environment(redis_url, namespace, queue):
    ids = queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(3)])
    env = worker_env(redis_url, namespace, **KUBERNETES, **LANGCHAIN_AZURE)
    done = subprocess.run([sys.executable, "worker.py", "--no-agent", "--handlers",
                           "tests.support.handlers", "--burst"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [queue.get_task_result(i)["status"] for i in ids] == ["completed"] * 3, [queue.get_task_result(i) for i in ids]
    said = [line for line in done.stderr.splitlines() if "ignoring" in line]
    assert len(said) == 1 and said[0].endswith("REDIS_URL is set: ignoring REDIS_PORT"), done.stderr


def test_worker_with_a_typo_of_our_setting_exits_two_naming_both(redis_url, namespace):
    env = worker_env(redis_url, namespace, **KUBERNETES, REDIS_CLUSTR="true")
    done = subprocess.run([sys.executable, "worker.py", "--no-agent", "--burst"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "REDIS_CLUSTR (did you mean REDIS_CLUSTER?)" in done.stderr


# -- a malformed REDIS_URL --------------------------------------------------------------------

SECRET_HEAD = "Zq8vK"      # the piece a cut-short URL used to leak
MALFORMED = [
    f"redis://:{SECRET_HEAD}#rest@db.example:6379/0",     # unencoded '#'
    f"redis://:{SECRET_HEAD}/rest@db.example:6379/0",     # unencoded '/'
    f"redis://:{SECRET_HEAD}?rest@db.example:6379/0",     # unencoded '?'
    "redis://:12345/rest@db.example:6379/0",               # cut short to a port that parses
    f"redis://app:{SECRET_HEAD}#x@db.example:6379/0",
    "redis://db.example:63a9/0", "redis://db.example:6379/zero",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_redis_url_is_a_configuration_error_that_shows_no_secret(url):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping({"REDIS_URL": url})
    message = str(info.value)
    assert message.startswith("REDIS_URL cannot be read as redis://")
    for piece in (SECRET_HEAD, "rest", "12345", "63a9", "zero", "db.example"):
        assert piece not in message


@pytest.mark.parametrize("url", [
    "redis://:p%23ss@db.example:6379/0", "redis://user:pa@ss@db.example/1", "redis://localhost",
    "rediss://:x@db.example:6380/2?ssl_cert_reqs=none", "unix:///run/redis.sock?db=3",
    "redis://[::1]:6379/0"])
def test_well_formed_urls_are_accepted(url):
    assert Settings.from_mapping({"REDIS_URL": url}).connection_url() == url


def test_a_query_option_redis_py_rejects_is_a_configuration_error_naming_the_option():
    from engine.connection import connect
    with pytest.raises(ConfigurationError) as info:
        connect(f"redis://:{SECRET_HEAD}@db.example:6379/0?socket_timeout=soon&password={SECRET_HEAD}")
    assert "socket_timeout" in str(info.value) and SECRET_HEAD not in str(info.value)


def test_the_embedded_check_names_no_piece_of_a_url_redis_py_cannot_read():
    from engine.embedded import RedisUnavailableError, resolve_redis_url
    with pytest.raises(RedisUnavailableError) as info:
        resolve_redis_url(f"redis://:{SECRET_HEAD}#x@127.0.0.1:6379/0", ".")
    assert SECRET_HEAD not in str(info.value) and "ValueError" in str(info.value)


def test_worker_with_a_malformed_redis_url_exits_two_at_once_showing_no_secret(namespace):
    env = worker_env(MALFORMED[0], namespace)
    done = subprocess.run([sys.executable, "worker.py", "--no-agent", "--burst"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "REDIS_URL cannot be read" in done.stderr and "%23" in done.stderr
    assert SECRET_HEAD not in done.stdout + done.stderr
    assert "retrying" not in done.stdout


def test_console_with_a_malformed_redis_url_says_so_and_shows_no_secret(monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from console.testing import APP, texts
    monkeypatch.delenv("CONSOLE_PASSWORD", raising=False)
    monkeypatch.setenv("REDIS_URL", MALFORMED[0])
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    st.cache_resource.clear()
    shown = texts(at) + texts(at.sidebar)
    assert "REDIS_URL cannot be read" in shown
    assert SECRET_HEAD not in shown and not at.metric
