"""DKMS (dkms.conf): `dkms add` takes this tree under the Python package's version,
`dkms build` builds pagebuf.ko against Debian's installed headers, and `dkms
autoinstall` — what a kernel package's hook runs for each new kernel — installs it; then
`dkms remove` takes it all away. Cross-built for the arm64 test kernel too, as a board
user would on an x86 host. Building loads nothing; every dkms tree (sources, builds,
installs) is a scratch directory, so /usr/src, /var/lib/dkms and /lib/modules stay as
they were and the test can run again."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pagebuf

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"
VERSION = pagebuf.__version__
# dkms signs what it builds where the kernel has sign-file, making itself a key in
# /var/lib/dkms first: a sign-file that is not there keeps the test from leaving one.
NO_SIGNING = {"sign_file": "/nonexistent/sign-file"}


def _missing(why: str) -> None:
    if REQUIRE:
        pytest.fail(why)
    pytest.skip(why)


@dataclass
class Dkms:
    trees: Path
    exe: str

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        cmd = [
            self.exe,
            *args,
            "--dkmstree",
            str(self.trees / "dkms"),
            "--sourcetree",
            str(self.trees / "src"),
            "--installtree",
            str(self.trees / "lib"),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **NO_SIGNING, **(env or {})}
        )
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def status(self) -> str:
        return self.run("status").strip()

    def built(self, release: str, arch: str) -> Path:
        return self.trees / "dkms" / "pagebuf" / VERSION / release / arch / "module" / "pagebuf.ko"


@pytest.fixture
def dkms(tmp_path: Path) -> Iterator[Dkms]:
    exe = shutil.which("dkms") or shutil.which("dkms", path="/usr/sbin")
    if exe is None:
        _missing("dkms is missing: run `make setup`")
    if os.geteuid() != 0:
        pytest.skip("dkms add and build need root")
    for sub in ("dkms", "src", "lib"):
        (tmp_path / sub).mkdir()
    d = Dkms(tmp_path, str(exe))
    out = d.run("add", str(ROOT))
    assert (tmp_path / "src" / f"pagebuf-{VERSION}" / "dkms.conf").is_file(), out
    yield d
    if (tmp_path / "dkms" / "pagebuf").exists():
        d.run("remove", "-m", "pagebuf", "-v", VERSION, "--all", "--no-depmod")
    assert d.status() == ""


def _modinfo(ko: Path, field: str) -> str:
    return subprocess.run(
        ["modinfo", "-F", field, str(ko)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_dkms_builds_installs_and_removes_for_debian_s_kernel(dkms: Dkms) -> None:
    kdirs = sorted(glob.glob("/lib/modules/*-amd64/build"))
    if not kdirs:
        _missing("no Debian kernel headers installed: run `make setup`")
    release = Path(kdirs[-1]).parent.name
    dkms.run("build", "-m", "pagebuf", "-v", VERSION, "-k", release)
    ko = dkms.built(release, "x86_64")
    assert _modinfo(ko, "version") == VERSION
    assert _modinfo(ko, "vermagic").split()[0] == release
    assert dkms.status() == f"pagebuf/{VERSION}, {release}, x86_64: built"

    # What /etc/kernel/postinst.d/dkms runs when a kernel is installed (AUTOINSTALL).
    (dkms.trees / "lib" / release).mkdir()
    dkms.run("autoinstall", "-k", release, "--no-depmod")
    installed = dkms.trees / "lib" / release / "updates" / "dkms" / "pagebuf.ko"
    assert _modinfo(installed, "version") == VERSION
    assert dkms.status() == f"pagebuf/{VERSION}, {release}, x86_64: installed"

    dkms.run("remove", "-m", "pagebuf", "-v", VERSION, "--all", "--no-depmod")
    assert not installed.exists() and dkms.status() == ""


def test_dkms_cross_builds_for_the_arm64_test_kernel(dkms: Dkms) -> None:
    from pagebuf.vm import VmError
    from pagebuf.vm.kbuild import ARM64_CROSS_COMPILE, custom_kernel
    from pagebuf.vm.paths import cache_root

    try:
        kernel = custom_kernel(cache_root(), build=False, arch="arm64")
    except VmError as exc:
        _missing(str(exc))
    cross = {"ARCH": "arm64", "CROSS_COMPILE": ARM64_CROSS_COMPILE}
    dkms.run(
        "build",
        "-m",
        "pagebuf",
        "-v",
        VERSION,
        "-k",
        kernel.release,
        "-a",
        "aarch64",
        "--kernelsourcedir",
        str(kernel.kdir),
        env=cross,
    )
    ko = dkms.built(kernel.release, "aarch64")
    assert int.from_bytes(ko.read_bytes()[18:20], "little") == 183  # ELF e_machine: AArch64
    assert _modinfo(ko, "version") == VERSION
    assert _modinfo(ko, "vermagic").split()[0] == kernel.release
