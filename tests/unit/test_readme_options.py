"""The README's "Running a scenario of your own" and `miglab --help` name the same options."""
from __future__ import annotations

import re
from pathlib import Path

from miglab import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def test_every_option_of_miglab_is_in_the_readme_and_no_other() -> None:
    text = section("Running a scenario of your own")
    named = set(re.findall(r"`(?:miglab \w+ )?(--[a-z][a-z-]+)", text))
    named |= set(re.findall(r"\s(--[a-z][a-z-]+) ", text))
    known = {a for action in cli._parser()._subparsers._group_actions[0].choices.values()
             for a in action._option_string_actions if a.startswith("--")}
    refused = {"--downtime"}  # named as the prefix miglab does not take for --downtime-limit
    assert named - known - refused == set(), "the README names options miglab does not have"
    scenario_options = {f"--{o}" for o in cli.SCENARIO_OPTIONS}
    assert scenario_options - named == set(), "options the README does not describe"
