"""Conversations by session (engine/agent/conversation.py, append_turn.lua): a task with a
session keeps its query and answer in Redis, and the session's next task sends them to the
provider before its own query, so "and in French?" follows the answer before it.

Against the session's real Redis; the ``openai`` backend talks to the local stand-in
(tests/support/openai_server.py), which records every request it is sent."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from streamlit.testing.v1 import AppTest

from console.testing import APP, PAGE_FILES, button

from engine import (ConfigurationError, PermanentError, RetryableError, Settings, Task, TaskQueue,
                    TaskType, ValidationError)
from engine.agent import AgentExecutor, CallableBackend, DemoBackend, build_backend, register_handlers
from engine.agent import conversation
from engine.batch import child_ids, submit_csv
from engine.connection import connect
from engine.models import RunningTask, TaskPriority
from tests.fixtures_engine import TEST_SETTINGS
from tests.support.openai_server import Reply, openai_server  # noqa: F401 (fixture)

SESSION = "user-123"


@pytest.fixture
def make_queue(redis_url, namespace):
    """A queue in this test's namespace with settings of the test's choosing."""
    clients = []

    def build(**settings) -> TaskQueue:
        client = connect(redis_url)
        clients.append(client)
        return TaskQueue(client, settings=Settings.from_mapping({}, **TEST_SETTINGS, **settings),
                         namespace=namespace)
    yield build
    for client in clients:
        client.close()


def drain(queue: TaskQueue, make_worker, executor: AgentExecutor, handler: str = "auto") -> int:
    """Run every pending task with ``executor``'s handler (``sync`` or ``async``: that one,
    outside any provider limit, whose pace would park the second call); the number run."""
    worker = make_worker(queue=queue)
    if handler == "auto":
        register_handlers(worker, queue.settings, executor)
    else:
        worker.register_handler(TaskType.AGENT_QUERY,
                                executor.handle if handler == "sync" else executor.handle_async)
    ran = 0
    while worker.process_one():
        ran += 1
    return ran


def recording_agent(seen: list):
    """A custom agent (module:callable shape) that records the history it is given."""
    def answer(query, session_id=None, history=None):
        seen.append((query, history))
        return f"answer {len(seen)} to {query}"
    return answer


def running(task_id: str, payload: dict, session_id: str | None = SESSION) -> RunningTask:
    return RunningTask(task_id=task_id, task_type="agent_query", payload=payload,
                       priority=TaskPriority.NORMAL, attempt=1, max_retries=3, session_id=session_id)


# -- the provider sees the conversation ---------------------------------------------------------
@pytest.mark.parametrize("handler, stream", [("async", "true"), ("async", "false"),
                                             ("sync", "true"), ("sync", "false")])
def test_and_in_french_follows_the_previous_answer(openai_server, make_queue, make_worker,
                                                   handler, stream):
    queue = make_queue(agent_backend="openai", openai_base_url=openai_server.url,
                       agent_model="test-model", agent_system_prompt="Be brief.",
                       agent_stream=stream == "true")
    executor = AgentExecutor(queue=queue, backend=build_backend(queue.settings))
    openai_server.push(Reply.success("Machine learning is learning from data."),
                       Reply.success("L'apprentissage automatique apprend des données."))
    first = executor.execute_async("What is machine learning?", session_id=SESSION)
    assert drain(queue, make_worker, executor, handler) == 1
    second = executor.execute_async("and in French?", session_id=SESSION)
    assert drain(queue, make_worker, executor, handler) == 1

    asked = [request["body"]["messages"] for request in openai_server.requests]
    assert asked == [
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is machine learning?"}],
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is machine learning?"},
         {"role": "assistant", "content": "Machine learning is learning from data."},
         {"role": "user", "content": "and in French?"}]]
    turns = executor.get_conversation(SESSION)
    assert [(t["role"], t["content"], t["task_id"]) for t in turns] == [
        ("user", "What is machine learning?", first),
        ("assistant", "Machine learning is learning from data.", first),
        ("user", "and in French?", second),
        ("assistant", "L'apprentissage automatique apprend des données.", second)]
    assert all(isinstance(t["at"], int) and t["at"] > 1_700_000_000_000 for t in turns)
    assert queue.get_task_result(second)["result"]["answer"].startswith("L'apprentissage")


def test_the_demo_answer_says_which_turn_it_is_and_what_it_follows(queue, make_worker):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    first = executor.execute_async("What is machine learning?", session_id=SESSION)
    drain(queue, make_worker, executor)
    second = executor.execute_async("and in French?", session_id=SESSION)
    drain(queue, make_worker, executor)
    assert "conversation" not in queue.get_task_result(first)["result"]["answer"]
    assert ("turn 2 of this conversation, following 'What is machine learning?'"
            in queue.get_task_result(second)["result"]["answer"])


def test_a_custom_agent_gets_the_history_only_when_it_takes_one(queue, make_worker):
    seen: list = []
    executor = AgentExecutor(queue=queue, backend=CallableBackend(recording_agent(seen)))
    executor.execute_async("first", session_id=SESSION)
    drain(queue, make_worker, executor)
    executor.execute_async("second", session_id=SESSION)
    drain(queue, make_worker, executor)
    assert seen == [("first", []), ("second", [{"role": "user", "content": "first"},
                                               {"role": "assistant", "content": "answer 1 to first"}])]
    plain = AgentExecutor(queue=queue, backend=CallableBackend(lambda query, session_id: query[::-1]))
    plain.execute_async("third", session_id=SESSION)
    drain(queue, make_worker, plain)          # called as before; the turn is still kept
    assert [t["content"] for t in plain.get_conversation(SESSION)][-2:] == ["third", "driht"]


# -- what is kept ------------------------------------------------------------------------------
def exchange(queue: TaskQueue, n: int, query: str, answer: str) -> bool:
    return conversation.append(queue, SESSION, f"task-{n}", query, answer)


def contents(queue: TaskQueue) -> list[str]:
    return [t["content"] for t in conversation.load(queue, SESSION)]


def test_the_conversation_is_capped_by_messages_oldest_first(make_queue):
    queue = make_queue(agent_conversation_max_turns=4)
    for n in range(1, 4):
        exchange(queue, n, f"q{n}", f"a{n}")
    assert contents(queue) == ["q2", "a2", "q3", "a3"]


def test_an_answer_never_opens_the_history(make_queue):
    queue = make_queue(agent_conversation_max_turns=5)
    for n in range(1, 4):
        exchange(queue, n, f"q{n}", f"a{n}")
    assert contents(queue) == ["q2", "a2", "q3", "a3"]      # a1 went with its query


def test_the_conversation_is_capped_by_estimated_tokens(make_queue):
    queue = make_queue(agent_conversation_max_tokens=10)    # 40 characters
    exchange(queue, 1, "é" * 10, "b" * 10)       # characters, not bytes: é is two bytes
    exchange(queue, 2, "c" * 10, "d" * 10)
    assert contents(queue) == ["é" * 10, "b" * 10, "c" * 10, "d" * 10]
    exchange(queue, 3, "e" * 10, "f" * 10)
    assert contents(queue) == ["c" * 10, "d" * 10, "e" * 10, "f" * 10]
    exchange(queue, 4, "long question", "x" * 100)   # alone over the cap: kept, alone
    assert contents(queue) == ["long question", "x" * 100]


def test_the_conversation_expires_and_each_turn_refreshes_its_ttl(make_queue):
    queue = make_queue(agent_conversation_ttl=600)
    key = queue.keys.conversation(SESSION)
    exchange(queue, 1, "q1", "a1")
    assert 590_000 < queue.client.pttl(key) <= 600_000
    queue.client.pexpire(key, 5_000)
    exchange(queue, 2, "q2", "a2")
    assert 590_000 < queue.client.pttl(key) <= 600_000


def test_a_task_appends_its_turn_once(queue):
    assert exchange(queue, 1, "q1", "a1") is True
    assert exchange(queue, 1, "q1", "a1 again") is False
    assert contents(queue) == ["q1", "a1"]


def test_a_retried_task_neither_sees_nor_duplicates_its_own_turn(queue):
    """An attempt that appended and then lost its outcome (its lease ran out): the next
    attempt is sent the history as the first was, and appends nothing more."""
    seen: list = []
    executor = AgentExecutor(queue=queue, backend=CallableBackend(recording_agent(seen)))
    exchange(queue, 0, "earlier", "earlier answer")
    task = running("task-9", {"query": "now", "session_id": SESSION, "conversation": True})
    executor.handle(task)
    executor.handle(task)                   # the same task, run again
    assert seen[0][1] == seen[1][1] == [{"role": "user", "content": "earlier"},
                                        {"role": "assistant", "content": "earlier answer"}]
    assert contents(queue) == ["earlier", "earlier answer", "now", "answer 1 to now"]


def test_a_failed_attempt_leaves_no_half_turn(queue, make_worker):
    attempts = []

    def flaky(query, session_id=None, history=None):
        attempts.append(history)
        if len(attempts) == 1:
            raise RetryableError("provider hiccup")
        return "fine"
    executor = AgentExecutor(queue=queue, backend=CallableBackend(flaky))
    executor.execute_async("q", session_id=SESSION)
    worker = make_worker()
    register_handlers(worker, queue.settings, executor)
    worker.process_one()
    assert executor.get_conversation(SESSION) == []
    while worker.process_one():
        pass
    assert len(attempts) == 2 and [t["content"] for t in executor.get_conversation(SESSION)] == ["q", "fine"]


def test_a_cancelled_task_keeps_nothing(queue):
    executor = AgentExecutor(queue=queue, backend=CallableBackend(lambda q, s: "late"))
    task = running("task-1", {"query": "q", "session_id": SESSION, "conversation": True})
    task.cancelled = True
    executor.handle(task)
    assert executor.get_conversation(SESSION) == []


def test_clear_forgets_the_conversation(queue):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    exchange(queue, 1, "q1", "a1")
    assert executor.clear_conversation(SESSION) is True
    assert executor.get_conversation(SESSION) == [] and executor.clear_conversation(SESSION) is False


def test_hand_edited_entries_are_skipped_and_a_key_of_another_type_replaced(queue):
    key = queue.keys.conversation(SESSION)
    queue.client.set(key, "not a list")
    assert conversation.load(queue, SESSION) == []
    exchange(queue, 1, "q1", "a1")
    queue.client.lpush(key, "{not json", '{"role": "system", "content": "x"}', "7")
    assert contents(queue) == ["q1", "a1"]
    exchange(queue, 2, "q2", "a2")
    assert contents(queue) == ["q1", "a1", "q2", "a2"]


def test_with_encryption_the_contents_are_sealed_at_rest(make_queue):
    queue = make_queue(encryption_keys=Fernet.generate_key().decode())
    exchange(queue, 1, "my secret question", "my secret answer")
    stored = queue.client.lrange(queue.keys.conversation(SESSION), 0, -1)
    assert stored and not any("secret" in entry for entry in stored)
    assert contents(queue) == ["my secret question", "my secret answer"]


# -- who joins ---------------------------------------------------------------------------------
def test_a_task_joins_with_a_session_unless_told_not_to(queue):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    payloads = [queue.get_task(executor.execute_async("q", **kwargs))["payload"] for kwargs in (
        {"session_id": SESSION}, {"session_id": SESSION, "conversation": False}, {})]
    assert payloads == [{"query": "q", "session_id": SESSION, "conversation": True},
                        {"query": "q", "session_id": SESSION}, {"query": "q"}]


def test_agent_conversations_off_and_per_task_choice(make_queue, make_worker):
    queue = make_queue(agent_conversations=False)
    seen: list = []
    executor = AgentExecutor(queue=queue, backend=CallableBackend(recording_agent(seen)))
    off = executor.execute_async("q1", session_id=SESSION)
    drain(queue, make_worker, executor)
    assert "conversation" not in queue.get_task(off)["payload"]
    assert executor.get_conversation(SESSION) == [] and seen == [("q1", None)]
    on = executor.execute_async("q2", session_id=SESSION, conversation=True)
    drain(queue, make_worker, executor)
    assert queue.get_task(on)["payload"]["conversation"] is True
    assert [t["content"] for t in executor.get_conversation(SESSION)] == ["q2", "answer 2 to q2"]
    assert Settings.from_mapping({"AGENT_CONVERSATIONS": "off"}).agent_conversations is False
    assert Settings.from_mapping({"AGENT_CONVERSATIONS": "on"}).agent_conversations is True


def test_batch_and_csv_children_never_join(queue, make_worker):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    batch = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, session_id=SESSION,
                                   payload={"queries": ["a", "b", "c"], "session_id": SESSION}))
    csv = submit_csv(b"query\nx\ny\n", queue=queue, session_id=SESSION)
    children = child_ids(queue, batch) + child_ids(queue, csv)
    assert len(children) == 5
    for child in children:
        record = queue.get_task(child)
        assert record["session_id"] == SESSION and "conversation" not in record["payload"]
    assert drain(queue, make_worker, executor) == 5
    assert executor.get_conversation(SESSION) == []


def test_a_batch_asking_for_a_conversation_is_refused(queue):
    with pytest.raises(ValidationError, match="never join a conversation"):
        queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, session_id=SESSION,
                               payload={"queries": ["a", "b"], "conversation": True}))
    assert queue.get_queue_stats().pending_tasks == 0


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("session_id", ["", "two\nlines", "nul\x00", "x" * 201, 42, None])
def test_a_bad_session_id_is_refused(queue, session_id):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    with pytest.raises(ValidationError, match="session_id"):
        executor.get_conversation(session_id)
    with pytest.raises(ValidationError, match="session_id"):
        executor.clear_conversation(session_id)


def test_bad_conversation_arguments_are_refused_and_nothing_is_written(queue):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    with pytest.raises(ValidationError, match="needs a session_id"):
        executor.execute_async("q", conversation=True)
    with pytest.raises(ValidationError, match="conversation must be"):
        executor.execute_async("q", session_id=SESSION, conversation="yes")
    with pytest.raises(ValidationError, match="session_id"):
        executor.execute_async("q", session_id="bad\nid")
    assert queue.get_queue_stats().submitted_tasks == 0


def test_a_task_whose_session_cannot_name_a_conversation_fails_for_good(queue):
    executor = AgentExecutor(queue=queue, backend=DemoBackend(0))
    task = running("task-1", {"query": "q", "session_id": 42, "conversation": True}, session_id=None)
    with pytest.raises(PermanentError, match="session_id"):
        executor.handle(task)


@pytest.mark.parametrize("name, value", [("AGENT_CONVERSATION_MAX_TURNS", "1"),
                                         ("AGENT_CONVERSATION_MAX_TOKENS", "0"),
                                         ("AGENT_CONVERSATION_TTL", "0"),
                                         ("AGENT_CONVERSATIONS", "maybe")])
def test_bad_settings_are_refused(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_mapping({name: value})



# -- the console -------------------------------------------------------------------------------
def test_the_task_detail_shows_the_sessions_conversation_as_text(console_env, queue, make_worker):
    executor = AgentExecutor(queue=queue, backend=CallableBackend(
        lambda q, s: f"**bold** [x](https://e.x) to {q}"))
    first = executor.execute_async("What is <b>machine</b> learning?", session_id=SESSION)
    drain(queue, make_worker, executor)
    second = executor.execute_async("and in French?", session_id=SESSION)
    drain(queue, make_worker, executor)
    alone = executor.execute_async("no session")

    at = AppTest.from_file(str(APP), default_timeout=30).run()
    at.switch_page(PAGE_FILES["Tasks"])
    at.query_params["task"] = first
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    [expander] = [e for e in at.expander if e.label.startswith("Conversation")]
    assert expander.label == "Conversation (4 turns)"
    assert [t.value for t in expander.text] == [
        "What is <b>machine</b> learning?", "**bold** [x](https://e.x) to What is <b>machine</b> learning?",
        "and in French?", "**bold** [x](https://e.x) to and in French?"]
    assert [m.name for m in expander.get("chat_message")] == ["user", "assistant", "user", "assistant"]
    captions = [c.value for c in expander.caption]
    assert sum("(this task)" in c for c in captions) == 2 and any(second in c for c in captions)
    at.text_input(key="tasks_open_input").input(alone)
    button(at, "Open task").click().run()
    assert not [e for e in at.expander if e.label.startswith("Conversation")]
