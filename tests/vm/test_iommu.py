"""Behind an IOMMU: a guest booted with QEMU's intel-iommu (`python -m pagebuf.vm --iommu`,
a stage of `make test` on Debian's kernel). A buffer mapped for a PCI device there gets an
IO virtual address, the module says the IOMMU translates for the device and that the
mapping is no bounce slot, and the dma arm runs on it. pagebuf's own device stays outside
every IOMMU. Elsewhere the file skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pagebuf import Device, uapi

IOMMUS = sorted(p.name for p in Path("/sys/class/iommu").glob("*"))
pytestmark = pytest.mark.skipif(
    not IOMMUS, reason="needs a guest behind an IOMMU: python -m pagebuf.vm --iommu"
)


def translated_pci_device() -> str:
    """A PCI device with a driver whose IOMMU group's domain translates (DMA, DMA-FQ)."""
    for path in sorted(Path("/sys/bus/pci/devices").glob("*")):
        group = path / "iommu_group"
        if (path / "driver").is_symlink() and group.is_symlink():
            if (group / "type").read_text().strip().startswith("DMA"):
                return path.name
    pytest.fail("no PCI device with a driver in a translating IOMMU group")


def test_a_buffer_mapped_behind_the_iommu_gets_an_io_virtual_address(dev: Device) -> None:
    name = translated_pci_device()
    buf = dev.alloc(2, dma=True, dma_device=name)
    assert buf.dma_device == f"pci:{name}"
    assert buf.dma_info & uapi.DEV_IOMMU and buf.dma_info & uapi.DEV_TRANSLATED
    assert buf.to_dict()["dma_iommu"] == "translates"
    assert buf.dma_addr != buf.phys_addr and not buf.bounced  # an IOVA, not a bounce slot
    mask_bits = int((Path("/sys/bus/pci/devices") / name / "dma_mask_bits").read_text())
    assert buf.dma_mask == 2**mask_bits - 1
    assert buf.dma_addr + buf.size - 1 <= buf.dma_mask
    assert buf.dma_syncs  # the DMA API wants syncs of every IOMMU-translated mapping
    for direction in (uapi.SYNC_FOR_DEVICE, uapi.SYNC_FOR_CPU):
        dev.sync(buf.id, direction)
    # Two mappings, two IO virtual addresses; pagebuf's own device has no IOMMU.
    other = dev.alloc(0, dma=True, dma_device=name)
    assert other.dma_addr not in range(buf.dma_addr, buf.dma_addr + buf.size)
    own = dev.alloc(0, dma=True)
    assert own.to_dict()["dma_iommu"] == "none" and own.dma_addr == own.phys_addr


def test_the_dma_arm_runs_for_a_translated_device(module: None, tmp_path: Path) -> None:
    name = translated_pci_device()
    out = tmp_path / "run.jsonl"
    proc = subprocess.run(["pagebuf", "run", "--mode", "dma", "--no-controls", "--dma-device",
                           name, "--duration", "1", "--interval", "0.5", "--buffers", "2",
                           "--order", "2", "--output", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    access = next(r for r in recs if r["type"] == "access")
    assert access["dma"]["dma_iommu"] == "translates" and not access["dma"]["bounced"]
    assert next(r for r in recs if r["type"] == "arm_summary")["verdict"] == "clean"
    assert f"dma: mapped for pci:{name} " in proc.stdout and "IOMMU translates" in proc.stdout


def test_doctor_names_the_iommu(module: None) -> None:
    proc = subprocess.run(["pagebuf", "doctor", "--json"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    found = {f["name"]: f for f in json.loads(proc.stdout)["findings"]}
    assert found["IOMMU"]["value"] == ", ".join(IOMMUS)
    assert "--dma-device" in found["IOMMU"]["detail"]
