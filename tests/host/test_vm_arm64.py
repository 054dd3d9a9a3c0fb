"""The arm64 guest: its vng command line, shares, wrapper, kernel lookup in its root
filesystem, the module's cross build and the root filesystem's cache key, all checked
without booting (test_make_vm.py boots it when the root filesystem is built)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pagebuf.vm import GuestKernel, VmConfig, VmError, modbuild, resolve_kernel, rootfs
from pagebuf.vm.kernels import debian_rootfs_kernel
from pagebuf.vm.paths import normalize_arch
from pagebuf.vm.rootfs import RootfsSpec, ensure_rootfs, mmdebstrap_command
from pagebuf.vm.runner import (
    GUEST_PYTHON,
    SCRIPT_STAGING,
    STAGING,
    guest_binds,
    guest_script,
    prepare_rootfs,
    run_in_vm,
    vng_command,
    write_guest_script,
    write_wrapper,
)

ROOTFS = Path("/cache/rootfs/arm64-x/root")
KERNEL = GuestKernel(
    "debian",
    ROOTFS / "boot/vmlinuz-6.1.0-9-arm64",
    ROOTFS / "usr/src/linux-headers-6.1.0-9-arm64",
    "6.1.0-9-arm64",
    arch="arm64",
)


def config(**kw: object) -> VmConfig:
    base = VmConfig(
        kernel=KERNEL,
        ko=Path("/cache/kmod/debian/6.1.0-9-arm64/kmod/pagebuf.ko"),
        src_root=Path("/src"),
        bin_dir=Path("/cache/bin-arm64"),
        cwd=Path("/work/results"),
        rootfs=ROOTFS,
        script_dir=Path("/tmp/pagebuf-vm-1"),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def shares_of(argv: list[str]) -> dict[str, tuple[str, str]]:
    """host path -> (option, staging point) for every --rodir/--rwdir."""
    out = {}
    for opt, val in zip(argv, argv[1:]):
        if opt in ("--rodir", "--rwdir"):
            guest, host = val.split("=", 1)
            out[host] = (opt, guest)
    return out


def test_arm64_command_boots_the_rootfs_kernel_on_its_own_root() -> None:
    argv = vng_command(config(cpus=2, memory="2G"), "true")
    assert argv[1:3] == ["--run", str(KERNEL.image)]
    assert argv[argv.index("--arch") + 1] == "arm64"
    assert argv[argv.index("--root") + 1] == str(ROOTFS)
    assert argv[argv.index("--cpus") + 1] == "2"
    assert argv[argv.index("--memory") + 1] == "2G"
    assert argv[-2:] == ["--exec", "/bin/sh /mnt/pagebuf/run/guest.sh"]
    shares = shares_of(argv)
    assert shares.pop("/tmp/pagebuf-vm-1") == ("--rodir", str(SCRIPT_STAGING))
    # The source tree, the wrapper and the module read-only, the current directory
    # writable, each staged under /mnt/pagebuf; nothing of the host's root.
    assert shares["/src"][0] == "--rodir"
    assert shares["/cache/bin-arm64"][0] == "--rodir"
    assert shares["/cache/kmod/debian/6.1.0-9-arm64/kmod"][0] == "--rodir"
    assert shares["/work/results"][0] == "--rwdir"
    assert all(Path(g).parent == STAGING for _, g in shares.values())
    assert "/" not in shares and "--rwdir" not in [a for a in argv if a.startswith("/work")]


def test_x86_command_has_no_root_or_arch() -> None:
    x86 = replace(config(), kernel=replace(KERNEL, arch="x86_64"), rootfs=None)
    argv = vng_command(x86, "true")
    assert "--root" not in argv and "--arch" not in argv and "--rodir" not in argv
    assert argv[argv.index("--rwdir") + 1] == "/work/results"


def test_arm64_needs_a_rootfs() -> None:
    with pytest.raises(VmError, match="root filesystem"):
        vng_command(config(rootfs=None), "true")


def test_the_guest_script_travels_in_a_file_not_on_the_kernel_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # arm64's kernel command line holds 2048 bytes: a long command must still fit.
    command = "echo " + "x" * 4000
    cfg = config(script_dir=tmp_path)
    assert not any(command in a for a in vng_command(cfg, command))
    script = write_guest_script(cfg, command)
    assert script == tmp_path / "guest.sh" and command in script.read_text()
    # --dry-run shows the command line and the script, and makes nothing.
    assert run_in_vm(config(script_dir=None), command, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "--root /cache/rootfs/arm64-x/root" in out and command in out


def test_the_guest_binds_each_share_to_its_host_path_parents_first() -> None:
    # The current directory inside the read-only source tree: the tree is bound first,
    # then the writable directory over it, so it stays writable.
    cfg = config(cwd=Path("/src/results"))
    binds = [(str(s.path), s.writable) for _, s in guest_binds(cfg)]
    assert binds.index(("/src", False)) < binds.index(("/src/results", True))
    script = guest_script(cfg, "true")
    for staging, share in guest_binds(cfg):
        assert f"mount --bind {staging} {share.path} ||" in script
    assert script.index("mount --bind") < script.index("insmod")
    assert script.index("mount --bind") < script.index("cd /src/results")


def test_the_source_tree_as_cwd_is_writable_like_on_x86() -> None:
    binds = [(str(s.path), s.writable) for _, s in guest_binds(config(cwd=Path("/src")))]
    assert ("/src", True) in binds and ("/src", False) not in binds


def test_read_only_cwd() -> None:
    inside = config(cwd=Path("/src/sub"), writable_cwd=False)
    assert "--rwdir" not in vng_command(inside, "true")
    assert "/src/sub" not in shares_of(vng_command(inside, "true"))  # /src holds it
    outside = config(writable_cwd=False)
    assert shares_of(vng_command(outside, "true"))["/work/results"][0] == "--rodir"


def test_the_arm64_guest_refuses_root_home_and_odd_paths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(VmError, match="other than /"):
        vng_command(config(cwd=Path("/")), "true")
    home = shares_of(vng_command(config(cwd=Path.home()), "true"))
    assert home[str(Path.home())][0] == "--rodir"  # visible, not writable
    assert capsys.readouterr().err.count("stays read-only in the guest") == 1
    with pytest.raises(VmError, match="cannot be given"):
        vng_command(config(cwd=Path("/work dir")), "true")


def test_wrapper_and_path_use_the_guests_python(tmp_path: Path) -> None:
    write_wrapper(tmp_path, GUEST_PYTHON)
    text = (tmp_path / "pagebuf").read_text()
    assert text == '#!/bin/sh\nexec /usr/bin/python3 -m pagebuf "$@"\n'
    assert sys.executable not in text
    script = guest_script(config(bin_dir=tmp_path), "pagebuf status")
    path_line = next(line for line in script.splitlines() if line.startswith("export PATH="))
    path = path_line.removeprefix("export PATH=").strip("'").split(":")
    assert path[0] == str(tmp_path) and "/usr/bin" in path
    assert str(Path(sys.executable).parent) not in path
    assert "export PYTHONPATH=/src/python" in script


def test_the_guest_script_keeps_the_commands_status(tmp_path: Path) -> None:
    cfg = config(cwd=tmp_path)
    script = guest_script(cfg, "echo hi; exit 7")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("insmod", "dmesg", "mount"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
        (stubs / name).chmod(0o755)
    script = script.replace("export PATH=", f"export PATH={stubs}:", 1)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (7, "hi\n")
    (stubs / "mount").write_text("#!/bin/sh\nexit 32\n")  # a share that will not bind
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 125 and "cannot mount" in proc.stderr


def test_prepare_rootfs_makes_the_mount_points(tmp_path: Path) -> None:
    cfg = config(rootfs=tmp_path, cwd=Path("/work/results"))
    prepare_rootfs(cfg)
    for staging, share in guest_binds(cfg):
        assert (tmp_path / staging.relative_to("/")).is_dir()
        assert (tmp_path / share.path.relative_to("/")).is_dir()


def fake_rootfs(root: Path, releases: dict[str, bool]) -> Path:
    (root / "boot").mkdir(parents=True)
    for rel, headers in releases.items():
        (root / "boot" / f"vmlinuz-{rel}").write_bytes(b"")
        if headers:
            kdir = root / "usr/src" / f"linux-headers-{rel}"
            kdir.mkdir(parents=True)
            (kdir / "Makefile").write_text(
                f"include /usr/src/linux-headers-{rel}-common/Makefile\n"
            )
    return root


def test_resolve_kernel_on_arm64_picks_the_rootfs_kernel_with_headers(tmp_path: Path) -> None:
    root = fake_rootfs(
        tmp_path / "root",
        {"6.1.0-9-arm64": True, "6.1.0-10-arm64": True, "6.1.0-11-arm64": False},
    )
    k = resolve_kernel("debian", "aarch64", rootfs=root)
    assert (k.name, k.release, k.arch) == ("debian", "6.1.0-10-arm64", "arm64")
    assert k.image == root / "boot/vmlinuz-6.1.0-10-arm64"
    assert k.kdir == root / "usr/src/linux-headers-6.1.0-10-arm64"
    with pytest.raises(VmError, match="no Debian kernel with headers"):
        debian_rootfs_kernel(fake_rootfs(tmp_path / "empty", {"6.1.0-9-arm64": False}))


def test_custom_pat_is_refused_on_arm64(monkeypatch: pytest.MonkeyPatch) -> None:
    from pagebuf.vm import kbuild

    def no_build(*_a: object, **_k: object) -> GuestKernel:
        raise AssertionError("custom-pat on arm64 must not build a kernel")

    monkeypatch.setattr(kbuild, "custom_kernel", no_build)
    with pytest.raises(VmError, match="x86 only"):
        resolve_kernel("custom-pat", "arm64")


def test_custom_on_arm64_asks_kbuild_for_the_arm64_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pagebuf.vm import kbuild

    seen: list[str] = []

    def fake(cache: Path, *, arch: str = "x86_64", **_k: object) -> GuestKernel:
        seen.append(arch)
        return replace(KERNEL, name="custom")

    monkeypatch.setattr(kbuild, "custom_kernel", fake)
    monkeypatch.setenv("PAGEBUF_CACHE", str(tmp_path))
    assert resolve_kernel("custom", "arm64").name == "custom" and seen == ["arm64"]


def test_a_tree_of_the_other_architecture_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(b"")
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text("6.12.0\n")
    with pytest.raises(VmError, match="x86_64 kernel, not arm64"):
        resolve_kernel(str(tree), "arm64")


def test_cli_refuses_custom_pat_on_arm64_before_building_anything(tmp_path: Path) -> None:
    env = {**os.environ, "PAGEBUF_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pagebuf.vm", "--arch", "arm64", "--kernel", "custom-pat",
         "--dry-run", "true"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 125
    assert "custom-pat is x86 only" in proc.stderr
    assert not (tmp_path / "rootfs").exists()


def test_arch_spellings() -> None:
    assert normalize_arch("aarch64") == normalize_arch("arm64") == "arm64"
    assert normalize_arch("amd64") == normalize_arch("x86_64") == "x86_64"
    with pytest.raises(VmError, match="riscv64"):
        normalize_arch("riscv64")


def test_rootfs_cache_key_follows_every_input() -> None:
    base = RootfsSpec()
    assert base.key() == RootfsSpec().key() and base.key().startswith("arm64-")
    changed = [
        replace(base, packages=(*base.packages, "strace")),
        replace(base, mirrors=("deb http://example.invalid/debian bookworm main",)),
        replace(base, suite="trixie"),
        replace(base, pip_packages=("ioctl-opt==1.3",)),
        replace(base, dpkg_options=base.dpkg_options[:-1]),
        replace(base, hooks=(*base.hooks, "true")),
        replace(base, format_version=base.format_version + 1),
    ]
    keys = {s.key() for s in changed}
    assert len(keys) == len(changed) and base.key() not in keys
    # The order packages are listed in is no input.
    assert replace(base, packages=tuple(reversed(base.packages))).key() == base.key()


def test_mmdebstrap_command_is_lean_and_arm64(tmp_path: Path) -> None:
    argv = mmdebstrap_command(RootfsSpec(), tmp_path / "root.tmp")
    assert argv[0] == "mmdebstrap"
    assert "--variant=minbase" in argv and "--architectures=arm64" in argv
    include = next(a for a in argv if a.startswith("--include=")).split("=", 1)[1].split(",")
    for pkg in ("python3", "python3-numpy", "busybox-static", "udev", "linux-image-arm64"):
        assert pkg in include
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert '--aptopt=APT::Install-Recommends "false"' in argv
    assert argv[-4:-3] == [str(tmp_path / "root.tmp")] and argv[-5] == "bookworm"


def test_an_unbuilt_rootfs_is_not_built_on_request(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="make rootfs"):
        ensure_rootfs(tmp_path, build=False)
    parent = rootfs.rootfs_parent(tmp_path)
    (parent / "root").mkdir(parents=True)
    (parent / rootfs.BUILT_MARK).write_text("x\n")
    assert ensure_rootfs(tmp_path, build=False) == parent / "root"


def test_arm64_module_build_is_a_cross_build() -> None:
    cmd = modbuild.make_command(KERNEL, Path("/k"), Path("/d"))
    assert cmd == ["make", "-C", "/k", "M=/d", "ARCH=arm64",
                   "CROSS_COMPILE=aarch64-linux-gnu-", "modules"]  # fmt: skip
    x86 = modbuild.make_command(replace(KERNEL, arch="x86_64"), Path("/k"), Path("/d"))
    assert x86 == ["make", "-C", "/k", "M=/d", "modules"]


def debian_headers(root: Path, rel: str = "6.1.0-9-arm64") -> GuestKernel:
    """A Debian arm64 headers tree inside a fake root filesystem, laid out as the
    packages lay it out (an absolute include, relative scripts/tools links)."""
    abi = rel.rsplit("-", 1)[0]
    kdir = root / "usr/src" / f"linux-headers-{rel}"
    common = root / "usr/src" / f"linux-headers-{abi}-common"
    for d in (
        kdir / "arch/arm64",
        kdir / "include",
        common,
        root / "usr/lib/linux-kbuild-6.1/scripts",
    ):
        d.mkdir(parents=True)
    (kdir / "Makefile").write_text(f"include /usr/src/linux-headers-{abi}-common/Makefile\n")
    (kdir / ".kernelvariables").write_text("override ARCH = arm64\n")
    (kdir / ".config").write_text("CONFIG_ARM64=y\n")
    (common / "Makefile").write_text("# common\n")
    for name in ("scripts", "tools"):
        (kdir / name).symlink_to(f"../../lib/linux-kbuild-6.1/{name}")
    (root / modbuild.UNPACKED_LIST).write_text("./linux-kbuild-6.1_6.1.99-1_arm64.deb\n")
    return replace(KERNEL, kdir=kdir, image=root / "boot" / f"vmlinuz-{rel}", release=rel)


@pytest.mark.parametrize("host_version", ["6.1.99-1", "6.1.100-1", None])
def test_cross_tree_pairs_the_headers_with_a_kbuild_of_their_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_version: str | None
) -> None:
    root = tmp_path / "root"
    kernel = debian_headers(root)
    monkeypatch.setattr(modbuild, "_host_kbuild_version", lambda _pkg: host_version)
    binfmt: list[bool] = []
    monkeypatch.setattr(rootfs, "ensure_binfmt", lambda: binfmt.append(True))
    tree, env = modbuild.cross_tree(kernel, tmp_path / "tree")
    common = root / "usr/src/linux-headers-6.1.0-9-common/Makefile"
    assert (tree / "Makefile").read_text() == f"include {common}\n"
    assert os.readlink(tree / ".config") == str(kernel.kdir / ".config")
    assert os.readlink(tree / "arch") == str(kernel.kdir / "arch")
    scripts = Path(os.readlink(tree / "scripts"))
    if host_version == "6.1.99-1" and Path("/usr/lib/linux-kbuild-6.1").is_dir():
        assert scripts == Path("/usr/lib/linux-kbuild-6.1/scripts") and not binfmt
        assert env == {}
    else:  # the root filesystem's own arm64 kbuild, run through qemu-user
        assert scripts == root / "usr/lib/linux-kbuild-6.1/scripts" and binfmt
        assert env == {"QEMU_LD_PREFIX": str(root)}  # its loader and libraries
    # Made again (another root filesystem, another choice), the links follow.
    assert modbuild.cross_tree(kernel, tmp_path / "tree")[0] == tree


def test_cross_tree_leaves_kernel_trees_and_x86_alone(tmp_path: Path) -> None:
    tree_kernel = replace(KERNEL, kdir=tmp_path)  # no Debian include: a built tree
    assert modbuild.cross_tree(tree_kernel, tmp_path / "x") == (tmp_path, {})
    x86 = replace(KERNEL, arch="x86_64", kdir=Path("/lib/modules/x/build"))
    assert modbuild.cross_tree(x86, tmp_path / "x") == (Path("/lib/modules/x/build"), {})


def test_module_builds_are_kept_apart_per_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The x86 and arm64 test kernels are both 6.12.117: one build dir each."""
    src = tmp_path / "src"
    (src / "kmod").mkdir(parents=True)
    (src / "Kbuild").write_text("obj-m += kmod/\n")
    (src / "kmod" / "pagebuf.c").write_text("\n")
    made: list[list[str]] = []

    def fake_make(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        made.append(cmd)
        dest = Path(next(a for a in cmd if a.startswith("M="))[2:])
        (dest / "kmod" / "pagebuf.ko").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(modbuild.subprocess, "run", fake_make)
    custom = replace(KERNEL, name="custom", kdir=tmp_path / "tree", release="6.12.117")
    arm = modbuild.build_module(custom, src, tmp_path / "cache")
    x86 = modbuild.build_module(replace(custom, arch="x86_64"), src, tmp_path / "cache")
    assert arm.relative_to(tmp_path / "cache/kmod/custom-arm64").parts[1:] == ("kmod", "pagebuf.ko")
    assert x86.relative_to(tmp_path / "cache/kmod/custom").parts[1:] == ("kmod", "pagebuf.ko")
    assert arm.parts[-3].startswith("6.12.117-") and arm.parts[-3] == x86.parts[-3]
    # Another checkout of the sources, or another tree of the same release: its own dir.
    other = tmp_path / "other"
    shutil.copytree(src, other)
    assert modbuild.build_module(custom, other, tmp_path / "cache") != arm
    rebuilt = replace(custom, kdir=tmp_path / "tree2")
    assert modbuild.build_module(rebuilt, src, tmp_path / "cache") != arm
    assert "ARCH=arm64" in made[0] and not any(a.startswith("ARCH=") for a in made[1])
