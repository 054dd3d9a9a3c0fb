"""`pagebuf doctor`: what this machine does with RAM behind /dev/mem, before any experiment.

Each finding is one line with a verdict:
    ok     as needed for the toolkit
    info   a fact worth knowing
    warn   limits what can be done or concluded here
    risk   the cache-aliasing corruption can happen on this machine
The probes that need the module allocate one file-owned page and free it on the way out.
"""

from __future__ import annotations

import errno as E
import gzip
import mmap
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .device import Device, ModuleInfo
from .errors import PagebufError
from .sysinfo import (
    ACPI_ROOT,
    DMI_VENDOR,
    cache_line_size,
    cpu_flags,
    dma_coherent_nodes,
    dt_root,
    dt_strings,
    page_size,
    read_text,
    vm_name,
)

DEVMEM_OPTIONS = ("CONFIG_DEVMEM", "CONFIG_STRICT_DEVMEM", "CONFIG_IO_STRICT_DEVMEM")
TOKEN = b"pagebuf\x5a"
CACHE_OPS_FILE = Path("/sys/class/misc/pagebuf/cache_ops")
IOMMU_CLASS = Path("/sys/class/iommu")
ARM64 = ("aarch64", "arm64")
X86 = ("x86_64", "i686", "i386")
NORMAL_NC = "Normal non-cacheable"


@dataclass(frozen=True)
class Finding:
    name: str
    verdict: str
    value: str
    detail: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, name: str, verdict: str, value: str, detail: str = "") -> None:
        self.findings.append(Finding(name, verdict, value, detail))

    def get(self, name: str) -> Finding | None:
        return next((f for f in self.findings if f.name == name), None)

    def to_dict(self) -> dict[str, object]:
        return {"findings": [asdict(f) for f in self.findings], "summary": summary(self)}


def kconfig_paths(release: str | None = None) -> list[Path]:
    """Where a kernel's config may be, best first; $PAGEBUF_KCONFIG last."""
    release = release or platform.release()
    paths = [
        Path("/proc/config.gz"),
        Path(f"/boot/config-{release}"),
        Path(f"/lib/modules/{release}/build/.config"),
    ]
    if os.environ.get("PAGEBUF_KCONFIG"):
        paths.append(Path(os.environ["PAGEBUF_KCONFIG"]))
    return paths


def read_kconfig(paths: list[Path] | None = None) -> tuple[dict[str, str], str | None]:
    """The running kernel's config and where it came from (None if nowhere)."""
    text, source = read_kconfig_text(paths)
    return (parse_kconfig(text) if source is not None else {}), source


def read_kconfig_text(paths: list[Path] | None = None) -> tuple[str, str | None]:
    """The first readable config's text (decompressed) and its path; ("", None) if none."""
    for path in kconfig_paths() if paths is None else paths:
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        return raw.decode(errors="replace"), str(path)
    return "", None


def parse_kconfig(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:].split()[0]] = "n"
    return out


def _text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def check_config(report: Report, config: dict[str, str], source: str | None) -> None:
    if source is None:
        report.add("kernel config", "warn", "not found", "no /proc/config.gz or /boot/config-*")
        return
    for name in DEVMEM_OPTIONS:
        value = config.get(name, "n")
        verdict = "info"
        detail = ""
        if name == "CONFIG_DEVMEM" and value == "n":
            verdict, detail = "warn", "no /dev/mem at all: use /dev/pagebuf"
        elif name == "CONFIG_STRICT_DEVMEM" and value == "y":
            verdict, detail = "warn", "RAM is refused through /dev/mem: use /dev/pagebuf"
        report.add(name, verdict, value, f"from {source}" + (f"; {detail}" if detail else ""))


