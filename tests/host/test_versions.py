"""One version, written once (python/pagebuf/__init__.py): the wheel's metadata, the
module's MODULE_VERSION (kmod/Kbuild) and DKMS's PACKAGE_VERSION (dkms.conf) all read it
from there. And `pagebuf status` says, in one line of words, when the loaded module
speaks another interface version than this package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import pagebuf
from pagebuf import cli, uapi, versions
from pagebuf.device import ModuleInfo
from pagebuf.discovery import DeviceNode

ROOT = Path(__file__).resolve().parents[2]
VERSION_LINE = re.compile(r'^__version__ = "([0-9A-Za-z.+-]+)"$', re.MULTILINE)


def test_the_version_is_written_in_one_place() -> None:
    init = (ROOT / "python" / "pagebuf" / "__init__.py").read_text()
    assert VERSION_LINE.findall(init) == [pagebuf.__version__]
    project = (ROOT / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        meta = tomllib.loads(project)
        assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
        assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pagebuf.__version__"}
    # The module and DKMS take it from __init__.py, not from a literal of their own.
    source = (ROOT / "kmod" / "pagebuf.c").read_text()
    assert re.findall(r"MODULE_VERSION\((.*)\);", source) == ["PAGEBUF_VERSION"]
    assert "python/pagebuf/__init__.py" in (ROOT / "kmod" / "Kbuild").read_text()
    conf = (ROOT / "dkms.conf").read_text()
    assert re.search(r'^PACKAGE_VERSION="\$\(sed ', conf, re.MULTILINE)


def _dkms_conf_version(conf: Path, cwd: Path) -> str:
    """PACKAGE_VERSION as dkms sees it: dkms.conf sourced by bash, from elsewhere."""
    script = 'kernel_source_dir=/k dkms_tree=/d; . "$1"; echo "$PACKAGE_VERSION"'
    proc = subprocess.run(
        ["bash", "-c", script, "-", str(conf)], capture_output=True, text=True, cwd=cwd, check=True
    )
    assert proc.stderr == ""
    return proc.stdout.strip()


def test_dkms_reads_the_version_from_the_tree_and_from_its_copy(tmp_path: Path) -> None:
    assert _dkms_conf_version(ROOT / "dkms.conf", tmp_path) == pagebuf.__version__
    # dkms reads it again through /var/lib/dkms/pagebuf/V/source, a link to its copy.
    copy = tmp_path / "usr-src" / "pagebuf-x"
    (copy / "python" / "pagebuf").mkdir(parents=True)
    (copy / "dkms.conf").write_text((ROOT / "dkms.conf").read_text())
    (copy / "python" / "pagebuf" / "__init__.py").write_text('__version__ = "9.8.7rc1"\n')
    (tmp_path / "source").symlink_to(copy)
    assert _dkms_conf_version(tmp_path / "source" / "dkms.conf", ROOT) == "9.8.7rc1"


# --- pagebuf status: the module's interface and release beside the package's ---


class StatusDevice:
    api_version = uapi.API_VERSION

    def __init__(self, path: object = None) -> None:
        self.node = DeviceNode(Path("/dev/pagebuf"), None)

    def __enter__(self) -> StatusDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def info(self) -> ModuleInfo:
        unlimited = 2**64 - 1
        return ModuleInfo(self.api_version, 0, 4096, 10, 32768, 0, 0, unlimited, unlimited)


@pytest.fixture
def status_of(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., str]:
    """Runs `pagebuf status [--json]` against a module of interface version `api` whose
    sysfs `version` says `release` (None: it has none); returns what it printed."""
    monkeypatch.setattr(cli, "Device", StatusDevice)
    monkeypatch.setattr(versions, "SYS_MODULE", tmp_path)
    monkeypatch.setattr(cli.doctor, "CACHE_OPS_FILE", tmp_path / "cache_ops", raising=False)

    def run(api: int, release: str | None, *args: str) -> str:
        monkeypatch.setattr(StatusDevice, "api_version", api)
        (tmp_path / "version").unlink(missing_ok=True)
        if release is not None:
            (tmp_path / "version").write_text(f"{release}\n")
        assert cli.main(["status", *args]) == 0
        return capsys.readouterr().out

    return run


def test_status_is_quiet_when_the_interfaces_match(status_of: Callable[..., str]) -> None:
    out = status_of(uapi.API_VERSION, pagebuf.__version__).splitlines()
    assert f"module_version {pagebuf.__version__}" in out
    assert f"package        {pagebuf.__version__}" in out
    assert not [line for line in out if "mismatch" in line]
    obj = json.loads(status_of(uapi.API_VERSION, None, "--json"))
    assert obj["api_mismatch"] is None and obj["module_version"] == "unknown"
    assert obj["package"] == pagebuf.__version__


@pytest.mark.parametrize(
    ("api", "what"),
    [
        (uapi.API_VERSION - 1, "is missing; build and load the module from this release"),
        (uapi.API_VERSION + 1, "is unused; upgrade this package"),
    ],
)
def test_status_says_in_one_line_when_the_interfaces_differ(
    status_of: Callable[..., str], api: int, what: str
) -> None:
    out = status_of(api, "0.0.9").splitlines()
    said = [line for line in out if "mismatch" in line]
    assert len(said) == 1 and what in said[0]
    assert said[0].startswith(
        f"interface mismatch: the loaded module speaks interface version {api}, this pagebuf "
        f"{pagebuf.__version__} speaks {uapi.API_VERSION}: "
    )
    assert "module_version 0.0.9" in out
    obj = json.loads(status_of(api, "0.0.9", "--json"))
    assert obj["api_mismatch"] == said[0] and obj["api_version"] == api


def test_module_version_reads_sysfs(tmp_path: Path) -> None:
    assert versions.module_version(tmp_path) is None
    (tmp_path / "version").write_text("0.1.0\n")
    assert versions.module_version(tmp_path) == "0.1.0"
    assert versions.SYS_MODULE == Path("/sys/module/pagebuf")
