"""`make` builds kmod/pagebuf.ko against KDIR from the top of the tree; `make clean`
leaves the tree as git has it."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _kdirs() -> list[object]:
    """Debian's headers (6.1) and the project's 6.12 test kernel, which builds
    differently (.module-common.o since 6.10): `make clean` must handle both."""
    from pagebuf.vm import VmError
    from pagebuf.vm.kbuild import custom_kernel
    from pagebuf.vm.paths import cache_root

    debian = sorted(glob.glob("/lib/modules/*-amd64/build"))
    try:
        custom = str(custom_kernel(cache_root(), build=False).kdir)
    except VmError as exc:
        custom = None
        why = str(exc)
    return [
        pytest.param(debian[-1] if debian else None, id="debian"),
        pytest.param(custom, id="custom", marks=[] if custom else pytest.mark.skip(reason=why)),
    ]


@pytest.mark.parametrize("kdir", _kdirs())
def test_make_builds_the_module_and_clean_cleans(tmp_path: Path, kdir: str | None) -> None:
    if kdir is None:
        pytest.skip("no Debian kernel headers installed: run `make setup`")
    if shutil.which("git") is None:
        pytest.skip("git is needed to compare the tree")
    tree = tmp_path / "src"
    skip = shutil.ignore_patterns("*.o", "*.ko", ".*.cmd", "*.mod", "*.mod.c", "modules.order")
    shutil.copytree(ROOT / "kmod", tree / "kmod", ignore=skip)
    for name in ("Makefile", "Kbuild", ".gitignore"):
        shutil.copy2(ROOT / name, tree / name)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "tree"], check=True)  # fmt: skip
    build = subprocess.run(["make", "-C", str(tree), f"KDIR={kdir}"],
                           capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tree / "kmod" / "pagebuf.ko").is_file()
    subprocess.run(["make", "-C", str(tree), "clean"], check=True, capture_output=True)
    left = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--ignored"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert left == ""


def test_make_without_kernel_headers_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "-C", str(ROOT), f"KDIR={tmp_path}/none"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0
    assert "no kernel build tree at KDIR" in proc.stderr and "make vm" in proc.stderr
