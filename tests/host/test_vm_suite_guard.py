"""tests/vm skips, with its reason, anywhere but in a guest; in a guest (PAGEBUF_IN_VM=1)
without the module it is an error: a suite in which every test skipped would pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def vm_suite(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAGEBUF_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "python"),
                                                       base.get("PYTHONPATH")]))  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *args,
         str(ROOT / "tests" / "vm" / "test_alloc.py")],
        capture_output=True, text=True, cwd=ROOT, env={**base, **env},
    )  # fmt: skip


def test_on_the_host_every_test_skips_with_the_reason(tmp_path: Path) -> None:
    proc = vm_suite(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout and " skipped" in proc.stdout
    assert "needs pagebuf.ko in a guest kernel: run `make test-vm`" in proc.stdout


@pytest.mark.parametrize("ko", [None, "/nonexistent/pagebuf.ko"])
def test_in_a_guest_without_the_module_the_suite_fails(tmp_path: Path, ko: str | None) -> None:
    env = {"PAGEBUF_IN_VM": "1", **({"PAGEBUF_KO": ko} if ko else {})}
    # Collection only: were the guard gone, nothing of the guest's suite runs on the host.
    proc = vm_suite(tmp_path, "--collect-only", **env)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert f"PAGEBUF_IN_VM=1 but PAGEBUF_KO={ko or ''!r} names no pagebuf.ko" in proc.stderr


def test_in_a_guest_with_the_module_the_tests_run(tmp_path: Path) -> None:
    """Collected, not skipped (only collected here: running them needs the guest)."""
    ko = tmp_path / "pagebuf.ko"
    ko.write_bytes(b"")
    proc = vm_suite(tmp_path, "--collect-only", PAGEBUF_IN_VM="1", PAGEBUF_KO=str(ko))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_alloc.py::" in proc.stdout and "skip" not in proc.stdout
