"""max_order and max_pages bound what userspace can take, without WARN splats."""

from __future__ import annotations

import subprocess

import pytest
from conftest import insmod, module_loaded, reload, rmmod, sysfs_int

from pagebuf import Device, PagebufError

ENOMEM, EINVAL = 12, 22


def test_limits_from_module_parameters(module: None) -> None:
    reload("max_order=3", "max_pages=10")
    assert sysfs_int("max_order") == 3 and sysfs_int("max_pages") == 10
    with Device() as dev:
        with pytest.raises(PagebufError) as err:
            dev.alloc(4)
        assert err.value.errno == EINVAL
        big = dev.alloc(3)
        two = dev.alloc(1)
        with pytest.raises(PagebufError) as err:
            dev.alloc(0)  # 8 + 2 pages held: the quota is spent
        assert err.value.errno == ENOMEM
        dev.free(two.id)
        dev.alloc(1)
        assert dev.info().pages_in_use == 10
        dev.free(big.id)
    reload()


@pytest.mark.parametrize("params", [["max_order=99"], ["max_pages=0"]])
def test_bad_module_parameters_refuse_to_load(params: list[str]) -> None:
    if module_loaded():
        rmmod()
    proc = insmod(*params)
    assert proc.returncode != 0
    assert not module_loaded()
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    assert "pagebuf: max_" in log
    reload()


def test_orders_beyond_any_kernel_limit(dev: Device) -> None:
    for order in (11, 31, 2**32 - 1):
        with pytest.raises(PagebufError) as err:
            dev.alloc(order)
        assert err.value.errno == EINVAL, order
