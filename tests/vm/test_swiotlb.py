"""The test kernel booted swiotlb=force (KERNEL=custom-swiotlb, part of `make test`):
every streaming DMA mapping of pagebuf's device is bounced through a swiotlb slot, as
in a confidential guest. The module says so (FEAT_DMA_BOUNCE, BUF_BOUNCED and
dma_max_size), refuses a DMA buffer larger than one bounce mapping (E2BIG, before
swiotlb would complain), and `run`/`compare` refuse the dma arm with the reason
instead of reporting the bounce slot's stale copy as corruption. Elsewhere these facts
do not hold and the file skips.
"""

from __future__ import annotations

import errno as E
import json
import mmap
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import reload, sysfs_int

from pagebuf import Device, PagebufError, cli, uapi
from pagebuf.doctor import swiotlb_forced
from pagebuf.errors import DMA_BOUNCED
from pagebuf.physmem import PhysMem

pytestmark = pytest.mark.skipif(
    not swiotlb_forced(Path("/proc/cmdline").read_text()),
    reason="needs a guest booted swiotlb=force: make test-vm KERNEL=custom-swiotlb",
)

PAGE = mmap.PAGESIZE
# swiotlb maps at most IO_TLB_SEGSIZE slots of IO_TLB_SIZE bytes in one piece, less
# the device's min_align_mask, which pagebuf's misc device does not set.
SWIOTLB_MAX = 128 * 2048
QUICK = ["--duration", "1", "--interval", "0.5", "--buffers", "2", "--order", "2"]
IO_TLB_USED = Path("/sys/kernel/debug/swiotlb/io_tlb_used")


def dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def rows(stdout: str) -> dict[str, dict[str, object]]:
    return {r["arm"]: r for r in json.loads(stdout)}


@pytest.fixture
def injectable(module: None) -> Iterator[None]:
    reload("inject=1")
    yield
    reload()


def test_the_module_says_dma_is_bounced(dev: Device) -> None:
    info = dev.info()
    assert info.dma_bounce, hex(info.features)
    assert info.dma_max_size == SWIOTLB_MAX == sysfs_int("dma_max_size")
    assert info.dma_mask == 2**64 - 1  # bounced by force, not for want of address bits


def test_dma_buffers_are_bounced_and_plain_ones_are_not(dev: Device) -> None:
    largest = max(o for o in range(dev.info().max_order + 1) if PAGE << o <= SWIOTLB_MAX)
    for order in range(largest + 1):
        buf = dev.alloc(order, dma=True)
        assert buf.bounced and buf.dma_addr is not None, order
        # The device would reach a slot of the bounce pool, outside the buffer itself.
        assert not buf.phys_addr <= buf.dma_addr < buf.phys_addr + buf.size, order
        assert dev.buffer(buf.id).bounced and dev.buffers()[-1].bounced
        plain = dev.alloc(order)
        assert not plain.bounced and plain.dma_addr is None


def test_sync_for_cpu_copies_the_bounce_slot_over_the_users_write(dev: Device) -> None:
    """Why the dma arm cannot run here: after sync_for_device the slot holds the
    kernel's bytes; the user's write reaches the pages; sync_for_cpu copies the slot
    back over it. On a direct mapping the same calls keep the user's bytes."""
    buf = dev.alloc(0, dma=True)
    dev.kwrite(buf.id, 0, b"K" * buf.size)
    dev.sync(buf.id, uapi.SYNC_FOR_DEVICE)
    with PhysMem(buf.phys_addr, buf.size, path="/dev/pagebuf", sync=False, method="mmap",
                 caching=uapi.CACHING_UC) as user:  # fmt: skip
        user.write_bytes(0, b"U" * buf.size)
        assert dev.kread(buf.id, 0, 8) == b"U" * 8
        dev.sync(buf.id, uapi.SYNC_FOR_CPU)
        assert user.read_bytes(0, buf.size) == b"K" * buf.size


def test_dma_alloc_above_dma_max_size_is_e2big_and_quiet(dev: Device) -> None:
    before = len(dmesg())
    for order in range(dev.info().max_order + 1):
        if PAGE << order <= SWIOTLB_MAX:
            continue
        with pytest.raises(PagebufError) as err:
            dev.alloc(order, dma=True)
        assert err.value.errno == E.E2BIG, order
        assert err.value.message == (
            f"alloc order {order}: order {order} is {PAGE << order} bytes, above the largest "
            f"DMA mapping here ({SWIOTLB_MAX} bytes: swiotlb bounce buffering)"
        )
        assert sysfs_int("nr_buffers") == 0 and sysfs_int("bytes_in_use") == 0
        dev.free(dev.alloc(order).id)  # without DMA the same order is fine
    new = dmesg()[before:]
    assert not [line for line in new if "swiotlb" in line or "pagebuf" in line], new


