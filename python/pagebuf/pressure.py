"""The child processes of an experiment: cache thrashers and busy-CPU spinners.

Each child dies with the tool (PR_SET_PDEATHSIG), so a kill -9 of the tool leaves nothing
spinning and no child holding /dev/pagebuf open (which would keep the run's file-owned
buffers alive). The run checks them as it goes: one that stopped fails it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .device import Device
from .errors import PagebufError


class Helpers:
    """The child processes of a run: cache thrashers and busy-CPU spinners."""

    def __init__(self) -> None:
        self.children: list[tuple[int, str]] = []

    @property
    def pids(self) -> list[int]:
        return [pid for pid, _ in self.children]

    def check(self) -> None:
        """Fail the run if a helper has stopped: it would lack the pressure it asked for."""
        for pid, what in list(self.children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.children.remove((pid, what))
                raise PagebufError(f"the {what} stopped early (wait status {status:#x}); "
                                   "the run would not have the pressure it asked for")  # fmt: skip


@contextmanager
def pressure(kind: str, device_path: str | None, busy: bool) -> Iterator[Helpers]:
    """Cache pressure (a thrasher) and busy CPUs, as child processes killed on exit.

    Each child dies with the tool (PR_SET_PDEATHSIG), so a kill -9 of the tool leaves
    nothing spinning and no child holding /dev/pagebuf open (which would keep the
    run's file-owned buffers alive). The caller checks them as it goes.
    """
    helpers = Helpers()
    try:
        if kind != "none":
            pid = spawn(lambda: thrash(kind, device_path))
            helpers.children.append((pid, f"{kind} thrasher"))
        if busy:
            for _ in range(max((os.cpu_count() or 1) - 1, 0)):
                helpers.children.append((spawn(spin), "busy-CPU spinner"))
        yield helpers
        helpers.check()
    finally:
        for pid in helpers.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong)  # fmt: skip
_libc.prctl.restype = ctypes.c_int


def spawn(body: Callable[[], None]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's stack
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(0)
            body()
        except BaseException as exc:  # reported, then the child ends
            print(f"pagebuf: pressure child: {exc}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    return pid


def spin() -> None:
    while True:
        pass


def thrash(kind: str, device_path: str | None) -> None:
    """Touch far more memory than any cache holds, so dirty lines get evicted."""
    if kind == "kernel":
        # Its own open file: the scratch buffer is freed when this child dies.
        with Device(device_path) as dev:
            scratch = dev.alloc(min(dev.info().max_order, 10), file_owned=True)
            data = os.urandom(scratch.size)
            while True:
                dev.kwrite(scratch.id, 0, data)
    block = bytearray(64 << 20)
    while True:
        for off in range(0, len(block), 4096):
            block[off] = (block[off] + 1) & 0xFF
