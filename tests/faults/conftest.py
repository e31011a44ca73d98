"""The fault-injection suite runs only under `make faults` (PULSE_FAULTS=1): it restarts PostgreSQL clusters and
brokers of its own and kills processes, which takes minutes, so `make test` skips it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PULSE_FAULTS") == "1":
        return
    skip = pytest.mark.skip(reason="fault injection runs with `make faults` (PULSE_FAULTS=1)")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)
