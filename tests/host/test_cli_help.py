"""Every command, option and positional of `pagebuf` says what it is in --help, and every
command reaches its handler."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from pagebuf import cli


def _parsers(
    parser: argparse.ArgumentParser, path: str = "pagebuf"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_and_positional_has_a_help_line() -> None:
    missing = [
        f"{path}: {'/'.join(a.option_strings) or a.dest}"
        for path, parser in _parsers(cli.make_parser())
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
    ]
    assert not missing, missing


def test_every_command_has_a_handler() -> None:
    leaves = [
        (path, p)
        for path, p in _parsers(cli.make_parser())
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]
    assert len(leaves) == 15  # alloc ... doctor, with mem read and mem write
    for path, parser in leaves:
        assert callable(parser.get_default("handler") or _parent_handler(path)), path


def _parent_handler(path: str) -> object:
    """`mem read` and `mem write` take theirs from `mem`."""
    parent = path.rsplit(" ", 1)[0]
    for p_path, parser in _parsers(cli.make_parser()):
        if p_path == parent:
            return parser.get_default("handler")
    return None


def test_value_is_the_constant_pattern_s_and_says_what_it_hides(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(cli, "Device", lambda path=None: opened.append(path))
    assert cli.main(["fill", "1", "--value", "0x5"]) == 8  # tagged: no word to set
    err = capsys.readouterr().err
    assert err == "pagebuf: --value is the constant pattern's word, not tagged's\n"
    assert not opened  # refused before the device was touched

    def no_device(path: object = None) -> None:
        raise cli.errors.ModuleNotLoadedError("no device here")

    monkeypatch.setattr(cli, "Device", no_device)
    assert cli.main(["verify", "1", "--pattern", "constant", "--value", "0"]) == 4
    note, refusal = capsys.readouterr().err.splitlines()
    assert "a stale line reads as a fresh one" in note and refusal == "pagebuf: no device here"
