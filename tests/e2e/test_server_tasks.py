"""A request's asyncio task as the app sees it.

app.bin runs each request's first step eagerly (no asyncio.Task is set up for
a request that never waits) and sets the task up lazily: when the step
suspends or app code first uses asyncio.current_task(). These tests drive
fixtures/appbin_serverapps/appbin_serverapps/tasks.py, whose routes check that
the app cannot tell the difference.
"""

import pytest

pytestmark = pytest.mark.timeout(120)

TASKS_APP = "appbin_serverapps.tasks:app"


@pytest.fixture(scope="module")
def tasks_server(request, tmp_path_factory, server_app_bin):
    from server_fixtures import AppBinFactory

    factory = AppBinFactory(server_app_bin, tmp_path_factory.mktemp("server"))
    request.addfinalizer(factory.close)
    return factory(app=TASKS_APP)


def get(server, route):
    resp = server.get(f"/{route}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_current_task_in_first_step(tasks_server):
    assert get(tasks_server, "current") == {"is_task": True, "running": True}


def test_same_task_after_suspending(tasks_server):
    assert get(tasks_server, "same_after_suspend") == {"same": True, "listed": True,
                                                       "done": False}


def test_task_methods_in_first_step(tasks_server):
    assert get(tasks_server, "task_methods") == {"name": True, "done": False, "loop": True,
                                                 "listed": True, "same": True}


def test_context_per_request(tasks_server):
    for _ in range(3):
        assert get(tasks_server, "context") == {"seen": "unset", "kept": "set"}


def test_cancel_self(tasks_server):
    assert get(tasks_server, "cancel_self") == {"cancelled": True}


def test_anyio_cancel_scopes(tasks_server):
    assert get(tasks_server, "move_on") == {"first": True, "second": False}


def test_threads(tasks_server):
    assert get(tasks_server, "thread") == {"value": 42, "loop_value": 7}


def test_task_group_and_gather(tasks_server):
    assert get(tasks_server, "task_group") == {"results": [0, 1, 2], "gathered": [1, 2]}


def test_task_used_after_its_request(tasks_server):
    assert get(tasks_server, "stash") == {}
    assert get(tasks_server, "stashed") == {"result": None, "done": True, "cancelled": False}


def test_asyncio_timeout_and_task_group(tasks_server):
    assert get(tasks_server, "asyncio_timeout") == {"timed_out": True, "cancelling": 0,
                                                    "parts": [0, 1, 2]}


def test_task_repr_in_first_step(tasks_server):
    assert get(tasks_server, "task_repr") == {"repr": ["<RequestTask", "pending"]}


def test_task_used_after_its_request_awaited_directly(tasks_server):
    assert get(tasks_server, "stash") == {}
    assert get(tasks_server, "stashed_await") == {"result": None, "done": True, "again": []}
    assert get(tasks_server, "stash") == {}
    assert get(tasks_server, "stashed_iter") == {"result": None, "iterator": "FutureIter"}


def test_many_requests_in_flight(tasks_server):
    import concurrent.futures

    routes = ["current", "same_after_suspend", "context", "move_on", "thread"] * 20
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda r: get(tasks_server, r), routes))
    assert len(results) == len(routes)
    assert "Task was destroyed" not in tasks_server.log()
    assert "Traceback" not in tasks_server.log()


def test_context_of_pipelined_requests(tasks_server):
    """Requests that arrive together on one connection each start from the
    server's context, not from the one the previous request left behind
    (that request's send() runs in its own context and wakes the server)."""
    from server_fixtures import RawConn, build_request

    with RawConn(tasks_server.port) as conn:
        conn.send(b"".join(build_request("GET", "/context") for _ in range(8)))
        bodies = [conn.read_response().body for _ in range(8)]
    assert [b'{"seen": "unset", "kept": "set"}'] * 8 == bodies
