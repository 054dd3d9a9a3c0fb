"""Naming the device a buffer is mapped for (dmadev.resolve) against a sysfs tree laid out
as the kernel lays it out, and a buffer's DMA facts as the module reports them."""

from __future__ import annotations

import errno as E
import os
from pathlib import Path

import pytest

from pagebuf import dmadev, uapi
from pagebuf.device import Buffer
from pagebuf.errors import InvalidRequestError, NoSuchDeviceError


def device(sysfs: Path, devpath: str, bus: str) -> Path:
    """/sys/devices/<devpath> on `bus`: its subsystem link and the bus's devices/ link."""
    real = sysfs / "devices" / devpath
    real.mkdir(parents=True)
    (sysfs / "bus" / bus / "devices").mkdir(parents=True, exist_ok=True)
    (real / "subsystem").symlink_to(os.path.relpath(sysfs / "bus" / bus, real))
    link = sysfs / "bus" / bus / "devices" / real.name
    link.symlink_to(os.path.relpath(real, link.parent))
    return real


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    device(tmp_path, "platform/soc/13000000.gpu", "platform")
    device(tmp_path, "pci0000:00/0000:00:02.0", "pci")
    device(tmp_path, "pci0000:00/0000:00:03.0", "pci")
    device(tmp_path, "pci0000:00/0000:00:03.0/virtio0", "virtio")
    device(tmp_path, "platform/soc/twice", "platform")
    device(tmp_path, "amba/twice", "amba")
    device(tmp_path, "lonely/usb1", "usb")
    return tmp_path


def test_a_bare_name_is_found_on_its_bus(sysfs: Path) -> None:
    assert dmadev.resolve("13000000.gpu", sysfs) == "platform:13000000.gpu"
    # A PCI name holds colons: its first part is no bus.
    assert dmadev.resolve("0000:00:02.0", sysfs) == "pci:0000:00:02.0"


def test_a_named_bus_is_taken_as_given(sysfs: Path) -> None:
    # The module looks it up: a device that comes later, or never, is its answer (ENODEV).
    assert dmadev.resolve("platform:not-yet", sysfs) == "platform:not-yet"
    assert dmadev.resolve("pci:0000:00:02.0", sysfs) == "pci:0000:00:02.0"


def test_a_name_on_two_buses_must_say_which(sysfs: Path) -> None:
    with pytest.raises(InvalidRequestError, match="on 2 buses; name one of platform:twice, "
                                                  "amba:twice") as exc:  # fmt: skip
        dmadev.resolve("twice", sysfs)
    assert exc.value.errno == E.EINVAL


def test_a_virtio_device_points_at_its_transport(sysfs: Path) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        dmadev.resolve("virtio0", sysfs)
    assert str(exc.value) == ("--dma-device virtio0 is a virtio device: pagebuf maps for "
                              "platform, pci, amba devices; its DMA is done by "
                              "pci:0000:00:03.0, its parent")  # fmt: skip
    with pytest.raises(InvalidRequestError, match="is a usb device") as exc:
        dmadev.resolve("usb1", sysfs)
    assert "its parent" not in str(exc.value)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 60, "platform:", "pci:" + "0" * 61])
def test_what_cannot_be_a_name(sysfs: Path, name: str) -> None:
    with pytest.raises(InvalidRequestError, match="not a device name"):
        dmadev.resolve(name, sysfs)


def test_no_such_device(sysfs: Path) -> None:
    with pytest.raises(NoSuchDeviceError, match="no such device in /sys/bus/") as exc:
        dmadev.resolve("14000000.npu", sysfs)
    assert exc.value.errno == E.ENODEV and isinstance(exc.value, LookupError)


def test_a_buffers_dma_facts_in_words() -> None:
    s = uapi.PagebufBuffer(id=3, order=0, flags=uapi.BUF_DMA | uapi.BUF_DEVICE_GONE,
                           phys_addr=0x1000, dma_addr=0xFFFF0000, size=4096,
                           dma_dir=uapi.DMA_FROM_DEVICE, dma_mask=2**32 - 1,
                           dma_info=uapi.DEV_NONCOHERENT | uapi.DEV_SYNC | uapi.DEV_IOMMU
                           | uapi.DEV_TRANSLATED, dma_device=b"platform:13000000.gpu")  # fmt: skip
    buf = Buffer.from_struct(s)
    assert buf.device_gone and buf.dma_syncs and buf.dma_device == "platform:13000000.gpu"
    d = buf.to_dict()
    assert (d["dma_dir"], d["dma_mask_hex"], d["dma_coherence"], d["dma_iommu"]) == (
        "from-device",
        "0xffffffff",
        "non-coherent",
        "translates",
    )
    own = Buffer.from_struct(uapi.PagebufBuffer(id=4, flags=uapi.BUF_DMA, dma_info=uapi.DEV_IOMMU,
                                                dma_mask=2**64 - 1))  # fmt: skip
    assert own.dma_device is None and own.to_dict()["dma_iommu"] == "identity (passthrough)"
    assert own.to_dict()["dma_coherence"] == "unknown"
    # An older module's answer has none of it; a buffer without DMA says nothing of it.
    old = Buffer.from_struct(uapi.PagebufBuffer(id=5, flags=uapi.BUF_DMA))
    assert old.dma_mask is None and old.to_dict()["dma_mask_hex"] is None
    assert "dma_device" not in Buffer.from_struct(uapi.PagebufBuffer(id=6)).to_dict()
