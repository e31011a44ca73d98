"""What the browser tests need on this machine: the built web app, playwright-core, Debian's chromium and node."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SPA = Path(__file__).resolve().parents[2] / "spa"
CHROMIUM = "/usr/bin/chromium"


def require_browser_setup(test: str, node_modules: tuple[str, ...] = ()) -> str:
    """The node binary; fails (not skips) with what is missing, since `make test` provides all of it.

    `node_modules` are packages under spa/node_modules the test needs besides playwright-core."""
    node = shutil.which("node")
    missing = [what for what, ok in [
        ("spa/dist/index.html (run scripts/spa.sh)", (SPA / "dist" / "index.html").is_file()),
        *[(f"spa/node_modules/{name} (run scripts/spa.sh)", (SPA / "node_modules" / name).is_dir())
          for name in ("playwright-core", *node_modules)],
        (f"{CHROMIUM} (apt-get install chromium)", os.access(CHROMIUM, os.X_OK)),
        ("node (apt-get install nodejs)", node is not None),
    ] if not ok]
    if missing or node is None:
        pytest.fail(f"{test} needs: " + ", ".join(missing))
    return node
