"""Build the virtme-ng command line for a guest run and run it.

The command line is data (a list), shown by --dry-run, never a shell string on the host.
Inside the guest a short POSIX script loads the module, runs the user's command and
reports kernel warnings; the guest command's exit status is the run's exit status
(virtme-ng hands it back), and 125 means the harness itself failed inside the guest.

An x86 guest sees the host's root filesystem (read-only). An arm64 guest boots a root
filesystem of its own (pagebuf.vm.rootfs) and sees only the host directories it needs,
at the paths they have on the host: the source tree, the modules' build directories and
the `pagebuf` wrapper (read-only), and the current directory. virtme-ng mounts those
each at a staging point under /mnt/pagebuf; the guest script then bind-mounts them into
place, parents before children, so that a writable current directory inside the
read-only source tree stays writable.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from .errors import VmError
from .kernels import GuestKernel

GUEST_SETUP_FAILED = 125
# The guest's own Python on an arm64 root filesystem (the host's is an x86 binary).
GUEST_PYTHON = "/usr/bin/python3"
# Where virtme-ng mounts each shared host directory in an arm64 guest, before the
# guest script binds it to its host path (pagebuf.vm.rootfs's tree has these dirs).
STAGING = Path("/mnt/pagebuf")
SCRIPT_STAGING = STAGING / "run"
GUEST_SCRIPT = "guest.sh"
GUEST_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Kernel log lines that mean the kernel is unhappy (not the out-of-tree taint notice).
KERNEL_TROUBLE = r"WARNING:|BUG:|Oops|general protection|Call Trace:|kernel BUG|UBSAN|KASAN"


@dataclass(frozen=True)
class VmConfig:
    """Everything that shapes one guest run."""

    kernel: GuestKernel
    ko: Path | None
    src_root: Path
    bin_dir: Path
    cpus: int = 2
    memory: str = "2G"
    insmod_args: tuple[str, ...] = field(default=())
    cwd: Path = field(default_factory=Path.cwd)
    append: tuple[str, ...] = field(default=())
    # x86 only: a virtual Intel IOMMU in front of the guest's PCI devices, turned on.
    iommu: bool = False
    writable_cwd: bool = True  # the one host directory the guest may write
    # The guest's root filesystem when it is not the host's (arm64 guests).
    rootfs: Path | None = None
    # For such a guest: the host directory that hands it the guest script (the kernel
    # command line, where virtme-ng puts --exec, holds 2048 bytes on arm64).
    script_dir: Path | None = None
    # tests/vm's own modules (TEST_MODULES), built for this kernel, by name; the tests
    # load them themselves, from $PAGEBUF_<NAME>_KO.
    test_kos: dict[str, Path] = field(default_factory=dict)


def write_wrapper(bin_dir: Path, python: str | None = None) -> None:
    """A `pagebuf` on the guest's PATH that runs this source tree's package with
    `python` (the host's own interpreter by default: an x86 guest shares it)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "pagebuf"
    text = f'#!/bin/sh\nexec {shlex.quote(python or sys.executable)} -m pagebuf "$@"\n'
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)


