"""Build the virtme-ng command line for a guest run and run it.

The command line is data (a list), shown by --dry-run, never a shell string on the host.
Inside the guest a short POSIX script loads the module, runs the user's command and
reports kernel warnings; the guest command's exit status is the run's exit status
(virtme-ng hands it back), and 125 means the harness itself failed inside the guest.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import VmError
from .kernels import GuestKernel

GUEST_SETUP_FAILED = 125

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
    writable_cwd: bool = True  # the one host directory the guest may write


def write_wrapper(bin_dir: Path) -> None:
    """A `pagebuf` on the guest's PATH that runs this source tree's package."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "pagebuf"
    text = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pagebuf "$@"\n'
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)


def guest_script(cfg: VmConfig, command: str) -> str:
    """The script the guest runs: environment, insmod, command, kernel-log check."""
    q = shlex.quote
    path = f"{cfg.bin_dir}:{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
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
    lines = [f"export {k}={q(v)}" for k, v in env.items()]
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


def vng_command(cfg: VmConfig, command: str) -> list[str]:
    """The host command that boots the guest and runs `command` in it."""
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    argv = [
        vng,
        "--run",
        str(cfg.kernel.image),
        "--disable-kvm",
        "--cpus",
        str(cfg.cpus),
        "--memory",
        cfg.memory,
    ]
    for arg in (*cfg.kernel.append, *cfg.append):
        argv += ["--append", arg]
    if cfg.writable_cwd:  # results (pagebuf run's JSON Lines) land where the user is
        why_not = rwdir_refusal(cfg.cwd)
        if why_not:
            print(f"pagebuf-vm: note: {cfg.cwd} stays read-only in the guest: {why_not}",
                  file=sys.stderr)  # fmt: skip
        else:
            argv += ["--rwdir", str(cfg.cwd)]
    argv += ["--exec", guest_script(cfg, command)]
    return argv


def run_in_vm(cfg: VmConfig, command: str, *, dry_run: bool = False) -> int:
    """Boot, run, return the guest command's exit status."""
    argv = vng_command(cfg, command)
    if dry_run:
        print(shlex.join(argv))
        return 0
    if not Path(argv[0]).exists():
        raise VmError("virtme-ng (vng) is not installed: run `make setup`")
    # QEMU reopens a file given as its stdout with O_TRUNC, which wipes a log that the
    # caller redirected into: hand it pipes and copy them out instead.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ.copy())  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    copier = threading.Thread(target=_copy, args=(proc.stderr, sys.stderr.buffer))
    copier.start()
    _copy(proc.stdout, sys.stdout.buffer)
    copier.join()
    return proc.wait()


def _copy(src: IO[bytes], dst: IO[bytes]) -> None:
    while chunk := src.read1(65536):  # type: ignore[attr-defined]
        dst.write(chunk)
        dst.flush()
