"""doctor in the guest: its /dev/mem probe tells the two test kernels apart."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import pytest

KERNEL = os.environ.get("PAGEBUF_KERNEL", "")


def doctor_json() -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["pagebuf", "doctor", "--json"], capture_output=True, text=True, check=True
    ).stdout
    return {f["name"]: f for f in json.loads(out)["findings"]}


def test_doctor_reports_module_and_vm(module: None) -> None:
    found = doctor_json()
    assert found["pagebuf module"]["verdict"] == "ok"
    assert found["virtual machine"]["verdict"] == "warn"
    # x86 DMA is coherent; arm64 makes a device no firmware describes non-coherent.
    assert found["DMA coherent"]["value"] == ("no" if platform.machine() == "aarch64" else "yes")


@pytest.mark.skipif(KERNEL != "debian", reason="Debian's kernel has CONFIG_STRICT_DEVMEM=y")
def test_doctor_on_strict_devmem(module: None) -> None:
    found = doctor_json()
    assert found["CONFIG_STRICT_DEVMEM"]["value"] == "y"
    for probe in ("/dev/mem read()", "/dev/mem mmap O_SYNC"):
        assert found[probe]["value"] == "refused (EPERM)"
        assert "CONFIG_STRICT_DEVMEM" in found[probe]["detail"]


@pytest.mark.skipif(KERNEL != "custom", reason="the test kernel lets RAM through /dev/mem")
def test_doctor_on_the_test_kernel(module: None) -> None:
    found = doctor_json()
    assert found["CONFIG_STRICT_DEVMEM"]["value"] == "n"
    if platform.machine() == "x86_64":
        assert found["x86 PAT"]["value"] == "off"
    else:
        assert found["O_SYNC mapping of RAM"]["value"] == "Normal non-cacheable"
    for probe in ("/dev/mem read()", "/dev/mem mmap O_SYNC", "/dev/mem mmap cached"):
        assert found[probe]["value"] == "works"
