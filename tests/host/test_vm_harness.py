"""The VM harness builds its QEMU/vng command as data; check it without booting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pagebuf.vm import GuestKernel, VmConfig, VmError, resolve_kernel, vng_command
from pagebuf.vm.kernels import debian_kernel
from pagebuf.vm.runner import guest_script

KERNEL = GuestKernel("debian", Path("/boot/vmlinuz-x"), Path("/kdir"), "6.1.0-x", ("nopat",))


def config(tmp_path: Path, **kw: object) -> VmConfig:
    return VmConfig(
        kernel=KERNEL,
        ko=tmp_path / "pagebuf.ko",
        src_root=Path("/src"),
        bin_dir=tmp_path / "bin",
        cwd=Path("/work dir"),
        **kw,  # type: ignore[arg-type]
    )


def test_command_is_a_list_with_the_kernel_and_no_kvm(tmp_path: Path) -> None:
    argv = vng_command(config(tmp_path, cpus=3, memory="1G", append=("quiet",)), "true")
    assert argv[1:3] == ["--run", "/boot/vmlinuz-x"]
    assert "--disable-kvm" in argv
    assert argv[argv.index("--cpus") + 1] == "3"
    assert argv[argv.index("--memory") + 1] == "1G"
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert appended == ["nopat", "quiet"]
    assert argv[argv.index("--rwdir") + 1] == "/work dir"  # results can land there
    assert argv[-2] == "--exec"
    assert "--rwdir" not in vng_command(config(tmp_path, writable_cwd=False), "true")


def test_guest_script_runs_the_command_verbatim_and_keeps_its_status(tmp_path: Path) -> None:
    cfg = config(tmp_path, insmod_args=("max_order=3",))
    script = guest_script(cfg, 'echo "it\'s $HOME"; exit 7')
    assert f"insmod {tmp_path}/pagebuf.ko max_order=3 ||" in script
    assert "cd '/work dir'" in script
    assert '( echo "it\'s $HOME"; exit 7\n)' in script
    assert script.rstrip().endswith("exit $rc")
    # Run it in a host shell with insmod and dmesg stubbed: the status comes through.
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("insmod", "dmesg"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
        (stubs / name).chmod(0o755)
    script = script.replace("cd '/work dir'", f"cd {tmp_path}")
    script = script.replace("export PATH=", f"export PATH={stubs}:", 1)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 7
    assert proc.stdout.startswith("it's ")


def test_debian_kernel_picks_newest_with_headers(tmp_path: Path) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for rel, headers in [
        ("6.1.0-9-amd64", True),
        ("6.1.0-10-amd64", True),
        ("6.1.0-11-amd64", False),
    ]:
        (boot / f"vmlinuz-{rel}").write_text("")
        if headers:
            (mods / rel / "build").mkdir(parents=True)
    k = debian_kernel(boot, mods)
    assert k.release == "6.1.0-10-amd64" and k.name == "debian"


def test_unknown_kernel_is_a_clear_error() -> None:
    with pytest.raises(VmError, match="unknown guest kernel"):
        resolve_kernel("/no/such/kernel")


def test_dry_run_prints_the_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pagebuf.vm", "--no-module", "--dry-run", "uname -r"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 125 and "no Debian kernel" in proc.stderr:
        if os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1":  # make test: setup installs it
            pytest.fail(f"no Debian kernel installed here: {proc.stderr.strip()}")
        pytest.skip("no Debian kernel installed here: run `make setup`")
    assert proc.returncode == 0, proc.stderr
    assert "--disable-kvm" in proc.stdout and "uname -r" in proc.stdout


def test_the_guest_gets_no_writable_root_home_or_odd_path(tmp_path: Path) -> None:
    for cwd in (Path("/"), Path.home(), Path("/work/a@b"), Path("/work/x=y"), Path("/wörk")):
        argv = vng_command(replace(config(tmp_path), cwd=cwd), "true")
        assert "--rwdir" not in argv, cwd


@pytest.mark.parametrize(
    ("first", "boots", "rc"),
    [
        ((255, 0), 2, 0),  # never ran the command, printed nothing: one more boot
        ((255, 12), 1, 255),  # the command printed: its status stands
        ((7, 0), 1, 7),  # a command's own failure is never retried
    ],
)
def test_a_boot_that_never_ran_the_command_is_retried_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: tuple[int, int], boots: int, rc: int
) -> None:
    from pagebuf.vm import runner

    calls: list[list[str]] = []

    def boot(argv: list[str]) -> tuple[int, int]:
        calls.append(argv)
        return first if len(calls) == 1 else (0, 3)

    monkeypatch.setattr(runner, "_boot", boot)
    monkeypatch.setattr(runner.shutil, "which", lambda name: sys.executable)  # "vng" exists
    assert runner.run_in_vm(config(tmp_path), "true") == rc
    assert len(calls) == boots and calls[-1] == calls[0]
    assert "--force-9p" in calls[0]


@pytest.mark.parametrize(
    ("spec", "append"),
    [("custom", ("nopat",)), ("custom-pat", ()), ("custom-swiotlb", ("nopat", "swiotlb=force"))],
)
def test_the_test_kernel_and_its_x86_boot_variants(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spec: str, append: tuple[str, ...]
) -> None:
    """One built kernel, three command lines: custom-swiotlb is the test kernel (nopat)
    with every streaming DMA mapping bounced through swiotlb."""
    from pagebuf.vm import kbuild

    built = replace(KERNEL, name="custom", append=kbuild.BOOT_APPEND)
    monkeypatch.setattr(kbuild, "custom_kernel", lambda cache, *, arch="x86_64", debug=False: built)
    monkeypatch.setenv("PAGEBUF_CACHE", str(tmp_path))
    kernel = resolve_kernel(spec)
    assert (kernel.name, kernel.append, kernel.image) == (spec, append, built.image)
    argv = vng_command(replace(config(tmp_path), kernel=kernel), "true")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--append"] == list(append)


def test_debug_is_the_debug_build_booted_as_the_test_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pagebuf.vm import kbuild

    asked: list[tuple[str, bool]] = []

    def built(cache: Path, *, arch: str = "x86_64", debug: bool = False) -> GuestKernel:
        asked.append((arch, debug))
        return replace(KERNEL, name="debug" if debug else "custom", append=kbuild.BOOT_APPEND)

    monkeypatch.setattr(kbuild, "custom_kernel", built)
    monkeypatch.setenv("PAGEBUF_CACHE", str(tmp_path))
    kernel = resolve_kernel("debug")
    assert asked == [("x86_64", True)]
    assert (kernel.name, kernel.append) == ("debug", ("nopat",))
    with pytest.raises(VmError, match="KERNEL=debug is x86 only"):
        resolve_kernel("debug", "arm64")


def test_debug_kernel_has_the_debug_items_and_its_own_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pagebuf.vm import kbuild

    monkeypatch.setattr(kbuild, "_source_version", lambda: "6.12.57-1")
    assert len({kbuild.cache_key(), kbuild.cache_key(debug=True)}) == 2

    items = kbuild.config_items("x86_64", debug=True)
    assert set(kbuild.DEBUG_ITEMS) <= set(items) and set(kbuild.CONFIG_ITEMS) <= set(items)
    assert not set(kbuild.DEBUG_ITEMS) & set(kbuild.config_items("x86_64"))
    assert "CONFIG_KASAN=y" in items and "CONFIG_PROVE_LOCKING=y" in items
    assert set(kbuild.X86_BASE_CONFIG) <= set(items)  # allnoconfig plus what q35 needs


def test_custom_swiotlb_is_x86_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from pagebuf.vm import kbuild

    def no_build(*_a: object, **_k: object) -> GuestKernel:
        raise AssertionError("custom-swiotlb on arm64 must not build a kernel")

    monkeypatch.setattr(kbuild, "custom_kernel", no_build)
    with pytest.raises(VmError, match="KERNEL=custom-swiotlb is x86 only"):
        resolve_kernel("custom-swiotlb", "arm64")


def test_make_test_runs_the_swiotlb_stage_after_the_pat_one() -> None:
    root = Path(__file__).resolve().parents[2]
    recipe = (root / "Makefile").read_text().split("\ntest:\n", 1)[1].split("\n\n", 1)[0]
    pat = recipe.index("KERNEL=custom-pat")
    swiotlb = recipe.index("ARCH=x86_64 KERNEL=custom-swiotlb")
    assert pat < swiotlb < recipe.index("ARCH=arm64")
    assert "tests/vm/test_swiotlb.py" in recipe[swiotlb:].split("\n\t@")[0]


def test_make_test_builds_and_boots_the_debug_kernel() -> None:
    """The suite fails on any kernel report there (tests/vm/conftest.py), so it runs."""
    text = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = text.split("\ntest:\n", 1)[1].split("\n\n", 1)[0]
    kernels = text.split("\nkernels:", 1)[1].split("\n\n", 1)[0]
    assert "pagebuf.vm.kbuild --debug" in kernels
    assert "test-debug" in recipe and "--no-print-directory test-debug)" in recipe


def test_a_long_x86_script_goes_in_a_file_the_guest_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The kernel command line holds 2048 bytes: the command travels as a file."""
    from pagebuf.vm import runner

    home = Path.home() / ".cache" / "pagebuf-test-scripts"
    monkeypatch.setattr(runner, "_x86_script_home", lambda: home.mkdir(exist_ok=True) or home)
    seen: list[tuple[list[str], str]] = []

    def boot(argv: list[str]) -> tuple[int, int]:
        script = Path(argv[-1].split()[-1])
        seen.append((argv, script.read_text() if script.is_file() else ""))
        return 0, 1

    monkeypatch.setattr(runner, "_boot", boot)
    monkeypatch.setattr(runner.Path, "exists", lambda self: True)
    long_cmd = "python3 -m pytest " + " ".join(f"tests/vm/test_{i:02}.py" for i in range(80))
    assert runner.run_in_vm(config(tmp_path), long_cmd) == 0
    argv, script = seen[0]
    assert argv[-2] == "--exec" and argv[-1].startswith(f"/bin/sh {home}/vm-")
    assert long_cmd in script and len(" ".join(argv)) < 1500
    assert runner.run_in_vm(config(tmp_path), "true") == 0  # a short one too
    assert seen[1][0][-1] != seen[0][0][-1] and "true" in seen[1][1]
    shutil.rmtree(home)
    monkeypatch.setattr(runner, "_x86_script_home", lambda: None)  # no place to share
    assert runner.run_in_vm(config(tmp_path), "true") == 0
    assert "true" in seen[2][0][-1]  # inline


@pytest.mark.skipif(
    not (shutil.which("vng") or (Path(sys.executable).parent / "vng").exists()),
    reason="virtme-ng is not installed: run `make setup`",
)
def test_the_kernel_command_line_fits_with_a_test_kernel_s_path(tmp_path: Path) -> None:
    """What virtme-ng really puts on the line (its --dry-run), for a kernel as deep in the
    cache as the test kernels: an inline script of the harness's own exports came within
    30 bytes of the 2048 where the kernel cuts the line and the guest dies silently."""
    tree = tmp_path / ("k" * 40) / "6.12-0123456789ab" / "linux-source-6.12"
    image = tree / "arch" / "x86" / "boot" / "bzImage"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    kernel = replace(KERNEL, name="custom", image=image, kdir=tree)
    cfg = replace(config(tmp_path), kernel=kernel, cwd=Path("/work/main"))

    def line(c: VmConfig) -> str:
        argv = vng_command(c, "python3 -m pytest " + "x" * 400)
        out = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True, check=True)
        return out.stdout.split("-append '", 1)[1].split("'", 1)[0]

    assert len(line(cfg)) > 2048  # what an inline script did
    assert len(line(replace(cfg, script_dir=tmp_path / "s"))) < 1500  # what a file does
