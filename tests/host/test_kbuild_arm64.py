"""The arm64 test kernel: its config, its own cache key beside x86's unchanged one, how it
is built (commands checked without building) and how a built arm64 tree is found."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from pagebuf.vm import VmError, kbuild
from pagebuf.vm.kbuild import (
    ARM64_BASE_CONFIG,
    ARM64_CONFIG_ITEMS,
    BUILT_MARK,
    CONFIG_ITEMS,
    _check_config,
    cache_key,
    config_items,
    custom_kernel,
    make_vars,
    normalize_arch,
)
from pagebuf.vm.kernels import tree_kernel

ROOT = Path(__file__).resolve().parents[2]

# x86's items exactly as the cached x86 kernel was keyed with: change them and every
# machine rebuilds it (14 minutes), so this copy is deliberate.
X86_ITEMS = (
    "CONFIG_DEVMEM=y",
    "CONFIG_STRICT_DEVMEM=n",
    "CONFIG_IO_STRICT_DEVMEM=n",
    "CONFIG_MODULES=y",
    "CONFIG_MODULE_UNLOAD=y",
    "CONFIG_MODULE_SIG=n",
    "CONFIG_X86_PAT=y",
    "CONFIG_PTDUMP_DEBUGFS=y",
    "CONFIG_DMA_API_DEBUG=y",
    "CONFIG_DEBUG_VM=y",
    "CONFIG_DEBUG_INFO_NONE=y",
    "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=n",
    "CONFIG_DEBUG_INFO_DWARF4=n",
    "CONFIG_DEBUG_INFO_DWARF5=n",
)
TEST_AIDS = (
    "CONFIG_DEVMEM=y",
    "CONFIG_STRICT_DEVMEM=n",
    "CONFIG_IO_STRICT_DEVMEM=n",
    "CONFIG_MODULES=y",
    "CONFIG_MODULE_UNLOAD=y",
    "CONFIG_MODULE_SIG=n",
    "CONFIG_PTDUMP_DEBUGFS=y",
    "CONFIG_DMA_API_DEBUG=y",
    "CONFIG_DEBUG_VM=y",
    "CONFIG_DEBUG_INFO_NONE=y",
)
# What QEMU's virt machine and virtme-ng's guest cannot do without.
VIRT_NEEDS = (
    "CONFIG_PCI_HOST_GENERIC=y",
    "CONFIG_VIRTIO_PCI=y",
    "CONFIG_VIRTIO_MMIO=y",
    "CONFIG_VIRTIO_CONSOLE=y",
    "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
    "CONFIG_NET_9P_VIRTIO=y",
    "CONFIG_9P_FS=y",
    "CONFIG_VIRTIO_FS=y",
    "CONFIG_DEVTMPFS=y",
    "CONFIG_TMPFS=y",
    "CONFIG_BINFMT_ELF=y",
    "CONFIG_BINFMT_SCRIPT=y",
    "CONFIG_UNIX=y",
    "CONFIG_HOTPLUG_CPU=y",
    "CONFIG_IKCONFIG_PROC=y",
    "CONFIG_CRC32=y",
)


@pytest.fixture
def version(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fixed source package version, installed or not."""
    monkeypatch.setattr(kbuild, "_source_version", lambda: "6.12.99-1")
    return "6.12.99-1"


def _fake_tree(tree: Path, image: str, release: str = "6.12.99") -> Path:
    (tree / image).parent.mkdir(parents=True)
    (tree / image).write_bytes(b"kernel")
    (tree / "include" / "config").mkdir(parents=True)
    (tree / "include" / "config" / "kernel.release").write_text(release + "\n")
    return tree


def test_x86_items_and_key_are_what_the_cached_kernel_was_built_with(version: str) -> None:
    assert CONFIG_ITEMS == X86_ITEMS
    assert config_items() == config_items("x86_64") == X86_ITEMS
    h = hashlib.sha256(version.encode())
    h.update("\n".join(X86_ITEMS).encode())
    assert cache_key() == cache_key("x86_64") == f"6.12-{h.hexdigest()[:12]}"


