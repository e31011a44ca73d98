"""`pulse ingest --workers N`: N worker processes sharing the MQTT stream, restarted if they die, stopped together."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from pulse.ingest.worker import WORKER_INDEX_ENV, worker_index
from pulse.settings import Settings

log = logging.getLogger("pulse.ingest.supervisor")

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
HEALTHY_RUN_S = 60.0
POLL_S = 0.2


def child_environ(settings: Settings, index: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of worker `index`: this process's settings spelled out as PULSE_* (so an --env-file
    reaches the children too), its worker index, and a health port of its own (base port + index; 0 stays 0)."""
    env = {k: v for k, v in (environ if environ is not None else os.environ).items() if not k.startswith("PULSE_")}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, tuple):
            rendered = ",".join(value)
        else:
            rendered = str(value)
        env[f.metadata["env"]] = rendered
    port = settings.health_port_for("ingest")
    env["PULSE_HEALTH_PORT"] = str(port + index if port else 0)
    env[WORKER_INDEX_ENV] = str(index)
    return env


def run_workers(settings: Settings, n: int) -> int:
    """Run `n` ingest workers until SIGTERM/SIGINT, which is forwarded to each; 0 when all then exit 0.

    Worker i gets INGEST_WORKER_INDEX = base + i, where base is this process's own INGEST_WORKER_INDEX (default
    0): give each host its own range so MQTT client ids (`{PULSE_INGEST_SHARED_GROUP}-{index}`) never collide.
    """
    if n < 1:
        raise ValueError("need at least one worker")
    base = worker_index()
    stopping = False
    children: dict[int, subprocess.Popen[bytes]] = {}
    started_at: dict[int, float] = {}
    restart_at: dict[int, float] = {}
    delays = dict.fromkeys(range(n), RESTART_FIRST_S)
    final: dict[int, int] = {}

    def spawn(i: int) -> None:
        index = base + i
        children[i] = subprocess.Popen(
            [sys.executable, "-m", "pulse", "ingest"], env=child_environ(settings, index),
            stdin=subprocess.DEVNULL)
        started_at[i] = time.monotonic()
        log.info("ingest worker started", extra={"worker_index": index, "pid": children[i].pid})

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        restart_at.clear()
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(n):
            spawn(i)
        while children or (restart_at and not stopping):
            for i, proc in list(children.items()):
                code = proc.poll()
                if code is None:
                    continue
                del children[i]
                final[i] = code
                if stopping:
                    continue
                ran = time.monotonic() - started_at[i]
                delays[i] = RESTART_FIRST_S if ran >= HEALTHY_RUN_S else min(delays[i] * 2, RESTART_MAX_S)
                restart_at[i] = time.monotonic() + delays[i]
                log.error("ingest worker exited unexpectedly; restarting", extra={
                    "worker_index": base + i, "exit_code": code, "restart_in_s": delays[i]})
            for i, at in list(restart_at.items()):
                if not stopping and time.monotonic() >= at:
                    del restart_at[i]
                    spawn(i)
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in children.values():  # only on an error of our own: do not leave orphans
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    failed = {base + i: code for i, code in final.items() if code != 0}
    if failed:
        log.error("ingest workers exited with errors", extra={"exit_codes": str(failed)})
        return 1
    return 0
