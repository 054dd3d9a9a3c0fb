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
        (E.EBADF, errors.PermissionDeniedError, 5),
        (E.ENOENT, errors.NoSuchBufferError, 6),
        (E.ENOMEM, errors.LimitError, 7),
        (E.E2BIG, errors.LimitError, 7),
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


def test_messages_name_the_real_cause() -> None:
    rdonly = errors.from_oserror(OSError(E.EBADF, "x"), "alloc order 0")
    assert rdonly.message == (
        "alloc order 0: needs /dev/pagebuf opened for writing (this file was opened read-only)"
    )
    nomem = errors.from_oserror(OSError(E.ENOMEM, "x"), "alloc order 9")
    assert "max_bytes" in nomem.message and "max_pages" not in nomem.message
    foreign = errors.from_oserror(OSError(E.EPERM, "x"), "free buffer 3", errors.foreign_buffer(3))
    assert foreign.message.startswith("free buffer 3: buffer 3 belongs to another open file")
    assert foreign.errno == E.EPERM and foreign.exit_code == 5
    assert errors.dma_too_large(7, 524288, 262144, True) == (
        "order 7 is 524288 bytes, above the largest DMA mapping here "
        "(262144 bytes: swiotlb bounce buffering)"
    )
    assert errors.PAT_ALIAS.startswith("x86 PAT: load pagebuf with x86_pat_alias=1 ")


def test_the_readme_exit_code_table_is_this_one() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("| code | meaning |") :].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    assert {int(code): text.strip() for code, text in rows} == errors.EXIT_CODES