def check_arch(report: Report, arch: str, flags: set[str], cmdline: str) -> None:
    report.add("architecture", "info", arch)
    if arch in ("x86_64", "i686", "i386"):
        if "nopat" in cmdline.split():
            mode = "booted nopat: an O_SYNC mmap of RAM is an uncached alias"
            pat = "off"
        elif "pat" in flags:
            mode = (
                "mmap of RAM through /dev/mem is refused (EINVAL); read()/write() work, "
                "through the kernel's cached mapping"
            )
            pat = "on"
        else:
            mode, pat = "CPU without PAT", "absent"
        report.add("x86 PAT", "info", pat, mode)
        if "ss" in flags:
            report.add(
                "self-snoop",
                "ok",
                "yes",
                "the CPU snoops its own caches on uncached accesses: aliases stay coherent",
            )
        else:
            report.add(
                "self-snoop",
                "risk",
                "no",
                "uncached accesses may miss dirty lines of the cached alias",
            )
    elif arch in ARM64 or arch.startswith("arm"):
        report.add("O_SYNC mapping of RAM", "risk", NORMAL_NC, _arm_sync_detail(arch))
    else:
        report.add("O_SYNC mapping of RAM", "warn", "unknown", f"not characterised for {arch}")


def _arm_sync_detail(arch: str) -> str:
    """What /dev/mem O_SYNC gives RAM on Arm, and which /dev/pagebuf path matches it."""
    risk = (
        "mismatched attributes (Arm ARM): the cached alias's dirty lines can be "
        "written back over data written through /dev/mem"
    )
    if arch in ARM64:
        return (
            f"{risk}; /dev/pagebuf --via mmap-uc maps the same, --via mmap-device maps "
            "Device-nGnRnE (unaligned accesses and memset of zero fault there)"
        )
    return f"{risk}; /dev/pagebuf --via mmap-wc maps the same here"


def check_vm(report: Report, name: str | None) -> None:
    """A hypervisor or emulator, named when known (see sysinfo.vm_name)."""
    if name is None:
        return
    report.add(
        "virtual machine",
        "warn",
        name,
        "emulators such as QEMU do not model CPU caches: real corruption "
        "cannot be reproduced here; only injected faults can",
    )


def check_page_size(report: Report, arch: str, size: int) -> None:
    detail = ""
    if arch in ARM64:
        detail = "arm64 kernels use 4, 16 or 64 KiB pages: buffers and offsets follow this one"
    report.add("page size", "info", f"{size // 1024} KiB", detail)


def check_platform_dma(report: Report, dt: Path | None, acpi: bool) -> None:
    """Whether the platform's own devices snoop the CPU caches, as far as firmware says."""
    name = "platform DMA"
    if dt is not None:
        nodes = dma_coherent_nodes(dt)
        if not nodes:
            report.add(
                name,
                "info",
                "no device-tree node declares dma-coherent",
                "the platform's devices are non-coherent, as is typical of SoCs with a "
                "Mali GPU: their drivers must clean and invalidate through the DMA API",
            )
            return
        shown = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
        report.add(
            name,
            "info",
            f"{len(nodes)} device-tree node(s) declare dma-coherent",
            f"{shown}: these devices and their children snoop the CPU caches; "
            "the others are non-coherent",
        )
    elif acpi:
        report.add(
            name,
            "info",
            "unknown",
            "ACPI: each device's _CCA says it, and the kernel does not expose that",
        )
    else:
        report.add(name, "info", "unknown", "no device tree and no ACPI tables found")


def check_cpus(report: Report, arch: str) -> None:
    report.add("cache line", "info", f"{cache_line_size() or 'unknown'} bytes")
    check_page_size(report, arch, page_size())
    online = _text("/sys/devices/system/cpu/online").strip() or str(os.cpu_count())
    report.add("online CPUs", "info", online)


OWN_DEVICE = (
    "pagebuf's own device is a misc device, never behind an IOMMU: its mappings are "
    "dma-direct with a 64-bit mask; `alloc --dma-device NAME` (and `compare --dma-device`) "
    "map for your device instead and say whether its IOMMU translates"
)


