"""One base for every error miglab explains, and the command line catching it."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import miglab
from miglab import cli
from miglab.errors import InputError, LabError, MiglabError


def defined_errors() -> list[type[BaseException]]:
    out = []
    for info in pkgutil.walk_packages(miglab.__path__, "miglab."):
        if info.name.endswith("__main__"):  # runs the command
            continue
        module = importlib.import_module(info.name)
        out += [c for _, c in inspect.getmembers(module, inspect.isclass)
                if issubclass(c, BaseException) and c.__module__ == module.__name__]
    return out


def test_every_error_miglab_defines_is_an_input_or_a_lab_error() -> None:
    errors = defined_errors()
    assert len(errors) >= 15  # the modules were found
    strays = [c.__qualname__ for c in errors
              if c not in (MiglabError, InputError, LabError)
              and not issubclass(c, (InputError, LabError))]
    assert not strays


@pytest.mark.parametrize("error", [LabError("libvirtd did not start", evidence="log: x.log"),
                                   InputError("--port 0: expected a TCP port")])
def test_the_command_line_says_an_error_in_one_line_and_its_evidence_below(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: MiglabError) -> None:
    def failing(args: object) -> int:
        raise error

    monkeypatch.setattr(cli.cleanup, "cmd", failing)
    assert cli.main(["cleanup"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"miglab: error: {error}"
    assert err.splitlines()[1:] == ([f"    {error.evidence}"] if error.evidence else [])
