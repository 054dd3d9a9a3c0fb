"""`make vm CMD=...` for real: boots Debian's kernel under QEMU with the module loaded.

The interface other scripts rely on: the guest command's output on stdout, and make
exits non-zero exactly when the guest command fails. Each boot costs half a minute of
emulation, so there are four: a command that succeeds, one that fails, one too long for
the kernel command line, and a run whose results must land on the host, in the
directory the harness was started from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pagebuf.vm import VmError
from pagebuf.vm.kernels import debian_kernel
from pagebuf.vm.paths import cache_root

ROOT = Path(__file__).resolve().parents[2]


def _bootable() -> str | None:
    try:
        debian_kernel()
    except VmError as exc:
        return str(exc)
    if not (shutil.which("vng") or (Path(sys.executable).parent / "vng").exists()):
        return "virtme-ng is not installed: run `make setup`"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed: run `make setup`"
    return None


# make test (PAGEBUF_REQUIRE_KERNELS=1) has installed all of it: there, its absence fails
# the collection instead of skipping these tests.
if _bootable() is not None and os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1":
    raise RuntimeError(f"make test needs guests here: {_bootable()}")
pytestmark = pytest.mark.skipif(_bootable() is not None, reason=str(_bootable()))


def make_vm(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), "vm", "KERNEL=debian", f"CMD={cmd}"],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_make_vm_alloc_prints_the_buffer_on_stdout() -> None:
    proc = make_vm("pagebuf alloc --order 2 --dma --json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    buf = json.loads(proc.stdout)  # stdout is the guest command's output and nothing else
    assert buf["order"] == 2 and buf["pages"] == 4 and buf["size"] == 4 * 4096
    assert buf["dma"] is True and buf["dma_addr"] is not None
    assert buf["phys_addr"] % (4 * 4096) == 0 and buf["owner"] == "module"


def test_make_vm_fails_exactly_when_the_guest_command_fails() -> None:
    # 'exit 7' after a failing pagebuf call: the status of the whole command comes back.
    proc = make_vm("pagebuf alloc --order 99; echo after; exit 7")
    assert proc.returncode != 0
    assert proc.stdout == "after\n"
    assert "pagebuf: alloc order 99: order above the module's max_order" in proc.stderr
    assert "Error 7" in proc.stderr  # make names the guest command's own status


def test_a_command_longer_than_the_kernel_command_line_allows_still_runs() -> None:
    """The kernel command line holds 2048 bytes: a long command travels as a file the
    guest reads (tests/host/test_vm_harness.py checks where the line would be cut)."""
    word = "pagebuf-" * 90
    proc = make_vm(f"echo {word} | wc -c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == f"{len(word) + 1}\n"


def test_results_land_in_the_directory_the_guest_ran_in() -> None:
    """The guest sees the host read-only except the current directory (vng --rwdir).
    Not under /tmp: the guest has a /tmp of its own, where any write would "work"."""
    cmd = "pagebuf run --buffers 1 --order 0 --duration 0.5 --output r.jsonl && touch ../escaped"
    base = cache_root() / "test-rwdir"
    if Path("/tmp") in base.resolve().parents:
        pytest.skip(f"{base} is under /tmp, which the guest has its own copy of")
    shutil.rmtree(base, ignore_errors=True)
    work = base / "work"
    work.mkdir(parents=True)
    try:
        # Debian's x86 kernel runs with PAT: the run's uncached path needs the opt-in.
        argv = ["--kernel", "debian", "--insmod-args", "x86_pat_alias=1", cmd]
        proc = subprocess.run([sys.executable, "-m", "pagebuf.vm", *argv],
                              cwd=work, capture_output=True, text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 1, proc.stderr[-3000:]  # the run went, then touch failed
        assert "Read-only file system" in proc.stderr
        assert not (base / "escaped").exists()
        report = subprocess.run([sys.executable, "-m", "pagebuf", "report", str(work / "r.jsonl")],
                                capture_output=True, text=True)  # fmt: skip
        assert report.returncode == 0, report.stderr
        assert report.stdout.splitlines()[1].split()[0] == "cached"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _arm64_bootable() -> str | None:
    from pagebuf.vm.rootfs import is_built

    if not shutil.which("qemu-system-aarch64"):
        return "qemu-system-aarch64 is not installed: run `make setup`"
    if not is_built(cache_root()):
        return "the arm64 root filesystem is not built: run `make rootfs ARCH=arm64`"
    return None


arm64 = pytest.mark.skipif(_arm64_bootable() is not None, reason=str(_arm64_bootable()))


@arm64
def test_make_vm_arm64_runs_the_command_on_aarch64() -> None:
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "vm", "ARCH=arm64", "KERNEL=debian",
         "CMD=uname -m; pagebuf alloc --order 2 --json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    machine, _, rest = proc.stdout.partition("\n")
    assert machine == "aarch64"
    buf = json.loads(rest)
    assert buf["order"] == 2 and buf["pages"] == 4 and buf["owner"] == "module"


@arm64
def test_arm64_status_comes_back_and_results_land_in_the_cwd() -> None:
    """The arm64 guest has a root filesystem of its own: the current directory reaches
    it as a share, writable; its parent is the guest's own, read-only."""
    base = cache_root() / "test-rwdir-arm64"
    if Path("/tmp") in base.resolve().parents:
        pytest.skip(f"{base} is under /tmp, which the guest has its own copy of")
    shutil.rmtree(base, ignore_errors=True)
    work = base / "work"
    work.mkdir(parents=True)
    try:
        cmd = "uname -m > arch.txt; touch ../escaped; exit 7"
        proc = subprocess.run([sys.executable, "-m", "pagebuf.vm", "--arch", "arm64", cmd],
                              cwd=work, capture_output=True, text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 7, proc.stderr[-3000:]
        assert (work / "arch.txt").read_text() == "aarch64\n"
        assert "Read-only file system" in proc.stderr
        assert not (base / "escaped").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
