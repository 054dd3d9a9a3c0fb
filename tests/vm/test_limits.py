"""max_order and max_bytes bound what userspace can take, without WARN splats."""

from __future__ import annotations

import mmap
import subprocess
from pathlib import Path

import pytest
from conftest import insmod, module_loaded, reload, rmmod, sysfs_int

from pagebuf import Device, PagebufError

ENOMEM, EINVAL = 12, 22
PAGE = mmap.PAGESIZE


def total_ram() -> int:
    """MemTotal: the RAM the kernel manages (totalram_pages), in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def all_ram() -> int:
    """The largest max_bytes: the RAM, in whole pages."""
    return total_ram() // PAGE * PAGE


def dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def test_limits_from_module_parameters(module: None) -> None:
    reload("max_order=3", f"max_bytes={10 * PAGE}")
    assert sysfs_int("max_order") == 3 and sysfs_int("max_bytes") == 10 * PAGE
    assert sysfs_int("max_pages") == 10  # the same limit, in pages
    with Device() as dev:
        assert (dev.info().max_bytes, dev.info().max_pages) == (10 * PAGE, 10)
        with pytest.raises(PagebufError) as err:
            dev.alloc(4)
        assert err.value.errno == EINVAL
        big = dev.alloc(3)
        two = dev.alloc(1)
        with pytest.raises(PagebufError) as err:
            dev.alloc(0)  # 8 + 2 pages held: the quota is spent
        assert err.value.errno == ENOMEM and "max_bytes" in err.value.message
        assert dev.info().bytes_in_use == sysfs_int("bytes_in_use") == 10 * PAGE
        dev.free(two.id)
        dev.alloc(1)
        assert dev.info().pages_in_use == 10
        dev.free(big.id)
        assert dev.info().bytes_in_use == 2 * PAGE
    reload()


def test_max_bytes_up_to_all_of_ram(module: None) -> None:
    ram = all_ram()
    reload(f"max_bytes={ram}")
    assert sysfs_int("max_bytes") == ram
    reload()


@pytest.mark.parametrize("params", [["max_order=99"], ["max_bytes=0"], ["max_bytes=RAM"]])
def test_bad_module_parameters_refuse_to_load(params: list[str]) -> None:
    params = [p.replace("RAM", str(total_ram() + 64 * PAGE)) for p in params]
    if module_loaded():
        rmmod()
    before = len(dmesg())
    proc = insmod(*params)
    assert proc.returncode != 0
    assert not module_loaded()
    name = params[0].split("=")[0]
    said = [line for line in dmesg()[before:] if f"pagebuf: {name}=" in line]
    assert said, dmesg()[before:]  # one line naming the parameter and its bound
    reload()


def test_orders_beyond_any_kernel_limit(dev: Device) -> None:
    for order in (11, 31, 2**32 - 1):
        with pytest.raises(PagebufError) as err:
            dev.alloc(order)
        assert err.value.errno == EINVAL, order
