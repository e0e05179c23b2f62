"""docs/usage.md (the README's "Running a scenario of your own", in full) and
`miglab --help` name the same options; the README names none miglab lacks."""
from __future__ import annotations

import re
from pathlib import Path

from miglab import cli, scenario

ROOT = Path(__file__).resolve().parents[2]
USAGE = ROOT / "docs" / "usage.md"
README = ROOT / "README.md"


def named_options(text: str) -> set[str]:
    named = set(re.findall(r"`(?:miglab \w+ )?(--[a-z][a-z-]+)", text))
    return named | set(re.findall(r"\s(--[a-z][a-z-]+) ", text))


def known_options() -> set[str]:
    return {a for action in cli._parser()._subparsers._group_actions[0].choices.values()
            for a in action._option_string_actions if a.startswith("--")}


def test_every_option_of_miglab_is_in_the_usage_and_no_other() -> None:
    named = named_options(USAGE.read_text())
    refused = {"--downtime"}  # named as the prefix miglab does not take for --downtime-limit
    assert named - known_options() - refused == set(), "docs/usage.md names options miglab lacks"
    scenario_options = {f"--{o}" for o in scenario.FIELDS}
    assert scenario_options - named == set(), "options docs/usage.md does not describe"


# options of other commands the README names: scripts/showcase's, and virsh
# migrate's (libvirt users' cap)
OTHERS = {"--all", "--bandwidth"}


def test_the_readme_names_no_option_miglab_lacks() -> None:
    assert named_options(README.read_text()) - known_options() - OTHERS == set()


def test_each_default_a_help_text_names_is_the_scenarios_own() -> None:
    # "(default 1gbit)" read by the key's own parser is what Scenario() holds
    defaults = scenario.Scenario()
    checked = 0
    for key, field in scenario.FIELDS.items():
        m = re.search(r"\(default ([^ :;)]+)", field.help)
        if not m or key == "qemu":  # a build name, not a value of the field
            continue
        value = None if m.group(1) == "none" else field.parse(m.group(1), f"--{key}")
        assert value == getattr(defaults, field.attr), f"--{key}: help says {m.group(0)}"
        checked += 1
    assert checked >= 12
