"""README.md tells the truth: every ```python block runs, every `secagg` command line parses.

Generic over the README's blocks (any section may add some): each python block runs on
its own, in a fresh namespace and a fresh temporary working directory, as a reader pasting
it would. Shell blocks (```, ```console, ```bash, ```sh) are checked line by line: a
``secagg …`` command (``$ `` prompt optional) must parse — same subcommand, flags and
values — without running; a usage synopsis (``[--flag X]``) must name only real flags;
``python -m MOD`` must answer ``--help``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
import typer

from secagg_training.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = {"", "console", "bash", "sh", "shell"}
SHELL_SEPARATORS = re.compile(r"\s(?:>|>>|\||;|&&|2>)\s?")


def _blocks(kinds: set[str]) -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) in kinds
    ]


PYTHON = _blocks({"python", "py"})


def _command_lines() -> list[tuple[int, str]]:
    """(README line, command) for every shell line that runs secagg or python -m."""
    found = []
    for start, body in _blocks(SHELL):
        console = any(line.startswith("$ ") for line in body.splitlines())
        for offset, raw in enumerate(body.splitlines(), start=1):
            line = raw.strip()
            if console:
                if not line.startswith("$ "):
                    continue  # output, not a command
                line = line[2:]
            line = line.split(" #", 1)[0].strip()
            line = SHELL_SEPARATORS.split(line, maxsplit=1)[0].strip()
            if line.startswith("[") and found and "[" in found[-1][1]:
                found[-1] = (found[-1][0], f"{found[-1][1]} {line}")  # a synopsis continues
            elif line.startswith(("secagg", "python -m ")):
                found.append((start + offset, line))
    return found


COMMANDS = _command_lines()


def test_the_readme_has_blocks_to_check():
    assert len(PYTHON) >= 3 and len(COMMANDS) >= 5


@pytest.mark.parametrize("line, code", PYTHON, ids=[f"README.md:{n}" for n, _ in PYTHON])
def test_python_block_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLI's setting; tiny models crawl with several threads
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(before)


def _options(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("line, command", COMMANDS, ids=[f"README.md:{n}" for n, _ in COMMANDS])
def test_shell_command_parses(line, command):
    words = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", command))  # runs/<that run>
    if words[0] == "python":
        module = words[2]
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"README.md:{line}: {module} --help failed: {done.stderr}"
        return
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    args = words[1:]
    if not args or args[0].startswith("-"):  # `secagg --version`
        assert set(a for a in args if a.startswith("-")) <= _options(group), command
        return
    sub = group.commands.get(args[0])
    assert sub is not None, f"README.md:{line}: no subcommand {args[0]!r} in {command!r}"
    rest = args[1:]
    if any(a.startswith("[") for a in rest):  # a usage synopsis: flags must exist
        flags = set(re.findall(r"\[(--[\w-]+)", command))
        unknown = flags - _options(sub)
        assert not unknown, f"README.md:{line}: unknown flags {sorted(unknown)}"
        return
    try:
        sub.make_context(f"secagg {args[0]}", list(rest), resilient_parsing=False)
    except click.exceptions.Exit:
        pass  # --help / --version
    except click.UsageError as exc:
        pytest.fail(f"README.md:{line}: {command!r} does not parse: {exc.format_message()}")
