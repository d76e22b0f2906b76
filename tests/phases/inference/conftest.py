"""The serving tests' server: transformers' app for the toy align output behind our RequestGuard, run by
uvicorn in a thread of the test process on a free loopback port (one per test module)."""

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from phases.inference.resolve import resolve
from phases.inference.server import Limits, RequestGuard, build_app

TEST_LIMITS = Limits(max_tokens_cap=32, default_max_tokens=8, max_prompt_chars=2000, max_pending=8)


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    guard: RequestGuard  # its stats, active count and model


@contextmanager
def running(app):
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def served(toy_align):
    guard = build_app(resolve(str(toy_align)), name="toy", limits=TEST_LIMITS)
    with running(guard) as url:
        yield Served(url, guard)


@pytest.fixture(scope="module")
def server(served):
    return served.url


@pytest.fixture(scope="session")
def serving():
    """:func:`running`, for a test that serves an app of its own (``with serving(app) as url``)."""
    return running
