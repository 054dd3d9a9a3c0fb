"""ALLOC, BUF_INFO, LIST and FREE for every order, with and without DMA mapping."""

from __future__ import annotations

import errno as E
import os
from pathlib import Path

import pytest
from conftest import sysfs_int

from pagebuf import Device, PagebufError
from pagebuf.doctor import swiotlb_forced

PAGE = os.sysconf("SC_PAGE_SIZE")


def system_ram() -> list[tuple[int, int]]:
    """Top-level "System RAM" ranges of /proc/iomem (real addresses: we are root)."""
    ranges = []
    for line in Path("/proc/iomem").read_text().splitlines():
        if line.startswith(" ") or not line.rstrip().endswith(": System RAM"):
            continue
        span = line.split(" : ")[0]
        lo, hi = (int(x, 16) for x in span.split("-"))
        ranges.append((lo, hi))
    assert ranges and any(hi > 0 for _, hi in ranges), "no System RAM in /proc/iomem"
    return ranges


def bounced_by_force() -> bool:
    return swiotlb_forced(Path("/proc/cmdline").read_text())


def test_sysfs_and_udev_find_the_same_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (sysfs and /dev/pagebuf) and udev agree on the loaded module's node
    and directory; udev is asked when /dev/pagebuf is not the device sysfs names."""
    from pagebuf import discovery

    monkeypatch.delenv(discovery.ENV_DEVICE, raising=False)
    fast = discovery.find_device()
    assert fast == discovery.DeviceNode(
        Path("/dev/pagebuf"), Path("/sys/devices/virtual/misc/pagebuf")
    )
    monkeypatch.setattr(discovery, "DEVNODE", Path("/dev/null"))
    via_udev = discovery.find_device()
    assert via_udev == fast  # udev's own node: the fallback would have said /dev/null


BUFFERS = Path("/sys/class/misc/pagebuf/buffers")


def buffer_dirs() -> set[int]:
    return {int(d.name) for d in BUFFERS.iterdir()}


def test_each_buffer_has_its_sysfs_directory(dev: Device) -> None:
    """buffers/<id> holds what ALLOC said, for a shell to cat, and goes with the buffer:
    FREE, FREE_ALL and the close of the file that owns it."""
    before = buffer_dirs()
    plain, mapped = dev.alloc(2), dev.alloc(0, dma=True)
    with Device() as other:
        owned = other.alloc(1, file_owned=True)
        assert buffer_dirs() - before == {plain.id, mapped.id, owned.id}
        for buf in (plain, mapped, owned):
            d = BUFFERS / str(buf.id)
            got = {f: (d / f).read_text().strip() for f in
                   ("phys_addr", "dma_addr", "size", "order", "owner", "bounced")}  # fmt: skip
            assert got == {
                "phys_addr": hex(buf.phys_addr),
                "dma_addr": "none" if buf.dma_addr is None else hex(buf.dma_addr),
                "size": str(buf.size),
                "order": str(buf.order),
                "owner": buf.owner,
                "bounced": str(int(buf.bounced)),
            }
    assert buffer_dirs() - before == {plain.id, mapped.id}  # closing freed its own
    dev.free(plain.id)
    assert buffer_dirs() - before == {mapped.id}
    dev.free(mapped.id)
    assert buffer_dirs() == before


def test_module_info_matches_sysfs(dev: Device) -> None:
    info = dev.info()
    assert info.api_version == 4 == sysfs_int("version")
    assert info.page_size == PAGE
    assert info.max_order == sysfs_int("max_order") == 10
    assert info.max_bytes == sysfs_int("max_bytes") == 128 << 20
    assert info.max_pages == sysfs_int("max_pages") == (128 << 20) // PAGE
    assert info.bytes_in_use == sysfs_int("bytes_in_use") == 0
    assert info.pages_in_use == sysfs_int("pages_in_use") == 0
    assert info.nr_buffers == sysfs_int("nr_buffers") == 0
    assert info.dma_mask == (1 << 64) - 1
    # A 64-bit mask limits a mapping's size only where swiotlb bounces every one.
    assert info.dma_max_size == sysfs_int("dma_max_size")
    assert (info.dma_limit is not None) == info.dma_bounce == bounced_by_force()


def test_bytes_in_use_tracks_every_alloc_and_free(dev: Device) -> None:
    held = 0
    bufs = []
    for order in (0, 3, 1, 5):
        bufs.append(dev.alloc(order, file_owned=order == 1))
        held += PAGE << order
        info = dev.info()
        assert info.bytes_in_use == sysfs_int("bytes_in_use") == held
        assert info.pages_in_use == sysfs_int("pages_in_use") == held // PAGE
    for b in bufs:
        dev.free(b.id)
        held -= b.size
        assert dev.info().bytes_in_use == sysfs_int("bytes_in_use") == held


@pytest.mark.parametrize("dma", [False, True], ids=["cached", "dma"])
def test_alloc_every_order(dev: Device, dma: bool) -> None:
    ram = system_ram()
    info = dev.info()
    for order in range(info.max_order + 1):
        size = PAGE << order
        if dma and info.dma_refusal(order):  # over dma_max_size (swiotlb=force)
            with pytest.raises(PagebufError) as too_big:
                dev.alloc(order, dma=True)
            assert too_big.value.errno == E.E2BIG and sysfs_int("nr_buffers") == 0
            continue
        buf = dev.alloc(order, dma=dma)
        assert buf.id > 0
        assert buf.order == order
        assert buf.size == size
        assert buf.phys_addr % size == 0, f"order {order} buffer not naturally aligned"
        assert any(lo <= buf.phys_addr and buf.phys_addr + size - 1 <= hi for lo, hi in ram)
        assert buf.dma == dma
        if dma:
            assert buf.dma_addr is not None and buf.dma_addr % PAGE == 0
            # pagebuf's misc device maps dma-direct with a 64-bit mask, never through an
            # IOMMU: the bus address is the physical one unless swiotlb bounced it.
            assert buf.bounced == info.dma_bounce == (buf.dma_addr != buf.phys_addr)
        else:
            assert buf.dma_addr is None and not buf.bounced
        assert sysfs_int("pages_in_use") == 1 << order
        assert sysfs_int("bytes_in_use") == size
        assert sysfs_int("nr_buffers") == 1

        assert dev.buffer(buf.id) == buf
        assert dev.buffers() == [buf]

        dev.free(buf.id)
        assert sysfs_int("pages_in_use") == 0
        with pytest.raises(PagebufError) as err:
            dev.buffer(buf.id)
        assert err.value.errno == 2  # ENOENT


def test_list_is_ordered_and_complete(dev: Device) -> None:
    made = [dev.alloc(i % 3, dma=bool(i % 2)) for i in range(40)]
    listed = dev.buffers()
    assert listed == sorted(made, key=lambda b: b.id)
    assert dev.info().nr_buffers == 40
    assert dev.info().pages_in_use == sum(b.pages for b in made)
    assert len({b.phys_addr for b in made}) == 40


def test_ids_are_not_reused_at_once(dev: Device) -> None:
    first = dev.alloc(0)
    dev.free(first.id)
    second = dev.alloc(0)
    assert second.id != first.id


def test_concurrent_alloc_free(dev: Device) -> None:
    """Many threads on one file: the registry and counters stay consistent."""
    from concurrent.futures import ThreadPoolExecutor

    def churn(seed: int) -> int:
        n = 0
        for i in range(50):
            buf = dev.alloc((seed + i) % 4, dma=bool(i % 2))
            dev.free(buf.id)
            n += 1
        return n

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(churn, range(8))) == 400
    assert dev.info().pages_in_use == 0
    assert dev.buffers() == []


def test_cli_lifecycle_against_the_module(module: None) -> None:
    """alloc, list, info, status, free and free --all as a user types them."""
    import json
    import subprocess

    def pagebuf(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pagebuf", *argv], capture_output=True, text=True)

    a = json.loads(pagebuf("alloc", "--order", "2", "--dma", "--json").stdout)
    b = pagebuf("alloc", "--order", "0")
    assert b.returncode == 0 and b.stdout.startswith("id ")
    b_id = int(b.stdout.split()[1])
    listed = json.loads(pagebuf("list", "--json").stdout)
    assert [x["id"] for x in listed] == [a["id"], b_id]
    assert listed[0] == a and a["dma"] and a["size"] == 4 * PAGE
    table = pagebuf("list").stdout.splitlines()
    assert table[0].split()[:2] == ["ID", "PHYS_ADDR"] and len(table) == 3
    assert json.loads(pagebuf("info", str(b_id), "--json").stdout)["order"] == 0
    status = json.loads(pagebuf("status", "--json").stdout)
    assert (status["nr_buffers"], status["pages_in_use"]) == (2, 5)
    assert status["bytes_in_use"] == 5 * PAGE and status["max_bytes"] == 128 << 20
    assert pagebuf("free", str(b_id)).returncode == 0
    gone = pagebuf("info", str(b_id))
    assert gone.returncode == 6 and gone.stderr.startswith("pagebuf: buffer")
    assert pagebuf("free", "--all").stdout.strip() == "freed 1 buffer(s)"
    assert sysfs_int("nr_buffers") == 0 and sysfs_int("pages_in_use") == 0
