"""`pagebuf doctor --bundle out.tar.gz`: what a bug report needs, in one file, and nothing
more: doctor's findings (as printed, and as JSON), the kernel config doctor read, the
module's `pagebuf status --json`, the last run's JSON Lines (the newest pagebuf-*.jsonl
here that holds a run, or the files named), and the kernel log's lines that name
pagebuf. A MANIFEST says what each member is and what could not be included, and why
(dmesg refused, no module, no run).
"""

from __future__ import annotations

import errno as E
import io
import json
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__, doctor
from .errors import InvalidRequestError, PagebufError
from .results import read_records

DMESG = ("dmesg",)


@dataclass(frozen=True)
class Member:
    name: str  # inside the bundle's directory
    data: bytes
    what: str  # one line for the MANIFEST


def kernel_log(cmd: Sequence[str] = DMESG) -> tuple[str | None, str]:
    """The kernel log's lines that name pagebuf, or None and why not (dmesg is refused
    to unprivileged users where kernel.dmesg_restrict is set)."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, errors="replace",
                              timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{cmd[0]} did not run: {exc}"
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return None, f"{cmd[0]} refused: {why[0]}"
    lines = [line for line in proc.stdout.splitlines() if "pagebuf" in line.lower()]
    return "".join(f"{line}\n" for line in lines), ""


def is_run(path: Path) -> bool:
    """Whether a file's first record is a pagebuf run's header."""
    try:
        return next(iter(read_records(path)), {}).get("type") == "header"
    except (OSError, UnicodeError):
        return False


def newest_run(where: Path) -> Path | None:
    """The newest pagebuf-*.jsonl in `where` that holds a run (not, say, a stress report)."""
    runs = [p for p in where.glob("pagebuf-*.jsonl") if p.is_file() and is_run(p)]
    return max(runs, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def collect(report: doctor.Report, status: Callable[[], str], runs: Sequence[str] | None,
            where: Path) -> tuple[list[Member], list[str]]:  # fmt: skip
    """The members and, in words, what is missing. `status`: `pagebuf status --json`'s
    output (raising its error); `runs`: the run files to include, None for the newest
    one in `where`."""
    members = [
        Member("doctor.txt", (doctor.render(report) + "\n").encode(), "`pagebuf doctor`"),
        Member(
            "doctor.json",
            (json.dumps(report.to_dict(), indent=1) + "\n").encode(),
            "`pagebuf doctor --json`",
        ),  # fmt: skip
    ]
    missing = []
    text, source = doctor.read_kconfig_text()
    if source is None:
        missing.append("kernel-config: no /proc/config.gz, /boot/config-* or build tree config")
    else:
        members.append(Member("kernel-config", text.encode(), f"the kernel config, from {source}"))
    try:
        members.append(Member("status.json", status().encode(), "`pagebuf status --json`"))
    except PagebufError as exc:
        missing.append(f"status.json: {exc.message}")
    if runs is None:
        newest = newest_run(where)
        paths = [] if newest is None else [newest]
        if newest is None:
            missing.append(f"runs/: no pagebuf-*.jsonl run in {where}")
    else:
        paths = [Path(r) for r in runs]
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PagebufError(f"{path}: {exc.strerror}", exc.errno) from None
        if not is_run(path):  # a bug report carries runs, not whatever was named
            raise InvalidRequestError(f"{path}: not a pagebuf run's JSON Lines", E.EINVAL)
        members.append(Member(f"runs/{path.name}", data, f"a run's JSON Lines, {path}"))
    log, why = kernel_log()
    if log is None:
        missing.append(f"dmesg-pagebuf.txt: {why}")
    else:
        members.append(Member("dmesg-pagebuf.txt", log.encode(), "the kernel log's pagebuf lines"))
    return members, missing


def manifest(members: Sequence[Member], missing: Sequence[str]) -> Member:
    width = max(len(m.name) for m in members)
    lines = [f"pagebuf {__version__} doctor --bundle, {time.strftime('%Y-%m-%d %H:%M:%S %z')}"]
    lines += [f"{m.name:<{width}}  {m.what}" for m in members]
    lines += [f"not included: {why}" for why in missing]
    return Member("MANIFEST", ("\n".join(lines) + "\n").encode(), "this list")


def write(out: str | Path, members: Sequence[Member], missing: Sequence[str]) -> list[str]:
    """A new .tar.gz (never over an existing file) of the members and their MANIFEST,
    under one directory named after it; the names written."""
    out = Path(out)
    top = out.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz") or "bundle"
    everything = [manifest(members, missing), *members]
    names = [f"{top}/{m.name}" for m in everything]
    try:
        with tarfile.open(out, "x:gz") as tar:
            for name, m in zip(names, everything):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(m.data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(m.data))
    except FileExistsError:
        raise PagebufError(f"{out}: already exists; pick another --bundle", E.EEXIST) from None
    except OSError as exc:
        out.unlink(missing_ok=True)
        raise PagebufError(f"{out}: cannot write: {exc.strerror}", exc.errno) from None
    except BaseException:  # interrupted: no half a bundle left behind
        out.unlink(missing_ok=True)
        raise
    return names
