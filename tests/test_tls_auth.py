"""Connections the guide promises: a password, and TLS (``rediss://``) with a CA file."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from engine import QueueUnavailable, Settings, Task, TaskQueue, TaskWorker
from engine.embedded import free_port

PASSWORD = "s3cret pw!"


def _wait_for(client: redis.Redis, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert proc.poll() is None, "redis-server exited while starting"
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(0.02)
    raise AssertionError("redis-server did not answer within 5 s")


@pytest.fixture
def tls_server(tmp_path, redis_server_bin):
    """A private redis-server that speaks only TLS and requires a password."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([redis_server_bin, "--port", "0", "--tls-port", str(port),
                             "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
                             "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--requirepass", PASSWORD,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, ssl=True,
                        ssl_ca_certs=str(cert), socket_timeout=1)
    try:
        _wait_for(probe, proc)
        yield port, str(cert)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def run_one_task(queue: TaskQueue) -> dict:
    task_id = queue.submit_task(Task(task_type="echo", payload={"x": 1}))
    TaskWorker(queue, handlers={"echo": lambda t: t.payload}).start(burst=True)
    return queue.get_task_result(task_id)


def test_rediss_url_with_password_and_ca_file_runs_tasks(tls_server, namespace):
    port, ca = tls_server
    url = f"rediss://:{PASSWORD.replace(' ', '%20').replace('!', '%21')}@127.0.0.1:{port}/0"
    settings = Settings.from_mapping({"REDIS_URL": url, "REDIS_SSL_CA_CERTS": ca,
                                      "QUEUE_NAMESPACE": namespace})
    result = run_one_task(TaskQueue(settings=settings))
    assert result["status"] == "completed" and result["result"] == {"x": 1}
    assert PASSWORD not in repr(settings) and "%20" not in str(settings.describe())


def test_wrong_password_is_an_error_that_does_not_show_the_password(tls_server, namespace):
    port, ca = tls_server
    settings = Settings.from_mapping({"REDIS_URL": f"rediss://:wrong-secret@127.0.0.1:{port}/0",
                                      "REDIS_SSL_CA_CERTS": ca, "QUEUE_NAMESPACE": namespace})
    with pytest.raises(QueueUnavailable, match="refused the credentials") as caught:
        TaskQueue(settings=settings).submit_task(Task(task_type="echo"))
    assert "wrong-secret" not in str(caught.value)


def test_host_port_password_parts_build_the_connection(redis_server_bin, tmp_path, namespace):
    port = free_port()
    proc = subprocess.Popen([redis_server_bin, "--port", str(port), "--bind", "127.0.0.1",
                             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        _wait_for(redis.Redis(port=port, password=PASSWORD, socket_timeout=1), proc)
        settings = Settings.from_mapping({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port),
                                          "REDIS_PASSWORD": PASSWORD, "REDIS_DB": "2",
                                          "QUEUE_NAMESPACE": namespace})
        queue = TaskQueue(settings=settings)
        assert run_one_task(queue)["status"] == "completed"
        assert queue.client.connection_pool.connection_kwargs["db"] == 2
        assert PASSWORD not in repr(settings)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
