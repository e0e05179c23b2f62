"""Fixtures for tests that run the real QEMU builds of scripts/build-qemu."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from miglab import artifacts, lab, ownership
from miglab.guest import READY, Workload
from miglab.ownership import Record
from miglab.scenario import Scenario
from miglab.vm import VM, VMConfig

# the lab's guest (q35, 512 MiB, one vCPU), under TCG: these tests are
# about QEMU, and need the same guest on every host
GUEST = Scenario(accel="tcg")


@pytest.fixture(scope="session")
def run_record() -> Record:
    """This test process's ownership record, handed to all it makes."""
    return ownership.current()


@pytest.fixture(scope="session")
def patched_bin() -> Path:
    return artifacts.qemu_binary("patched")


@pytest.fixture(scope="session")
def stock_bin() -> Path:
    return artifacts.qemu_binary("stock")


@pytest.fixture(params=["patched", artifacts.UPSTREAM])
def with_param(request: pytest.FixtureRequest, tmp_path: Path,
               run_record: Record) -> Iterator[VM]:
    """Our patched 7.2 and upstream's QEMU 10.0, without a guest: the interface
    must be the same on both, so every test that takes this runs on each."""
    binary = artifacts.qemu_binary(request.param)
    with VM(VMConfig.for_binary(binary), request.param, tmp_path, record=run_record) as vm:
        yield vm


@pytest.fixture
def patched(patched_bin: Path, tmp_path: Path, run_record: Record) -> Iterator[VM]:
    with VM(VMConfig(patched_bin), "patched", tmp_path, record=run_record) as vm:
        yield vm


@pytest.fixture
def stock(stock_bin: Path, tmp_path: Path, run_record: Record) -> Iterator[VM]:
    with VM(VMConfig(stock_bin), "stock", tmp_path, record=run_record) as vm:
        yield vm


def guest_config(binary: Path, workload: Workload, logs: Path, name: str,
                 incoming: bool = False) -> VMConfig:
    """The lab's guest QEMU (lab.guest_config) running @workload."""
    return lab.guest_config(GUEST, binary, GUEST.accel, incoming, None, logs, name, workload)


def wait_ready(vm: VM, timeout: float = 90.0) -> None:
    assert vm.console
    if vm.console.wait_for(READY, timeout) is None:
        raise AssertionError(f"{vm.name}: guest workload not ready after {timeout:.0f}s"
                             f" (console log: {vm.console_path})")


class GuestPair:
    """A source running the workload and a destination waiting for it.

    Migration goes over a unix socket in the pair's private directory: these
    tests are about QEMU's decisions, not the network (the harness's shaped
    links are tested elsewhere).
    """

    def __init__(self, binary: Path, workdir: Path, workload: Workload,
                 record: Record) -> None:
        self.src = VM(guest_config(binary, workload, workdir, "src"), "src", workdir,
                      record=record)
        self.dst = VM(guest_config(binary, workload, workdir, "dst", incoming=True), "dst",
                      workdir, record=record)
        self.uri = f"unix:{workdir / 'migration.sock'}"

    def __enter__(self) -> GuestPair:
        try:
            self.src.launch()
            self.dst.launch()
            wait_ready(self.src)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.dst.shutdown()
        self.src.shutdown()