def guest_script(cfg: VmConfig, command: str) -> str:
    """The script the guest runs: environment, insmod, command, kernel-log check."""
    q = shlex.quote
    if cfg.kernel.arch == "x86_64":
        path = f"{cfg.bin_dir}:{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
    else:  # the guest's own userland: nothing of the host's Python
        path = f"{cfg.bin_dir}:{GUEST_SYSTEM_PATH}"
    env = {
        "PATH": path,
        "PYTHONPATH": str(cfg.src_root / "python"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PAGEBUF_SRC": str(cfg.src_root),
        "PAGEBUF_IN_VM": "1",
        "PAGEBUF_KERNEL": cfg.kernel.name,
    }
    if cfg.ko is not None:
        env["PAGEBUF_KO"] = str(cfg.ko)
    for name, ko in cfg.test_kos.items():
        env[f"PAGEBUF_{name.upper()}_KO"] = str(ko)
    lines = [f"export {k}={q(v)}" for k, v in env.items()]
    for staging, share in guest_binds(cfg):
        lines.append(
            f"mount --bind {q(str(staging))} {q(str(share.path))} || "
            f"{{ echo 'pagebuf-vm: cannot mount {share.path}' >&2; exit {GUEST_SETUP_FAILED}; }}"
        )
    if cfg.ko is not None:
        insmod = " ".join(q(a) for a in ("insmod", str(cfg.ko), *cfg.insmod_args))
        lines.append(
            f"{insmod} || {{ echo 'pagebuf-vm: insmod failed' >&2; exit {GUEST_SETUP_FAILED}; }}"
        )
    lines += [
        f"cd {q(str(cfg.cwd))} || exit {GUEST_SETUP_FAILED}",
        f"( {command}\n)",
        "rc=$?",
        f"if dmesg | grep -E {q(KERNEL_TROUBLE)} >&2; then",
        "  echo 'pagebuf-vm: the guest kernel log shows the warnings above' >&2",
        "fi",
        "exit $rc",
    ]
    return "\n".join(lines) + "\n"


# What virtme-ng accepts as a --rwdir path (and '=' would split it in two).
_RWDIR_OK = re.compile(r"[a-zA-Z0-9_+ /.-]+")


def rwdir_refusal(path: Path) -> str | None:
    """Why `path` is not handed to the guest read-write, or None if it may be."""
    if not _RWDIR_OK.fullmatch(str(path)):
        return "virtme-ng takes only letters, digits and ' _+/.-' in a writable path"
    if path in (Path("/"), Path.home()):
        return "the guest runs as root: it is not given / or your home directory"
    return None


# What virtme-ng passes through intact as a shared path on a foreign root (it splits
# its own option strings at spaces).
_SHARE_OK = re.compile(r"[a-zA-Z0-9_+/.-]+")


@dataclass(frozen=True)
class Share:
    """A host directory an arm64 guest sees at the same path."""

    path: Path
    writable: bool = False


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths not inside another one of them (read-only ones nested in each other
    show the same host files either way)."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(q != p and _inside(p, q) for q in unique)]


def guest_shares(cfg: VmConfig) -> list[Share]:
    """What an arm64 guest sees of the host, in the order to mount it: parents before
    children, at one path the writable one last. (An x86 guest sees the whole host
    filesystem read-only and needs none of this.)"""
    if cfg.rootfs is None:
        return []
    cwd = cfg.cwd
    if cwd == Path("/"):
        raise VmError("the arm64 guest has a root filesystem of its own: run it from a "
                      "directory other than /")  # fmt: skip
    writable = cfg.writable_cwd and rwdir_refusal(cwd) is None
    # One share for every module built for the guest: each share costs the 2048-byte
    # kernel command line (where virtme-ng lists them) about a hundred bytes.
    built = [ko.parent for ko in (cfg.ko, *cfg.test_kos.values()) if ko is not None]
    kos = [Path(os.path.commonpath(built))] if built else []
    ro = [cfg.src_root, cfg.bin_dir, *kos]
    if writable:
        shares = [Share(p) for p in _outermost(ro) if p != cwd] + [Share(cwd, True)]
    else:  # the current directory is read-only like the rest
        shares = [Share(p) for p in _outermost([*ro, cwd])]
    for share in shares:
        if not _SHARE_OK.fullmatch(str(share.path)):
            raise VmError(
                f"the arm64 guest cannot be given {share.path}: virtme-ng takes only "
                "letters, digits and '_+/.-' in a shared path"
            )
    return sorted(shares, key=lambda s: (len(s.path.parts), s.writable, str(s.path)))


def guest_binds(cfg: VmConfig) -> list[tuple[Path, Share]]:
    """Each staging mount point in the guest and the share it holds, in bind order."""
    return [(STAGING / str(i), share) for i, share in enumerate(guest_shares(cfg))]


def prepare_rootfs(cfg: VmConfig) -> None:
    """Create the mount points the guest script needs in the guest's root filesystem
    (it is read-only in the guest)."""
    if cfg.rootfs is None:
        return
    for path in [SCRIPT_STAGING, *(p for b in guest_binds(cfg) for p in (b[0], b[1].path))]:
        (cfg.rootfs / path.relative_to("/")).mkdir(parents=True, exist_ok=True)


def _foreign_args(cfg: VmConfig) -> list[str]:
    """virtme-ng's options for a guest with a root filesystem of its own."""
    assert cfg.rootfs is not None
    if not _SHARE_OK.fullmatch(str(cfg.rootfs)):
        raise VmError(f"virtme-ng cannot boot a root filesystem at {cfg.rootfs}")
    # 9p: what virtme-ng falls back to anyway after trying QEMU 7.2's virtiofsd.
    argv = ["--arch", cfg.kernel.arch, "--root", str(cfg.rootfs), "--force-9p"]
    for staging, share in guest_binds(cfg):
        argv += ["--rwdir" if share.writable else "--rodir", f"{staging}={share.path}"]
    if cfg.script_dir is None or not _SHARE_OK.fullmatch(str(cfg.script_dir)):
        raise VmError(f"no usable directory to hand the guest its script: {cfg.script_dir}")
    return [*argv, "--rodir", f"{SCRIPT_STAGING}={cfg.script_dir}"]


def vng_command(cfg: VmConfig, command: str) -> list[str]:
    """The host command that boots the guest and runs `command` in it."""
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    if cfg.kernel.arch != "x86_64" and cfg.rootfs is None:
        raise VmError(f"an {cfg.kernel.arch} guest needs a root filesystem of its own")
    argv = [vng, "--run", str(cfg.kernel.image)]
    if cfg.rootfs is not None:
        argv += _foreign_args(cfg)
        why_not = rwdir_refusal(cfg.cwd) if cfg.writable_cwd else None
        if why_not:
            print(f"pagebuf-vm: note: {cfg.cwd} stays read-only in the guest: {why_not}",
                  file=sys.stderr)  # fmt: skip
    if cfg.rootfs is None:  # arm64's _foreign_args says so too
        # 9p directly: vng's virtiofsd attempt fails with this QEMU and costs a delay.
        argv.append("--force-9p")
    argv += [
        "--disable-kvm",
        "--cpus",
        str(cfg.cpus),
        "--memory",
        cfg.memory,
    ]
    for arg in (*cfg.kernel.append, *cfg.append):
        argv += ["--append", arg]
    if cfg.iommu:
        if cfg.kernel.arch != "x86_64":
            raise VmError("--iommu is x86's (q35's intel-iommu); not for an arm64 guest")
        # DMA remapping only: interrupt remapping would need a split irqchip.
        argv += ["--qemu-opts=-device intel-iommu,intremap=off", "--append", "intel_iommu=on"]
    # Results (pagebuf run's JSON Lines) land where the user is; an arm64 guest gets the
    # current directory through guest_shares instead.
    if cfg.writable_cwd and cfg.rootfs is None:
        why_not = rwdir_refusal(cfg.cwd)
        if why_not:
            print(f"pagebuf-vm: note: {cfg.cwd} stays read-only in the guest: {why_not}",
                  file=sys.stderr)  # fmt: skip
        else:
            argv += ["--rwdir", str(cfg.cwd)]
    if cfg.rootfs is None and cfg.script_dir is None:
        argv += ["--exec", guest_script(cfg, command)]
    elif cfg.rootfs is None:  # a long script waits in a directory the guest shares
        argv += ["--exec", f"/bin/sh {cfg.script_dir / GUEST_SCRIPT}"]
    else:  # the script waits in cfg.script_dir (write_guest_script)
        argv += ["--exec", f"/bin/sh {SCRIPT_STAGING / GUEST_SCRIPT}"]
    return argv


def write_guest_script(cfg: VmConfig, command: str) -> Path:
    """Put the guest script where a guest with its own root filesystem reads it."""
    assert cfg.script_dir is not None
    path = cfg.script_dir / GUEST_SCRIPT
    path.write_text(guest_script(cfg, command))
    return path


# virtme-ng hands an x86 guest its --exec script in the kernel command line, base64
# encoded (4/3 of its size), next to about 900 bytes of its own parameters. The line
# holds 2048 bytes and a longer one is cut, so that the guest dies before it prints
# anything: the harness's own exports alone come near that with a test kernel's path. So
# the script goes in a file, and inline only where no such file can be shared.


def _x86_script_home() -> Path | None:
    """Where a long x86 guest script can wait: a directory the guest sees (the host's
    root filesystem, less /tmp, which the guest has its own of), or None."""
    from .paths import cache_root

    home = cache_root() / "guest-scripts"
    if Path("/tmp") in home.resolve().parents or not _SHARE_OK.fullmatch(str(home)):
        return None
    home.mkdir(parents=True, exist_ok=True)
    return home


def run_in_vm(cfg: VmConfig, command: str, *, dry_run: bool = False) -> int:
    """Boot, run, return the guest command's exit status."""
    if cfg.rootfs is None and cfg.script_dir is None and not dry_run:
        home = _x86_script_home()
        if home is not None:
            with tempfile.TemporaryDirectory(prefix="vm-", dir=home) as tmp:
                return _run(replace(cfg, script_dir=Path(tmp)), command, dry_run)
    if cfg.rootfs is None or cfg.script_dir is not None:
        return _run(cfg, command, dry_run)
    if dry_run:  # show where the script would be, without making it
        tmp = Path(tempfile.gettempdir()) / "pagebuf-vm-XXXXXXXX"
        return _run(replace(cfg, script_dir=tmp), command, dry_run)
    with tempfile.TemporaryDirectory(prefix="pagebuf-vm-") as tmp:
        return _run(replace(cfg, script_dir=Path(tmp)), command, dry_run)


def _run(cfg: VmConfig, command: str, dry_run: bool) -> int:
    argv = vng_command(cfg, command)
    if dry_run:
        print(shlex.join(argv))
        if cfg.rootfs is not None:
            assert cfg.script_dir is not None
            print(f"# {cfg.script_dir / GUEST_SCRIPT}:\n{guest_script(cfg, command)}", end="")
        return 0
    if not Path(argv[0]).exists():
        raise VmError("virtme-ng (vng) is not installed: run `make setup`")
    if cfg.rootfs is not None:
        prepare_rootfs(cfg)
    if cfg.script_dir is not None:
        write_guest_script(cfg, command)
    rc, printed = _boot(argv)
    if rc == VNG_NO_STATUS and not printed:
        # The guest never ran the command (a failed boot, seen now and then under TCG):
        # nothing of the command's has happened yet, so one more boot is safe.
        print("pagebuf-vm: the guest ended before running the command, with nothing "
              "printed: booting once more", file=sys.stderr)  # fmt: skip
        rc, printed = _boot(argv)
    return rc


# What vng returns when the guest never reported the command's status.
VNG_NO_STATUS = 255


def _boot(argv: list[str]) -> tuple[int, int]:
    """Run vng; return its status and how many bytes the guest printed on stdout."""
    # QEMU reopens a file given as its stdout with O_TRUNC, which wipes a log that the
    # caller redirected into: hand it pipes and copy them out instead.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ.copy())  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    copier = threading.Thread(target=_copy, args=(proc.stderr, sys.stderr.buffer))
    copier.start()
    printed = _copy(proc.stdout, sys.stdout.buffer)
    copier.join()
    return proc.wait(), printed


def _copy(src: IO[bytes], dst: IO[bytes]) -> int:
    n = 0
    while chunk := src.read1(65536):  # type: ignore[attr-defined]
        dst.write(chunk)
        dst.flush()
        n += len(chunk)
    return n