def swiotlb_forced(cmdline: str) -> bool:
    """`swiotlb=force` or `swiotlb=N,force` (the kernel's syntax) on the command line."""
    for word in cmdline.split():
        if word.startswith("swiotlb=") and "force" in word.removeprefix("swiotlb=").split(","):
            return True
    return False


def check_dma(report: Report, cmdline: str) -> None:
    iommus = sorted(p.name for p in IOMMU_CLASS.glob("*"))
    if iommus:
        detail = (
            "it translates the DMA of the devices behind it (your real device, whose "
            f"dma_addr is then an IO virtual address), not pagebuf's: {OWN_DEVICE}"
        )
        report.add("IOMMU", "info", ", ".join(iommus), detail)
    else:
        report.add("IOMMU", "info", "none")
    if swiotlb_forced(cmdline):
        detail = "every streaming DMA mapping is bounced through a copy: the dma arm is skipped"
        report.add("swiotlb", "warn", "forced", detail)
    else:
        report.add("swiotlb", "info", "not forced")


def probe_dma(report: Report, dev: Device) -> None:
    """Map a page for DMA and compare addresses. pagebuf's device maps dma-direct, so a
    DMA address other than the physical one can only be a swiotlb bounce slot."""
    buf = dev.alloc(0, dma=True, file_owned=True)
    try:
        if buf.dma_addr == buf.phys_addr and not buf.bounced:
            detail = f"direct mapping: no bounce buffer ({OWN_DEVICE})"
            report.add("DMA address", "info", "= physical", detail)
        else:
            value = f"0x{buf.dma_addr or 0:x} != 0x{buf.phys_addr:x}"
            if buf.dma_addr == buf.phys_addr:
                value = f"0x{buf.phys_addr:x}, bounced"
            detail = (
                f"a swiotlb bounce slot ({OWN_DEVICE}, so only bouncing moves it: "
                "swiotlb=force, or a confidential guest's encrypted memory); a device "
                "would reach the copy, not the page"
            )
            report.add("DMA address", "warn", value, detail)
    finally:
        dev.free(buf.id)


def probe_devmem(report: Report, dev: Device) -> None:
    """Write a token through the kernel view of a pagebuf page; look for it via /dev/mem."""
    buf = dev.alloc(0, file_owned=True)
    try:
        dev.kwrite(buf.id, 0, TOKEN)
        for name, verdict_ok, check in (
            ("/dev/mem read()", "ok", _devmem_pread),
            ("/dev/mem mmap O_SYNC", "ok", _devmem_mmap(os.O_SYNC)),
            ("/dev/mem mmap cached", "info", _devmem_mmap(0)),
        ):
            try:
                data = check(buf.phys_addr)
            except OSError as exc:
                report.add(name, "warn", f"refused ({E.errorcode.get(exc.errno or 0, '?')})",
                           _refusal(exc.errno))  # fmt: skip
                continue
            if data == TOKEN:
                report.add(name, verdict_ok, "works", "reads what the kernel wrote")
            else:
                report.add(name, "warn", "mismatch", f"read {data.hex()} instead of the token")
    finally:
        dev.free(buf.id)


def _refusal(errno: int | None) -> str:
    if errno == E.EPERM:
        return "CONFIG_STRICT_DEVMEM=y forbids RAM through /dev/mem: use /dev/pagebuf"
    if errno == E.EINVAL:
        return (
            "x86 PAT refuses to alias RAM: use /dev/pagebuf (--via mmap-uc, with the "
            "module loaded x86_pat_alias=1)"
        )
    if errno == E.ENOENT:
        return "no /dev/mem (CONFIG_DEVMEM=n)"
    return os.strerror(errno or 0)


def _devmem_pread(phys: int) -> bytes:
    fd = os.open("/dev/mem", os.O_RDONLY | os.O_SYNC | os.O_CLOEXEC)
    try:
        return os.pread(fd, len(TOKEN), phys)
    finally:
        os.close(fd)


