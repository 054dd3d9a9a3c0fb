"""The `pagebuf` command: a run or compare starts its numpy import first, in a thread,
before the CLI's own imports (preload)."""

from __future__ import annotations

import sys

RUNS = ("run", "compare")


def main() -> int:
    if sys.argv[1:2] and sys.argv[1] in RUNS:
        from . import preload

        preload.start()
    from .cli import main as cli_main

    return cli_main()
