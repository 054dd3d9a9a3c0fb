"""ALLOC maps for a named device (`alloc --dma-device`), as its driver would, and the
mapping goes when the device's driver or the device does.

tests/vm/dmadev's module gives the guest two platform devices that can be unbound and
removed without harm, both bound to its driver: pagebuf-dmadev (whose probe sets a
40-bit DMA mask) and pagebuf-nodma (no DMA mask). A device the guest really has (virtio, on PCI on
x86 and as virtio-mmio platform devices on arm64) is mapped for too.
"""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagebuf import Device, PagebufError, uapi
from pagebuf.errors import InvalidRequestError, NoSuchDeviceError

ARM64 = platform.machine() == "aarch64"
KO = os.environ.get("PAGEBUF_DMADEV_KO", "")
NAME = "pagebuf-dmadev"
SPEC = f"platform:{NAME}"
DRIVER = Path("/sys/bus/platform/drivers") / NAME
BUFFERS = Path("/sys/class/misc/pagebuf/buffers")
MASK_BITS = 40
NO_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]


def dmadev_loaded() -> bool:
    return Path("/sys/module/dmadev").exists()


def load_dmadev() -> None:
    if not dmadev_loaded():
        proc = subprocess.run(["insmod", KO, f"mask_bits={MASK_BITS}"], capture_output=True,
                              text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr


@pytest.fixture
def dmadev(module: None) -> Iterator[None]:
    """dmadev.ko loaded (make test-vm builds it and names it in PAGEBUF_DMADEV_KO), then
    unloaded: pagebuf's buffers are freed first by the `module` fixture's teardown."""
    assert KO and os.path.isfile(KO), f"PAGEBUF_DMADEV_KO={KO!r} names no module"
    load_dmadev()
    yield
    with Device() as d:
        d.free_all()
    if dmadev_loaded():
        subprocess.run(["rmmod", "dmadev"], check=True)


def raw_alloc(dev: Device, **fields: object) -> uapi.PagebufBuffer:
    s = uapi.PagebufBuffer(**fields)  # type: ignore[arg-type]
    fcntl.ioctl(dev.fileno(), uapi.IOC_ALLOC, s, True)
    return s


def errno_of(dev: Device, **fields: object) -> int:
    with pytest.raises(OSError) as exc:
        raw_alloc(dev, **fields)
    return exc.value.errno or 0


def attr(buf_id: int, name: str) -> str:
    return (BUFFERS / str(buf_id) / name).read_text().strip()


def test_a_buffer_is_mapped_for_the_named_device(dmadev: None, dev: Device) -> None:
    assert dev.info().maps_for_devices
    buf = dev.alloc(1, dma=True, dma_device=NAME)  # a bare name: found on its bus
    assert buf.dma and buf.dma_device == SPEC and not buf.device_gone
    assert buf.dma_mask == 2**MASK_BITS - 1  # the mask its driver's probe set, not pagebuf's
    assert buf.dma_dir == uapi.DMA_BIDIRECTIONAL
    # No IOMMU and no firmware node here; dma-direct: the DMA address is the physical one
    # unless bounced, and syncs do cache maintenance only where DMA is not coherent.
    assert buf.to_dict()["dma_iommu"] == "none"
    assert buf.to_dict()["dma_coherence"] == "unknown"
    bounce = dev.info().dma_bounce
    assert buf.bounced == bounce
    assert (buf.dma_addr == buf.phys_addr) == (not bounce)
    assert buf.dma_syncs == (ARM64 or bounce)
    # BUF_INFO, LIST and sysfs say the same.
    assert dev.buffer(buf.id) == buf
    assert [b for b in dev.buffers() if b.id == buf.id] == [buf]
    assert attr(buf.id, "dma_device") == SPEC
    assert attr(buf.id, "dma_dir") == "bidirectional"
    assert int(attr(buf.id, "dma_addr"), 16) == buf.dma_addr
    for direction in (uapi.SYNC_FOR_DEVICE, uapi.SYNC_FOR_CPU):
        dev.sync(buf.id, direction)
    # pagebuf's own device, for comparison: 64-bit mask, named nowhere.
    own = dev.alloc(0, dma=True)
    assert own.dma_device is None and own.dma_mask == 2**64 - 1
    assert attr(own.id, "dma_device") == "pagebuf"
    plain = dev.alloc(0)
    assert attr(plain.id, "dma_device") == "none" and attr(plain.id, "dma_dir") == "none"


@pytest.mark.parametrize("direction,word", [(uapi.DMA_TO_DEVICE, "to-device"),
                                            (uapi.DMA_FROM_DEVICE, "from-device")])  # fmt: skip
def test_the_direction_is_the_callers(dmadev: None, dev: Device, direction: int,
                                      word: str) -> None:  # fmt: skip
    for name in (NAME, None):
        buf = dev.alloc(0, dma=True, dma_device=name, dma_dir=direction)
        assert buf.dma_dir == direction and attr(buf.id, "dma_dir") == word
        dev.sync(buf.id, uapi.SYNC_FOR_CPU)
        dev.sync(buf.id, uapi.SYNC_FOR_DEVICE)


def test_bad_requests_are_refused(dmadev: None, dev: Device) -> None:
    dma = uapi.BUF_DMA
    assert errno_of(dev, flags=dma, dma_device=b"platform:no-such-device") == E.ENODEV
    assert errno_of(dev, flags=dma, dma_device=b"pci:0000:7f:1f.7") == E.ENODEV
    assert errno_of(dev, flags=dma, dma_device=b"virtio:virtio0") == E.EINVAL
    assert errno_of(dev, flags=dma, dma_device=NAME.encode()) == E.EINVAL  # no bus
    assert errno_of(dev, flags=dma, dma_device=b"platform:") == E.EINVAL
    assert errno_of(dev, flags=0, dma_device=SPEC.encode()) == E.EINVAL  # not a DMA buffer
    assert errno_of(dev, flags=0, dma_dir=uapi.DMA_TO_DEVICE) == E.EINVAL
    assert errno_of(dev, flags=dma, dma_dir=3) == E.EINVAL
    assert errno_of(dev, flags=dma, dma_info=1) == E.EINVAL
    assert errno_of(dev, flags=dma, dma_mask=1) == E.EINVAL
    assert errno_of(dev, flags=dma, dma_device=b"platform:pagebuf-nodma") == E.EOPNOTSUPP
    # Not NUL-terminated within the field, or junk after the NUL.
    s = uapi.PagebufBuffer(flags=dma)
    ctypes.memmove(ctypes.addressof(s) + uapi.PagebufBuffer.dma_device.offset, b"p" * 64, 64)
    with pytest.raises(OSError) as exc:
        fcntl.ioctl(dev.fileno(), uapi.IOC_ALLOC, s, True)
    assert exc.value.errno == E.EINVAL
    s = uapi.PagebufBuffer(flags=dma, dma_device=SPEC.encode())
    ctypes.memmove(ctypes.addressof(s) + uapi.PagebufBuffer.dma_device.offset + len(SPEC) + 1,
                   b"x", 1)  # fmt: skip
    with pytest.raises(OSError) as exc:
        fcntl.ioctl(dev.fileno(), uapi.IOC_ALLOC, s, True)
    assert exc.value.errno == E.EINVAL
    # BUF_INFO takes nothing but the id.
    buf = dev.alloc(0, dma=True, dma_device=NAME)
    with pytest.raises(OSError) as exc:
        fcntl.ioctl(dev.fileno(), uapi.IOC_BUF_INFO,
                    uapi.PagebufBuffer(id=buf.id, dma_device=b"x"), True)  # fmt: skip
    assert exc.value.errno == E.EINVAL
    assert dev.info().nr_buffers == 1 and dev.info().bytes_in_use == buf.size


def test_the_library_explains_refusals(dmadev: None, dev: Device) -> None:
    with pytest.raises(NoSuchDeviceError, match="no such device in /sys/bus"):
        dev.alloc(0, dma=True, dma_device="no-such-device")
    with pytest.raises(NoSuchDeviceError, match="no device platform:gone"):
        dev.alloc(0, dma=True, dma_device="platform:gone")
    with pytest.raises(InvalidRequestError, match="does no DMA"):
        dev.alloc(0, dma=True, dma_device="pagebuf-nodma")
    with pytest.raises(InvalidRequestError, match="needs a DMA buffer"):
        dev.alloc(0, dma_device=NAME)


def test_mapping_for_a_device_needs_cap_sys_admin(dmadev: None) -> None:
    code = ("import fcntl, os\nfrom pagebuf import uapi\n"
            "fd = os.open('/dev/pagebuf', os.O_RDWR)\n"
            f"s = uapi.PagebufBuffer(flags=uapi.BUF_DMA, dma_device={SPEC.encode()!r})\n"
            "try:\n fcntl.ioctl(fd, uapi.IOC_ALLOC, s, True)\nexcept OSError as e:\n"
            " print(e.errno)\nelse:\n print('mapped')\n"
            "s = uapi.PagebufBuffer(flags=uapi.BUF_DMA)\n"
            "fcntl.ioctl(fd, uapi.IOC_ALLOC, s, True)\nprint('own', s.id > 0)\n")  # fmt: skip
    proc = subprocess.run([*NO_SYS_ADMIN, sys.executable, "-c", code], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.stdout.split("\n")[:2] == [str(E.EPERM), "own True"], proc.stdout + proc.stderr
    cli = subprocess.run([*NO_SYS_ADMIN, "pagebuf", "alloc", "--order", "0", "--dma-device",
                          NAME], capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 5 and "needs CAP_SYS_ADMIN" in cli.stderr, cli.stderr


def unbind() -> None:
    (DRIVER / "unbind").write_text(NAME)


def bind() -> None:
    (DRIVER / "bind").write_text(NAME)


def test_unbinding_the_driver_undoes_the_mapping(dmadev: None, dev: Device) -> None:
    buf = dev.alloc(2, dma=True, dma_device=NAME)
    other = dev.alloc(0, dma=True)
    unbind()
    try:
        gone = dev.buffer(buf.id)
        assert gone.device_gone and gone.dma_device == SPEC
        assert not dev.buffer(other.id).device_gone
        with pytest.raises(NoSuchDeviceError, match="went away") as exc:
            dev.sync(buf.id, uapi.SYNC_FOR_CPU)
        assert exc.value.errno == E.ENODEV
        dev.sync(other.id, uapi.SYNC_FOR_CPU)
        # With no driver the device's DMA is not set up (that happens when one binds).
        assert errno_of(dev, flags=uapi.BUF_DMA, dma_device=SPEC.encode()) == E.ENXIO
        with pytest.raises(PagebufError, match="no driver is bound"):
            dev.alloc(0, dma=True, dma_device=NAME)
    finally:
        bind()
    # Bound again: it maps again, as its driver set it up; the old mapping stays gone.
    assert dev.buffer(buf.id).device_gone
    again = dev.alloc(0, dma=True, dma_device=NAME)
    assert not again.device_gone and again.dma_mask == 2**MASK_BITS - 1
    dev.sync(again.id, uapi.SYNC_FOR_DEVICE)
    dev.free(buf.id)


def test_removing_the_device_undoes_the_mapping(dmadev: None, dev: Device) -> None:
    buf = dev.alloc(1, dma=True, dma_device=NAME)
    # Mapped and mmapped: the pages outlive the device, the mapping does not.
    with open("/dev/pagebuf", "r+b", buffering=0) as f:
        import mmap

        m = mmap.mmap(f.fileno(), buf.size, offset=buf.phys_addr)
        subprocess.run(["rmmod", "dmadev"], check=True)
        assert dev.buffer(buf.id).device_gone
        m[:4] = b"live"
        assert dev.kread(buf.id, 0, 4) == b"live"
        m.close()
    assert dev.info().nr_buffers == 1
    with pytest.raises(PagebufError) as exc:
        dev.sync(buf.id, uapi.SYNC_FOR_DEVICE)
    assert exc.value.errno == E.ENODEV
    with pytest.raises(NoSuchDeviceError):
        dev.alloc(0, dma=True, dma_device=SPEC)
    dev.free(buf.id)
    assert dev.info().bytes_in_use == 0
    load_dmadev()  # for the fixture's teardown


def test_the_cli_maps_for_a_device_and_says_what_it_is(dmadev: None) -> None:
    proc = subprocess.run(["pagebuf", "alloc", "--order", "0", "--dma-device", NAME,
                           "--dma-dir", "to-device", "--json"], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dma"] and out["dma_device"] == SPEC and out["dma_dir"] == "to-device"
    assert out["dma_mask_hex"] == hex(2**MASK_BITS - 1) and out["dma_iommu"] == "none"
    text = subprocess.run(["pagebuf", "info", str(out["id"])], capture_output=True,
                          text=True).stdout  # fmt: skip
    assert f"device     {SPEC}\n" in text and "direction  to-device\n" in text
    assert f"dma_mask   0x{2**MASK_BITS - 1:016x}\n" in text
    listing = subprocess.run(["pagebuf", "list"], capture_output=True, text=True).stdout
    assert listing.splitlines()[0].endswith("OWNER   DEVICE")
    assert listing.splitlines()[1].endswith(f"module  {SPEC}")
    bad = subprocess.run(["pagebuf", "alloc", "--order", "0", "--dma-device", "nosuch"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 4 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "no such device" in bad.stderr


def real_device() -> tuple[str, Path]:
    """A device the guest has, with a driver, that does DMA: a virtio transport (PCI on
    x86, virtio-mmio on arm64), named as `--dma-device` takes it, and its sysfs path."""
    for bus in ("pci", "platform"):
        for path in sorted(Path(f"/sys/bus/{bus}/devices").glob("*")):
            driver = path / "driver"
            if driver.is_symlink() and "virtio" in os.readlink(driver):
                return f"{bus}:{path.name}", path
    pytest.fail("no virtio device with a driver in /sys/bus/{pci,platform}/devices")


def test_a_real_device(dmadev: None, dev: Device) -> None:
    spec, path = real_device()
    buf = dev.alloc(0, dma=True, dma_device=spec.split(":", 1)[1])
    assert buf.dma_device == spec and not buf.device_gone
    assert buf.dma_mask is not None and buf.dma_mask >= 2**32 - 1
    bits = path / "dma_mask_bits"  # PCI devices say theirs in sysfs
    if bits.exists():
        assert buf.dma_mask == 2 ** int(bits.read_text()) - 1
    coherent = path / "of_node" / "dma-coherent"  # a device-tree device: firmware's word
    if (path / "of_node").exists():
        assert buf.to_dict()["dma_coherence"] == (
            "coherent" if coherent.exists() else "non-coherent"
        )
    dev.sync(buf.id, uapi.SYNC_FOR_DEVICE)
    dev.sync(buf.id, uapi.SYNC_FOR_CPU)


def test_a_virtio_device_is_named_by_its_transport(dmadev: None, dev: Device) -> None:
    virtio = sorted(Path("/sys/bus/virtio/devices").glob("virtio*"))
    assert virtio, "the guest has no virtio device"
    with pytest.raises(InvalidRequestError, match="is a virtio device") as exc:
        dev.alloc(0, dma=True, dma_device=virtio[0].name)
    assert "its DMA is done by " in str(exc.value)


QUICK = ["--duration", "1", "--interval", "0.5", "--buffers", "2", "--order", "2"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pagebuf", *argv], capture_output=True, text=True)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_dma_arm_maps_for_the_named_device(dmadev: None, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    proc = run("run", "--mode", "dma", "--no-controls", "--dma-device", NAME, *QUICK,
               "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = records(out)
    assert recs[0]["type"] == "header" and recs[0]["params"]["dma_device"] == SPEC  # type: ignore[index]
    summary = next(r for r in recs if r["type"] == "arm_summary")
    with Device() as d:
        if d.info().dma_bounce:  # swiotlb=force: this device's mappings are bounced too
            assert summary["verdict"] == "skipped" and "swiotlb" in str(summary["note"])
            return
    access = next(r for r in recs if r["type"] == "access")
    dma = access["dma"]
    assert isinstance(dma, dict) and dma["dma_device"] == SPEC
    assert dma["dma_mask_hex"] == hex(2**MASK_BITS - 1)
    assert summary["verdict"] == "clean"
    syncs = "needed" if dma["dma_syncs"] else "not needed"
    assert (
        f"dma: mapped for {SPEC} (mask {hex(2**MASK_BITS - 1)}, firmware says unknown, "
        f"IOMMU none): syncs {syncs}\n" in proc.stdout
    ), proc.stdout
    # Replayed from the file, the report says the same.
    again = run("report", str(out))
    assert f"dma: mapped for {SPEC} " in again.stdout


def test_a_device_that_cannot_be_mapped_for_skips_the_dma_arm(dmadev: None,
                                                              tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "run.jsonl"
    proc = run("compare", "--dma-device", "pagebuf-nodma", *QUICK, "--duration", "0",
               "--output", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {r["arm"]: r for r in json.loads(proc.stdout)}
    assert rows["dma"]["verdict"] == "skipped"
    assert "cannot map for platform:pagebuf-nodma: " in rows["dma"]["note"]
    assert "does no DMA" in rows["dma"]["note"]
    assert rows["cached"]["verdict"] == "clean"  # the other arms ran
    missing = run("compare", "--dma-device", "nosuch", *QUICK, "--output", str(out))
    assert missing.returncode == 4 and "no such device" in missing.stderr
    assert missing.stderr.count("\n") == 1
