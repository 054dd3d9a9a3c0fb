"""What a shell user gets besides the commands, all drawn from the CLI's one parser: shell
completion (`pagebuf --print-completion bash|zsh`, made by shtab), the man page (`make
man`, argparse-manpage) and `pagebuf --version`. bash completion is exercised for real:
the script is sourced and its function asked what completes each command line."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagebuf import __version__, access, cli, uapi

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "python")}


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command as its words after `pagebuf`, with its parser; the top first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for name in a.choices
    }


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def print_completion(shell: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pagebuf", "--print-completion", shell],
        capture_output=True,
        text=True,
        env=ENV,
    )


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if REQUIRE:
            pytest.fail(f"{tool} is missing: run `make setup`")
        pytest.skip(f"{tool} is missing: run `make setup`")
    return path


BASH_PROBE = r"""
source "$1"; shift
for line in "$@"; do
    read -r -a COMP_WORDS <<< "$line"
    [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE=$line; COMP_POINT=${#line}
    COMPREPLY=()
    _shtab_pagebuf pagebuf "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    echo "${COMPREPLY[*]}"
done
"""


def completion_script(path: Path, shell: str) -> Path:
    """`pagebuf --print-completion SHELL`, which must succeed, written to `path`."""
    proc = print_completion(shell)
    assert proc.returncode == 0, proc.stderr
    path.write_text(proc.stdout)
    return path


def test_bash_completes_every_command_and_its_options(tmp_path: Path) -> None:
    bash = _need("bash")
    script = completion_script(tmp_path / "pagebuf.bash", "bash")
    assert subprocess.run([bash, "-n", str(script)], capture_output=True).returncode == 0
    cases: list[tuple[str, set[str]]] = []
    for path, parser in commands(cli.make_parser()):
        words = " ".join(("pagebuf", *path))
        if subcommands(parser):
            cases.append((f"{words} ", subcommands(parser)))
        cases.append((f"{words} --", {o for o in options(parser) if o.startswith("--")}))
    assert len(cases) > 15  # the walk found the commands
    probe = tmp_path / "probe.sh"
    probe.write_text(BASH_PROBE)
    out = subprocess.run(
        [bash, str(probe), str(script), *(line for line, _ in cases)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    got = out.split("\n")[: len(cases)]
    for (line, want), reply in zip(cases, got):
        assert set(reply.split()) == want, line


def test_bash_completes_choices_and_paths(tmp_path: Path) -> None:
    bash = _need("bash")
    script = tmp_path / "pagebuf.bash"
    script.write_text(print_completion("bash").stdout)
    (tmp_path / "run-1.jsonl").write_text("")
    probe = tmp_path / "probe.sh"
    probe.write_text(BASH_PROBE)
    lines = ["pagebuf run --via ", "pagebuf report run-", "pagebuf --print-completion "]
    out = subprocess.run(
        [bash, str(probe), str(script), *lines],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split("\n")
    assert set(out[0].split()) == set(access.RUN_VIAS)
    assert out[1] == "run-1.jsonl"
    assert set(out[2].split()) == {"bash", "zsh"}


def test_the_zsh_script_parses_and_names_every_command_and_option(tmp_path: Path) -> None:
    zsh = _need("zsh")
    script = completion_script(tmp_path / "_pagebuf", "zsh")
    text = script.read_text()
    check = subprocess.run([zsh, "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert text.startswith("#compdef pagebuf\n")
    for path, parser in commands(cli.make_parser()):
        for name in subcommands(parser):
            assert re.search(rf"^ +[\"']?{re.escape(name)}:", text, re.M), (path, name)
        for option in options(parser):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), option


def test_only_the_shells_it_supports() -> None:
    proc = print_completion("fish")
    assert proc.returncode == 2 and "invalid choice: 'fish'" in proc.stderr


def test_completion_costs_nothing_until_asked_for() -> None:
    code = "import sys, pagebuf.cli; print('shtab' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True
    ).stdout
    assert out == "False\n"


def test_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pagebuf", "--version"], capture_output=True, text=True, env=ENV
    )
    assert proc.returncode == 0
    assert proc.stdout == f"pagebuf {__version__} (module interface version {uapi.API_VERSION})\n"


# --- pagebuf(1) ---


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("groff") is None:
        if REQUIRE:
            pytest.fail("groff is missing: run `make setup`")
        pytest.skip("groff is missing: run `make setup`")
    out = tmp_path_factory.mktemp("man") / "pagebuf.1"
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "man", f"MANPAGE={out}", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
    )
    if "needs argparse-manpage" in proc.stderr and not REQUIRE:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def render(page: Path) -> subprocess.CompletedProcess[str]:
    """As text, lines long and never hyphenated, so that every word stays whole."""
    return subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-rLL=300n", "-rHY=0", "-P-cbou", str(page)],
        capture_output=True,
        text=True,
    )


def test_groff_renders_it_without_warnings(page: Path) -> None:
    proc = render(page)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("PAGEBUF(1)")
    assert re.search(rf"^pagebuf {re.escape(__version__)} .* PAGEBUF\(1\)$", proc.stdout, re.M)


def test_it_lists_every_command_and_option(page: Path) -> None:
    text = render(page).stdout.replace("\u2010", "-").replace("\u2212", "-")
    for path, parser in commands(cli.make_parser()):
        if path:
            assert f"COMMAND 'pagebuf {' '.join(path)}'" in text, path
        for option in options(parser) - {"-h", "--help"}:
            assert re.search(rf"^ +(-\S+, )*{re.escape(option)}\b", text, re.M), (path, option)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "SEE ALSO"):
        assert re.search(rf"^{section}$", text, re.M), section
