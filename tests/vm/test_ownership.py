"""Module-owned buffers outlive their file; file-owned ones die with it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import module_loaded, reload, rmmod, sysfs_int

from pagebuf import Device, PagebufError


def test_module_owned_outlives_the_file(module: None) -> None:
    with Device() as a:
        buf = a.alloc(2)
    with Device() as b:
        assert b.buffer(buf.id) == buf
        b.free(buf.id)
        assert b.buffers() == []


def test_file_owned_freed_on_close(module: None) -> None:
    with Device() as other:
        with Device() as owner:
            buf = owner.alloc(3, file_owned=True, dma=True)
            assert buf.file_owned
            assert other.buffer(buf.id) == buf
            with pytest.raises(PagebufError) as err:
                other.free(buf.id)
            assert err.value.errno == 1  # EPERM: not the owner
        assert other.buffers() == []
    assert sysfs_int("pages_in_use") == 0


def test_file_owned_freed_when_the_process_dies(module: None) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pagebuf import Device\n"
            "d = Device(); b = d.alloc(4, file_owned=True)\n"
            "print(b.id, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    buf_id = int(child.stdout.readline())
    assert sysfs_int("pages_in_use") == 16
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Device() as dev:
        with pytest.raises(PagebufError) as err:
            dev.buffer(buf_id)
        assert err.value.errno == 2
    assert sysfs_int("pages_in_use") == 0


def test_free_all_spares_other_files_buffers(module: None) -> None:
    with Device() as other, Device() as me:
        kept = other.alloc(1, file_owned=True)
        mine = [me.alloc(0), me.alloc(1, file_owned=True), other.alloc(2)]
        assert me.free_all() == 3
        assert me.buffers() == [kept]
        del mine
    assert sysfs_int("nr_buffers") == 0


def test_cli_buffer_outlives_the_command(module: None) -> None:
    out = subprocess.run(
        ["pagebuf", "alloc", "--order", "2", "--json"], capture_output=True, text=True, check=True
    ).stdout
    obj = json.loads(out)
    with Device() as dev:
        assert dev.buffer(obj["id"]).phys_addr == obj["phys_addr"]


def free_kib() -> int:
    """Free memory including the per-CPU page lists, which MemFree leaves out: freed
    order-0 pages often wait there."""
    pages = 0
    for line in open("/proc/zoneinfo"):
        words = line.split()
        if words[:2] == ["pages", "free"] or words[:1] == ["count:"]:
            pages += int(words[-1])
    return pages * 4


def test_rmmod_with_live_buffers_frees_them(module: None) -> None:
    with Device() as dev:
        before = free_kib()
        for i in range(16):
            dev.alloc(10, dma=bool(i % 2))  # 16 x 4 MiB
        held = before - free_kib()
        assert held >= 60 * 1024, f"only {held} KiB left MemFree for 64 MiB of buffers"
        # An open file holds a module reference: rmmod must refuse, not free under it.
        proc = subprocess.run(["rmmod", "pagebuf"], capture_output=True, text=True)
        assert proc.returncode != 0 and module_loaded()
    rmmod()
    assert not module_loaded()
    back = before - free_kib()
    # Less than one of the 4 MiB buffers: a single leaked buffer fails this.
    assert back < 2 * 1024, f"{back} KiB still missing after rmmod"
    reload()
