"""Results as JSON Lines: one record a line, flushed and synced as written, so an
interrupt, a crash of the tool or a kernel panic loses nothing already measured."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .closing import Closing
from .errors import PagebufError


def default_path(prefix: str = "pagebuf-run") -> Path:
    return Path(time.strftime(f"{prefix}-%Y%m%d-%H%M%S.jsonl"))


class ResultWriter(Closing):
    """Append records to a new file; each write reaches the disk before returning."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._f = self.path.open("x", encoding="utf-8")
        except FileExistsError as exc:
            raise PagebufError(
                f"{path}: already exists; pagebuf never overwrites results (pick another --output)",
                exc.errno,
            ) from None
        except OSError as exc:
            raise PagebufError(f"{path}: cannot create: {exc.strerror}", exc.errno) from None

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record; a line cut off by a crash is skipped, not fatal."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
