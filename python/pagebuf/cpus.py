"""Take the other CPUs offline for a run and always bring them back.

The CPUs a run takes offline are written to a state file *before* the first one goes,
so `pagebuf cpus restore` can finish the job after the tool was killed (SIGKILL, a
crash); the context manager restores them on success, exceptions and Ctrl-C.
"""

from __future__ import annotations

import errno as E
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PagebufError, PermissionDeniedError

SYSFS_CPU = Path("/sys/devices/system/cpu")


def state_path() -> Path:
    return Path(os.environ.get("PAGEBUF_STATE_DIR", "/run/pagebuf")) / "offlined-cpus.json"


def parse_cpulist(text: str) -> list[int]:
    """Kernel CPU list syntax: "0-3,5" -> [0, 1, 2, 3, 5]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def online_cpus(sysfs: Path = SYSFS_CPU) -> list[int]:
    return parse_cpulist((sysfs / "online").read_text())


def _set_online(cpu: int, online: bool, sysfs: Path) -> None:
    try:
        (sysfs / f"cpu{cpu}" / "online").write_text("1" if online else "0")
    except OSError as exc:
        verb = "online" if online else "offline"
        if exc.errno in (E.EPERM, E.EACCES):
            msg = f"cannot take cpu{cpu} {verb}: needs root"
            raise PermissionDeniedError(msg, exc.errno) from None
        raise PagebufError(f"cannot take cpu{cpu} {verb}: {exc.strerror}", exc.errno) from None


def _write_state(cpus: list[int], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"offlined": cpus, "pid": os.getpid()}) + "\n")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise PagebufError(
            f"cannot record the CPUs to take offline in {path}: {exc.strerror} "
            "(set PAGEBUF_STATE_DIR to a writable directory)",
            exc.errno,
        ) from None


def _read_state(path: Path) -> list[int] | None:
    """The CPUs a state file lists; None if there is none; an error if it is damaged."""
    try:
        cpus = json.loads(path.read_text())["offlined"]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PagebufError(f"cannot read {path}: {exc.strerror}", exc.errno) from None
    except (ValueError, KeyError, TypeError):
        cpus = None
    if not isinstance(cpus, list) or not all(type(c) is int and c >= 0 for c in cpus):
        raise PagebufError(
            f"{path} is damaged: bring CPUs back with `echo 1 > "
            f"{SYSFS_CPU}/cpuN/online`, then delete it",
            E.EINVAL,
        )
    return cpus


def offline_others(keep: int = 0, sysfs: Path = SYSFS_CPU, state: Path | None = None) -> list[int]:
    """Take every online CPU but `keep` offline; return them (recorded in `state` first)."""
    state = state or state_path()
    if state.exists():
        raise PagebufError(
            f"{state} records CPUs an earlier run took offline: run `pagebuf cpus restore`",
            E.EBUSY,
        )
    others = [
        c for c in online_cpus(sysfs) if c != keep and (sysfs / f"cpu{c}" / "online").exists()
    ]
    _write_state(others, state)
    done: list[int] = []
    try:
        for cpu in others:
            _set_online(cpu, False, sysfs)
            done.append(cpu)
    except BaseException:
        restore(sysfs, state)
        raise
    return done


def restore(sysfs: Path = SYSFS_CPU, state: Path | None = None) -> list[int]:
    """Bring back every CPU the state file lists; remove it. Returns those CPUs."""
    state = state or state_path()
    cpus = _read_state(state)
    if cpus is None:
        return []
    for cpu in cpus:
        _set_online(cpu, True, sysfs)
    state.unlink()
    return list(cpus)


@contextmanager
def single_cpu(
    keep: int = 0, sysfs: Path = SYSFS_CPU, state: Path | None = None
) -> Iterator[list[int]]:
    """Run the body on CPU `keep` alone; the others come back however the body ends."""
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {keep})
    except OSError as exc:
        raise PagebufError(f"cannot run on cpu{keep} alone: {exc.strerror}", exc.errno) from None
    try:
        offlined = offline_others(keep, sysfs, state)
        try:
            yield offlined
        finally:
            restore(sysfs, state)
    finally:
        os.sched_setaffinity(0, previous)
