"""`make install` puts pagebuf.ko where modprobe finds it (modules_install, depmod) and
`make uninstall` takes it away; modinfo shows the Python package's version; the example
modprobe.d file names every module parameter with its default, in a form modprobe reads.
Installs go under a scratch INSTALL_MOD_PATH: nothing here touches /lib/modules."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pagebuf

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"
EXAMPLE = ROOT / "modprobe.d" / "pagebuf.conf"
# What the module's Kbuild reads, beside the module's own sources.
SOURCES = ("Makefile", "Kbuild", "kmod", "python/pagebuf/__init__.py")


def _need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        if REQUIRE:
            pytest.fail(f"{tool} is missing: run `make setup`")
        pytest.skip(f"{tool} is missing: run `make setup`")
    return path


def _debian_kdir() -> str:
    trees = sorted(glob.glob("/lib/modules/*-amd64/build"))
    if not trees:
        if REQUIRE:
            pytest.fail("no Debian kernel headers: run `make setup`")
        pytest.skip("no Debian kernel headers installed: run `make setup`")
    return trees[-1]


def copy_sources(dest: Path) -> Path:
    """The module's sources, without anything built, in a tree of their own."""
    skip = shutil.ignore_patterns("*.o", "*.ko", ".*.cmd", "*.mod", "*.mod.c", "modules.order")
    for name in SOURCES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target, ignore=skip)
        else:
            shutil.copy2(ROOT / name, target)
    return dest


def module_params() -> dict[str, str]:
    """Every module_param_named() of kmod/pagebuf.c and its default, as modprobe takes it."""
    source = (ROOT / "kmod" / "pagebuf.c").read_text()
    params = {}
    for name, var in re.findall(r"module_param_named\((\w+), (\w+),", source):
        decl = re.search(rf"^static [^;=]*\b{var}(?: = ([^;]+))?;", source, re.MULTILINE)
        assert decl, f"no declaration of {var}"
        value = (decl.group(1) or "0").strip().strip('"')
        size = re.fullmatch(r"SZ_(\d+)([KMG])", value)
        if size:
            value = str(int(size.group(1)) << {"K": 10, "M": 20, "G": 30}[size.group(2)])
        params[name] = value
    return params


def test_the_example_names_every_parameter_with_its_default() -> None:
    params = module_params()
    assert set(params) == {"max_order", "max_bytes", "inject", "x86_pat_alias", "cache_ops"}
    lines = re.findall(r"^#options pagebuf (\w+)=(\S+)$", EXAMPLE.read_text(), re.MULTILINE)
    assert dict(lines) == params
    assert len(lines) == len(params)  # each once
    assert not re.search(r"^options", EXAMPLE.read_text(), re.MULTILINE)  # all commented out


def test_modprobe_reads_the_example_once_uncommented(tmp_path: Path) -> None:
    modprobe = _need("modprobe")
    conf = tmp_path / "pagebuf.conf"
    conf.write_text(EXAMPLE.read_text().replace("#options", "options"))
    shown = subprocess.run(
        [modprobe, "-C", str(conf), "--showconfig"], capture_output=True, text=True, check=True
    ).stdout
    given = re.findall(r"^options pagebuf (\w+)=(\S+)$", shown, re.MULTILINE)
    assert dict(given) == module_params()


def test_make_install_and_uninstall(tmp_path: Path) -> None:
    """Against Debian's headers, into a scratch root: the module lands in
    lib/modules/RELEASE/extra, depmod lists it, modprobe finds it by name with the
    example's options, modinfo shows pagebuf.__version__; uninstall undoes it all."""
    kdir = _debian_kdir()
    modprobe, modinfo = _need("modprobe"), _need("modinfo")
    _need("depmod")
    tree, root = copy_sources(tmp_path / "src"), tmp_path / "root"
    make = ["make", "-s", "-C", str(tree), f"KDIR={kdir}", f"INSTALL_MOD_PATH={root}"]
    done = subprocess.run([*make, "install"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (release,) = os.listdir(root / "lib" / "modules")
    assert f'"{release}"' in (Path(kdir) / "include" / "generated" / "utsrelease.h").read_text()
    ko = root / "lib" / "modules" / release / "extra" / "kmod" / "pagebuf.ko"
    assert ko.is_file()
    assert "extra/kmod/pagebuf.ko:" in (ko.parents[2] / "modules.dep").read_text()
    version = subprocess.run(
        [modinfo, "-F", "version", str(ko)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version == pagebuf.__version__
    conf = tmp_path / "pagebuf.conf"
    conf.write_text(EXAMPLE.read_text().replace("#options", "options"))
    found = subprocess.run(
        [modprobe, "-d", str(root), "-S", release, "-C", str(conf), "--show-depends", "pagebuf"],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(f"insmod {ko} ") and "max_order=10" in found.stdout

    done = subprocess.run([*make, "uninstall"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not ko.exists()
    assert "pagebuf" not in (ko.parents[2] / "modules.dep").read_text()
    gone = subprocess.run(
        [modprobe, "-d", str(root), "-S", release, "--show-depends", "pagebuf"],
        capture_output=True,
        text=True,
    )
    assert gone.returncode != 0


def test_install_without_a_kernel_tree_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["make", "-C", str(ROOT), f"KDIR={tmp_path}/none", "uninstall"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and f"no kernel release in {tmp_path}/none" in proc.stderr


def test_the_module_refuses_to_build_without_its_version(tmp_path: Path) -> None:
    """Kbuild takes MODULE_VERSION from python/pagebuf/__init__.py, and says so when it
    is not there rather than building a module with no version."""
    kdir = _debian_kdir()
    tree = copy_sources(tmp_path / "src")
    (tree / "python" / "pagebuf" / "__init__.py").unlink()
    proc = subprocess.run(["make", "-C", str(tree), f"KDIR={kdir}"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no __version__ in" in proc.stdout + proc.stderr
    assert not list(tree.rglob("*.ko"))
