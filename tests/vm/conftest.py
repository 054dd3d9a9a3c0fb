"""Fixtures for the in-VM suite: it runs inside a guest with the real pagebuf.ko loaded.

`make test-vm` boots the guest (python -m pagebuf.vm) and runs pytest here; run
anywhere else the whole directory is skipped with that reason, never passed. In a guest
(PAGEBUF_IN_VM=1) without the module it is an error, not a suite of skips.
"""

from __future__ import annotations

import gzip
import os
import platform
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
    if IN_VM:
        # In the guest the suite runs or fails: skipping every test would pass it.
        if not KO or not os.path.isfile(KO):
            raise pytest.UsageError(
                f"PAGEBUF_IN_VM=1 but PAGEBUF_KO={KO!r} names no pagebuf.ko: the in-VM suite "
                "needs the module (`make test-vm` builds it; not `--no-module`)"
            )
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


def pat_on() -> bool:
    """x86 booted with PAT: uncached maps of RAM need the module's x86_pat_alias=1."""
    cmdline = Path("/proc/cmdline").read_text().split()
    return platform.machine() == "x86_64" and "nopat" not in cmdline


def reload(*params: str) -> None:
    """Load the module afresh. On PAT kernels the suite maps RAM uncached, as on every
    other kernel, so it opts in unless a test says otherwise (x86_pat_alias=0)."""
    if pat_on() and not any(p.startswith("x86_pat_alias=") for p in params):
        params = (*params, "x86_pat_alias=1")
    if module_loaded():
        rmmod()
    proc = insmod(*params)
    assert proc.returncode == 0, proc.stderr


DEBUGFS = Path("/sys/kernel/debug")
KMEMLEAK = DEBUGFS / "kmemleak"
# A backtrace frame in pagebuf, or in code no longer loaded (%pS prints a bare address):
# the test kernel builds everything else in, and only the suite unloads modules. Frames
# print as "    sym+0x1/0x2 [mod]" (6.12) or "    [<addr>] sym+0x1/0x2 [mod]" (older).
LEAK_FRAME = re.compile(r"\[pagebuf\]|\bpagebuf_\w+\+0x|^\s+(\[<[0-9a-f]+>\] )?0x[0-9a-f]+$")


def kernel_config() -> str | None:
    """The running kernel's .config, from /proc/config.gz or /boot, if either has it."""
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        pass
    try:
        return Path(f"/boot/config-{os.uname().release}").read_text()
    except OSError:
        return None


class Kmemleak:
    """kmemleak, where the kernel has it: cleared when the session starts, scanned at its
    end for unreferenced objects that pagebuf allocated."""

    def __init__(self, boot_log: str) -> None:
        self.problem: str | None = None
        self.active = False
        if not DEBUGFS.joinpath("kmemleak").exists() and not os.path.ismount(DEBUGFS):
            subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)],
                           capture_output=True, check=False)  # fmt: skip
        config = kernel_config() or ""
        configured = "\nCONFIG_DEBUG_KMEMLEAK=y\n" in f"\n{config}"
        if not KMEMLEAK.exists():
            if configured:
                self.problem = f"CONFIG_DEBUG_KMEMLEAK=y but there is no {KMEMLEAK}"
            return
        self.active = True
        why = "\n".join(line for line in boot_log.splitlines() if "kmemleak" in line)
        try:
            # No scanning thread (its reports would land mid-session); EPERM when kmemleak
            # has disabled itself (an early-log overflow, kmemleak=off, an error).
            self.write("scan=off")
            self.write("clear")
        except OSError as exc:
            self.problem = f"kmemleak is unusable ({exc}); its log lines:\n{why or '(none)'}"

    @staticmethod
    def write(command: str) -> None:
        with open(KMEMLEAK, "w") as f:
            f.write(command)

    def leaks(self) -> list[str]:
        """Reports of unreferenced objects with pagebuf in their allocation backtrace."""
        self.write("scan")
        time.sleep(6)  # an object is reported once it is 5 s old and still unreferenced
        self.write("scan")
        text = KMEMLEAK.read_text()
        records = ["unreferenced object " + r for r in text.split("unreferenced object ")[1:]]
        return [r for r in records if any(LEAK_FRAME.search(line) for line in r.splitlines())]


@pytest.fixture(scope="session", autouse=True)
def kernel_log_clean() -> Iterator[None]:
    """Fail the session if the kernel warned, oopsed or leaked while it ran: its log, and
    kmemleak where the kernel has it (CONFIG_DEBUG_KMEMLEAK=y: then it must work)."""
    boot = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    subprocess.run(["dmesg", "--clear"], check=False)
    kmemleak = Kmemleak(boot) if IN_VM else None
    yield
    if not IN_VM or kmemleak is None:
        return
    # The log first: a kmemleak scan logs its own count of suspects, pagebuf's or not.
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    trouble = [line for line in log.splitlines() if KERNEL_TROUBLE.search(line)]
    leaks: list[str] = []
    if kmemleak.active and kmemleak.problem is None:
        try:
            leaks = kmemleak.leaks()
        except OSError as exc:
            kmemleak.problem = f"kmemleak scan failed: {exc}"
    assert not trouble, "kernel log after the suite:\n" + "\n".join(trouble)
    assert kmemleak.problem is None, kmemleak.problem
    assert not leaks, f"kmemleak: {len(leaks)} objects pagebuf leaked:\n" + "\n".join(leaks)


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
