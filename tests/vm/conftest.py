"""Fixtures for the in-VM suite: it runs inside a guest with the real pagebuf.ko loaded.

`make test-vm` boots the guest (python -m pagebuf.vm) and runs pytest here; run
anywhere else the whole directory is skipped with that reason, never passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagebuf import Device

IN_VM = os.environ.get("PAGEBUF_IN_VM") == "1"
KO = os.environ.get("PAGEBUF_KO", "")
SYSFS = Path("/sys/class/misc/pagebuf")

# What the kernel log must not show after the suite.
KERNEL_TROUBLE = re.compile(
    r"WARNING:|BUG:|Oops|general protection|Call Trace:|kernel BUG|UBSAN|KASAN|leak"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_VM and KO:
        return
    skip = pytest.mark.skip(reason="needs pagebuf.ko in a guest kernel: run `make test-vm`")
    for item in items:
        item.add_marker(skip)


def sysfs_int(name: str) -> int:
    return int((SYSFS / name).read_text())


def module_loaded() -> bool:
    return Path("/sys/module/pagebuf").exists()


def rmmod() -> None:
    subprocess.run(["rmmod", "pagebuf"], check=True, capture_output=True, text=True)


def insmod(*params: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["insmod", KO, *params], capture_output=True, text=True)
    if proc.returncode == 0:
        # devtmpfs creates the node synchronously, but udev may still chmod it.
        for _ in range(50):
            if Path("/dev/pagebuf").exists():
                break
            time.sleep(0.05)
    return proc


def reload(*params: str) -> None:
    if module_loaded():
        rmmod()
    proc = insmod(*params)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="session", autouse=True)
def kernel_log_clean() -> Iterator[None]:
    """Fail the session if the kernel warned, oopsed or leaked while it ran."""
    subprocess.run(["dmesg", "--clear"], check=False)
    yield
    if not IN_VM:
        return
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    trouble = [line for line in log.splitlines() if KERNEL_TROUBLE.search(line)]
    assert not trouble, "kernel log after the suite:\n" + "\n".join(trouble)


@pytest.fixture
def module() -> Iterator[None]:
    """The module loaded with default parameters, and nothing allocated."""
    reload()
    yield
    if not module_loaded():
        reload()
    with Device() as dev:
        dev.free_all()
    assert sysfs_int("pages_in_use") == 0
    assert sysfs_int("nr_buffers") == 0


@pytest.fixture
def dev(module: None) -> Iterator[Device]:
    with Device() as d:
        yield d
