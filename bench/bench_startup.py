#!/usr/bin/env python3
"""How soon `pagebuf run` checks, in an emulated guest (part of `make bench`).

Boots the x86 test kernel under QEMU (TCG: no KVM here) with pagebuf loaded, and in it
times, from each process's start: the interpreter alone (`python3 -c pass`, the floor
of any Python command), `import numpy` (which the checks need), and `pagebuf run
--duration 0`'s header record and first check record, as the records reach the disk.
The first run after boot reads everything cold through the guest's 9p root; the second
finds it in the page cache. Ratios are taken against the interpreter of the same pass.
The target (the first check within 5 s of the start) is reported, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5.0  # s: `pagebuf run` to its first check record, in the guest


def main() -> int:
    guest = f"{sys.executable} bench/startup_guest.py" if sys.executable else "python3"
    proc = subprocess.run(
        [sys.executable, "-m", "pagebuf.vm", "--kernel", "custom", guest],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "python")},
    )  # fmt: skip
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"guest startup figures: the guest failed (exit {proc.returncode})")
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    print("\n`pagebuf run` in an emulated x86 guest (TCG), seconds from the process's start")
    print(f"{'pass':<6} {'python3 -c pass':>15} {'import numpy':>13} {'header':>8} "
          f"{'first check':>12} {'check/interp.':>14}")  # fmt: skip
    for f in lines:
        print(f"{f['pass']:<6} {f['interpreter']:15.2f} {f['numpy']:13.2f} {f['header']:8.2f} "
              f"{f['check']:12.2f} {f['check'] / f['interpreter']:13.1f}x")  # fmt: skip
    worst = max(f["check"] for f in lines)
    print(
        f"\ntarget: first check record within {TARGET:.0f} s of the start: "
        f"{'met' if worst <= TARGET else 'MISSED'} (slowest pass {worst:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
