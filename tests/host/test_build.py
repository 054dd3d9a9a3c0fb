"""`make` builds kmod/pagebuf.ko against KDIR from the top of the tree; `make clean`
leaves the tree as git has it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `make test` builds every kernel and the arm64 root filesystem first and sets
# PAGEBUF_REQUIRE_KERNELS=1: there a missing tree is a failure, not a skip.
REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"
CROSS = ("ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-")
VERSION_FILE = "python/pagebuf/__init__.py"  # where kmod/Kbuild reads the module's version


def _kdirs() -> list[object]:
    """Debian's headers (6.1) and the project's 6.12 test kernels, which build
    differently (.module-common.o since 6.10): `make clean` must handle both. The arm64
    one is a board user's cross build: `make ARCH=arm64 CROSS_COMPILE=... KDIR=...`."""
    from pagebuf.vm import VmError
    from pagebuf.vm.kbuild import custom_kernel
    from pagebuf.vm.paths import cache_root

    debian = sorted(glob.glob("/lib/modules/*-amd64/build"))
    params = [pytest.param(debian[-1] if debian else None, (), id="debian")]
    for arch, cross in (("x86_64", ()), ("arm64", CROSS)):
        try:
            kdir: str | None = str(custom_kernel(cache_root(), build=False, arch=arch).kdir)
            marks = []
        except VmError as exc:
            kdir, marks = None, [] if REQUIRE else [pytest.mark.skip(reason=str(exc))]
        name = "custom" if arch == "x86_64" else f"custom-{arch}"
        params.append(pytest.param(kdir, cross, id=name, marks=marks))
    return params


@pytest.mark.parametrize(("kdir", "cross"), _kdirs())
def test_make_builds_the_module_and_clean_cleans(
    tmp_path: Path, kdir: str | None, cross: tuple[str, ...]
) -> None:
    if kdir is None:
        if REQUIRE:
            pytest.fail("no kernel tree to build against: `make kernels` builds them")
        pytest.skip("no Debian kernel headers installed: run `make setup`")
    if shutil.which("git") is None:
        if REQUIRE:
            pytest.fail("git is needed to compare the tree: run `make setup`")
        pytest.skip("git is needed to compare the tree")
    tree = tmp_path / "src"
    skip = shutil.ignore_patterns("*.o", "*.ko", ".*.cmd", "*.mod", "*.mod.c", "modules.order")
    shutil.copytree(ROOT / "kmod", tree / "kmod", ignore=skip)
    for name in ("Makefile", "Kbuild", ".gitignore", VERSION_FILE):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "tree"], check=True)  # fmt: skip
    build = subprocess.run(["make", "-C", str(tree), f"KDIR={kdir}", *cross],
                           capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    ko = (tree / "kmod" / "pagebuf.ko").read_bytes()
    assert int.from_bytes(ko[18:20], "little") == (183 if cross else 62)  # ELF e_machine
    subprocess.run(["make", "-C", str(tree), "clean"], check=True, capture_output=True)
    left = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--ignored"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert left == ""


def test_make_without_kernel_headers_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "-C", str(ROOT), f"KDIR={tmp_path}/none"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0
    assert "no kernel build tree at KDIR" in proc.stderr and "make vm" in proc.stderr


# --- Warning-free (W=1) against 6.1 and 6.12 on both architectures ---


def _target_kernel(which: str) -> object:
    """The GuestKernel to build against, or the reason there is none here."""
    from pagebuf.vm import VmError
    from pagebuf.vm.kbuild import custom_kernel
    from pagebuf.vm.kernels import debian_kernel, debian_rootfs_kernel
    from pagebuf.vm.paths import cache_root
    from pagebuf.vm.rootfs import ensure_rootfs

    try:
        if which == "x86_64-6.1":
            return debian_kernel()
        if which == "x86_64-6.12":
            return custom_kernel(cache_root(), build=False)
        if which == "arm64-6.1":
            return debian_rootfs_kernel(ensure_rootfs(cache_root(), build=False), "arm64")
        return custom_kernel(cache_root(), build=False, arch="arm64")
    except VmError as exc:
        return str(exc)


@pytest.mark.parametrize("which", ["x86_64-6.1", "x86_64-6.12", "arm64-6.1", "arm64-6.12"])
def test_module_builds_warning_free(tmp_path: Path, which: str) -> None:
    from pagebuf.vm.modbuild import cross_tree, make_command

    kernel = _target_kernel(which)
    if isinstance(kernel, str):
        if REQUIRE:
            pytest.fail(f"{which}: {kernel}")
        pytest.skip(kernel)
    assert kernel.release.startswith(which.split("-")[1] + "."), kernel.release  # type: ignore[attr-defined]
    src = tmp_path / "src"
    shutil.copytree(ROOT / "kmod", src / "kmod", ignore=shutil.ignore_patterns("*.o", "*.ko"))
    for name in ("Kbuild", VERSION_FILE):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    kdir, env = cross_tree(kernel, tmp_path / "kdir")  # type: ignore[arg-type]
    cmd = [*make_command(kernel, kdir, src), "W=1"]  # type: ignore[arg-type]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "warning:" not in out and "error:" not in out, out
    # ELF e_machine: EM_X86_64 (62) or EM_AARCH64 (183).
    machine = int.from_bytes((src / "kmod" / "pagebuf.ko").read_bytes()[18:20], "little")
    assert machine == (183 if which.startswith("arm64") else 62), machine
