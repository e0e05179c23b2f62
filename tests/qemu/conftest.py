"""Fixtures for tests that run the real QEMU builds of scripts/build-qemu."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from miglab import artifacts
from miglab.guest import READY, Workload, kernel_command_line
from miglab.vm import VM, VMConfig


@pytest.fixture(scope="session")
def patched_bin() -> Path:
    return artifacts.qemu_binary("patched")


@pytest.fixture(scope="session")
def stock_bin() -> Path:
    return artifacts.qemu_binary("stock")


@pytest.fixture(params=["patched", artifacts.UPSTREAM])
def with_param(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VM]:
    """Our patched 7.2 and upstream's QEMU 10.0, without a guest: the interface
    must be the same on both, so every test that takes this runs on each."""
    binary = artifacts.qemu_binary(request.param)
    with VM(VMConfig.for_binary(binary), request.param, tmp_path) as vm:
        yield vm


@pytest.fixture
def patched(patched_bin: Path, tmp_path: Path) -> Iterator[VM]:
    with VM(VMConfig(patched_bin), "patched", tmp_path) as vm:
        yield vm


@pytest.fixture
def stock(stock_bin: Path, tmp_path: Path) -> Iterator[VM]:
    with VM(VMConfig(stock_bin), "stock", tmp_path) as vm:
        yield vm


def guest_config(binary: Path, workload: Workload, incoming: bool = False) -> VMConfig:
    return VMConfig(binary, memory_mib=512, kernel=artifacts.kernel(),
                    initramfs=artifacts.initramfs(),
                    kernel_append=kernel_command_line(workload), incoming=incoming)


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

    def __init__(self, binary: Path, workdir: Path, workload: Workload) -> None:
        self.src = VM(guest_config(binary, workload), "src", workdir)
        self.dst = VM(guest_config(binary, workload, incoming=True), "dst", workdir)
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