def _devmem_mmap(extra: int) -> Callable[[int], bytes]:
    def probe(phys: int) -> bytes:
        fd = os.open("/dev/mem", os.O_RDWR | extra | os.O_CLOEXEC)
        try:
            with mmap.mmap(fd, mmap.PAGESIZE, offset=phys) as m:
                return m[: len(TOKEN)]
        finally:
            os.close(fd)

    return probe


def read_cache_ops(path: Path = CACHE_OPS_FILE) -> str | None:
    """The module's cache maintenance (pmem, dma or none); None: an older module."""
    text = read_text(path).strip()
    return text or None


def cache_ops_of(dev: Device) -> str | None:
    """`cache_ops` of the device's own sysfs node (udev found it), else the usual path."""
    sys_path = dev.node.sys_path
    return read_cache_ops(sys_path / "cache_ops" if sys_path is not None else CACHE_OPS_FILE)


CACHE_OPS = {
    "pmem": ("ok", "arch_wb_cache_pmem() cleans, arch_invalidate_pmem() invalidates"),
    "dma": (
        "ok",
        "the streaming DMA API on the module's own non-coherent device cleans and invalidates",
    ),
    "none": (
        "warn",
        "the module cannot clean or invalidate the kernel's alias: the flush "
        "arm, the positive control and injection are skipped",
    ),
}


def check_module(report: Report, info: ModuleInfo, arch: str, cache_ops: str | None) -> None:
    report.add(
        "pagebuf module",
        "ok",
        f"api {info.api_version}",
        f"max_order {info.max_order}, max_bytes {info.max_bytes}, "
        f"{info.bytes_in_use} bytes in {info.nr_buffers} buffers",
    )
    if info.dma_coherent:
        report.add("DMA coherent", "ok", "yes", "dma_sync_* need no cache maintenance")
    else:
        own = "pagebuf's own device, which no firmware describes: " if arch in ARM64 else ""
        report.add("DMA coherent", "info", "no", f"{own}dma_sync_* clean and invalidate the caches")
    check_cache_ops(report, info, cache_ops)
    check_module_dma(report, info)
    check_module_pat(report, info)
    if arch in ARM64 and info.api_version < 2:
        report.add(
            "mmap-uc",
            "warn",
            "Device-nGnRnE",
            "a module older than api 2 maps UC as pgprot_noncached, not the Normal "
            "non-cacheable /dev/mem O_SYNC gives RAM: rebuild the module",
        )
    if page_size() != info.page_size:
        report.add(
            "module page size",
            "warn",
            f"{info.page_size} bytes",
            f"not this kernel's {page_size()}: built for another kernel?",
        )


def check_module_dma(report: Report, info: ModuleInfo) -> None:
    """Whether pagebuf's DMA mappings are bounced, and how large one may be (api 3)."""
    if info.api_version < 3:
        return
    if info.dma_bounce:
        report.add(
            "DMA bounce",
            "warn",
            "swiotlb",
            "pagebuf's DMA mappings go through swiotlb bounce buffers (swiotlb=force, or "
            "a confidential guest): dma_addr is the bounce slot, so the dma arm is skipped",
        )
    limit = info.dma_limit
    if limit is None:
        report.add("DMA max size", "info", "unlimited")
    else:
        orders = [o for o in range(info.max_order + 1) if info.dma_refusal(o) is None]
        largest = f"order {orders[-1]} at most" if orders else "not even order 0"
        report.add("DMA max size", "info", f"{limit} bytes",
                   f"a larger DMA alloc fails (E2BIG): {largest}")  # fmt: skip


