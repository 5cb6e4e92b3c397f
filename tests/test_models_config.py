"""Input validation and configuration: priorities, tasks, payload limits, settings, ``.env``."""
from __future__ import annotations

import math

import pytest

from engine import (ConfigurationError, PayloadTooLarge, Settings, Task, TaskPriority, TaskQueue,
                    ValidationError)
from engine.config import read_env_file
from engine.connection import connect
from tests.support.indexes import namespace_keys

SECRET = "s3cr3t-Pa55"


# -- TaskPriority -----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("low", TaskPriority.LOW), ("NORMAL", TaskPriority.NORMAL), ("High", TaskPriority.HIGH),
    ("urgent", TaskPriority.URGENT), (" high ", TaskPriority.HIGH), ("10", TaskPriority.HIGH),
    (0, TaskPriority.LOW), (5, TaskPriority.NORMAL), (10, TaskPriority.HIGH),
    (15, TaskPriority.URGENT), (TaskPriority.URGENT, TaskPriority.URGENT),
    (TaskPriority.LOW, TaskPriority.LOW),
])
def test_priority_parse_accepts_names_values_and_members(value, expected):
    assert TaskPriority.parse(value) is expected


@pytest.mark.parametrize("value", ["critical", "", "1O", 1, 7, 16, -5, True, None, 5.0, [5]])
def test_priority_parse_rejects_anything_else_naming_allowed_values(value):
    with pytest.raises(ValueError) as info:
        TaskPriority.parse(value)
    assert isinstance(info.value, ValidationError)
    message = str(info.value)
    for allowed in ("low", "normal", "high", "urgent", "0, 5, 10, 15"):
        assert allowed in message


def test_priority_order_is_urgent_high_normal_low():
    assert TaskPriority.URGENT > TaskPriority.HIGH > TaskPriority.NORMAL > TaskPriority.LOW
    assert [p.label for p in TaskPriority] == ["low", "normal", "high", "urgent"]


def test_validation_error_is_a_value_error():
    assert issubclass(ValidationError, ValueError)
    assert issubclass(PayloadTooLarge, ValidationError)
    assert issubclass(ConfigurationError, ValueError)


# -- Task ---------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
def test_task_payload_must_be_a_dict(payload):
    with pytest.raises(ValidationError, match="payload must be a dict"):
        Task(task_type="x", payload=payload)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"max_retries": -1}, "max_retries"), ({"max_retries": True}, "max_retries"),
    ({"max_retries": 1.5}, "max_retries"), ({"retry_delay": -1}, "retry_delay"),
    ({"backoff": "linear"}, "backoff"), ({"delay": -3}, "delay"),
    ({"run_at": "tomorrow"}, "run_at"), ({"task_type": "  "}, "task type"),
    ({"priority": "asap"}, "priority"),
])
def test_task_rejects_bad_fields(kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Task(**{"task_type": "x", **kwargs})


def test_task_takes_session_id_from_payload():
    task = Task(task_type="x", payload={"session_id": "s-1", "q": "hi"})
    assert task.session_id == "s-1"
    assert len(task.task_id) == 32 and int(task.task_id, 16) >= 0


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"tags": {"a", "b"}}, "not JSON-serialisable"),
    ({"obj": object()}, "not JSON-serialisable"),
    ({"score": math.nan}, "not JSON-serialisable"),
    ({"score": math.inf}, "not JSON-serialisable"),
    ({"raw": b"bytes"}, "not JSON-serialisable"),
])
def test_non_json_payload_is_rejected_and_nothing_is_written(queue, redis_client, namespace,
                                                            payload, fragment):
    queue.submit_task(Task(task_type="ok"))
    before = namespace_keys(redis_client, namespace)
    with pytest.raises(ValidationError, match=fragment):
        queue.submit_task(Task(task_type="x", payload=payload))
    assert namespace_keys(redis_client, namespace) == before
    assert queue.get_queue_stats().submitted_tasks == 1


