"""errno -> exception class -> exit code, and messages that name the input."""

from __future__ import annotations

import errno as E
from pathlib import Path

import pytest

from pagebuf import cli, errors


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
    assert cli.exit_code_of(exc) == exit_code
    assert exc.message.startswith("free buffer 42: ")
    assert exc.op == "free buffer 42" and exc.message == f"{exc.op}: {exc.reason}"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.ModuleNotLoadedError, LookupError),
        (errors.PermissionDeniedError, PermissionError),
        (errors.NoSuchBufferError, LookupError),
        (errors.LimitError, MemoryError),
        (errors.InvalidRequestError, ValueError),
    ],
)
def test_errors_are_their_builtin_category(cls: type[errors.PagebufError], builtin: type) -> None:
    """A caller that knows nothing of pagebuf catches them by what they are."""
    with pytest.raises(builtin) as caught:
        raise cls("why", E.EIO, op="the call")
    assert str(caught.value) == "the call: why" and caught.value.errno == E.EIO


def readme_exit_codes() -> dict[int, str]:
    """README's table of exit codes, code -> meaning."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("| code | meaning |") :].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return {int(code): text.strip() for code, text in rows}


def every_error_class() -> set[type[errors.PagebufError]]:
    """PagebufError and every subclass of it anywhere in the package."""
    import importlib
    import pkgutil

    import pagebuf

    for mod in pkgutil.walk_packages(pagebuf.__path__, "pagebuf."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    found, todo = set(), [errors.PagebufError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


# What each error class exits with, by README's meaning of the code. A new class must be
# added here: its code is a decision, not whatever it inherits.
ERROR_MEANINGS = {
    "PagebufError": "other operating-system error",
    "ModuleNotLoadedError": "pagebuf module not loaded, no pagebuf device",
    "NoSuchDeviceError": "pagebuf module not loaded, no pagebuf device, or no such device",
    "PermissionDeniedError": "permission denied",
    "PhysMemPermissionError": "permission denied",
    "NoSuchBufferError": "no such buffer",
    "LimitError": "limit reached or out of memory",
    "InvalidRequestError": "invalid request",
    "OutsideBuffersError": "invalid request",
    "PhysMemError": "invalid request",
}


def test_exit_codes_are_the_readme_table() -> None:
    """README's table is EXIT_CODES, and every error class exits with the README code of
    what it means: never 0, 1 or 3 (success, corruption, broken controls), nor the
    usage error 2 (argparse's, and run/compare/report's environment errors)."""
    table = readme_exit_codes()
    assert table == cli.EXIT_CODES
    assert sorted(table) == [*range(12), 130, 141]
    classes = every_error_class()
    assert {c.__name__ for c in classes} == set(ERROR_MEANINGS)
    for cls in classes:
        code = cli.exit_code_of(cls("x"))
        assert table[code].startswith(ERROR_MEANINGS[cls.__name__]), cls
        assert code >= 4, cls
    # The base classes of errors.py stay apart: each exit code says one thing.
    bases = [errors.ModuleNotLoadedError, errors.PermissionDeniedError,
             errors.NoSuchBufferError, errors.LimitError, errors.InvalidRequestError,
             errors.PagebufError]  # fmt: skip
    assert sorted(cli.exit_code_of(c("x")) for c in bases) == [4, 5, 6, 7, 8, 9]
    # The codes of a run's verdicts and of its usage errors mean what README says.
    from pagebuf import records

    assert table[records.EXIT_CLEAN] == "success"
    assert table[records.EXIT_CORRUPT].startswith("corruption found")
    assert table[records.EXIT_BROKEN].startswith("broken controls")
    assert table[records.EXIT_INCONCLUSIVE].startswith("inconclusive, with --strict")
    assert table[2].startswith("usage error")


def test_messages_name_the_real_cause() -> None:
    rdonly = errors.from_oserror(OSError(E.EBADF, "x"), "alloc order 0")
    assert rdonly.message == (
        "alloc order 0: needs /dev/pagebuf opened for writing (this file was opened read-only)"
    )
    nomem = errors.from_oserror(OSError(E.ENOMEM, "x"), "alloc order 9")
    assert "max_bytes" in nomem.message and "max_pages" not in nomem.message
    foreign = errors.from_oserror(OSError(E.EPERM, "x"), "free buffer 3", errors.foreign_buffer(3))
    assert foreign.message.startswith("free buffer 3: buffer 3 belongs to another open file")
    assert foreign.errno == E.EPERM and cli.exit_code_of(foreign) == 5
    assert errors.dma_too_large(7, 524288, 262144, True) == (
        "order 7 is 524288 bytes, above the largest DMA mapping here "
        "(262144 bytes: swiotlb bounce buffering)"
    )
    assert errors.PAT_ALIAS.startswith("x86 PAT: load pagebuf with x86_pat_alias=1 ")


def test_a_closed_stdout_ends_quietly_as_unix_tools_do(tmp_path: Path) -> None:
    """`pagebuf report FILE | head -0`: no BrokenPipeError traceback, exit 141."""
    import subprocess
    import sys

    run = tmp_path / "run.jsonl"
    run.write_text('{"type": "arm_summary", "arm": "cached", "verdict": "clean"}\n')
    proc = subprocess.Popen([sys.executable, "-m", "pagebuf", "report", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before pagebuf writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait() == cli.EXIT_PIPE == 141 and err == "", err


def test_a_bug_is_one_line_and_exit_11_never_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception pagebuf did not expect must not exit 1, which says "corruption found"."""

    def buggy(args: object) -> int:
        raise KeyError("oops")

    monkeypatch.setattr(cli, "run_cpus", buggy)
    monkeypatch.delenv("PAGEBUF_DEBUG", raising=False)
    assert cli.main(["cpus", "status"]) == cli.EXIT_INTERNAL == 11
    err = capsys.readouterr().err
    assert err.startswith("pagebuf: internal error: KeyError: 'oops'") and err.count("\n") == 1
    monkeypatch.setenv("PAGEBUF_DEBUG", "1")
    assert cli.main(["cpus", "status"]) == 11
    assert "Traceback (most recent call last)" in capsys.readouterr().err
