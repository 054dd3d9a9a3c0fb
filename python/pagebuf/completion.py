"""`pagebuf --print-completion bash|zsh`: a shell completion script made by shtab from
the CLI's own argparse parser, so it offers exactly the commands, options and choices
the parser has. shtab is imported only when a script is asked for."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

SHELLS = ("bash", "zsh")
# Arguments that name a file: the shell completes paths there.
PATH_ARGUMENTS = frozenset(
    {"device", "file", "output", "plot", "ktap", "junit", "html", "bundle", "run"}
)


def _mark_paths(parser: argparse.ArgumentParser, complete: dict[str, str]) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub, complete)
        elif action.dest in PATH_ARGUMENTS:
            action.complete = complete  # type: ignore[attr-defined]


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell`."""
    import shtab

    _mark_paths(parser, shtab.FILE)
    return str(shtab.complete(parser, shell=shell))


class PrintCompletion(argparse.Action):
    """An option that prints the script for the shell it names and exits, before the
    parser asks for a command (as --help and --version do)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", f"print a completion script for this shell ({', '.join(SHELLS)})")
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, choices=SHELLS, metavar="SHELL", **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(script(parser, str(values)), end="")
        parser.exit(0)
