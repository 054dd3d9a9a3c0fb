"""pagebuf's exceptions: each carries the errno of the failing call and a sentence a
user can act on, and the exit code the CLI leaves with (EXIT_CODES).
"""

from __future__ import annotations

import errno as E

EXIT_CODES = {
    0: "success",
    1: "corruption found (verify, run)",
    2: "usage error",
    3: "broken controls (run)",
    4: "pagebuf module not loaded, or no device",
    5: "permission denied",
    6: "no such buffer",
    7: "limit reached or out of memory",
    8: "invalid request",
    9: "other operating-system error",
}


class PagebufError(Exception):
    """Base class: `errno` (or None) and a human message."""

    exit_code = 9

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message


class ModuleNotLoadedError(PagebufError):
    exit_code = 4


class PermissionDeniedError(PagebufError):
    exit_code = 5


class NoSuchBufferError(PagebufError):
    exit_code = 6


class LimitError(PagebufError):
    exit_code = 7


class InvalidRequestError(PagebufError):
    exit_code = 8


NOT_LOADED = "pagebuf module not loaded: run `sudo insmod kmod/pagebuf.ko`"


def from_oserror(exc: OSError, what: str) -> PagebufError:
    """Turn an OSError from `what` (e.g. "alloc order 11") into the right PagebufError."""
    code = exc.errno
    if code in (E.EPERM, E.EACCES):
        return PermissionDeniedError(
            f"{what}: permission denied (needs root with CAP_SYS_RAWIO)", code
        )
    if code == E.ENOENT:
        return NoSuchBufferError(f"{what}: no such buffer", code)
    if code == E.ENOMEM:
        return LimitError(
            f"{what}: out of memory or over the module's max_pages limit (see `pagebuf status`)",
            code,
        )
    if code == E.EINVAL:
        return InvalidRequestError(
            f"{what}: invalid request (order above max_order, or bad flags/fields)", code
        )
    if code == E.ENOTTY:
        return InvalidRequestError(
            f"{what}: the loaded module does not know this request (version mismatch?)", code
        )
    return PagebufError(f"{what}: {exc.strerror or E.errorcode.get(code or 0, code)}", code)