def test_cli_alloc_above_dma_max_size(module: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["alloc", "--order", "10", "--dma"]) == 7
    err = capsys.readouterr().err
    assert err.startswith("pagebuf: alloc order 10: order 10 is ") and err.count("\n") == 1
    assert f"({SWIOTLB_MAX} bytes: swiotlb bounce buffering)" in err
    assert sysfs_int("nr_buffers") == 0


def test_bounce_slots_are_given_back(module: None) -> None:
    """Freeing a buffer, explicitly or with its file, unmaps it: the pool's used count
    (swiotlb's debugfs) comes back to where it was."""
    if not os.path.ismount("/sys/kernel/debug"):
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    if not IO_TLB_USED.exists():
        pytest.skip(f"no {IO_TLB_USED}: this kernel has no swiotlb debugfs")
    used = int(IO_TLB_USED.read_text())
    with Device() as dev:
        bufs = [dev.alloc(o % 6, dma=True, file_owned=bool(o % 2)) for o in range(12)]
        assert int(IO_TLB_USED.read_text()) > used
        for b in bufs[::2]:
            dev.free(b.id)
    assert sysfs_int("nr_buffers") == 0
    assert int(IO_TLB_USED.read_text()) == used


# The CLI runs in-process below: a `pagebuf` process costs a minute of start-up under
# emulation on the test kernel with KASAN. tests/vm/test_run.py runs the command itself.


def test_run_refuses_the_dma_arm_with_the_reason(
    injectable: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.jsonl"
    assert cli.main(["run", "--mode", "dma", *QUICK, "--output", str(out), "--json"]) == 0
    got = rows(capsys.readouterr().out)
    assert got["dma"]["verdict"] == "skipped" and got["dma"]["note"] == DMA_BOUNCED
    assert got["dma"]["corrupted_lines"] == 0
    assert got["inject"]["verdict"] == "injected-detected"
    assert got["positive"]["verdict"] == "did-not-fire"
    assert cli.main(["report", str(out)]) == 0
    assert f"dma: {DMA_BOUNCED}" in capsys.readouterr().out


def test_compare_reports_no_false_corruption(
    injectable: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp.jsonl"
    assert cli.main(["compare", *QUICK, "--duration", "0", "--output", str(out)]) == 0
    ending = capsys.readouterr().out.split("\n\n", 1)[1].splitlines()
    assert not [line for line in ending if line.startswith(("corrupted:", "broken:"))]
    assert ending[:2] == ["clean: cached, single-cpu, flush", f"not tested: dma ({DMA_BOUNCED})"]
    assert "detector: found exactly the injected lines (inject)" in ending
    summary = [json.loads(line) for line in out.read_text().splitlines()][-1]
    assert summary["verdicts"]["dma"] == "skipped" and summary["exit_code"] == 0


def test_compare_views_sync_refuses_a_bounced_buffer(
    dev: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    buf = dev.alloc(0, dma=True)
    assert cli.main(["compare-views", str(buf.id), "--sync", "--via", "mmap-wb"]) == 8
    assert "DMA is bounced through swiotlb" in capsys.readouterr().err
    assert cli.main(["compare-views", str(buf.id), "--via", "mmap-wb"]) == 0


def test_status_and_doctor_say_so(module: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"dma_max_size   {SWIOTLB_MAX} bytes (swiotlb bounce buffering)" in lines
    assert any(line.startswith("note: DMA mappings are bounced through swiotlb") for line in lines)
    assert cli.main(["doctor", "--json"]) == 0
    found = {f["name"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    assert (found["swiotlb"]["verdict"], found["swiotlb"]["value"]) == ("warn", "forced")
    assert found["DMA bounce"]["value"] == "swiotlb"
    assert found["DMA max size"]["value"] == f"{SWIOTLB_MAX} bytes"
    assert found["DMA address"]["verdict"] == "warn"
    assert "swiotlb bounce slot" in found["DMA address"]["detail"]
