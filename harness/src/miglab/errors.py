"""The errors miglab explains to its user: one base, two kinds.

Every error a module raises for something the user should hear of is a
MiglabError, so the command line catches them all in one place
(cli.main: one line, exit status 2, what was started removed) and none
ends in a traceback:

- InputError: the input or the machine cannot make the run (a bad value,
  a missing build, no netem); raised before anything is created.
- LabError: the lab or the run failed on the way (a link, a guest, QEMU's
  monitor, a flow, libvirt, the ownership records).

The evidence a person needs to see why (the command that failed, its
output, QEMU's last words on stderr) goes into `evidence`, printed below
the line; the line itself stays one line.
"""
from __future__ import annotations


class MiglabError(Exception):
    """An error miglab reports in one line, with its evidence beside it."""

    def __init__(self, message: str, evidence: str = "") -> None:
        super().__init__(message)
        self.evidence = evidence


class InputError(MiglabError):
    """Bad input, or a machine the run cannot be made on: nothing was started."""


class LabError(MiglabError):
    """The lab or the run failed after it started."""
