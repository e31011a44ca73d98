"""Fixtures of the notification tests: a real local HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.test_delivery import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()
