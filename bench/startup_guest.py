"""Runs in the guest for bench_startup.py: one JSON line of timings per pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

# Python as users have it: bytecode is cached (the first pass writes it), which a test
# environment may have turned off.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def seconds(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.monotonic() - start


def first_records(out: str) -> dict[str, float]:
    """Start `pagebuf run` and note when its header and first check record land."""
    argv = [sys.executable, "-m", "pagebuf", "run", "--duration", "0", "--output", out]
    seen: dict[str, float] = {}
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=ENV)
    while "check" not in seen and proc.poll() is None:
        try:
            with open(out) as f:
                for line in f:
                    if line.endswith("\n"):
                        seen.setdefault(json.loads(line)["type"], time.monotonic() - start)
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    if proc.wait() not in (0, 1) or "check" not in seen:
        raise SystemExit(f"pagebuf run failed (exit {proc.returncode}) or never checked")
    return seen


def main() -> None:
    for name in ("cold", "warm"):
        with tempfile.TemporaryDirectory() as tmp:
            seen = first_records(os.path.join(tmp, "run.jsonl"))
        figures = {
            "pass": name,
            "header": seen["header"],
            "check": seen["check"],
            "interpreter": seconds([sys.executable, "-c", "pass"]),
            "numpy": seconds([sys.executable, "-c", "import numpy"]),
        }
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
