"""Every command in the README's code blocks is checked here, or named below
as not run by the test command with the reason, so the README cannot drift
from what miglab accepts.

- a `miglab run` or `miglab compare` line: parsed by miglab's own parser and
  turned into its scenario (every value checked, nothing started);
- a script (`scripts/...`): it exists and is executable;
- the domain XML: test_libvirt_domain.py holds it to what the lab runs.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from miglab import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Commands the test command does not run, and why (each still checked above).
NOT_RUN = {
    "scripts/showcase": "the first README command: 8 minutes of migrations; its"
                        " comparisons are the suites' variants",
    "scripts/test": "the test command itself",
}


COMMAND = re.compile(r"^(scripts/[\w.-]+|\.venv/bin/[\w.-]+|miglab)$")


def code_commands() -> list[str]:
    """Each command of the README's indented code blocks (a line whose first
    word is a script, a program of the venv or miglab), continuation lines
    joined; the XML and the layout are not commands."""
    out, current = [], ""
    for line in README.read_text().splitlines():
        if not line.startswith("    "):
            current = ""
            continue
        text = line.strip()
        joined = f"{current} {text.rstrip(chr(92)).strip()}".strip()
        if text.endswith("\\"):
            current = joined
            continue
        current = ""
        if joined and COMMAND.match(joined.split()[0]):
            out.append(joined)
    return out


def commands(prefix: str) -> list[str]:
    return [c for c in code_commands() if c.split()[0].endswith(prefix)]


def test_the_readme_has_commands_to_check() -> None:
    assert commands("miglab") and commands("scripts/showcase")


@pytest.mark.parametrize("command", commands("miglab"))
def test_each_miglab_command_is_accepted(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = cli._parser().parse_args(argv)
    assert args.command in ("run", "compare")
    cli.common.scenario_of(args)  # every value checked as a run would, nothing started


@pytest.mark.parametrize("command", [c for c in code_commands()
                                     if re.match(r"scripts/", c.split()[0])])
def test_each_script_exists_and_is_marked(command: str) -> None:
    script = command.split()[0]
    assert os.access(ROOT / script, os.X_OK), script
    assert script in NOT_RUN, f"{script}: run it in the test command, or say why not"