def test_arm64_has_its_own_key(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    arm64 = cache_key("arm64")
    assert re.fullmatch(r"6\.12-arm64-[0-9a-f]{12}", arm64)
    assert arm64 != cache_key("x86_64")
    assert cache_key("aarch64") == arm64
    # The key follows the config and the source version.
    monkeypatch.setattr(kbuild, "ARM64_BASE_CONFIG", (*ARM64_BASE_CONFIG, "CONFIG_FOO=y"))
    assert cache_key("arm64") != arm64
    monkeypatch.setattr(kbuild, "ARM64_BASE_CONFIG", ARM64_BASE_CONFIG)
    monkeypatch.setattr(kbuild, "_source_version", lambda: "6.12.100-1")
    assert cache_key("arm64") != arm64


def test_arm64_items_carry_the_test_aids_and_what_the_virt_machine_needs() -> None:
    items = config_items("arm64")
    assert set(TEST_AIDS) <= set(items)
    assert set(VIRT_NEEDS) <= set(items)
    assert set(ARM64_CONFIG_ITEMS) <= set(items)
    assert not [item for item in items if "X86" in item]
    names = [item.split("=", 1)[0] for item in items]
    assert len(names) == len(set(names)), "an option set twice"
    for item in items:
        assert re.fullmatch(r"CONFIG_[A-Z0-9_]+=(y|n|m|\d+|\".*\")", item), item


def test_arch_names_and_make_variables() -> None:
    assert normalize_arch("aarch64") == normalize_arch("arm64") == "arm64"
    assert normalize_arch("amd64") == normalize_arch("x86_64") == "x86_64"
    with pytest.raises(VmError, match="riscv64"):
        normalize_arch("riscv64")
    assert make_vars("x86_64") == []
    assert make_vars("arm64") == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]


def test_check_config_catches_an_arm64_item_that_did_not_take(tmp_path: Path) -> None:
    items = config_items("arm64")
    good = [i for i in items if not i.endswith("=n")] + ["# CONFIG_STRICT_DEVMEM is not set"]
    config = tmp_path / ".config"
    config.write_text("\n".join(good) + "\n")
    _check_config(config, items)
    config.write_text("\n".join(i for i in good if i != "CONFIG_9P_FS=y") + "\n")
    with pytest.raises(VmError, match="CONFIG_9P_FS=y"):
        _check_config(config, items)
    config.write_text("\n".join([*good, "CONFIG_STRICT_DEVMEM=y"]) + "\n")
    with pytest.raises(VmError, match="CONFIG_STRICT_DEVMEM=n"):
        _check_config(config, items)


def test_tree_kernel_finds_an_arm64_image(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "arm", "arch/arm64/boot/Image")
    kernel = tree_kernel(tree)
    assert kernel.arch == "arm64"
    assert kernel.image == tree / "arch" / "arm64" / "boot" / "Image"
    assert kernel.kdir == tree
    assert kernel.release == "6.12.99"
    x86 = tree_kernel(_fake_tree(tmp_path / "x86", "arch/x86/boot/bzImage"))
    assert (x86.arch, x86.image.name) == ("x86_64", "bzImage")
    # An arm64 tree that was configured but never built is no kernel.
    unbuilt = tmp_path / "unbuilt"
    (unbuilt / "include" / "config").mkdir(parents=True)
    (unbuilt / "include" / "config" / "kernel.release").write_text("6.12.99\n")
    with pytest.raises(VmError, match="not a built kernel tree"):
        tree_kernel(unbuilt)


