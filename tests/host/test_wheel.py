"""`pip wheel .` gives a lean, pure wheel: the CLI and the library, no tests and not the
VM harness (python/pagebuf/vm, a developer's tool that runs from the source tree). It
installs into a fresh venv with no compiler on PATH and `pagebuf` answers there.

Offline after the first run: the build's and the dependencies' wheels are downloaded
once into a wheelhouse in the cache (~/.cache/pagebuf/wheels/pyXY, or under
$PAGEBUF_CACHE), and every later pip call here runs with --no-index against it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pagebuf import __version__, uapi

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "python" / "pagebuf"
DIST_INFO = f"pagebuf-{__version__}.dist-info"
BUILD_REQUIRES = ("setuptools>=61", "wheel")
# What a user's checkout holds, caches and an editable install's egg-info included (an
# old egg-info's file list once brought the excluded harness back into the wheel).
COPIED = ("pyproject.toml", "README.md", "python", "tests", "kmod", "Kbuild", "Makefile")


def _wheelhouse() -> Path:
    from pagebuf.vm.paths import cache_root

    path = cache_root() / "wheels" / f"py{sys.version_info[0]}{sys.version_info[1]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _name(requirement: str) -> str:
    """The distribution name of a requirement, as wheel file names spell it."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "_", name.group(0)).lower()


def _stock(wheelhouse: Path, requirements: list[str]) -> None:
    """Download wheels for what the wheelhouse lacks (only binary wheels: nothing here
    may need a compiler); skip the test when that is impossible (offline)."""
    have = {_name(p.name.split("-")[0]) for p in wheelhouse.glob("*.whl")}
    lacking = [r for r in requirements if _name(r) not in have]
    if not lacking:
        return
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:",
         "-d", str(wheelhouse), *lacking],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot download {', '.join(lacking)} (offline?): {proc.stderr[-500:]}")


def _pip(*args: str, env: dict[str, str] | None = None) -> str:
    """This Python's pip (`--python VENV_PYTHON` points it at a venv), offline."""
    wheelhouse = _wheelhouse()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-index", "--find-links", str(wheelhouse)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@dataclass
class Built:
    path: Path
    names: list[str]

    def read(self, name: str) -> str:
        with zipfile.ZipFile(self.path) as whl:
            return whl.read(name).decode()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    junk = shutil.ignore_patterns(
        "__pycache__", ".hypothesis", ".pytest_cache", "*.o", "*.ko", ".*.cmd", "build", "dist"
    )
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=junk)
        else:
            shutil.copy2(ROOT / name, src / name)
    _stock(_wheelhouse(), list(BUILD_REQUIRES))
    _pip("wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src))
    (path,) = (tmp / "dist").glob("*.whl")
    with zipfile.ZipFile(path) as whl:
        return Built(path, whl.namelist())


def test_the_wheel_is_pure_and_holds_the_cli_and_library_only(wheel: Built) -> None:
    assert wheel.path.name == f"pagebuf-{__version__}-py3-none-any.whl"
    assert {n.split("/")[0] for n in wheel.names} == {"pagebuf", DIST_INFO}
    modules = {n for n in wheel.names if n.startswith("pagebuf/")}
    # Every module of the package, and nothing else: no vm/, no tests, no bytecode.
    assert modules == {f"pagebuf/{p.name}" for p in PACKAGE.glob("*.py")}
    assert {"pagebuf/cli.py", "pagebuf/entry.py", "pagebuf/device.py"} <= modules
    assert "Root-Is-Purelib: true" in wheel.read(f"{DIST_INFO}/WHEEL")
    assert "[console_scripts]\npagebuf = pagebuf.entry:main" in wheel.read(
        f"{DIST_INFO}/entry_points.txt"
    )
    metadata = wheel.read(f"{DIST_INFO}/METADATA")
    assert f"\nVersion: {__version__}\n" in metadata


def test_it_installs_and_runs_without_a_compiler(wheel: Built, tmp_path: Path) -> None:
    metadata = wheel.read(f"{DIST_INFO}/METADATA")
    requires = re.findall(r"^Requires-Dist: ([^;\n]+)$", metadata, re.MULTILINE)
    assert sorted(_name(r) for r in requires) == ["ioctl_opt", "numpy", "pyudev", "shtab"]
    _stock(_wheelhouse(), requires)
    venv = tmp_path / "venv"
    # No pip of its own: this Python's installs into it (pip --python).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bindir = str(venv / "bin")
    assert not any(shutil.which(cc, path=bindir) for cc in ("cc", "gcc", "clang"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = bindir  # only the venv: no compiler, no other Python
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "-q", "--only-binary", ":all:", str(wheel.path),
         env=env)  # fmt: skip

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)

    version = run(str(venv / "bin" / "pagebuf"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == (
        f"pagebuf {__version__} (module interface version {uapi.API_VERSION})\n"
    )
    completion = run(str(venv / "bin" / "pagebuf"), "--print-completion", "bash")
    assert completion.returncode == 0 and "_shtab_pagebuf" in completion.stdout
    where = run(str(python), "-c", "import pagebuf; print(pagebuf.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    harness = run(str(python), "-c", "import pagebuf.vm")
    assert "No module named 'pagebuf.vm'" in harness.stderr
    check = run(sys.executable, "-m", "pip", "--python", str(python), "check")
    assert check.returncode == 0, check.stdout + check.stderr
