"""find_device: an explicit path, then sysfs and the conventional node, then udev."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from pagebuf import discovery
from pagebuf.errors import ModuleNotLoadedError


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for /sys/class/misc/pagebuf naming /dev/null's device number (1:3)."""
    d = tmp_path / "misc-pagebuf"
    d.mkdir()
    st = os.stat("/dev/null")
    (d / "dev").write_text(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}\n")
    monkeypatch.setattr(discovery, "SYSFS", d)
    monkeypatch.delenv(discovery.ENV_DEVICE, raising=False)
    return d


def fake_pyudev(monkeypatch: pytest.MonkeyPatch, node: str | None) -> list[str]:
    """A pyudev whose misc/pagebuf has device node `node` (None: no such device); the
    list records each lookup."""
    asked: list[str] = []

    class DeviceNotFoundError(LookupError):
        pass

    def from_name(context: object, subsystem: str, name: str) -> object:
        asked.append(f"{subsystem}/{name}")
        if node is None:
            raise DeviceNotFoundError(name)
        return types.SimpleNamespace(device_node=node, sys_path="/sys/devices/virtual/misc/x")

    mod = types.SimpleNamespace(Context=object, DeviceNotFoundError=DeviceNotFoundError,
                                Devices=types.SimpleNamespace(from_name=from_name))  # fmt: skip
    monkeypatch.setitem(sys.modules, "pyudev", mod)
    return asked


def test_an_explicit_path_wins(sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert discovery.find_device("/dev/elsewhere") == discovery.DeviceNode(
        Path("/dev/elsewhere"), None
    )
    monkeypatch.setenv(discovery.ENV_DEVICE, "/dev/from-env")
    assert discovery.find_device().devnode == Path("/dev/from-env")


def test_the_node_sysfs_names_is_taken_without_udev(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "DEVNODE", Path("/dev/null"))
    asked = fake_pyudev(monkeypatch, "/dev/not-this")
    assert discovery.find_device() == discovery.DeviceNode(Path("/dev/null"), sysfs.resolve())
    assert asked == []


@pytest.mark.parametrize("node", ["/dev/zero", "/nonexistent/pagebuf"])
def test_another_node_sends_the_search_to_udev(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch, node: str
) -> None:
    """A node of another device number, or none: a udev rule may have named it."""
    monkeypatch.setattr(discovery, "DEVNODE", Path(node))
    asked = fake_pyudev(monkeypatch, "/dev/renamed")
    found = discovery.find_device()
    assert found.devnode == Path("/dev/renamed") and asked == ["misc/pagebuf"]


def test_not_loaded(sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "SYSFS", sysfs / "absent")
    with pytest.raises(ModuleNotLoadedError, match="insmod"):
        discovery.find_device()
    monkeypatch.setattr(discovery, "SYSFS", sysfs)
    monkeypatch.setattr(discovery, "DEVNODE", Path("/dev/zero"))
    fake_pyudev(monkeypatch, None)
    with pytest.raises(ModuleNotLoadedError, match="insmod"):
        discovery.find_device()


def no_libudev(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyudev installed, libudev not: pyudev's import fails, as on busybox and mdev."""
    monkeypatch.setitem(sys.modules, "pyudev", None)  # `import pyudev` raises ImportError


def test_without_libudev_the_node_sysfs_names_still_works(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_libudev(monkeypatch)
    monkeypatch.setattr(discovery, "DEVNODE", Path("/dev/null"))
    assert discovery.find_device().devnode == Path("/dev/null")


@pytest.mark.parametrize(
    ("node", "what"), [("/dev/zero", "is another device"), ("/nonexistent/x", "does not exist")]
)
def test_without_libudev_a_missing_or_wrong_node_says_how_to_name_it(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch, node: str, what: str
) -> None:
    no_libudev(monkeypatch)
    monkeypatch.setattr(discovery, "DEVNODE", Path(node))
    with pytest.raises(ModuleNotLoadedError) as err:
        discovery.find_device()
    msg = str(err.value)
    assert f"{node} {what}" in msg and "mknod" in msg and "PAGEBUF_DEVICE" in msg
    assert "--device" in msg
