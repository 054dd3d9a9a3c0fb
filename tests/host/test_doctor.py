"""doctor's reading of kernel config, CPU flags and architecture (the probes that need
the module run in tests/vm/test_doctor.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pagebuf import doctor, sysinfo, uapi
from pagebuf.device import Buffer, Device, ModuleInfo
from pagebuf.errors import ModuleNotLoadedError

FLUSH = uapi.FEAT_FLUSH | uapi.FEAT_CLEAN


def test_parse_kconfig() -> None:
    cfg = doctor.parse_kconfig(
        'CONFIG_DEVMEM=y\n# CONFIG_STRICT_DEVMEM is not set\nCONFIG_X="a=b"\n# comment\n'
    )
    assert cfg == {"CONFIG_DEVMEM": "y", "CONFIG_STRICT_DEVMEM": "n", "CONFIG_X": '"a=b"'}


def test_read_kconfig_first_readable_wins(tmp_path: Path) -> None:
    gz = tmp_path / "config.gz"
    gz.write_bytes(gzip.compress(b"CONFIG_STRICT_DEVMEM=y\n"))
    plain = tmp_path / "config"
    plain.write_text("# CONFIG_STRICT_DEVMEM is not set\n")
    missing = tmp_path / "missing"
    assert doctor.read_kconfig([missing, gz, plain]) == ({"CONFIG_STRICT_DEVMEM": "y"}, str(gz))
    assert doctor.read_kconfig([missing, plain]) == ({"CONFIG_STRICT_DEVMEM": "n"}, str(plain))
    assert doctor.read_kconfig([missing]) == ({}, None)


def test_kconfig_paths_end_with_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEBUF_KCONFIG", "/x/.config")
    paths = doctor.kconfig_paths("6.1.0-1-amd64")
    assert paths[1] == Path("/boot/config-6.1.0-1-amd64") and paths[-1] == Path("/x/.config")


def verdicts(report: doctor.Report) -> dict[str, str]:
    return {f.name: f.verdict for f in report.findings}


def test_strict_devmem_is_a_warning_that_names_the_way_out() -> None:
    r = doctor.Report()
    doctor.check_config(r, {"CONFIG_DEVMEM": "y", "CONFIG_STRICT_DEVMEM": "y"}, "/boot/x")
    f = r.get("CONFIG_STRICT_DEVMEM")
    assert f is not None and f.verdict == "warn" and "/dev/pagebuf" in f.detail
    r = doctor.Report()
    doctor.check_config(r, {}, None)
    assert verdicts(r) == {"kernel config": "warn"}


@pytest.mark.parametrize(
    ("arch", "flags", "cmdline", "expect"),
    [
        ("x86_64", {"pat", "ss"}, "ro quiet", {"x86 PAT": "info", "self-snoop": "ok"}),
        ("x86_64", {"pat"}, "nopat", {"x86 PAT": "info", "self-snoop": "risk"}),
        ("aarch64", set(), "", {"O_SYNC mapping of RAM": "risk"}),
        ("armv7l", set(), "", {"O_SYNC mapping of RAM": "risk"}),
        ("riscv64", set(), "", {"O_SYNC mapping of RAM": "warn"}),
    ],
)
def test_arch_verdicts(arch: str, flags: set[str], cmdline: str, expect: dict[str, str]) -> None:
    r = doctor.Report()
    doctor.check_arch(r, arch, flags, cmdline)
    got = verdicts(r)
    for name, verdict in expect.items():
        assert got[name] == verdict
    pat = r.get("x86 PAT")
    if pat is not None:
        assert pat.value == ("off" if "nopat" in cmdline else "on")


def test_summary_names_the_case() -> None:
    arm = doctor.Report()
    doctor.check_arch(arm, "aarch64", set(), "")
    assert doctor.summary(arm) == (
        "aliases can diverge here — a clean run means something, a corrupted one is "
        "the reference note's bug"
    )
    x86 = doctor.Report()
    doctor.check_arch(x86, "x86_64", {"pat"}, "nopat")
    assert doctor.summary(x86) == (
        "corruption through uncached aliases can occur here (self-snoop)"
    )
    for r in (arm, x86):
        doctor.check_vm(r, "QEMU")
        assert doctor.summary(r) == (
            "emulated (QEMU): no caches, only the mechanics and the detector are tested"
        )
    other = doctor.Report()
    doctor.check_vm(other, "Microsoft Corporation")
    assert doctor.summary(other).startswith("virtual machine (Microsoft Corporation): ")
    assert "stay coherent" in doctor.summary(doctor.Report())


def test_cpu_flags() -> None:
    assert doctor.cpu_flags("processor : 0\nflags\t\t: fpu pat ss\n") == {"fpu", "pat", "ss"}
    assert doctor.cpu_flags("Features\t: fp asimd\n") == {"fp", "asimd"}


def test_arm64_o_sync_is_normal_nc_and_names_the_matching_path() -> None:
    r = doctor.Report()
    doctor.check_arch(r, "aarch64", set(), "")
    f = r.get("O_SYNC mapping of RAM")
    assert f is not None and f.value == "Normal non-cacheable"
    assert "--via mmap-uc maps the same" in f.detail
    assert "--via mmap-device maps Device-nGnRnE" in f.detail
    r = doctor.Report()
    doctor.check_arch(r, "armv7l", set(), "")
    f = r.get("O_SYNC mapping of RAM")
    assert f is not None and "mmap-wc maps the same" in f.detail  # 32-bit UC is noncached


@pytest.mark.parametrize(
    ("flags", "dmi", "compatible", "name"),
    [
        ({"pat", "hypervisor"}, "QEMU\n", [], "QEMU"),  # x86 under make vm
        (set(), "", ["linux,dummy-virt"], "QEMU"),  # arm64 virt: no DMI at all
        (set(), "QEMU\n", [], "QEMU"),  # arm64 virt booted through UEFI
        ({"hypervisor"}, "VMware, Inc.\n", [], "VMware, Inc."),
        ({"hypervisor"}, "", [], "hypervisor"),
        (set(), "", ["rockchip,rk3588-evb", "rockchip,rk3588"], None),  # a board
        ({"fp", "asimd"}, "Ampere(TM)\n", [], None),
    ],
)
def test_vm_name(flags: set[str], dmi: str, compatible: list[str], name: str | None) -> None:
    assert sysinfo.vm_name(flags, dmi, compatible) == name
    r = doctor.Report()
    doctor.check_vm(r, sysinfo.vm_name(flags, dmi, compatible))
    f = r.get("virtual machine")
    assert (f is None) == (name is None)
    assert f is None or (f.verdict, f.value) == ("warn", name)


def fake_dt(root: Path, nodes: dict[str, list[str]]) -> Path:
    """A /proc/device-tree: each node a directory, each property a file."""
    for node, props in nodes.items():
        d = root / node.strip("/") if node != "/" else root
        d.mkdir(parents=True, exist_ok=True)
        for prop in props:
            (d / prop).write_bytes(b"")
    return root


def test_dt_strings_splits_a_string_list(tmp_path: Path) -> None:
    (tmp_path / "compatible").write_bytes(b"linux,dummy-virt\0")
    assert sysinfo.dt_strings(tmp_path / "compatible") == ["linux,dummy-virt"]
    (tmp_path / "c2").write_bytes(b"radxa,rock-5b\0rockchip,rk3588\0")
    assert sysinfo.dt_strings(tmp_path / "c2") == ["radxa,rock-5b", "rockchip,rk3588"]
    assert sysinfo.dt_strings(tmp_path / "missing") == []


def test_dma_coherent_nodes_are_found_at_any_depth(tmp_path: Path) -> None:
    root = fake_dt(tmp_path / "dt", {
        "/": ["compatible", "model"],
        "/soc/gpu@fb000000": ["compatible", "reg"],
        "/soc/pcie@fe150000": ["compatible", "dma-coherent"],
        "/soc/bus@ff000000/usb@fc000000": ["dma-coherent", "reg"],
        "/cpus/cpu@0": ["reg"],
    })  # fmt: skip
    assert sysinfo.dma_coherent_nodes(root) == [
        "/soc/bus@ff000000/usb@fc000000",
        "/soc/pcie@fe150000",
    ]
    (root / "dma-coherent").write_bytes(b"")
    assert sysinfo.dma_coherent_nodes(root)[0] == "/"


def test_platform_dma_findings(tmp_path: Path) -> None:
    mali = fake_dt(tmp_path / "mali", {"/": ["compatible"], "/gpu@fb000000": ["reg"]})
    r = doctor.Report()
    doctor.check_platform_dma(r, mali, acpi=False)
    f = r.get("platform DMA")
    assert f is not None and f.value == "no device-tree node declares dma-coherent"
    assert "non-coherent, as is typical of SoCs with a Mali GPU" in f.detail

    nodes = {f"/soc/dev@{i}": ["dma-coherent"] for i in range(5)}
    virt = fake_dt(tmp_path / "virt", {"/": ["compatible"], **nodes})
    r = doctor.Report()
    doctor.check_platform_dma(r, virt, acpi=True)  # a device tree wins over ACPI tables
    f = r.get("platform DMA")
    assert f is not None and f.value == "5 device-tree node(s) declare dma-coherent"
    assert f.detail.startswith("/soc/dev@0, /soc/dev@1, /soc/dev@2, ...: ")

    r = doctor.Report()
    doctor.check_platform_dma(r, None, acpi=True)
    f = r.get("platform DMA")
    assert f is not None and f.value == "unknown" and "_CCA" in f.detail
    r = doctor.Report()
    doctor.check_platform_dma(r, None, acpi=False)
    f = r.get("platform DMA")
    assert f is not None and "no device tree and no ACPI" in f.detail


@pytest.mark.parametrize(("arch", "size", "value", "names_arm64"), [
    ("aarch64", 16384, "16 KiB", True),
    ("aarch64", 65536, "64 KiB", True),
    ("x86_64", 4096, "4 KiB", False),
])  # fmt: skip
def test_page_size(arch: str, size: int, value: str, names_arm64: bool) -> None:
    r = doctor.Report()
    doctor.check_page_size(r, arch, size)
    f = r.get("page size")
    assert f is not None and f.value == value
    assert ("4, 16 or 64 KiB" in f.detail) == names_arm64


def info(api: int = 2, features: int = 0, page: int | None = None) -> ModuleInfo:
    return ModuleInfo(api, features, page or sysinfo.page_size(), 10, 32768, 0, 0, 2**64 - 1)


@pytest.mark.parametrize(
    ("ops", "features", "verdict", "says"),
    [
        ("pmem", FLUSH, "ok", "arch_wb_cache_pmem() cleans"),
        ("dma", FLUSH | uapi.FEAT_INJECT, "ok", "non-coherent device"),
        ("none", 0, "warn", "the flush arm, the positive control and injection are skipped"),
        ("bogus", 0, "warn", "not a value this pagebuf knows"),
        (None, FLUSH, "info", "older than api 2; KFLUSH works"),
        (None, 0, "info", "older than api 2; no KFLUSH"),
    ],
)
def test_cache_maintenance(ops: str | None, features: int, verdict: str, says: str) -> None:
    r = doctor.Report()
    doctor.check_module(r, info(features=features), "aarch64", ops)
    f = r.get("cache maintenance")
    assert f is not None and (f.verdict, f.value) == (verdict, ops or "unknown")
    assert says in f.detail
    assert ("INJECT on" in f.detail) == bool(features & uapi.FEAT_INJECT)


def test_read_cache_ops(tmp_path: Path) -> None:
    (tmp_path / "cache_ops").write_text("dma\n")
    assert doctor.read_cache_ops(tmp_path / "cache_ops") == "dma"
    assert doctor.read_cache_ops(tmp_path / "missing") is None  # an older module


def test_module_findings_on_arm64() -> None:
    r = doctor.Report()
    doctor.check_module(r, info(), "aarch64", "dma")
    dma = r.get("DMA coherent")
    assert dma is not None and dma.value == "no" and "no firmware describes" in dma.detail
    assert r.get("mmap-uc") is None and r.get("module page size") is None
    old = doctor.Report()
    doctor.check_module(old, info(api=1, page=sysinfo.page_size() * 4), "aarch64", None)
    f = old.get("mmap-uc")
    assert f is not None and (f.verdict, f.value) == ("warn", "Device-nGnRnE")
    size = old.get("module page size")
    assert size is not None and size.verdict == "warn"
    x86 = doctor.Report()
    doctor.check_module(x86, info(api=1, features=uapi.FEAT_DMA_COHERENT), "x86_64", None)
    coherent = x86.get("DMA coherent")
    assert x86.get("mmap-uc") is None and coherent is not None and coherent.value == "yes"


class NoModule:
    def __call__(self) -> Device:
        raise ModuleNotLoadedError("pagebuf module not loaded")


def diagnose_as(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, arch: str,
                compatible: bytes, nodes: dict[str, list[str]]) -> doctor.Report:  # fmt: skip
    """doctor on an arm64 machine whose /proc/device-tree is a fake tree."""
    dt = fake_dt(tmp_path / "dt", nodes)
    (dt / "compatible").write_bytes(compatible)
    monkeypatch.setattr(doctor.platform, "machine", lambda: arch)
    monkeypatch.setattr(doctor, "cpu_flags", lambda text: {"fp", "asimd"})
    monkeypatch.setattr(doctor, "dt_root", lambda: dt)
    monkeypatch.setattr(doctor, "DMI_VENDOR", tmp_path / "no-dmi")
    monkeypatch.setattr(doctor, "ACPI_ROOT", tmp_path / "no-acpi")
    return doctor.diagnose(NoModule())


def test_diagnose_arm64_under_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    virt = {"/": [], "/pcie@10000000": ["dma-coherent"], "/virtio_mmio@a000000": ["dma-coherent"]}
    r = diagnose_as(monkeypatch, tmp_path, "aarch64", b"linux,dummy-virt\0", virt)
    vm, dma = r.get("virtual machine"), r.get("platform DMA")
    assert vm is not None and vm.value == "QEMU"
    assert dma is not None and dma.value == "2 device-tree node(s) declare dma-coherent"
    assert doctor.summary(r).startswith("emulated (QEMU): ")
    assert r.to_dict()["summary"] == doctor.summary(r)


def test_diagnose_arm64_board(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    board = {"/": [], "/gpu@fb000000": ["reg"], "/usb@fc000000": ["reg"]}
    r = diagnose_as(monkeypatch, tmp_path, "aarch64", b"rockchip,rk3588\0", board)
    assert r.get("virtual machine") is None
    dma = r.get("platform DMA")
    assert dma is not None and dma.value == "no device-tree node declares dma-coherent"
    module = r.get("pagebuf module")
    assert module is not None and module.value == "unavailable"
    assert doctor.summary(r).startswith("aliases can diverge here")


def info3(features: int = 0, dma_max_size: int = 2**64 - 1) -> ModuleInfo:
    return ModuleInfo(3, features, sysinfo.page_size(), 10, 32768, 0, 0, 2**64 - 1,
                      dma_max_size, 128 << 20, 0)  # fmt: skip


def test_pat_findings_say_how_to_opt_in() -> None:
    r = doctor.Report()
    doctor.check_module(r, info3(uapi.FEAT_X86_PAT | uapi.FEAT_DMA_COHERENT), "x86_64", "pmem")
    f = r.get("uncached maps")
    assert f is not None and (f.verdict, f.value) == ("warn", "refused (x86 PAT)")
    assert "x86_pat_alias=1" in f.detail and "EPERM" in f.detail
    r = doctor.Report()
    doctor.check_module(r, info3(uapi.FEAT_X86_PAT | uapi.FEAT_PAT_ALIAS), "x86_64", "pmem")
    f = r.get("uncached maps")
    assert f is not None and f.value == "allowed (x86_pat_alias=1)" and "tainted" in f.detail
    r = doctor.Report()
    doctor.check_module(r, info3(uapi.FEAT_WC_IS_UC), "x86_64", "pmem")
    f = r.get("mmap-wc")
    assert r.get("uncached maps") is None and f is not None and f.value == "UC-"
    assert "nopat" in f.detail


def test_dma_bounce_and_max_size_findings() -> None:
    r = doctor.Report()
    doctor.check_module(r, info3(uapi.FEAT_DMA_BOUNCE, 256 << 10), "x86_64", "pmem")
    bounce, size = r.get("DMA bounce"), r.get("DMA max size")
    assert bounce is not None and bounce.verdict == "warn" and "dma arm is skipped" in bounce.detail
    assert size is not None and size.value == "262144 bytes"
    assert "order 6 at most" in size.detail and "E2BIG" in size.detail
    r = doctor.Report()
    doctor.check_module(r, info3(), "x86_64", "pmem")
    size = r.get("DMA max size")
    assert r.get("DMA bounce") is None and size is not None and size.value == "unlimited"
    old = doctor.Report()
    doctor.check_module(old, info(), "x86_64", "pmem")  # api 2 reports neither
    assert old.get("DMA max size") is None and old.get("uncached maps") is None


@pytest.mark.parametrize(
    ("cmdline", "forced"),
    [("ro swiotlb=force", True), ("swiotlb=65536,force quiet", True),
     ("swiotlb=65536", False), ("swiotlb=noforce", False), ("", False)],
)  # fmt: skip
def test_swiotlb_forced(cmdline: str, forced: bool) -> None:
    assert doctor.swiotlb_forced(cmdline) is forced
    r = doctor.Report()
    doctor.check_dma(r, cmdline)
    f = r.get("swiotlb")
    assert f is not None and (f.value == "forced") is forced


def test_an_iommu_is_said_to_translate_the_users_device_not_pagebufs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "dmar0").mkdir()
    monkeypatch.setattr(doctor, "IOMMU_CLASS", tmp_path)
    r = doctor.Report()
    doctor.check_dma(r, "")
    f = r.get("IOMMU")
    assert f is not None and f.value == "dmar0"
    assert "your real device" in f.detail and "never behind an IOMMU" in f.detail


class FakeDmaDevice:
    """Just enough of Device for probe_dma: one DMA buffer, as the module describes it."""

    def __init__(self, dma_addr: int, flags: int) -> None:
        self.buf = Buffer(1, 0, uapi.BUF_DMA | uapi.BUF_FILE_OWNED | flags, 0x5000, dma_addr, 4096)
        self.freed: list[int] = []

    def alloc(self, order: int, *, dma: bool = False, file_owned: bool = False,
              dma_device: str | None = None, dma_dir: int = 0) -> Buffer:  # fmt: skip
        assert dma_device is None and dma_dir == 0  # no --dma-device here
        assert dma and file_owned
        return self.buf

    def free(self, buf_id: int) -> None:
        self.freed.append(buf_id)


@pytest.mark.parametrize(
    ("dma_addr", "flags", "verdict", "value"),
    [
        (0x5000, 0, "info", "= physical"),
        (0x7F000000, uapi.BUF_BOUNCED, "warn", "0x7f000000 != 0x5000"),
        (0x7F000000, 0, "warn", "0x7f000000 != 0x5000"),  # an older module: no flag
    ],
)
def test_a_moved_dma_address_is_named_a_bounce_slot_never_an_iommu(
    dma_addr: int, flags: int, verdict: str, value: str
) -> None:
    fake = FakeDmaDevice(dma_addr, flags)
    r = doctor.Report()
    doctor.probe_dma(r, fake)  # type: ignore[arg-type]
    f = r.get("DMA address")
    assert f is not None and (f.verdict, f.value) == (verdict, value)
    assert "never behind an IOMMU" in f.detail and "an IOMMU or" not in f.detail
    assert ("swiotlb bounce slot" in f.detail) == (verdict == "warn")
    assert fake.freed == [1]