def test_custom_arm64_kernel_from_the_cache(tmp_path: Path, version: str) -> None:
    with pytest.raises(VmError, match="make kernel ARCH=arm64"):
        custom_kernel(tmp_path, build=False, arch="arm64")
    parent = tmp_path / "kernels" / cache_key("arm64")
    tree = _fake_tree(parent / "linux-source-6.12", "arch/arm64/boot/Image")
    (parent / BUILT_MARK).write_text(cache_key("arm64") + "\n")
    kernel = custom_kernel(tmp_path, build=False, arch="aarch64")
    assert (kernel.name, kernel.arch, kernel.kdir) == ("custom", "arm64", tree)
    assert kernel.image == tree / "arch" / "arm64" / "boot" / "Image"
    assert kernel.append == ()  # `nopat` is x86's
    # ...and it is not x86's kernel, which is still missing.
    with pytest.raises(VmError, match="not built yet"):
        custom_kernel(tmp_path, build=False)


def test_arm64_build_cross_compiles_from_allnoconfig(
    tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands, in order; the items land in .config and are checked."""
    ran: list[list[str]] = []

    def unpack(parent: Path, log: Path) -> Path:
        (parent / "linux-source-6.12").mkdir()
        return parent / "linux-source-6.12"

    def run(cmd: list[str], cwd: Path, log: Path) -> None:
        ran.append(cmd)
        if cmd[-1] == "allnoconfig":
            (cwd / ".config").write_text("# CONFIG_9P_FS is not set\nCONFIG_STRICT_DEVMEM=y\n")
        if cmd[-1] == "olddefconfig":  # like Kconfig: the last line for an option wins
            config = cwd / ".config"
            last = {re.sub(r"^# (CONFIG_\w+) is not set$", r"\1=n", line).split("=")[0]: line
                    for line in config.read_text().splitlines()}  # fmt: skip
            config.write_text("\n".join(last.values()) + "\n")
        if cmd[-1] == "modules":
            _fake_tree(cwd, "arch/arm64/boot/Image")

    monkeypatch.setattr(kbuild, "_unpack", unpack)
    monkeypatch.setattr(kbuild, "_run", run)
    monkeypatch.setattr(kbuild.shutil, "which", lambda name: f"/usr/bin/{name}")
    kernel = custom_kernel(tmp_path, jobs=3, arch="arm64")
    make = ["make", "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    assert ran == [
        [*make, "allnoconfig"],
        [*make, "olddefconfig"],
        [*make, "-j3", "Image", "modules"],
    ]
    tree = tmp_path / "kernels" / cache_key("arm64") / "linux-source-6.12"
    # Appended after allnoconfig's lines, so they won.
    config = (tree / ".config").read_text().splitlines()
    assert "CONFIG_STRICT_DEVMEM=y" not in config and "CONFIG_9P_FS=y" in config
    assert kernel.arch == "arm64"
    assert (tree.parent / BUILT_MARK).read_text().strip() == cache_key("arm64")


def test_arm64_build_says_when_the_cross_compiler_is_missing(
    tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kbuild.shutil, "which", lambda name: None)
    with pytest.raises(VmError, match="gcc-aarch64-linux-gnu"):
        custom_kernel(tmp_path, arch="arm64")


def test_main_takes_the_arch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []

    def fake(cache: Path, *, arch: str = "x86_64", **kw: object) -> object:
        seen.append(arch)
        raise VmError("stop here")

    monkeypatch.setattr(kbuild, "custom_kernel", fake)
    assert kbuild.main(["--arch", "arm64"]) == 125
    assert kbuild.main([]) == 125
    assert seen == ["arm64", "x86_64"]
    assert "pagebuf-vm: stop here" in capsys.readouterr().err


def test_make_kernel_passes_arch_through() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ARCH", "MAKEFLAGS", "MFLAGS")}

    def kbuild_line(*args: str) -> str:
        out = subprocess.run(["make", "-n", "-C", str(ROOT), "kernel", *args], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return next(line for line in out.splitlines() if "pagebuf.vm.kbuild" in line)

    assert kbuild_line("ARCH=arm64").split()[-2:] == ["--arch", "arm64"]
    assert "--arch" not in kbuild_line()