def test_payload_over_the_size_limit_is_rejected_and_nothing_is_written(redis_url, namespace,
                                                                       redis_client):
    small = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0,
                                  max_payload_bytes=100)
    client = connect(redis_url)
    try:
        queue = TaskQueue(client, settings=small, namespace=namespace)
        assert queue.submit_task(Task(task_type="x", payload={"text": "a" * 50}))
        before = namespace_keys(redis_client, namespace)
        # 40 two-byte characters: 80 characters of JSON but over 100 bytes of UTF-8.
        for payload in ({"text": "a" * 200}, {"text": "é" * 50}):
            with pytest.raises(PayloadTooLarge) as info:
                queue.submit_task(Task(task_type="x", payload=payload))
            assert "over the limit of 100 bytes" in str(info.value)
        with pytest.raises(PayloadTooLarge):
            queue.submit_tasks([Task(task_type="x"), Task(task_type="x", payload={"t": "a" * 200})])
        assert namespace_keys(redis_client, namespace) == before
    finally:
        client.close()


def test_submit_rejects_something_that_is_not_a_task(queue, redis_client, namespace):
    with pytest.raises(ValidationError, match="expected a Task"):
        queue.submit_task({"task_type": "x"})
    assert namespace_keys(redis_client, namespace) == []


# -- Settings ---------------------------------------------------------------------------

def test_settings_defaults_and_parsing():
    settings = Settings.from_mapping({
        "QUEUE_LEASE_TIMEOUT": " 45 ", "QUEUE_HEARTBEAT_INTERVAL": "10", "QUEUE_MAX_STALLS": "5",
        "USE_REDIS_QUEUE": "off", "QUEUE_NAMESPACE": "prod", "PATH": "/usr/bin",
        "UNRELATED_THING": "1"})
    assert settings.lease_timeout == 45.0 and settings.heartbeat_interval == 10.0
    assert settings.max_stalls == 5 and settings.use_redis_queue is False
    assert settings.namespace == "prod"
    assert settings.redis_url is None
    assert settings.connection_url() == "redis://localhost:6379/0"


