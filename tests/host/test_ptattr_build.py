"""tests/vm/ptattr, the test-only module through which tests/vm/test_mmap.py reads arm64's
user page tables: the harness builds it next to pagebuf.ko and hands its path to the
guest; it builds warning-free (W=1) against 6.1 and 6.12 on both architectures and is
checkpatch --strict clean."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from test_build import REQUIRE, _target_kernel

from pagebuf.vm import GuestKernel, VmConfig, VmError, cli, modbuild
from pagebuf.vm.runner import guest_script, guest_shares

ROOT = Path(__file__).resolve().parents[2]
PTATTR = ROOT / "tests" / "vm" / "ptattr"
ROOTFS = Path("/cache/rootfs/arm64-x/root")
KERNEL = GuestKernel(
    "custom", Path("/tree/arch/arm64/boot/Image"), Path("/tree"), "6.12.117", arch="arm64"
)


def fake_make(made: list[list[str]], ko_name: str):  # type: ignore[no-untyped-def]
    def run(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        made.append(cmd)
        dest = Path(next(a for a in cmd if a.startswith("M="))[2:])
        (dest / ko_name).parent.mkdir(parents=True, exist_ok=True)
        (dest / ko_name).write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_the_test_module_is_built_per_kernel_and_arch_apart_from_pagebuf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[list[str]] = []
    monkeypatch.setattr(modbuild.subprocess, "run", fake_make(made, "ptattr.ko"))
    cache = tmp_path / "cache"
    custom = replace(KERNEL, kdir=tmp_path / "tree")
    arm = modbuild.build_test_module(custom, ROOT, cache, "ptattr")
    x86 = modbuild.build_test_module(replace(custom, arch="x86_64"), ROOT, cache, "ptattr")
    assert arm.parent.parent == cache / "kmod/custom-arm64-ptattr" and arm.name == "ptattr.ko"
    assert x86.parent.parent == cache / "kmod/custom-ptattr" and x86.name == "ptattr.ko"
    assert arm.parent.name.startswith("6.12.117-")
    # Its own sources only, copied as they are in the tree.
    dest = arm.parent
    assert sorted(p.name for p in dest.iterdir()) == ["Kbuild", "ptattr.c", "ptattr.ko"]
    assert (dest / "ptattr.c").read_bytes() == (PTATTR / "ptattr.c").read_bytes()
    assert made[0] == modbuild.make_command(custom, custom.kdir, dest)
    assert "ARCH=arm64" in made[0] and not any(a.startswith("ARCH=") for a in made[1])


def test_a_failed_or_missing_test_module_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(VmError, match="no test module nosuch"):
        modbuild.build_test_module(KERNEL, ROOT, tmp_path, "nosuch")

    def failing(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 2, "", "ptattr.c:1: error: oops\n")

    monkeypatch.setattr(modbuild.subprocess, "run", failing)
    with pytest.raises(VmError, match="building ptattr.ko for 6.12.117 failed:\n.*oops"):
        modbuild.build_test_module(replace(KERNEL, kdir=tmp_path), ROOT, tmp_path, "ptattr")


def config(**kw: object) -> VmConfig:
    base = VmConfig(
        kernel=KERNEL,
        ko=Path("/cache/kmod/custom-arm64/6.12.117/kmod/pagebuf.ko"),
        src_root=Path("/src"),
        bin_dir=Path("/cache/bin-arm64"),
        cwd=Path("/work/results"),
        rootfs=ROOTFS,
        script_dir=Path("/tmp/pagebuf-vm-1"),
        test_kos={"ptattr": Path("/cache/kmod/custom-arm64-ptattr/6.12.117/ptattr.ko")},
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_the_guest_is_told_where_ptattr_is_and_an_arm64_guest_sees_it() -> None:
    script = guest_script(config(), "true")
    assert "export PAGEBUF_PTATTR_KO=/cache/kmod/custom-arm64-ptattr/6.12.117/ptattr.ko\n" in script
    assert "insmod /cache/kmod/custom-arm64/6.12.117/kmod/pagebuf.ko" in script
    assert "ptattr.ko ||" not in script  # the tests load it themselves
    shared = {str(s.path): s.writable for s in guest_shares(config())}
    assert shared["/cache/kmod"] is False  # one share holds every module built for it
    without = config(test_kos={})
    assert "PAGEBUF_PTATTR_KO" not in guest_script(without, "true")
    assert {str(s.path) for s in guest_shares(without)} >= {
        "/cache/kmod/custom-arm64/6.12.117/kmod"
    }


@pytest.mark.parametrize("no_module", [False, True])
def test_the_cli_builds_ptattr_with_the_module_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_module: bool
) -> None:
    x86 = replace(KERNEL, arch="x86_64")
    built: list[str] = []
    seen: list[VmConfig] = []
    monkeypatch.setenv("PAGEBUF_CACHE", str(tmp_path))
    monkeypatch.setattr(cli, "resolve_kernel", lambda *_a, **_k: x86)
    monkeypatch.setattr(
        cli, "build_module", lambda *_a: built.append("pagebuf") or tmp_path / "pagebuf.ko"
    )
    monkeypatch.setattr(
        cli,
        "build_test_module",
        lambda _k, _s, _c, name: built.append(name) or tmp_path / f"{name}.ko",
    )
    monkeypatch.setattr(cli, "run_in_vm", lambda cfg, *_a, **_k: seen.append(cfg) or 0)
    argv = ["--no-module", "true"] if no_module else ["true"]
    assert cli.main(argv) == 0
    if no_module:
        assert built == [] and seen[0].ko is None and seen[0].test_kos == {}
    else:
        assert built == ["pagebuf", "ptattr", "dmadev"]
        assert seen[0].test_kos == {n: tmp_path / f"{n}.ko" for n in ("ptattr", "dmadev")}


@pytest.mark.parametrize("module", ["ptattr", "dmadev"])
@pytest.mark.parametrize("which", ["x86_64-6.1", "x86_64-6.12", "arm64-6.1", "arm64-6.12"])
def test_test_modules_build_warning_free(tmp_path: Path, which: str, module: str) -> None:
    kernel = _target_kernel(which)
    if isinstance(kernel, str):
        if REQUIRE:
            pytest.fail(f"{which}: {kernel}")
        pytest.skip(kernel)
    assert isinstance(kernel, GuestKernel)
    assert kernel.release.startswith(which.split("-")[1] + "."), kernel.release
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Kbuild", f"{module}.c"):
        shutil.copy2(PTATTR.parent / module / name, src / name)
    kdir, env = modbuild.cross_tree(kernel, tmp_path / "kdir")
    cmd = [*modbuild.make_command(kernel, kdir, src), "W=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "warning:" not in out and "error:" not in out, out
    # ELF e_machine: EM_X86_64 (62) or EM_AARCH64 (183).
    machine = int.from_bytes((src / f"{module}.ko").read_bytes()[18:20], "little")
    assert machine == (183 if which.startswith("arm64") else 62), machine


@pytest.mark.parametrize("module", ["ptattr", "dmadev"])
def test_test_modules_are_checkpatch_strict_clean(module: str) -> None:
    from pagebuf.vm.paths import cache_root

    checkpatch = cache_root() / "checkpatch/linux-source-6.12/scripts/checkpatch.pl"
    if not checkpatch.is_file():
        if REQUIRE:  # make test runs `make check` first
            pytest.fail(f"no {checkpatch}: `make check` extracts it")
        pytest.skip(f"no {checkpatch}: `make check` extracts it")
    proc = subprocess.run(
        ["perl", str(checkpatch), "--no-tree", "--strict", "--quiet", "-f",
         str(PTATTR.parent / module / f"{module}.c")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
