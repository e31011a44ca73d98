"""Supervised child processes of `pulse dev`: output prefixed by name, restarts with backoff, clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pulse.runtime import wait_or_stop

if TYPE_CHECKING:
    pass

log = logging.getLogger("pulse.dev")


STOP_GRACE_S = 20.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
_LINE_LIMIT = 1 << 20


@dataclass
class Child:
    """One supervised `python -m pulse <args>` process; its output goes to our stderr, prefixed by `name`."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0


async def supervise(child: Child, stop: asyncio.Event) -> None:
    """Keep `child` running until `stop`; after an unexpected exit restart it, waiting 1 s, 2 s, 4 s … 30 s.

    A child that had been up for BACKOFF_MAX_S or longer starts the ladder again at 1 s.
    """
    loop = asyncio.get_running_loop()
    backoff = BACKOFF_FIRST_S
    while not stop.is_set():
        started = loop.time()
        try:
            code = await run_child(child, stop)
        except OSError as exc:
            log.error("could not start %s: %s", child.name, exc)
            code = -1
        if code is None:
            return
        if loop.time() - started >= BACKOFF_MAX_S:
            backoff = BACKOFF_FIRST_S
        log.warning("%s %s; restarting it in %.0f s", child.name, _describe_exit(code), backoff)
        await wait_or_stop(stop, None, backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
        child.restarts += 1


async def run_child(child: Child, stop: asyncio.Event) -> int | None:
    """Run `child` once: its exit code, or None when `stop` came first (it is then stopped, see terminate)."""
    proc = child.proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pulse", *child.args, env=child.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, limit=_LINE_LIMIT)
    assert proc.stdout is not None
    pump = asyncio.create_task(_pump_output(child.name, proc.stdout))
    exited = asyncio.ensure_future(proc.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            await terminate(child.name, proc)
        code = await exited
    finally:
        stopping.cancel()
        if proc.returncode is None:  # we are being cancelled: leave no orphan behind
            _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pump, 5)
        child.proc = None
    return None if stop.is_set() else code


async def terminate(name: str, proc: asyncio.subprocess.Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not exited within `grace_s`."""
    _signal_group(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        log.warning("%s did not stop within %.0f s; killing it", name, grace_s)
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is not None:  # reaped: the pid may already belong to someone else
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session=True made the child a group leader


async def _pump_output(name: str, stream: asyncio.StreamReader) -> None:
    prefix = f"{name:>8} | "
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than _LINE_LIMIT: the reader dropped it
            continue
        if not line:
            return
        sys.stderr.write(prefix + line.decode(errors="replace").rstrip("\r\n") + "\n")
        sys.stderr.flush()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited unexpectedly with code {code}"