@pytest.mark.parametrize("name", ["QUEUE_LEASE_TIMOUT", "REDIS_HOSTNAME", "QUEUE_X"])
def test_unknown_owned_variable_is_a_configuration_error_naming_it(name):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping({name: "5"})
    assert name in str(info.value)
    assert "QUEUE_LEASE_TIMEOUT" in str(info.value)   # the known names are listed


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("QUEUE_MAX_STALLS", "three", "QUEUE_MAX_STALLS must be an int"),
    ("REDIS_PORT", "63 79", "REDIS_PORT must be an int"),
    ("QUEUE_MAX_STALLS", "2.5", "QUEUE_MAX_STALLS must be an int"),
    ("QUEUE_LEASE_TIMEOUT", "soon", "QUEUE_LEASE_TIMEOUT must be a float"),
    ("USE_REDIS_QUEUE", "maybe", "USE_REDIS_QUEUE must be a bool"),
    ("QUEUE_MAX_STALLS", "-1", "QUEUE_MAX_STALLS must not be negative"),
    ("QUEUE_RESULT_TTL", "0", "QUEUE_RESULT_TTL must be greater than 0"),
    ("QUEUE_REPLY_SPIN_US", "-5", "QUEUE_REPLY_SPIN_US must not be negative"),
])
def test_malformed_values_are_configuration_errors(name, value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Settings.from_mapping({name: value})


@pytest.mark.parametrize("lease", ["1", "0.5"])
def test_lease_not_longer_than_heartbeat_is_rejected(lease):
    with pytest.raises(ConfigurationError, match="QUEUE_LEASE_TIMEOUT must be longer"):
        Settings.from_mapping({"QUEUE_LEASE_TIMEOUT": lease, "QUEUE_HEARTBEAT_INTERVAL": "1"})
    with pytest.raises(ConfigurationError):
        Settings(lease_timeout=float(lease), heartbeat_interval=1.0)


def test_redis_url_password_never_appears_in_repr_or_describe():
    url = f"redis://:{SECRET}@db.example:6380/2"
    settings = Settings.from_mapping({"REDIS_URL": url, "REDIS_PASSWORD": SECRET + "x",
                                      "AGENT_OPENAI_API_KEY": "sk-" + SECRET,
                                      "CONSOLE_PASSWORD": SECRET + "y"})
    assert settings.connection_url() == url  # still usable for connecting
    described = settings.describe()
    for text in (repr(settings), str(settings), str(described)):
        assert SECRET not in text
    assert described["REDIS_URL"] == "redis://:***@db.example:6380/2"
    assert described["REDIS_PASSWORD"] is None     # REDIS_URL wins: the part is not even read
    assert described["AGENT_OPENAI_API_KEY"] == "***"
    assert described["QUEUE_LEASE_TIMEOUT"] == 90.0


def test_password_from_parts_is_masked_too():
    settings = Settings.from_mapping({"REDIS_PASSWORD": SECRET, "REDIS_HOST": "h", "REDIS_PORT": "1"})
    assert SECRET in settings.connection_url()
    assert SECRET not in repr(settings) and SECRET not in str(settings.describe())


def test_rediss_url_is_accepted_and_other_schemes_are_not():
    settings = Settings.from_mapping({"REDIS_URL": "rediss://:pw@secure.example:6380/0"})
    assert settings.connection_url().startswith("rediss://")
    assert Settings(redis_url="unix:///tmp/redis.sock").redis_url.startswith("unix://")
    with pytest.raises(ConfigurationError, match="REDIS_URL must start with"):
        Settings.from_mapping({"REDIS_URL": "http://localhost:6379"})


def test_env_file_parsing(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join([
        "# a comment line",
        "",
        "export QUEUE_NAMESPACE=from_file",
        f'REDIS_URL="redis://:{SECRET}@db.example:6380/2"',
        "QUEUE_MAX_STALLS=7  # trailing comment",
        "AGENT_SYSTEM_PROMPT='You are # helpful'",
        "QUEUE_RESULT_TTL = 120",
        "QUEUE_HEARTBEAT_INTERVAL='5' # quoted, then a comment",
        "AGENT_MODEL=",
    ]) + "\n", encoding="utf-8")
    values = read_env_file(env_file)
    assert values["QUEUE_NAMESPACE"] == "from_file"
    assert values["REDIS_URL"] == f"redis://:{SECRET}@db.example:6380/2"
    assert values["QUEUE_MAX_STALLS"] == "7"
    assert values["AGENT_SYSTEM_PROMPT"] == "You are # helpful"
    assert values["QUEUE_RESULT_TTL"] == "120"
    assert values["QUEUE_HEARTBEAT_INTERVAL"] == "5"

    settings = Settings.from_env(environ={"QUEUE_MAX_STALLS": "2"}, env_file=env_file)
    assert settings.namespace == "from_file"
    assert settings.max_stalls == 2                 # the environment wins over the file
    assert settings.result_ttl == 120.0 and settings.heartbeat_interval == 5.0
    assert settings.agent_system_prompt == "You are # helpful"
    assert settings.agent_model is None             # empty optional value means unset
    assert SECRET not in repr(settings)


def test_env_file_errors_name_the_line_or_the_variable(tmp_path):
    bad_line = tmp_path / "bad.env"
    bad_line.write_text("QUEUE_NAMESPACE=x\nthis is not a setting\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="line 2"):
        Settings.from_env(environ={}, env_file=bad_line)
    typo = tmp_path / "typo.env"
    typo.write_text("QUEUE_LEASE_TIMOUT=5\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="QUEUE_LEASE_TIMOUT"):
        Settings.from_env(environ={}, env_file=typo)


def test_missing_env_file_is_fine(tmp_path):
    settings = Settings.from_env(environ={"QUEUE_NAMESPACE": "n1"}, env_file=tmp_path / "none.env")
    assert settings.namespace == "n1"
