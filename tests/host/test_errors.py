"""errno -> exception class -> exit code, and messages that name the input."""

from __future__ import annotations

import errno as E

import pytest

from pagebuf import errors


@pytest.mark.parametrize(
    ("code", "cls", "exit_code"),
    [
        (E.EPERM, errors.PermissionDeniedError, 5),
        (E.EACCES, errors.PermissionDeniedError, 5),
        (E.ENOENT, errors.NoSuchBufferError, 6),
        (E.ENOMEM, errors.LimitError, 7),
        (E.EINVAL, errors.InvalidRequestError, 8),
        (E.ENOTTY, errors.InvalidRequestError, 8),
        (E.EIO, errors.PagebufError, 9),
    ],
)
def test_mapping(code: int, cls: type[errors.PagebufError], exit_code: int) -> None:
    exc = errors.from_oserror(OSError(code, "x"), "free buffer 42")
    assert type(exc) is cls
    assert exc.errno == code
    assert exc.exit_code == exit_code
    assert exc.message.startswith("free buffer 42: ")


def test_exit_codes_are_distinct_and_documented() -> None:
    classes = [
        errors.ModuleNotLoadedError,
        errors.PermissionDeniedError,
        errors.NoSuchBufferError,
        errors.LimitError,
        errors.InvalidRequestError,
        errors.PagebufError,
    ]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert all(c in errors.EXIT_CODES for c in codes)
    assert 0 not in codes and 2 not in codes
