"""Fixtures shared by test modules."""

import pytest


@pytest.fixture
def servers():
    from dev_harness import DevServer
    started: list[DevServer] = []
    yield started
    for server in started:
        server.kill()