def check_module_pat(report: Report, info: ModuleInfo) -> None:
    """x86: what the module's uncached maps are under PAT, or without it."""
    if info.uncached_refused:
        report.add(
            "uncached maps",
            "warn",
            "refused (x86 PAT)",
            "PAT keeps one memory type per page of RAM: mmap-uc, mmap-wc, mmap-device and "
            "O_SYNC maps of /dev/pagebuf fail (EPERM); load pagebuf with x86_pat_alias=1 "
            "to allow them (it taints the kernel), or use mmap-wb",
        )
    elif info.pat_alias:
        report.add(
            "uncached maps",
            "warn",
            "allowed (x86_pat_alias=1)",
            "UC/WC maps of RAM alias PAT's write-back type; the kernel is tainted",
        )
    if info.wc_is_uc:
        report.add(
            "mmap-wc",
            "info",
            "UC-",
            "booted nopat: write-combining maps are UC-, the same as mmap-uc",
        )


def check_cache_ops(report: Report, info: ModuleInfo, cache_ops: str | None) -> None:
    """How the module cleans and invalidates the kernel's alias (sysfs `cache_ops`)."""
    inject = "; INJECT on (inject=1)" if info.can_inject else ""
    if cache_ops is None:
        how = "KFLUSH works" if info.can_flush else "no KFLUSH"
        report.add(
            "cache maintenance",
            "info",
            "unknown",
            f"no {CACHE_OPS_FILE}: a module older than api 2; {how}{inject}",
        )
        return
    verdict, detail = CACHE_OPS.get(cache_ops, ("warn", "not a value this pagebuf knows"))
    report.add("cache maintenance", verdict, cache_ops, detail + inject)


def diagnose(open_device: Callable[[], Device] = Device) -> Report:
    report = Report()
    cmdline = _text("/proc/cmdline")
    arch = platform.machine()
    flags = cpu_flags(_text("/proc/cpuinfo"))
    dt = dt_root()
    report.add("kernel", "info", f"{platform.system()} {platform.release()}")
    check_config(report, *read_kconfig())
    check_arch(report, arch, flags, cmdline)
    compatible = dt_strings(dt / "compatible") if dt is not None else []
    check_vm(report, vm_name(flags, read_text(DMI_VENDOR), compatible))
    check_cpus(report, arch)
    check_dma(report, cmdline)
    if arch not in X86:
        check_platform_dma(report, dt, ACPI_ROOT.is_dir())
    try:
        dev = open_device()
    except PagebufError as exc:
        report.add("pagebuf module", "warn", "unavailable", exc.message)
        return report
    with dev:
        check_module(report, dev.info(), arch, cache_ops_of(dev))
        try:
            probe_dma(report, dev)
            probe_devmem(report, dev)
        except PagebufError as exc:  # e.g. the module's page quota is used up
            report.add("live probes", "warn", "not run", exc.message)
    return report


def render(report: Report) -> str:
    """The report as `pagebuf doctor` prints it: a finding a line, then which case this is."""
    lines = [f"[{f.verdict:>4}] {f.name}: {f.value}" + (f" ({f.detail})" if f.detail else "")
             for f in report.findings]  # fmt: skip
    return "\n".join([*lines, f"=> {summary(report)}"])


def summary(report: Report) -> str:
    """Which case this machine is in, in one sentence."""
    vm = report.get("virtual machine")
    if vm is not None:
        if vm.value == "QEMU":
            return "emulated (QEMU): no caches, only the mechanics and the detector are tested"
        return (
            f"virtual machine ({vm.value}): the hypervisor decides what reaches the caches, "
            "so only the mechanics and the detector are tested"
        )
    sync = report.get("O_SYNC mapping of RAM")
    if sync is not None and sync.value == NORMAL_NC:
        return (
            "aliases can diverge here — a clean run means something, a corrupted one is "
            "the reference note's bug"
        )
    risk = [f.name for f in report.findings if f.verdict == "risk"]
    if risk:
        return "corruption through uncached aliases can occur here (" + ", ".join(risk) + ")"
    return "aliases are expected to stay coherent here; a clean run is the expected result"
